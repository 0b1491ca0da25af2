#!/usr/bin/env python3
"""Checks of compose/, Caddyfile.tmpl and the Prometheus/Grafana files that need no Docker
engine and no real hosts (scripts/check-deploy.sh runs them with the tools they need).

  check_deploy.py static                       the compose files parsed as Docker Compose
                                                does, their rules, the Dockerfile, alerts and
                                                dashboard
  check_deploy.py env dev|prod <out-file>      the environment compose gives the Xenios
                                                services, as an env file (to load it for real)
  check_deploy.py caddyfile <out> <site> <upstream>...   render Caddyfile.tmpl as Ansible does
  check_deploy.py caddy-live <caddy-url> <api-url> <api-key> <jwt>
                                                what Caddy lets through, and SSE unbuffered
"""
import json
import pathlib
import re
import sys
import time
import urllib.error
import urllib.request

import jinja2
import yaml
from compose_spec import PyCompose

ROOT = pathlib.Path(__file__).resolve().parent.parent
COMPOSE = ROOT / "compose"
XENIOS_SERVICES = ("setup", "api", "llm", "extractor", "transcriber")
LONG_RUNNING = ("nats", "postgres", "api", "llm", "extractor", "transcriber", "prometheus", "grafana")
CONSUMER_GRACE_S = 25  # consumer.shutdown_grace_secs default

failures = []


def fail(msg):
    failures.append(msg)
    print(f"FAIL {msg}")


def ok(msg, since=None):
    """Reports `msg` as passed unless a failure was recorded after `since`."""
    if since is None or len(failures) == since:
        print(f"ok   {msg}")


def load_yaml(path):
    return yaml.safe_load(path.read_text())


def spec_env_names():
    """The environment names the configuration loader reads (SPEC §2)."""
    src = (ROOT / "libs/xenios-config/src/load.rs").read_text()
    block = src[src.index("const LEGACY_ENV"):]
    block = block[: block.index("];")]
    return set(re.findall(r'\(\s*"([A-Z_]+)",\s*"', block)) | {"LOG_LEVEL", "RUST_LOG", "XENIOS_CONFIG"}


def bin_names():
    cargo = (ROOT / "Cargo.toml").read_text()
    return re.findall(r'\[\[bin\]\]\s*name = "([^"]+)"', cargo)


def merge(base, over):
    """Compose's merge of an override file, for what these files use: mappings merge,
    `ports` and `volumes` merge by container target, other values are replaced."""
    out = dict(base)
    for key, value in over.items():
        if key in out and isinstance(out[key], dict) and isinstance(value, dict):
            out[key] = merge(out[key], value)
        elif key in ("ports", "volumes") and key in out:
            target = lambda item: str(item).rsplit(":", 1)[-1] if key == "ports" else str(item).split(":")[1]
            kept = [item for item in out[key] if target(item) not in {target(v) for v in value}]
            out[key] = kept + list(value)
        else:
            out[key] = value
    return out


def interpolate(text, env):
    """`${VAR}`, `${VAR:-default}` and `${VAR:?message}`, nested, as compose does."""
    pattern = re.compile(r"\$\{([A-Z_][A-Z0-9_]*)(?:(:-|:\?)((?:[^{}]|\$\{[^{}]*\})*))?\}")
    while True:
        def one(m):
            name, op, arg = m.group(1), m.group(2), m.group(3) or ""
            value = env.get(name, "")
            if value:
                return value
            if op == ":?":
                raise KeyError(f"{name}: {arg}")
            return arg if op == ":-" else ""
        new = pattern.sub(one, text)
        if new == text:
            return new
        text = new


def compose_files(env):
    base = yaml.safe_load(interpolate((COMPOSE / "docker-compose.yml").read_text(), env))
    prod = yaml.safe_load(interpolate((COMPOSE / "docker-compose.prod.yml").read_text(), env))
    return base, prod


def compose_parses(label, doc):
    """The compose_spec library (Rust, typed, rejects unknown keys and malformed values) on
    what Docker Compose itself would see: YAML anchors and merge keys resolved, variables
    interpolated."""
    try:
        PyCompose.from_json(json.dumps(doc)).validate()
        ok(f"{label} parses as a Compose file")
    except ValueError as e:
        fail(f"{label}: {e}")


