#!/usr/bin/env bash
# Browser tests of the web interface (crates/web/tests/browser/run.mjs):
# Debian's Chromium (installed here if missing; never a downloaded browser)
# driven by playwright-core from the npm registry (committed lockfile),
# against a real `rop serve` on loopback with a fresh SQLite database, the
# real speech model and phrase-rule analysis. Screenshots of the main pages
# are kept in <target dir>/browser-artifacts.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
cache="${XDG_CACHE_HOME:-$HOME/.cache}"

if ! command -v chromium >/dev/null 2>&1; then
  echo "Устанавливаю Chromium из пакетов Debian"
  sudo_cmd=""
  [ "$(id -u)" -ne 0 ] && sudo_cmd="sudo"
  $sudo_cmd apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo_cmd apt-get install -y -qq chromium
fi
(cd crates/web/tests/browser && npm ci --no-audit --no-fund --loglevel=error)

cargo build --quiet --locked -p rop
target_dir=$(cargo metadata --format-version 1 --no-deps | python3 -c 'import json,sys; print(json.load(sys.stdin)["target_directory"])')
rop="$target_dir/debug/rop"
artifacts="$target_dir/browser-artifacts"
rm -rf "$artifacts"

work=$(mktemp -d)
port=$(python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])')
export ROP_DATA_DIR="$work/data" ROP_MODELS_DIR="$cache/rop-models" ROP_LISTEN="127.0.0.1:$port"
export ROP_LLM_ENGINE=none ROP_FETCH_ALLOW_LOOPBACK=true ROP_WEBHOOK_RETRY_BASE_SECS=1
"$rop" serve >"$work/rop.log" 2>&1 &
pid=$!
cleanup() { kill "$pid" 2>/dev/null || true; wait "$pid" 2>/dev/null || true; rm -rf "$work"; }
trap cleanup EXIT

for _ in $(seq 1 100); do
  curl -fsS "http://127.0.0.1:$port/readyz" >/dev/null 2>&1 && break
  kill -0 "$pid" 2>/dev/null || { cat "$work/rop.log"; exit 1; }
  sleep 0.2
done
password=$(sed -n 's/.*одноразовый пароль \([A-Za-z0-9]*\).*/\1/p' "$work/rop.log" | head -1)
[ -n "$password" ] || { echo "no first administrator password in the log"; cat "$work/rop.log"; exit 1; }

key=$("$rop" api-key show)
status=0
# Not ROP_*: rop refuses environment variables it does not know.
UI_BASE="http://127.0.0.1:$port" \
UI_API_KEY="$key" \
UI_ADMIN_PASSWORD="$password" \
UI_AUDIO="$cache/rop-test-data/e2e/sales-dialogue.wav" \
UI_ARTIFACTS="$artifacts" \
  node crates/web/tests/browser/run.mjs || status=$?
if [ "$status" -ne 0 ]; then
  echo "--- rop log ---"; tail -50 "$work/rop.log"
fi
exit "$status"
