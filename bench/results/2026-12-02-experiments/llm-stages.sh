#!/usr/bin/env bash
# usage: llm-stages.sh <bindir> N C [RUNS]  -> per run, straight to mock-llm vs /api/v1/llm/stream:
#   streams/s, first token p50/p99, gap p50/p99 (ms). SQLite in a temp dir (DB_URL overrides),
#   API_ENV / WORKER_ENV add variables to one process; both processes' /metrics are left in
#   $LLM_DIR (default /tmp/xenios-llm-stages)/{api,llm}.metrics for the per-stage histograms.
set -u
root=$(cd "$(dirname "$0")/../../.." && pwd); here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$root/target/release}; N=${2:-320}; C=${3:-64}; RUNS=${4:-3}
tools=$root/target/bench-tools/bench
loadgen=$tools/loadgen/target/release/loadgen
dir=${LLM_DIR:-/tmp/xenios-llm-stages}; rm -rf $dir; mkdir -p $dir
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
mock_port=$(fp); apim=$(fp); wm=$(fp); nats_port=$(fp); api_port=$(fp)
$tools/mock-llm/target/release/mock-llm 127.0.0.1:$mock_port 2>/dev/null & m=$!
nats-server -a 127.0.0.1 -p $nats_port -js -sd $dir/nats >/dev/null 2>&1 & n=$!
export DATABASE_URL="${DB_URL:-sqlite://$dir/xenios.db}" NATS_URL="nats://127.0.0.1:$nats_port" \
  XENIOS_BACKEND_API_KEY=bench-api-key-0123456789 SUPABASE_JWT_SECRET=bench-jwt-secret-0123456789abcdef \
  XENIOS_API_ADDR="127.0.0.1:$api_port" XENIOS_METRICS_ADDR="127.0.0.1:$apim" LOG_LEVEL=warn \
  OPENAI_BASE_URL="http://127.0.0.1:$mock_port/v1" OPENAI_API_KEY=mock-key \
  XENIOS__LLM__TASKS__CHAT__CANDIDATES="openai:mock" XENIOS__RATE_LIMIT__ENABLED=false \
  XENIOS__JOBS__LLM__CONCURRENCY=300 XENIOS__CONSUMER__SERVE_ECHO=false
sleep 0.4
$bin/xenios migrate --config /dev/null >/dev/null
env ${API_ENV:-} $bin/xenios-api --config /dev/null >$dir/api.log 2>&1 & a=$!
env XENIOS_METRICS_ADDR=127.0.0.1:$wm ${WORKER_ENV:-} $bin/xenios-llm --config /dev/null >$dir/llm.log 2>&1 & l=$!
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$api_port/health/ready" >/dev/null && break; sleep 0.1; done
token=$($bin/xenios token --config /dev/null --user 00000000-0000-4000-8000-0000000000b2)
auth=(-H "X-API-Key: bench-api-key-0123456789" -H "Authorization: Bearer $token")
direct_body='{"model":"mock","messages":[{"role":"user","content":"hi {{i}}"}],"stream":true}'
api_body='{"task":"chat","messages":[{"role":"user","content":"hi {{i}}"}]}'
$loadgen sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n 64 -c 32 >/dev/null
show() { python3 -c '
import json, sys
d = json.load(open(sys.argv[1])); t = d["ttft"]; g = d["gap"]
print("%-7s streams/s %6.1f ttft %6.2f/%6.2f gap %5.2f/%6.2f fail %d" % (sys.argv[2],
      d["streams_per_s"], t["p50_ms"], t["p99_ms"], g["p50_ms"], g["p99_ms"], d["failures"]))' "$1" "$2"; }
for i in $(seq $RUNS); do
  $loadgen sse --url "http://127.0.0.1:$mock_port/v1/chat/completions" ${MOCK_HDR:-} --body "$direct_body" -n $N -c $C --json $dir/d.json >/dev/null; show $dir/d.json direct
  $loadgen sse --url "http://127.0.0.1:$api_port/api/v1/llm/stream" "${auth[@]}" --body "$api_body" -n $N -c $C --json $dir/x.json >/dev/null; show $dir/x.json xenios
done
curl -s "http://127.0.0.1:$api_port/metrics" > $dir/api.metrics; curl -s 127.0.0.1:$wm/metrics > $dir/llm.metrics
kill $a $l $m $n 2>/dev/null; wait 2>/dev/null
