#!/usr/bin/env bash
# usage: API_ENV="K=V" WORKER_ENV="K=V" [LAYOUT=one] [DB_URL=postgres://…] ab.sh <bindir> [mode]
#   -> one line of figures
# LAYOUT=one runs `xenios dev` (API and consumers in one process, its own nats-server) instead
# of `xenios-api` + `xenios worker`; the "worker" figures are then zero.
root=$(cd "$(dirname "$0")/../../.." && pwd); here=$(cd "$(dirname "$0")" && pwd)
bin=${1:-$root/target/release}; mode=${2:-sse}
dir=${AB_DIR:-/tmp/xenios-ab}; rm -rf $dir; mkdir -p $dir
fp() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1",0)); print(s.getsockname()[1])'; }
port=$(fp); api_port=$(fp); mport=$(fp); mport2=$(fp)
[ "${LAYOUT:-two}" = one ] || { nats-server -a 127.0.0.1 -p $port -js -sd $dir/nats >$dir/nats.log 2>&1 & echo $! > $dir/nats.pid; }
export DATABASE_URL=${DB_URL:-sqlite://$dir/xenios.db} NATS_URL=nats://127.0.0.1:$port XENIOS_BACKEND_API_KEY=bench-api-key-0123456789 \
  SUPABASE_JWT_SECRET=bench-jwt-secret-0123456789abcdef XENIOS_API_ADDR=127.0.0.1:$api_port \
  XENIOS_METRICS_ADDR=127.0.0.1:$mport LOG_LEVEL=warn XENIOS__RATE_LIMIT__ENABLED=false XENIOS__DATABASE__MAX_CONNECTIONS=16
sleep 0.4
if [ "${LAYOUT:-two}" = one ]; then
  env $API_ENV $bin/xenios dev --nats-dir $dir/nats --config /dev/null >$dir/api.log 2>&1 & echo $! > $dir/api.pid
  sleep 0.5; pgrep -P $(cat $dir/api.pid) nats-server > $dir/nats.pid; : > $dir/worker.pid
else
  $bin/xenios migrate --config /dev/null >/dev/null
  env $API_ENV $bin/xenios-api --config /dev/null >$dir/api.log 2>&1 & echo $! > $dir/api.pid
  env XENIOS_METRICS_ADDR=127.0.0.1:$mport2 $WORKER_ENV $bin/xenios worker --kind echo --config /dev/null >$dir/worker.log 2>&1 & echo $! > $dir/worker.pid
fi
for _ in $(seq 200); do curl -sf "http://127.0.0.1:$api_port/health/ready" >/dev/null && break; sleep 0.1; done
token=$($bin/xenios token --config /dev/null --user 00000000-0000-4000-8000-0000000000b1)
printf 'base=http://127.0.0.1:%s/api/v1\ntoken=%s\n' $api_port "$token" > $dir/env
"$here/load.sh" 200 32 $mode >/dev/null
cpu() { if [ -n "$1" ]; then awk '{printf "%.2f ", ($14 + $15) / 100}' /proc/$1/stat; else printf '0 '; fi; }
hwm() { if [ -n "$1" ]; then awk '/^VmHWM/{print $2}' /proc/$1/status; else echo 0; fi; }
A=$(cat $dir/api.pid) W=$(cat $dir/worker.pid) N=$(cat $dir/nats.pid)
# A PostgreSQL server's CPU: its postmaster and backends together (the pools keep theirs open).
pg_port=$(python3 -c 'import sys, urllib.parse; u=urllib.parse.urlparse(sys.argv[1]); print(u.port if u.scheme.startswith("postgres") else "")' "$DATABASE_URL")
pgcpu() { [ -n "$pg_port" ] || { printf '0 '; return; }
  local pm t=0; pm=$(pgrep -f -- "postgres -D .* -p $pg_port " | head -1)
  for p in $pm $(pgrep -P $pm); do t=$(awk -v t=$t '{printf "%.2f", t + ($14 + $15) / 100}' /proc/$p/stat 2>/dev/null || echo $t); done
  printf '%s ' $t; }
c0="$(cpu $A)$(cpu $W)$(cpu $N)$(pgcpu)"
"$here/load.sh" ${NJOBS:-3000} 32 $mode > $dir/out.json
c1="$(cpu $A)$(cpu $W)$(cpu $N)$(pgcpu)"
rss="$(hwm $A) $(hwm $W)"
python3 - "$dir/out.json" "$c0" "$c1" "$rss" <<'P'
import json,sys
d=json.load(open(sys.argv[1])); a=[float(x) for x in sys.argv[2].split()]; b=[float(x) for x in sys.argv[3].split()]
n=d['completed']; c=[round((y-x)*1000/n,3) for x,y in zip(a,b)]
r=[int(x)//1024 for x in sys.argv[4].split()]
print(f"jobs/s {d['throughput_per_s']:.0f} submit {d['submit']['p50_ms']:.1f}/{d['submit']['p99_ms']:.1f} e2e {d['end_to_end']['p50_ms']:.1f}/{d['end_to_end']['p99_ms']:.1f} cpu_ms/job api {c[0]} worker {c[1]} nats {c[2]} pg {c[3]} sum {sum(c):.3f} hwm {r}")
P
curl -s "http://127.0.0.1:$api_port/metrics" > $dir/api.metrics
[ "${LAYOUT:-two}" = one ] || curl -s "http://127.0.0.1:$mport2/metrics" > $dir/worker.metrics
for p in api nats; do kill $(cat $dir/$p.pid) 2>/dev/null; done
[ "${LAYOUT:-two}" = one ] || kill $(cat $dir/worker.pid) 2>/dev/null; sleep 0.5
