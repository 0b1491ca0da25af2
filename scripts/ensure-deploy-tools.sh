#!/usr/bin/env bash
# The tools scripts/check-deploy.sh needs, fetched when missing, none of them installed into
# the system and no service started:
# - .venv-deploy: ansible-core, ansible-lint, nats-server >= 2.10, compose-spec
#   (scripts/deploy-requirements.txt);
# - target/deploy-tools/bin: caddy and promtool unpacked from Debian's packages;
# - nft and systemd-analyze (Debian's nftables and systemd) to check rendered host files.
# Usage: scripts/ensure-deploy-tools.sh
set -euo pipefail
cd "$(dirname "$0")/.."

venv=.venv-deploy
stamp="$venv/.requirements"
if ! cmp -s scripts/deploy-requirements.txt "$stamp"; then
  echo "ensure-deploy-tools: installing scripts/deploy-requirements.txt into $venv" >&2
  python3 -m venv "$venv"
  "$venv/bin/python" -m pip install --quiet --disable-pip-version-check -r scripts/deploy-requirements.txt
  cp scripts/deploy-requirements.txt "$stamp"
fi

need=()
command -v nft >/dev/null || need+=(nftables)
command -v systemd-analyze >/dev/null || need+=(systemd)
if [ ${#need[@]} -gt 0 ]; then
  sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
  echo "ensure-deploy-tools: installing ${need[*]}" >&2
  $sudo apt-get update -qq
  DEBIAN_FRONTEND=noninteractive $sudo apt-get install -y -qq --no-install-recommends "${need[@]}"
fi

tools=target/deploy-tools
if ! [ -x "$tools/bin/caddy" ] || ! [ -x "$tools/bin/promtool" ]; then
  echo "ensure-deploy-tools: unpacking caddy and promtool from Debian's packages" >&2
  rm -rf "$tools/debs" "$tools/root"
  mkdir -p "$tools/debs" "$tools/bin"
  fetch() { (cd "$tools/debs" && apt-get download -qq caddy prometheus 2>/dev/null); }
  if ! fetch; then
    sudo=""; [ "$(id -u)" -eq 0 ] || sudo="sudo"
    $sudo apt-get update -qq
    fetch
  fi
  for deb in "$tools"/debs/*.deb; do dpkg-deb -x "$deb" "$tools/root"; done
  ln -sf ../root/usr/bin/caddy "$tools/bin/caddy"
  ln -sf ../root/usr/bin/promtool "$tools/bin/promtool"
fi
