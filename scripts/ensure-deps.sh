#!/usr/bin/env bash
# Installs what the stack and its tests need and the machine lacks (Debian packages).
# Usage: scripts/ensure-deps.sh nats|postgres|pgbouncer|python|openssl|curl ...
set -euo pipefail

need=()
for what in "$@"; do
  case "$what" in
    nats) command -v nats-server >/dev/null || [ -x /usr/sbin/nats-server ] || need+=(nats-server) ;;
    postgres) ls /usr/lib/postgresql/*/bin/initdb >/dev/null 2>&1 || need+=(postgresql) ;;
    pgbouncer) command -v pgbouncer >/dev/null || [ -x /usr/sbin/pgbouncer ] || need+=(pgbouncer) ;;
    python) python3 -m venv --help >/dev/null 2>&1 || need+=(python3-venv) ;;
    openssl) command -v openssl >/dev/null || need+=(openssl) ;;
    curl) command -v curl >/dev/null || need+=(curl) ;;
    wrk) command -v wrk >/dev/null || need+=(wrk) ;;
    *) echo "ensure-deps: unknown dependency $what" >&2; exit 2 ;;
  esac
done
[ ${#need[@]} -eq 0 ] && exit 0

sudo=""
[ "$(id -u)" -eq 0 ] || sudo="sudo"
echo "installing: ${need[*]}"
$sudo apt-get update -qq
DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
