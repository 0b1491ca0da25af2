#!/usr/bin/env bash
# load.sh N C sse|poll -> loadgen JSON on stdout, against the stack ab.sh started (its env file)
root=$(cd "$(dirname "$0")/../../.." && pwd)
dir=${AB_DIR:-/tmp/xenios-ab}
. "$dir/env"
lg=$root/target/bench-tools/bench/loadgen/target/release/loadgen
common=(--url "$base/jobs" -H "X-API-Key: bench-api-key-0123456789" -H "Authorization: Bearer $token" --body '{"kind":"echo","input":{"message":"hello {{i}}"}}' -n "$1" -c "$2")
if [ "$3" = sse ]; then $lg jobs "${common[@]}" --sse-url "$base/jobs/{id}/events" --json "$dir/lg.json" >/dev/null
else $lg jobs "${common[@]}" --status-url "$base/jobs/{id}" --poll-ms 20 --json "$dir/lg.json" >/dev/null; fi
cat "$dir/lg.json"
