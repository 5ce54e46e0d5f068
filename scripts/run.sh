#!/usr/bin/env bash
# The run command of the README: builds rop, installs the models it needs
# into ./models, and serves it on the embedded default (SQLite and audio
# files under ./data). Arguments go to `rop serve`,
# e.g. scripts/run.sh --listen 0.0.0.0:8080
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-build-deps.sh
cargo build --release --locked -p rop
rop="${CARGO_TARGET_DIR:-target}/release/rop"
# Speech recognition models (Whisper base, Silero VAD): fetched and checked
# once, skipped when already in place.
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
URL для CRM:  http://$listen/api/v1/calls/audio-upload?apiKey=$key
API-ключ:     $key   (показать снова: $rop api-key show)

MSG
exec "$rop" serve "$@"
