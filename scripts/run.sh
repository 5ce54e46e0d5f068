#!/usr/bin/env bash
# The run command of the README: builds rop and rop-llm (the local language
# model's process), installs the models they need into ./models, and serves
# on the embedded default (SQLite and audio files under ./data). Arguments
# go to `rop serve`,
# e.g. scripts/run.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-build-deps.sh
cargo build --release --locked -p rop
# A build of its own: llama.cpp cannot share a binary with whisper.cpp.
cargo build --release --locked -p rop-llm --features server --bin rop-llm
rop="${CARGO_TARGET_DIR:-target}/release/rop"
# Whisper base, Silero VAD and Qwen2.5-Coder-1.5B: fetched and checked once,
# skipped when already in place.
"$rop" "$@" models install
key=$("$rop" "$@" api-key show)
listen=${ROP_LISTEN:-127.0.0.1:8080}
previous=""
for arg in "$@"; do
  case "$arg" in
    --listen=*) listen=${arg#--listen=} ;;
    *) if [ "$previous" = "--listen" ]; then listen=$arg; fi ;;
  esac
  previous=$arg
done
cat <<MSG

Цифровой РОП запускается на http://$listen
Веб-интерфейс: http://$listen/  (при первом запуске ниже будет пароль пользователя admin)
URL для CRM:  http://$listen/api/v1/calls/audio-upload?apiKey=$key
API-ключ:     $key   (показать снова: $rop api-key show)

MSG
exec "$rop" serve "$@"
