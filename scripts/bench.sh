#!/usr/bin/env bash
# `make bench`: the release build driven end to end with echo jobs over HTTP, side by side
# with the Celery + Redis baseline, with the same load generator on this machine.
#
#   scripts/bench.sh [N] [C] [RUNS]     defaults: 3000 32 3
#
# For each database (SQLite, PostgreSQL) and each run: a private nats-server, `xenios-api`
# and one `xenios worker` as separate release processes; and SQLite's single-host layout,
# `xenios serve --kind echo` (API and consumer in one process, as `xenios dev` runs them).
# loadgen submits N echo jobs C at a time and observes completion (1) over each job's SSE
# stream and (2) by polling every 20 ms like the baseline. Peak RSS of the API and the worker
# is sampled from /proc. Then the
# baseline (../shared/bench/peers/celery) and the raw JetStream ceiling. Figures land in
# bench/results/<date>/ (JSON from loadgen, plus summary.md).
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
N=${1:-3000} C=${2:-32} RUNS=${3:-3}
shared=$(cd "$root/../shared/bench" && pwd)
tools=$root/target/bench-tools
out=$root/bench/results/$(date +%Y-%m-%d-%H%M)
mkdir -p "$tools" "$out"

scripts/ensure-deps.sh nats postgres python wrk
cargo build -q -p xenios-devstack --bin with-postgres
# PostgreSQL runs need a private server: re-enter under one.
if [ -z "${XENIOS_TEST_POSTGRES_URL:-}" ]; then
  exec "$root/target/debug/with-postgres" --durable -- "$0" "$N" "$C" "$RUNS"
fi
# The shared instruments are read-only: build and run copies of them.
[ -d "$tools/bench" ] || cp -r "$shared" "$tools/bench"
(cd "$tools/bench/loadgen" && cargo build --release -q)
(cd "$tools/bench/jetstream-limit" && cargo build --release -q)
loadgen=$tools/bench/loadgen/target/release/loadgen
cargo build --release -q --bin xenios --bin xenios-api -p xenios
bin=$root/target/release
# How much of the function order build.rs hands the linker the measured binaries still hold
# (the rest of the list names code since changed): regenerate it with `make function-order`
# when this falls well below the share it had when generated.
listed=$(grep -c . bins/function-order.txt)
held=$(nm --defined-only "$bin/xenios" "$bin/xenios-api" | awk 'NF == 3 {print $3}' | sort -u \
  | comm -12 - <(sort -u bins/function-order.txt) | wc -l)
echo "function order: $held of $listed listed functions are in the binaries" | tee "$out/function-order.txt"

source scripts/bench-common.sh

# CPU seconds of a private PostgreSQL server's processes (postmaster and backends) as
# "pid seconds" lines; nothing for SQLite. Two snapshots give the server's share of a phase.
pg_cpu() { [ -n "$1" ] || return 0
  local pm; pm=$(pgrep -f -- "postgres -D .* -p $1 " | head -1); [ -n "$pm" ] || return 0
  for p in $pm $(pgrep -P "$pm"); do echo "$p $(cpu_s "$p")"; done; }

