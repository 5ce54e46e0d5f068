#!/usr/bin/env bash
# Real Russian speech for the end-to-end tests and the benchmarks: Debian's
# Asterisk prompts (CC-BY-SA-3.0, a professional voice, 8 kHz mono WAV with
# reference texts), and calls assembled from them with sox and ffmpeg:
#   e2e/stereo-call.wav  manager on the left, client on the right
#   e2e/mono-call.mp3    one channel, MP3
#   e2e/mono-call.opus   one channel, Ogg Opus
# and a short sales dialogue spoken by Festival's Russian voice (manager
# left, client right) for the analysis test with the real language model:
#   e2e/sales-dialogue.wav
# Everything lands in ${XDG_CACHE_HOME:-~/.cache}/rop-test-data; a second run
# does nothing.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)

dir="${XDG_CACHE_HOME:-$HOME/.cache}/rop-test-data"
sounds="$dir/asterisk/usr/share/asterisk/sounds/ru_RU_f_IvrvoiceRU"
texts="$dir/asterisk/usr/share/doc/asterisk-core-sounds-ru/core-sounds-ru.txt.gz"
done_mark="$dir/.ready-v1"
dialogue_mark="$dir/.dialogue-v2"
[ -f "$done_mark" ] && [ -f "$dialogue_mark" ] && exit 0

sudo_cmd=""
[ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
missing=()
command -v sox >/dev/null 2>&1 || missing+=(sox)
command -v ffmpeg >/dev/null 2>&1 || missing+=(ffmpeg)
command -v text2wave >/dev/null 2>&1 || missing+=(festival)
[ -d /usr/share/festival/voices/russian ] || missing+=(festvox-ru)
if [ ${#missing[@]} -gt 0 ]; then
  echo "Устанавливаю пакеты: ${missing[*]}"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq "${missing[@]}"
fi

mkdir -p "$dir/debs" "$dir/asterisk" "$dir/e2e"
tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT

# The sales dialogue of the analysis test (crates/rop/tests/data): the
# manager greets and names himself, learns what the client wants and books
# a visit, but never asks about the budget.
if [ ! -f "$dialogue_mark" ]; then
  "$root/scripts/speak-dialogue.sh" "$root/crates/rop/tests/data/sales-dialogue.txt" "$dir/e2e/sales-dialogue.wav"
  touch "$dialogue_mark"
fi
[ -f "$done_mark" ] && exit 0
(
  cd "$dir/debs"
  if ! ls asterisk-core-sounds-ru-wav_*.deb >/dev/null 2>&1; then
    apt-get download asterisk-core-sounds-ru-wav asterisk-core-sounds-ru 2>/dev/null ||
      { $sudo_cmd apt-get update -qq && apt-get download asterisk-core-sounds-ru-wav asterisk-core-sounds-ru; }
  fi
  for deb in *.deb; do dpkg -x "$deb" "$dir/asterisk"; done
)
[ -f "$sounds/agent-loginok.wav" ] && [ -f "$texts" ] || {
  echo "Не удалось получить записи Asterisk (пакеты asterisk-core-sounds-ru*)" >&2
  exit 1
}

# Manager (left): 0 s «Оператор зарегистрирован», 8 s «Введите пароль…».
# Client (right): 3 s «На данный момент все линии заняты», 12 s «Спасибо».
sox "$sounds/agent-loginok.wav" "$tmp/m1.wav" pad 0 8
sox "$tmp/m1.wav" "$tmp/m1t.wav" trim 0 8
sox "$tmp/m1t.wav" "$sounds/agent-pass.wav" "$tmp/manager.wav" pad 0 6
sox "$sounds/all-circuits-busy-now.wav" "$tmp/c1.wav" pad 3 6
sox "$tmp/c1.wav" "$tmp/c1t.wav" trim 0 12
sox "$tmp/c1t.wav" "$sounds/auth-thankyou.wav" "$tmp/client.wav" pad 0 5
len=$(soxi -D "$tmp/manager.wav")
sox "$tmp/client.wav" "$tmp/client-fit.wav" trim 0 "$len" pad 0 "$len"
sox "$tmp/client-fit.wav" "$tmp/client-len.wav" trim 0 "$len"
sox -M "$tmp/manager.wav" "$tmp/client-len.wav" "$dir/e2e/stereo-call.wav"
sox "$sounds/agent-user.wav" "$tmp/mono.wav" pad 1 1
ffmpeg -hide_banner -loglevel error -y -i "$tmp/mono.wav" -c:a libmp3lame -b:a 32k "$dir/e2e/mono-call.mp3"
ffmpeg -hide_banner -loglevel error -y -i "$tmp/mono.wav" -ar 48000 -c:a libopus -b:a 24k "$dir/e2e/mono-call.opus"
touch "$done_mark"
echo "Тестовые записи готовы: $dir"