def check_static():
    mark = len(failures)
    prod_env = {"NATS_PASSWORD": "n", "XENIOS_BACKEND_API_KEY": "k" * 16, "POSTGRES_PASSWORD": "p",
                "GRAFANA_ADMIN_PASSWORD": "g"}
    try:
        compose_files({})
        fail("docker-compose.prod.yml starts without its secrets")
    except KeyError as e:
        ok(f"docker-compose.prod.yml refuses to start without its secrets ({e})")
    base, prod = compose_files(prod_env)
    merged = {name: merge(base["services"][name], prod["services"].get(name, {})) for name in base["services"]}
    compose_parses("docker-compose.yml", base)
    compose_parses("docker-compose.prod.yml", prod)
    compose_parses("docker-compose.yml + docker-compose.prod.yml", {**base, "services": merged})

    bins = set(bin_names())
    for name in XENIOS_SERVICES:
        command = base["services"][name]["command"]
        used = command[2].split() if command[:2] == ["sh", "-c"] else command[:1]
        for word in used:
            if word.startswith("xenios") and word not in bins:
                fail(f"service {name} runs {word}, which Cargo.toml does not build")
    ok("every service runs a binary that Cargo.toml builds", mark)
    mark = len(failures)

    known = spec_env_names()
    for name in XENIOS_SERVICES:
        for var in merged[name]["environment"]:
            if var not in known and not var.startswith("XENIOS__"):
                fail(f"service {name} sets {var}, which the configuration does not read")
    ok("the Xenios services set only environment names the configuration reads", mark)
    mark = len(failures)

    for file_name, doc in (("docker-compose.yml", base), ("docker-compose.prod.yml", prod)):
        for name, service in doc["services"].items():
            for port in service.get("ports", []):
                if not str(port).startswith("127.0.0.1:"):
                    fail(f"{file_name}: {name} publishes {port} beyond 127.0.0.1")
    ok("every published port is on 127.0.0.1", mark)
    mark = len(failures)

    for name in LONG_RUNNING:
        service = merged[name]
        if service.get("restart") != "unless-stopped":
            fail(f"production: {name} has restart {service.get('restart')!r}")
        limits = service.get("deploy", {}).get("resources", {}).get("limits", {})
        if not {"cpus", "memory"} <= limits.keys():
            fail(f"production: {name} has no cpu and memory limits")
    if merged["setup"].get("restart") != "no":
        fail("production: the one-shot setup service would restart")
    ok("production: every long-running service restarts unless stopped and has limits", mark)
    mark = len(failures)

    nats_store = [v for v in merged["nats"]["volumes"] if str(v).endswith(":/data")]
    if len(nats_store) != 1 or not str(nats_store[0]).startswith("/"):
        fail(f"production: the NATS store is not a host directory: {nats_store}")
    if "nats.prod.conf" not in " ".join(merged["nats"]["command"]):
        fail("production: nats does not run nats.prod.conf")
    ok("production: NATS asks for a password and keeps its store in a host directory", mark)
    mark = len(failures)

    for name in ("llm", "extractor", "transcriber", "api"):
        grace = merged[name].get("stop_grace_period", "10s")
        if int(grace.rstrip("s")) < CONSUMER_GRACE_S + 5:
            fail(f"{name}: stop_grace_period {grace} cuts the drain short")
    ok("compose waits out the consumers' drain before SIGKILL", mark)
    mark = len(failures)

    dockerfile = (COMPOSE / "Dockerfile").read_text()
    stages = re.findall(r"^FROM\s", dockerfile, re.M)
    last_stage = dockerfile[dockerfile.rindex("\nFROM "):]
    users = re.findall(r"^USER\s+(\S+)", last_stage, re.M)
    if len(stages) < 2:
        fail("Dockerfile is not multi-stage")
    if not users or users[-1].split(":")[0] in ("root", "0"):
        fail("Dockerfile's final stage runs as root")
    for b in bins:
        if f"target/release/{b} " not in dockerfile and f"target/release/{b}\n" not in dockerfile \
                and not re.search(rf"target/release/{re.escape(b)}(\s|\\)", dockerfile):
            fail(f"Dockerfile does not ship {b}")
    ok("Dockerfile: multi-stage, non-root, ships every binary", mark)
    mark = len(failures)

    prom = load_yaml(COMPOSE / "prometheus/prometheus.yml")
    ports = {"api": 8000, "llm": 9100, "extractor": 9100, "transcriber": 9100}
    for job in prom["scrape_configs"]:
        for sc in job["static_configs"]:
            for target in sc["targets"]:
                host, port = target.split(":")
                if ports.get(host) != int(port):
                    fail(f"prometheus scrapes {target}, which is no Xenios service's metrics port")
    scraped = {t.split(":")[0] for j in prom["scrape_configs"] for s in j["static_configs"] for t in s["targets"]}
    if scraped != set(ports):
        fail(f"prometheus scrapes {sorted(scraped)}, not every Xenios service")
    ok("prometheus scrapes every Xenios service on its metrics port", mark)
    mark = len(failures)

    sources = "\n".join(p.read_text() for p in (ROOT / "libs").rglob("*.rs"))
    defined = set(re.findall(r'"(xenios_[a-z_]+)"', sources))
    exprs = [r["expr"] for g in load_yaml(COMPOSE / "prometheus/alerts.yml")["groups"] for r in g["rules"]]
    dashboard = json.loads((COMPOSE / "grafana/dashboards/xenios.json").read_text())
    exprs += [t["expr"] for p in dashboard["panels"] for t in p["targets"]]
    for expr in exprs:
        for metric in re.findall(r"\b(xenios_[a-z_]+)", expr):
            name = re.sub(r"_(bucket|sum|count)$", "", metric)
            if name not in defined:
                fail(f"alert or dashboard uses {metric}, which no process exports")
    ok(f"alerts and dashboard use only exported metrics ({len(exprs)} expressions)", mark)
    mark = len(failures)

    mounted = {str(v).split(":")[1] for v in base["services"]["grafana"]["volumes"]}
    provider = load_yaml(COMPOSE / "grafana/provisioning/dashboards/xenios.yml")
    if provider["providers"][0]["options"]["path"] not in mounted:
        fail("grafana's dashboard provider reads a directory compose does not mount")
    ok("grafana provisioning matches its mounts", mark)


