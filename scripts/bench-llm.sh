#!/usr/bin/env bash
# `make bench-llm`: LLM token streaming through the whole path (API → NATS → xenios-llm →
# provider → NATS → API → client) against ../shared/bench/mock-llm, versus straight to the mock
# and versus the FastAPI relay of the original design, with the same loadgen.
#
#   scripts/bench-llm.sh [N] [C] [RUNS]     defaults: 640 64 3  (and N/2 streams at 256)
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD
N=${1:-640} C=${2:-64} RUNS=${3:-3}
shared=$(cd "$root/../shared/bench" && pwd)
tools=$root/target/bench-tools
out=$root/bench/results/$(date +%Y-%m-%d-%H%M)-llm
mkdir -p "$tools" "$out"
scripts/ensure-deps.sh nats python
[ -d "$tools/bench" ] || cp -r "$shared" "$tools/bench"
for t in loadgen mock-llm; do (cd "$tools/bench/$t" && cargo build --release -q); done
loadgen=$tools/bench/loadgen/target/release/loadgen
cargo build --release -q -p xenios --bin xenios --bin xenios-api --bin xenios-llm
bin=$root/target/release
source scripts/bench-common.sh

dir=$(mktemp -d)
mock_port=$(free_port); nats_port=$(free_port); api_port=$(free_port)
"$tools/bench/mock-llm/target/release/mock-llm" "127.0.0.1:$mock_port" 2>/dev/null & mock=$!; pids+=($mock)
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/nats" >/dev/null 2>&1 & nats=$!; pids+=($nats)
export DATABASE_URL="sqlite://$dir/xenios.db" NATS_URL="nats://127.0.0.1:$nats_port" \
  XENIOS_BACKEND_API_KEY=bench-api-key-0123456789 SUPABASE_JWT_SECRET=bench-jwt-secret-0123456789abcdef \
  XENIOS_API_ADDR="127.0.0.1:$api_port" XENIOS_METRICS_ADDR="127.0.0.1:$(free_port)" LOG_LEVEL=warn \
  OPENAI_BASE_URL="http://127.0.0.1:$mock_port/v1" OPENAI_API_KEY=mock-key \
  XENIOS__LLM__TASKS__CHAT__CANDIDATES="openai:mock" XENIOS__RATE_LIMIT__ENABLED=false \
  XENIOS__JOBS__LLM__CONCURRENCY=300 XENIOS__CONSUMER__SERVE_ECHO=false
for _ in $(seq 100); do (echo > "/dev/tcp/127.0.0.1/$nats_port") 2>/dev/null && break; sleep 0.1; done
"$bin/xenios" migrate --config /dev/null >/dev/null
"$bin/xenios-api" --config /dev/null >"$dir/api.log" 2>&1 & api=$!; pids+=($api)
"$bin/xenios-llm" --config /dev/null >"$dir/llm.log" 2>&1 & llm=$!; pids+=($llm)
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$api_port/health/ready" >/dev/null && break; sleep 0.1; done
token=$("$bin/xenios" token --config /dev/null --user 00000000-0000-4000-8000-0000000000b2)
auth=(-H "X-API-Key: bench-api-key-0123456789" -H "Authorization: Bearer $token")
direct_body='{"model":"mock","messages":[{"role":"user","content":"hi {{i}}"}],"stream":true}'
api_body='{"task":"chat","messages":[{"role":"user","content":"hi {{i}}"}]}'
openai_body='{"model":"chat","messages":[{"role":"user","content":"hi {{i}}"}],"stream":true}'
# Warm-up.
"$loadgen" sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n 64 -c 32 >/dev/null
for i in $(seq "$RUNS"); do
  echo "== run $i"
  "$loadgen" sse --url "http://127.0.0.1:$mock_port/v1/chat/completions" --body "$direct_body" -n "$N" -c "$C" --json "$out/direct-$i.json" >/dev/null
  cpu0="$(cpu_s "$api") $(cpu_s "$llm") $(cpu_s "$nats") $(cpu_s "$mock")"
  "$loadgen" sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n "$N" -c "$C" --json "$out/xenios-$i.json" >/dev/null
  cpu1="$(cpu_s "$api") $(cpu_s "$llm") $(cpu_s "$nats") $(cpu_s "$mock")"
  python3 -c 'import json, sys; a, b = sys.argv[1].split(), sys.argv[2].split()
print(json.dumps({k: round(float(y) - float(x), 2) for k, x, y in zip(["api", "llm", "nats", "mock"], a, b)}))' \
    "$cpu0" "$cpu1" >"$out/cpu-$i.json"
  "$loadgen" sse --url "http://127.0.0.1:$api_port/v1/chat/completions" "${auth[@]}" --body "$openai_body" -n "$N" -c "$C" --json "$out/openai-$i.json" >/dev/null
  rm -f "$dir/stop"
  sample_rss "$api" "$dir/stop" >"$dir/api.rss" & s1=$!
  sample_rss "$llm" "$dir/stop" >"$dir/llm.rss" & s2=$!
  "$loadgen" sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n $((N / 2 > 256 ? N / 2 : 512)) -c 256 --json "$out/xenios256-$i.json" >/dev/null
  touch "$dir/stop"; wait "$s1" "$s2"
  echo "{\"api_rss_kib\": $(cat "$dir/api.rss"), \"llm_rss_kib\": $(cat "$dir/llm.rss")}" >"$out/rss-$i.json"
done
cleanup; pids=()
echo "== FastAPI relay baseline"
bash "$tools/bench/peers/fastapi-relay/run.sh" "$N" "$C" >"$out/fastapi-relay.txt" 2>&1 || true
python3 scripts/bench_llm_summary.py "$out" | tee "$out/summary.md"
