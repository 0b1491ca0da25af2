#!/usr/bin/env bash
# Checks the deployment files (SPEC §7) as far as this machine can without a Docker engine
# or real hosts: compose/ parsed as Compose does and held to its rules, the configuration it
# gives the services loaded by the real binary, the NATS configurations by a nats-server that
# knows them, Prometheus' configuration and alert unit tests by promtool, Caddyfile.tmpl
# validated by Caddy and then run in front of a real API, and ansible/ (ansible/tests/check.sh:
# lint, syntax, every host's files rendered and checked by nats-server, nft, systemd-analyze
# and caddy, and the release/rollback steps run for real in a temp dir).
# Needs target/debug/xenios (cargo build).
# Usage: scripts/check-deploy.sh
set -euo pipefail
cd "$(dirname "$0")/.."
root=$PWD

scripts/ensure-deploy-tools.sh
venv=$root/.venv-deploy
tools=$root/target/deploy-tools/bin
xenios=$root/target/debug/xenios
[ -x "$xenios" ] || { echo "check-deploy: build first: cargo build --bin xenios" >&2; exit 2; }

tmp=$(mktemp -d)
pids=()
cleanup() {
  for pid in "${pids[@]}"; do kill "$pid" 2>/dev/null || true; done
  wait 2>/dev/null || true
  rm -rf "$tmp"
}
trap cleanup EXIT
free_port() { python3 -c 'import socket; s=socket.socket(); s.bind(("127.0.0.1", 0)); print(s.getsockname()[1])'; }
step() { echo "== $*"; }

step "compose/: the files, their rules, the Dockerfile, Prometheus targets, alerts and dashboard"
"$venv/bin/python" scripts/check_deploy.py static

step "compose/: the configuration the services get, loaded by xenios config show"
for mode in dev prod; do
  "$venv/bin/python" scripts/check_deploy.py env "$mode" "$tmp/$mode.env"
  if ! env -i PATH="$PATH" $(cat "$tmp/$mode.env") "$xenios" config show >"$tmp/$mode.shown" 2>&1; then
    cat "$tmp/$mode.shown"; echo "FAIL the $mode compose environment is refused"; exit 1
  fi
  echo "ok   the $mode compose environment is accepted"
done

step "compose/nats: nats-server -t"
NATS_PASSWORD=check "$venv/bin/nats-server" -t -c compose/nats/nats.conf
NATS_PASSWORD=check "$venv/bin/nats-server" -t -c compose/nats/nats.prod.conf

step "compose/prometheus: promtool"
"$tools/promtool" check config compose/prometheus/prometheus.yml
(cd compose/prometheus && "$tools/promtool" test rules alerts.test.yml)

step "Caddyfile.tmpl: caddy validate"
export HOME=$tmp/home XDG_DATA_HOME=$tmp/caddy-data XDG_CONFIG_HOME=$tmp/caddy-config
export CADDY_ADMIN=127.0.0.1:$(free_port)
"$venv/bin/python" scripts/check_deploy.py caddyfile "$tmp/Caddyfile.tls" api.xenios.example 10.0.0.11:8000 10.0.0.12:8000
"$tools/caddy" validate --adapter caddyfile --config "$tmp/Caddyfile.tls" 2>&1 | tail -1

step "Caddyfile.tmpl: Caddy in front of a running API"
api_port=$(free_port); caddy_port=$(free_port)
(cd "$tmp" && exec env DATABASE_URL="sqlite://$tmp/xenios.db" XENIOS_API_ADDR="127.0.0.1:$api_port" \
  XENIOS_METRICS_ADDR="127.0.0.1:$(free_port)" LOG_LEVEL=warn \
  "$xenios" dev --nats-dir "$tmp/nats" >"$tmp/dev.log" 2>&1) &
pids+=($!)
for _ in $(seq 1 150); do
  curl -fsS "http://127.0.0.1:$api_port/health/ready" >/dev/null 2>&1 && break
  sleep 0.2
done
curl -fsS "http://127.0.0.1:$api_port/health/ready" >/dev/null || { cat "$tmp/dev.log"; exit 1; }
key=$(sed -n "s/^  export XENIOS_KEY='\(.*\)'$/\1/p" "$tmp/dev.log")
jwt=$(sed -n "s/^  export XENIOS_JWT='\(.*\)'$/\1/p" "$tmp/dev.log")
"$venv/bin/python" scripts/check_deploy.py caddyfile "$tmp/Caddyfile" "http://127.0.0.1:$caddy_port" "127.0.0.1:$api_port"
"$tools/caddy" run --adapter caddyfile --config "$tmp/Caddyfile" >"$tmp/caddy.log" 2>&1 &
pids+=($!)
for _ in $(seq 1 50); do
  curl -fsS "http://127.0.0.1:$caddy_port/health" >/dev/null 2>&1 && break
  sleep 0.2
done
"$venv/bin/python" scripts/check_deploy.py caddy-live "http://127.0.0.1:$caddy_port" \
  "http://127.0.0.1:$api_port" "$key" "$jwt" || { tail -20 "$tmp/caddy.log"; exit 1; }

step "ansible/: lint, syntax, every host's files rendered and validated, releases and rollback"
PATH="$tools:$PATH" DEPLOY_VENV=$venv XENIOS_BIN=$xenios ansible/tests/check.sh

echo "check-deploy: all passed"