def write_env(mode, out):
    env = {}
    if mode == "prod":
        env = {"NATS_PASSWORD": "nats-secret", "XENIOS_BACKEND_API_KEY": "prod-api-key-0123456789",
               "POSTGRES_PASSWORD": "pg-secret", "GRAFANA_ADMIN_PASSWORD": "g"}
    base = yaml.safe_load(interpolate((COMPOSE / "docker-compose.yml").read_text(), env))
    service = base["services"]["api"]
    if mode == "prod":
        service = merge(service, compose_files(env)[1]["services"]["api"])
    lines = [f"{k}={'' if v is None else v}" for k, v in service["environment"].items()]
    pathlib.Path(out).write_text("\n".join(lines) + "\n")


def render_caddyfile(out, site, upstreams):
    # Ansible's template module renders with trim_blocks.
    env = jinja2.Environment(undefined=jinja2.StrictUndefined, trim_blocks=True)
    text = env.from_string((ROOT / "Caddyfile.tmpl").read_text()).render(
        caddy_site_address=site, caddy_api_upstreams=upstreams, caddy_acme_email="ops@example.com")
    pathlib.Path(out).write_text(text)


def caddy_live(caddy, api, key, jwt):
    mark = len(failures)
    def get(url, headers=None):
        req = urllib.request.Request(url, headers=headers or {})
        try:
            with urllib.request.urlopen(req, timeout=10) as r:
                return r.status, dict(r.headers), r.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    status, headers, _ = get(f"{caddy}/health")
    if status != 200:
        fail(f"GET /health through Caddy: {status}")
    for h in ("Strict-Transport-Security", "X-Content-Type-Options", "X-Frame-Options",
              "Referrer-Policy", "Content-Security-Policy", "X-Correlation-Id"):
        if h.lower() not in {k.lower() for k in headers}:
            fail(f"Caddy's answer lacks {h}")
    if "server" in {k.lower() for k in headers}:
        fail("Caddy's answer names its server")
    ok("Caddy passes /health with the security headers and the correlation id", mark)
    mark = len(failures)

    for path in ("/metrics", "/docs"):
        direct, _, _ = get(f"{api}{path}")
        proxied, _, _ = get(f"{caddy}{path}")
        if proxied != 404 or direct != 200:
            fail(f"{path}: {direct} from the API, {proxied} through Caddy (want 200, 404)")
    ok("/metrics and /docs answer on the API but not through Caddy", mark)
    mark = len(failures)

    auth = {"X-API-Key": key, "Authorization": f"Bearer {jwt}", "Content-Type": "application/json"}
    body = json.dumps({"kind": "echo", "input": {"message": "via caddy", "progress_steps": 4,
                                                  "delay_ms": 4000}}).encode()
    req = urllib.request.Request(f"{caddy}/api/v1/jobs", data=body, headers=auth, method="POST")
    with urllib.request.urlopen(req, timeout=10) as r:
        job = json.loads(r.read())
    events_url = f"{caddy}/api/v1/jobs/{job['job_id']}/events"
    arrivals = []
    # The job takes 4 s; keep-alives would hold a stream that never ends open for good.
    deadline = time.monotonic() + 30
    with urllib.request.urlopen(urllib.request.Request(events_url, headers=auth), timeout=30) as r:
        for raw in r:
            line = raw.decode().rstrip("\n")
            if line.startswith("event:"):
                arrivals.append((time.monotonic(), line.split(":", 1)[1].strip()))
            if time.monotonic() > deadline:
                fail("the job's event stream through Caddy did not end within 30 s")
                return
    kinds = [k for _, k in arrivals]
    if "progress" not in kinds or kinds[-1] != "status":
        fail(f"events through Caddy: {kinds}")
    # The job takes 4 s in 4 steps: through a buffering proxy every event would arrive at the
    # end, together; unbuffered, the first progress comes seconds before the last event.
    first_progress = next(t for t, k in arrivals if k == "progress")
    spread = arrivals[-1][0] - first_progress
    if spread < 2.0:
        fail(f"SSE through Caddy arrived in one lump ({spread:.2f} s from first progress to end)")
    ok(f"SSE through Caddy streams as it happens ({len(arrivals)} events over {spread:.1f} s)", mark)


def main():
    cmd, args = sys.argv[1], sys.argv[2:]
    if cmd == "static":
        check_static()
    elif cmd == "env":
        write_env(args[0], args[1])
    elif cmd == "caddyfile":
        render_caddyfile(args[0], args[1], args[2:])
    elif cmd == "caddy-live":
        caddy_live(*args)
    else:
        sys.exit(f"unknown command {cmd}")
    if failures:
        sys.exit(f"{len(failures)} check(s) failed")


if __name__ == "__main__":
    main()
