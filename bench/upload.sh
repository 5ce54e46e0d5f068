#!/usr/bin/env bash
# Upload benchmark: /healthz (baseline) vs POST /api/v1/calls/audio-upload,
# same server process, same run, loopback only. See bench/README.md.
#
#   bash bench/upload.sh                      # defaults: 32 workers, 2 s warm-up + 10 s per phase
#   bash bench/upload.sh --concurrency 8      # any rop-loadgen option passes through
#   BENCH_NO_BUILD=1 bash bench/upload.sh     # skip cargo build (binaries already there)
#   BENCH_DATA_PARENT=/srv bash bench/upload.sh # put the temp database on another disk
#   BENCH_KEEP_DATA=1 bash bench/upload.sh    # keep the temp data dir (database, server.log)
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
command -v curl >/dev/null || { echo "curl is needed to wait for /readyz" >&2; exit 1; }

if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
    echo "==> cargo build --release -p rop -p rop-loadgen" >&2
    cargo build --release -p rop -p rop-loadgen
fi
ROP="$ROOT/target/release/rop"
LOADGEN="$ROOT/target/release/rop-loadgen"
for bin in "$ROP" "$LOADGEN"; do
    [[ -x "$bin" ]] || { echo "missing $bin (build it first)" >&2; exit 1; }
done

# The database lives here: its disk's fsync latency bounds upload throughput.
DATA_PARENT="${BENCH_DATA_PARENT:-${TMPDIR:-/tmp}}"
DATA_DIR=$(mktemp -d "$DATA_PARENT/rop-bench.XXXXXX")
SERVER_PID=""
cleanup() {
    if [[ -n "$SERVER_PID" ]] && kill -0 "$SERVER_PID" 2>/dev/null; then
        kill "$SERVER_PID" 2>/dev/null || true
        wait "$SERVER_PID" 2>/dev/null || true
    fi
    if [[ -z "${BENCH_KEEP_DATA:-}" ]]; then
        rm -rf "$DATA_DIR"
    else
        echo "data kept in $DATA_DIR" >&2
    fi
}
trap cleanup EXIT

# A free loopback port: bind port 0 and let the kernel choose.
free_port() {
    python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1]); s.close()' 2>/dev/null && return
    local port
    for _ in $(seq 1 50); do
        port=$((20000 + RANDOM % 40000))
        if ! (exec 3<>"/dev/tcp/127.0.0.1/$port") 2>/dev/null; then
            echo "$port"
            return
        fi
    done
    echo "no free port found" >&2
    return 1
}
PORT=$(free_port)
BASE="http://127.0.0.1:$PORT"

# The server reads every ROP_* variable as configuration (and refuses unknown
# ones): drop whatever the caller's shell exports, so that only the settings
# below apply.
unset_rop=()
while IFS= read -r name; do
    unset_rop+=(-u "$name")
done < <(compgen -e | grep '^ROP_' || true)
clean_env() { env ${unset_rop[@]+"${unset_rop[@]}"} RUST_LOG=warn "$@"; }

# The key is created before the server starts (same database file).
API_KEY=$(clean_env "$ROP" api-key show --data-dir "$DATA_DIR")

echo "==> starting rop serve on $BASE (data: $DATA_DIR)" >&2
# `env` execs the server, so $! is the server's own pid.
env ${unset_rop[@]+"${unset_rop[@]}"} RUST_LOG=warn \
    ROP_RATE_LIMIT_PER_MINUTE=0 ROP_FETCH_ALLOW_LOOPBACK=true ROP_WORKER_CONCURRENCY=0 \
    "$ROP" serve --listen "127.0.0.1:$PORT" --data-dir "$DATA_DIR" \
    >"$DATA_DIR/server.log" 2>&1 &
SERVER_PID=$!

ready=""
for _ in $(seq 1 100); do
    if ! kill -0 "$SERVER_PID" 2>/dev/null; then
        echo "rop serve exited early:" >&2
        cat "$DATA_DIR/server.log" >&2
        exit 1
    fi
    if curl -fsS --max-time 1 "$BASE/readyz" >/dev/null 2>&1; then
        ready=1
        break
    fi
    sleep 0.1
done
if [[ -z "$ready" ]]; then
    echo "rop serve not ready after 10 s:" >&2
    cat "$DATA_DIR/server.log" >&2
    exit 1
fi

mkdir -p bench/results
RESULT="bench/results/upload-$(date +%Y%m%d-%H%M%S).json"

cpu_model=$(grep -m1 'model name' /proc/cpuinfo 2>/dev/null | cut -d: -f2- | sed 's/^ *//' || true)
mem_total=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
fs_type=$(df -PT "$DATA_DIR" 2>/dev/null | awk 'NR==2 {print $2}' || true)
MACHINE="cpus: $(nproc), model: ${cpu_model:-unknown}, memory: ${mem_total:-unknown}, kernel: $(uname -sr), data dir fs: ${fs_type:-unknown}"
REVISION="$("$ROP" --version 2>/dev/null || echo rop)"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || commit="$commit+dirty"
    REVISION="$REVISION @ $commit"
fi
echo "==> machine: $MACHINE"
echo "==> $REVISION; SQLite (WAL, synchronous=FULL); server and load generator share these CPUs"

status=0
LOADGEN_API_KEY="$API_KEY" "$LOADGEN" --url "$BASE" --json "$RESULT" \
    --machine "$MACHINE" --revision "$REVISION" "$@" || status=$?

if grep -qiE 'error|panic' "$DATA_DIR/server.log"; then
    echo "==> server log (warnings and errors):" >&2
    tail -n 20 "$DATA_DIR/server.log" >&2
fi
exit "$status"
