#!/usr/bin/env bash
# Web pages with many calls: the same pages timed on a database of 100 000
# calls and, side by side in the same run, on one of 1 000 (the baseline),
# on SQLite and on PostgreSQL, with the real `rop serve`. See bench/README.md.
#
#   bash bench/web.sh                         # both backends, 100 000 vs 1 000 calls
#   BENCH_BACKENDS=sqlite bash bench/web.sh   # one backend (sqlite or postgres)
#   BENCH_CALLS=20000 BENCH_BASE_CALLS=1000 BENCH_REQUESTS=30 bash bench/web.sh
#   BENCH_POSTGRES_URL=postgres://postgres@127.0.0.1:5432/postgres bash bench/web.sh
#                                             # the server the bench databases are made on
#   BENCH_NO_BUILD=1 bash bench/web.sh        # skip cargo build (binaries already there)
#   BENCH_DATA_PARENT=/srv bash bench/web.sh  # where the SQLite data dirs live (default $TMPDIR or /tmp)
#   BENCH_SEED_PARENT=/dev/shm                # where SQLite is seeded before it is moved there
#   BENCH_KEEP_DATA=1 bash bench/web.sh       # keep data dirs and PostgreSQL databases
set -euo pipefail

cd "$(dirname "${BASH_SOURCE[0]}")/.."
ROOT=$(pwd)
command -v curl >/dev/null || { echo "curl is needed to wait for /readyz" >&2; exit 1; }

BACKENDS="${BENCH_BACKENDS:-sqlite postgres}"
CALLS="${BENCH_CALLS:-100000}"
BASE_CALLS="${BENCH_BASE_CALLS:-1000}"
REQUESTS="${BENCH_REQUESTS:-30}"
POSTGRES_URL="${BENCH_POSTGRES_URL:-postgres://postgres@127.0.0.1:5432/postgres}"

if [[ -z "${BENCH_NO_BUILD:-}" ]]; then
    echo "==> cargo build --release -p rop -p rop-webbench" >&2
    cargo build --release -p rop -p rop-webbench >&2
fi
BIN="${CARGO_TARGET_DIR:-$ROOT/target}/release"
ROP="$BIN/rop"
WEBBENCH="$BIN/rop-webbench"
for bin in "$ROP" "$WEBBENCH"; do
    [[ -x "$bin" ]] || { echo "missing $bin (build it first)" >&2; exit 1; }
done

DATA_PARENT="${BENCH_DATA_PARENT:-${TMPDIR:-/tmp}}"
WORK=$(mktemp -d "$DATA_PARENT/rop-webbench.XXXXXX")
# SQLite is seeded where fsync is free (the seeder commits ~400 000
# transactions), then moved next to the server's data.
SEED_PARENT="${BENCH_SEED_PARENT:-/dev/shm}"
[[ -d "$SEED_PARENT" && -w "$SEED_PARENT" ]] || SEED_PARENT="$WORK"
SEED_DIR=$(mktemp -d "$SEED_PARENT/rop-webbench-seed.XXXXXX")
PASSWORD="bench-$(date +%s)-$RANDOM"
export WEBBENCH_PASSWORD="$PASSWORD"
SERVER_PIDS=()
PG_DATABASES=()

stop_servers() {
    local pid
    for pid in ${SERVER_PIDS[@]+"${SERVER_PIDS[@]}"}; do
        if kill -0 "$pid" 2>/dev/null; then
            kill "$pid" 2>/dev/null || true
            wait "$pid" 2>/dev/null || true
        fi
    done
    SERVER_PIDS=()
}
drop_databases() {
    local url
    for url in ${PG_DATABASES[@]+"${PG_DATABASES[@]}"}; do
        "$WEBBENCH" drop-postgres --database-url "$url" || true
    done
    PG_DATABASES=()
}
cleanup() {
    stop_servers
    rm -rf "$SEED_DIR"
    if [[ -z "${BENCH_KEEP_DATA:-}" ]]; then
        drop_databases
        rm -rf "$WORK"
    else
        echo "data kept in $WORK; databases: ${PG_DATABASES[*]:-none}" >&2
    fi
}
trap cleanup EXIT

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

# The server reads every ROP_* variable as configuration: only the settings
# given here apply.
unset_rop=()
while IFS= read -r name; do
    unset_rop+=(-u "$name")
done < <(compgen -e | grep '^ROP_' || true)
clean_env() { env ${unset_rop[@]+"${unset_rop[@]}"} RUST_LOG=warn "$@"; }

label() { # 100000 -> 100k
    if (( $1 % 1000 == 0 )); then echo "$(($1 / 1000))k"; else echo "$1"; fi
}

