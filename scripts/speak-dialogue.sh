#!/usr/bin/env bash
# Speaks a dialogue with Festival's Russian voice (festvox-ru; Whisper
# understands it, unlike espeak-ng's) into a stereo 8 kHz WAV, manager on
# the left and client on the right, each line on its speaker's channel
# while the other stays silent (a call recorded per channel, as telephony
# does). The client's voice is pitched up to tell the two apart by ear.
#   scripts/speak-dialogue.sh DIALOGUE OUT.wav [SPEED]
# SPEED: 1.0 is the voice's own pace, 0.8 slower.
# DIALOGUE has one line per turn: `M|text` for the manager, `C|text` for
# the client.
set -euo pipefail
dialogue=$1
out=$2
speed=${3:-1.0}

tmp=$(mktemp -d)
trap 'rm -rf "$tmp"' EXIT
: >"$tmp/left.list"
: >"$tmp/right.list"
i=0
while IFS= read -r line || [ -n "$line" ]; do
  [ -z "$line" ] && continue
  who=${line%%|*}
  text=${line#*|}
  printf '%s\n' "$text" >"$tmp/line$i.txt"
  text2wave -eval '(voice_msu_ru_nsh_clunits)' "$tmp/line$i.txt" -o "$tmp/raw$i.wav"
  effects=(tempo "$speed")
  [ "$who" = C ] && effects+=(pitch 250)
  # A short breath before each turn and a pause after it.
  sox "$tmp/raw$i.wav" -r 8000 -c 1 -b 16 "$tmp/say$i.wav" "${effects[@]}" pad 0.3 0.5
  sox "$tmp/say$i.wav" "$tmp/hush$i.wav" vol 0
  case "$who" in
    M) echo "$tmp/say$i.wav" >>"$tmp/left.list"; echo "$tmp/hush$i.wav" >>"$tmp/right.list" ;;
    C) echo "$tmp/hush$i.wav" >>"$tmp/left.list"; echo "$tmp/say$i.wav" >>"$tmp/right.list" ;;
    *) echo "$dialogue: a line must start with M| or C|: $line" >&2; exit 1 ;;
  esac
  i=$((i + 1))
done <"$dialogue"
# shellcheck disable=SC2046
sox $(cat "$tmp/left.list") "$tmp/left.wav"
# shellcheck disable=SC2046
sox $(cat "$tmp/right.list") "$tmp/right.wav"
sox -M "$tmp/left.wav" "$tmp/right.wav" "$out"