run_stack() { # db_kind run_index [one]
  # Both processes' own histograms, for the per-stage table of the summary.
  scrape() { curl -sf "http://127.0.0.1:$api_port/metrics" >"$1.api$2.metrics" || true
    curl -sf "http://127.0.0.1:$metrics_port/metrics" >"$1.worker$2.metrics" || true; }
  local db=$1 i=$2 layout=${3:-two} dir port api_port metrics_port db_url key secret token api worker
  dir=$(mktemp -d)
  port=$(free_port); api_port=$(free_port); metrics_port=$(free_port)
  nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir/nats" >"$dir/nats.log" 2>&1 &
  local nats=$!
  pids+=($nats)
  local pg_port=""
  if [ "$db" = sqlite ]; then
    db_url="sqlite://$dir/xenios.db"
  else
    pg_port=$(python3 -c 'import sys, urllib.parse; print(urllib.parse.urlparse(sys.argv[1]).port)' "$XENIOS_TEST_POSTGRES_URL")
    local name="bench_${i}_$RANDOM"
    psql "$XENIOS_TEST_POSTGRES_URL" -qc "CREATE DATABASE $name" >/dev/null
    db_url="${XENIOS_TEST_POSTGRES_URL%/*}/$name"
  fi
  key=bench-api-key-0123456789
  secret=bench-jwt-secret-0123456789abcdef
  export DATABASE_URL=$db_url NATS_URL=nats://127.0.0.1:$port XENIOS_BACKEND_API_KEY=$key \
    SUPABASE_JWT_SECRET=$secret XENIOS_API_ADDR=127.0.0.1:$api_port \
    XENIOS_METRICS_ADDR=127.0.0.1:$metrics_port LOG_LEVEL=warn \
    XENIOS__RATE_LIMIT__ENABLED=false XENIOS__DATABASE__MAX_CONNECTIONS=${BENCH_DB_CONNECTIONS:-16}
  for _ in $(seq 100); do (echo > /dev/tcp/127.0.0.1/$port) 2>/dev/null && break; sleep 0.1; done
  "$bin/xenios" migrate --config /dev/null >/dev/null
  if [ "$layout" = one ]; then
    # Results under "<db>-one": the worker's figures are the same process's.
    "$bin/xenios" serve --kind echo --config /dev/null >"$dir/api.log" 2>&1 &
    api=$!; pids+=($api); worker=""
    db=$db-one
  else
    "$bin/xenios-api" --config /dev/null >"$dir/api.log" 2>&1 &
    api=$!; pids+=($api)
    "$bin/xenios" worker --kind echo --config /dev/null >"$dir/worker.log" 2>&1 &
    worker=$!; pids+=($worker)
  fi
  for _ in $(seq 200); do curl -sf "http://127.0.0.1:$api_port/health/ready" >/dev/null && break; sleep 0.1; done
  token=$("$bin/xenios" token --config /dev/null --user 00000000-0000-4000-8000-0000000000b1)
  awk '/^VmRSS/{print $2}' "/proc/$api/status" >"$out/$db-idle-rss-$i.txt"
  local base="http://127.0.0.1:$api_port/api/v1"
  local common=(--url "$base/jobs" -H "X-API-Key: $key" -H "Authorization: Bearer $token"
    --body '{"kind":"echo","input":{"message":"hello {{i}}"}}' -n "$N" -c "$C")
  # Warm-up: connections, prepared statements, page cache.
  "$loadgen" jobs "${common[@]}" -n 200 --sse-url "$base/jobs/{id}/events" >/dev/null
  for mode in sse poll; do
    rm -f "$dir/stop"
    sample_rss "$api" "$dir/stop" >"$dir/api.rss" &
    local s1=$!
    if [ -n "$worker" ]; then sample_rss "$worker" "$dir/stop" >"$dir/worker.rss" &
    else echo 0 >"$dir/worker.rss" & fi
    local s2=$!
    local cpu0="$(cpu_s "$api") $(cpu_s "$worker") $(cpu_s "$nats")"
    pg_cpu "$pg_port" >"$dir/pg.cpu0"
    scrape "$out/$db-$mode-$i" .before
    if [ "$mode" = sse ]; then
      "$loadgen" jobs "${common[@]}" --sse-url "$base/jobs/{id}/events" --json "$out/$db-$mode-$i.json" >"$out/$db-$mode-$i.txt"
    else
      "$loadgen" jobs "${common[@]}" --status-url "$base/jobs/{id}" --poll-ms 20 --json "$out/$db-$mode-$i.json" >"$out/$db-$mode-$i.txt"
    fi
    touch "$dir/stop"; wait "$s1" "$s2"
    local cpu1="$(cpu_s "$api") $(cpu_s "$worker") $(cpu_s "$nats")"
    pg_cpu "$pg_port" >"$dir/pg.cpu1"
    # A backend that started during the phase counts whole; one that ended is lost (the pools
    # keep theirs open).
    local pg_s; pg_s=$(python3 -c '
import sys
snap = lambda f: dict(l.split() for l in open(f) if l.strip())
a, b = snap(sys.argv[1]), snap(sys.argv[2])
print(round(sum(float(v) - float(a.get(p, 0)) for p, v in b.items()), 2))' "$dir/pg.cpu0" "$dir/pg.cpu1")
    scrape "$out/$db-$mode-$i" ""
    echo "{\"api_rss_kib\": $(cat "$dir/api.rss"), \"worker_rss_kib\": $(cat "$dir/worker.rss")," \
      "\"cpu_s\": $(python3 -c "a='$cpu0'.split(); b='$cpu1'.split(); import json; d={k: round(float(y)-float(x),2) for k,x,y in zip(['api','worker','nats'],a,b)}; d['postgres']=$pg_s; print(json.dumps(d))")}" \
      >"$out/$db-$mode-$i.rss.json"
  done
  # After the job phases: the buffers of its 32 extra connections would otherwise count in the
  # API's resident memory under the job load.
  if command -v wrk >/dev/null; then
    wrk -t1 -c32 -d10s --latency "http://127.0.0.1:$api_port/health" >"$out/$db-health-$i.txt" 2>&1 || true
  fi
  kill "$api" $worker 2>/dev/null || true
  wait "$api" $worker 2>/dev/null || true
  kill "${pids[0]}" 2>/dev/null || true
  pids=()
  rm -rf "$dir"
}

# BENCH_ONLY=sqlite|postgres|celery narrows a run while investigating.
only=${BENCH_ONLY:-}
for i in $(seq "$RUNS"); do
  if [ -z "$only" ] || [ "$only" = sqlite ]; then
    echo "== run $i: xenios (SQLite)"
    run_stack sqlite "$i"
    echo "== run $i: xenios serve (SQLite, one process)"
    run_stack sqlite "$i" one
  fi
  if [ -z "$only" ] || [ "$only" = postgres ]; then
    echo "== run $i: xenios (PostgreSQL)"
    run_stack postgres "$i"
  fi
  if [ -z "$only" ] || [ "$only" = celery ]; then
    echo "== run $i: Celery + Redis baseline"
    bash "$tools/bench/peers/celery/run.sh" "$N" "$C" >"$out/celery-$i.txt" 2>&1 || true
  fi
done
echo "== JetStream alone"
port=$(free_port); dir=$(mktemp -d)
nats-server -a 127.0.0.1 -p "$port" -js -sd "$dir" >/dev/null 2>&1 & pids+=($!)
sleep 0.5
"$tools/bench/jetstream-limit/target/release/jetstream-limit" "nats://127.0.0.1:$port" 200000 >"$out/jetstream-limit.txt" 2>&1 || true
python3 scripts/bench_summary.py "$out" | tee "$out/summary.md"
