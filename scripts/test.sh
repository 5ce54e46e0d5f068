#!/usr/bin/env bash
# The test command of the README: everything the suite needs, then the suite
# (unit tests and the API over real HTTP on SQLite and on PostgreSQL).
set -euo pipefail
cd "$(dirname "$0")/.."

scripts/ensure-build-deps.sh
scripts/ensure-postgres.sh
cargo test --workspace --locked "$@"
