#!/usr/bin/env bash
# Where the first token's time goes through the gateway: the setup of scripts/bench-llm.sh
# (64 streams against mock-llm), each run's stage histograms of xenios-api and xenios-llm
# taken before and after it, and the difference's quantiles (stages.py). Needs the release
# build and target/bench-tools of a `make bench-llm`. PERF=1 records a perf profile of the
# first run (api, llm, nats-server), PERF=strace counts the syscalls of api and llm.
#   N=640 C=64 RUNS=3 OUT=dir bench/results/2026-12-07-experiments/llm-stages.sh
set -euo pipefail
here=$(cd "$(dirname "$0")" && pwd)
cd "$here/../../.."
root=$PWD; tools=$root/target/bench-tools; N=${N:-640}; C=${C:-64}
loadgen=$tools/bench/loadgen/target/release/loadgen
bin=$root/target/release
source scripts/bench-common.sh
out=${OUT:-$(mktemp -d)}; mkdir -p $out
dir=$(mktemp -d)
mock_port=$(free_port); nats_port=$(free_port); api_port=$(free_port); llm_metrics=$(free_port)
"$tools/bench/mock-llm/target/release/mock-llm" "127.0.0.1:$mock_port" 2>/dev/null & mock=$!; pids+=($mock)
nats-server -a 127.0.0.1 -p "$nats_port" -js -sd "$dir/nats" >/dev/null 2>&1 & nats=$!; pids+=($nats)
export DATABASE_URL="sqlite://$dir/xenios.db" NATS_URL="nats://127.0.0.1:$nats_port" \
  XENIOS_BACKEND_API_KEY=bench-api-key-0123456789 SUPABASE_JWT_SECRET=bench-jwt-secret-0123456789abcdef \
  XENIOS_API_ADDR="127.0.0.1:$api_port" XENIOS_METRICS_ADDR="127.0.0.1:$llm_metrics" LOG_LEVEL=warn \
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
"$loadgen" sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n 64 -c 32 >/dev/null
for i in $(seq ${RUNS:-3}); do
  "$loadgen" sse --url "http://127.0.0.1:$mock_port/v1/chat/completions" --body "$direct_body" -n "$N" -c "$C" --json "$out/direct-$i.json" >/dev/null
  curl -sf "http://127.0.0.1:$api_port/metrics" > $out/api-$i.before; curl -sf "http://127.0.0.1:$llm_metrics/metrics" > $out/llm-$i.before
  if [ -n "${PERF:-}" ] && [ $i = 1 ]; then (sleep 2; if [ "$PERF" = strace ]; then timeout -s INT 5 strace -c -f -p $llm -o $out/strace-llm.txt & timeout -s INT 5 strace -c -f -p $api -o $out/strace-api.txt; wait; else perf record -g -F 999 -o $out/perf.data -p $api,$llm,$nats -- sleep 6 >/dev/null 2>&1; fi) & perfjob=$!; fi
  "$loadgen" sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n "$N" -c "$C" --json "$out/xenios-$i.json" >/dev/null
  wait $perfjob 2>/dev/null || true
  curl -sf "http://127.0.0.1:$api_port/metrics" > $out/api-$i.after; curl -sf "http://127.0.0.1:$llm_metrics/metrics" > $out/llm-$i.after
done
cleanup; pids=()
python3 "$here/stages.py" "$out"