# seed BACKEND CALLS DATA_DIR FIXTURE; sets OPTIONS, the database options for rop
seed() {
    local backend=$1 calls=$2 dir=$3 fixture=$4
    mkdir -p "$dir"
    if [[ "$backend" == sqlite ]]; then
        local scratch
        scratch="$SEED_DIR/$(basename "$dir")"
        "$WEBBENCH" seed --database-url "sqlite://$scratch/rop.db" --calls "$calls" --fixture "$fixture" >&2
        mv "$scratch"/rop.db* "$dir/"
        rm -rf "$scratch"
        OPTIONS=(--data-dir "$dir")
    else
        local url
        url="${POSTGRES_URL%/*}/rop_webbench_$(label "$calls")_$$"
        PG_DATABASES+=("$url")
        "$WEBBENCH" seed --database-url "$url" --calls "$calls" --fixture "$fixture" >&2
        OPTIONS=(--data-dir "$dir" --database-url "$url")
    fi
}

# start NAME OPTIONS...; sets SERVER_URL and keeps the server's pid
start() {
    local name=$1
    shift
    local port
    port=$(free_port)
    env ${unset_rop[@]+"${unset_rop[@]}"} RUST_LOG=warn \
        ROP_WORKER_CONCURRENCY=0 ROP_LLM_ENGINE=none ROP_RATE_LIMIT_PER_MINUTE=0 \
        "$ROP" serve --listen "127.0.0.1:$port" --models-dir "$WORK/models" "$@" \
        >"$WORK/server-$name.log" 2>&1 &
    SERVER_PIDS+=($!)
    local pid=$!
    for _ in $(seq 1 300); do
        if ! kill -0 "$pid" 2>/dev/null; then
            echo "rop serve ($name) exited early:" >&2
            cat "$WORK/server-$name.log" >&2
            return 1
        fi
        if curl -fsS --max-time 1 "http://127.0.0.1:$port/readyz" >/dev/null 2>&1; then
            SERVER_URL="http://127.0.0.1:$port"
            return
        fi
        sleep 0.1
    done
    echo "rop serve ($name) not ready after 30 s:" >&2
    cat "$WORK/server-$name.log" >&2
    return 1
}

cpu_model=$(lscpu 2>/dev/null | awk -F: '/Model name/ {sub(/^ +/, "", $2); print $2; exit}' || true)
mem_total=$(awk '/MemTotal/ {printf "%.1f GiB", $2 / 1048576}' /proc/meminfo 2>/dev/null || true)
fs_type=$(df -PT "$WORK" 2>/dev/null | awk 'NR==2 {print $2}' || true)
pg_version=$(psql "$POSTGRES_URL" -Atc 'SHOW server_version' 2>/dev/null || echo "?")
MACHINE="cpus: $(nproc), model: ${cpu_model:-unknown}, memory: ${mem_total:-unknown}, kernel: $(uname -sr), data dir fs: ${fs_type:-unknown}, PostgreSQL ${pg_version}"
REVISION="$("$ROP" --version 2>/dev/null || echo rop)"
if commit=$(git rev-parse --short HEAD 2>/dev/null); then
    git diff --quiet HEAD -- crates Cargo.lock 2>/dev/null || commit="$commit+dirty"
    REVISION="$REVISION @ $commit"
fi
mkdir -p bench/results
STAMP=$(date +%Y%m%d-%H%M%S)
REPORT="bench/results/web-$STAMP.txt"

{
    echo "==> machine: $MACHINE"
    echo "==> $REVISION; $REQUESTS timed requests per page and database, one at a time,"
    echo "    $(label "$BASE_CALLS") and $(label "$CALLS") alternately; times in ms, from request to the last byte"
} | tee "$REPORT"

for backend in $BACKENDS; do
    case "$backend" in sqlite | postgres) ;; *) echo "unknown backend $backend" >&2; exit 1 ;; esac
    args=()
    for calls in "$BASE_CALLS" "$CALLS"; do
        name=$(label "$calls")
        echo "==> $backend: seeding $calls calls" >&2
        started=$(date +%s)
        seed "$backend" "$calls" "$WORK/$backend-$name" "$WORK/$backend-$name.json"
        seconds=$(($(date +%s) - started))
        echo "    $backend: $calls calls seeded in $seconds s" | tee -a "$REPORT"
        printf '%s\n' "$PASSWORD" | clean_env "$ROP" admin create --username bench --password-stdin "${OPTIONS[@]}" >/dev/null
        key=$(clean_env "$ROP" api-key show "${OPTIONS[@]}")
        start "$backend-$name" "${OPTIONS[@]}"
        args+=(--name "$name" --url "$SERVER_URL" --api-key "$key" --fixture "$WORK/$backend-$name.json")
    done
    {
        echo
        echo "### $backend"
        echo
    } | tee -a "$REPORT"
    "$WEBBENCH" measure "${args[@]}" --username bench --requests "$REQUESTS" \
        --json "bench/results/web-$STAMP-$backend.json" \
        --machine "$MACHINE" --revision "$REVISION" --backend "$backend" | tee -a "$REPORT"
    for log in "$WORK"/server-"$backend"-*.log; do
        if grep -qiE 'error|panic' "$log"; then
            echo "==> $(basename "$log") (warnings and errors):" >&2
            tail -n 20 "$log" >&2
        fi
    done
    stop_servers
    if [[ -z "${BENCH_KEEP_DATA:-}" ]]; then
        drop_databases
        rm -rf "$WORK/$backend"-*
    fi
done
echo "==> results: $REPORT, bench/results/web-$STAMP-*.json" >&2
