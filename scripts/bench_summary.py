#!/usr/bin/env python3
"""Medians of `make bench` runs, side by side with the Celery baseline, as Markdown."""
import glob
import json
import os
import re
import statistics
import sys

from prom_hist import histograms, quantile

out = sys.argv[1]


def load(path):
    text = open(path).read()
    start = text.find("{")
    return json.JSONDecoder().raw_decode(text[start:])[0] if start >= 0 else None


# Result keys of `scripts/bench.sh`, and how the tables name them.
LAYOUTS = (("sqlite", "xenios (sqlite)"), ("sqlite-one", "xenios serve (sqlite, one process)"),
           ("postgres", "xenios (postgres)"))


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


rows = []
baseline_tp = []
baseline_rss = []
baseline = {"e2e_p50": [], "e2e_p99": [], "submit_p50": [], "submit_p99": []}
for path in sorted(glob.glob(os.path.join(out, "celery-*.txt"))):
    data = load(path)
    if not data:
        continue
    baseline_tp.append(data["throughput_per_s"])
    baseline["e2e_p50"].append(data["end_to_end"]["p50_ms"])
    baseline["e2e_p99"].append(data["end_to_end"]["p99_ms"])
    baseline["submit_p50"].append(data["submit"]["p50_ms"])
    baseline["submit_p99"].append(data["submit"]["p99_ms"])
    rss = [int(m.group(1)) for m in re.finditer(r"^\s+(\d+)\s", open(path).read(), re.M)]
    if rss:
        baseline_rss.append(sum(rss) / 1024)

b_tp = med(baseline_tp)
print(f"# make bench — {os.path.basename(out)}\n")
print("Medians over runs; every run side by side on this machine (2 cores), same loadgen, "
      "N and C as given. RSS = peak resident set while under load. Every commit a caller is "
      "promised on is synced as in production: SQLite `synchronous = FULL` for those, "
      "PostgreSQL with `fsync` and `synchronous_commit` on; JetStream at the nats-server's "
      "default (this machine's 2.9 has no `sync_interval: always`, which deployments set).\n")
print("| system | completion seen by | jobs/s | × baseline | submit p50 / p99 ms | "
      "end-to-end p50 / p99 ms | RSS MB (API + worker) | runs |")
print("|---|---|---|---|---|---|---|---|")
print(f"| Celery + Redis + FastAPI | polling 20 ms | {b_tp:.0f} | 1.0 | "
      f"{med(baseline['submit_p50']):.1f} / {med(baseline['submit_p99']):.1f} | "
      f"{med(baseline['e2e_p50']):.1f} / {med(baseline['e2e_p99']):.1f} | "
      f"{med(baseline_rss):.0f} (all processes) | {len(baseline_tp)} |")
for db, name in LAYOUTS:
    for mode, label in (("sse", "SSE stream"), ("poll", "polling 20 ms")):
        runs = sorted(glob.glob(os.path.join(out, f"{db}-{mode}-*.json")))
        runs = [r for r in runs if not r.endswith(".rss.json")]
        data = [json.load(open(r)) for r in runs]
        if not data:
            continue
        rss = [json.load(open(r.replace(".json", ".rss.json"))) for r in runs]
        tp = med([d["throughput_per_s"] for d in data])
        total_rss = med([(r["api_rss_kib"] + r["worker_rss_kib"]) / 1024 for r in rss])
        api_rss = med([r["api_rss_kib"] / 1024 for r in rss])
        worker_rss = med([r["worker_rss_kib"] / 1024 for r in rss])
        failures = sum(d["failures"] for d in data)
        parts = f"{api_rss:.0f} + {worker_rss:.0f}" if worker_rss else "one process"
        print(f"| {name} | {label} | {tp:.0f} | {tp / b_tp:.1f} | "
              f"{med([d['submit']['p50_ms'] for d in data]):.2f} / {med([d['submit']['p99_ms'] for d in data]):.2f} | "
              f"{med([d['end_to_end']['p50_ms'] for d in data]):.2f} / {med([d['end_to_end']['p99_ms'] for d in data]):.2f} | "
              f"{total_rss:.0f} ({parts}) | {len(data)}"
              f"{'' if failures == 0 else f', {failures} failures'} |")
print("\nCPU seconds used during the measured phase (median per run): where the time goes.\n")
print("| system | completion seen by | API | worker | nats-server | PostgreSQL server | "
      "CPU ms per job |")
print("|---|---|---|---|---|---|---|")
for db, name in LAYOUTS:
    for mode in ("sse", "poll"):
        runs = [r for r in sorted(glob.glob(os.path.join(out, f"{db}-{mode}-*.rss.json")))]
        cpu = [json.load(open(r)).get("cpu_s") for r in runs]
        cpu = [c for c in cpu if c]
        if not cpu:
            continue
        n = [json.load(open(r.replace(".rss.json", ".json")))["completed"] for r in runs]
        per_job = med([sum(c.values()) * 1000 / max(k, 1) for c, k in zip(cpu, n)])
        pg = med([c.get("postgres") for c in cpu])
        pg = "–" if pg != pg or not db.startswith("postgres") else f"{pg:.1f}"
        print(f"| {name} | {mode} | {med([c['api'] for c in cpu]):.1f} | "
              f"{med([c['worker'] for c in cpu]):.1f} | {med([c['nats'] for c in cpu]):.1f} | "
              f"{pg} | {per_job:.2f} |")
idle = [int(open(p).read().strip() or 0) / 1024 for p in glob.glob(os.path.join(out, "*-idle-rss-*.txt"))]
health = []
for path in glob.glob(os.path.join(out, "*-health-*.txt")):
    text = open(path).read()
    rps = re.search(r"Requests/sec:\s+([\d.]+)", text)
    p99 = re.search(r"^\s+99%\s+([\d.]+)(us|ms|s)", text, re.M)
    if rps and p99:
        scale = {"us": 0.001, "ms": 1, "s": 1000}[p99.group(2)]
        health.append((float(rps.group(1)), float(p99.group(1)) * scale))
if idle:
    print(f"\nIdle RSS of `xenios-api` after start: median {med(idle):.1f} MB over {len(idle)} starts.")
if health:
    print(f"`GET /health` with wrk (1 thread, 32 connections, 10 s, separate process): median "
          f"{med([h[0] for h in health]):.0f} requests/s, p99 {med([h[1] for h in health]):.2f} ms "
          f"over {len(health)} runs.")
limit = os.path.join(out, "jetstream-limit.txt")
if os.path.exists(limit):
    print("\nJetStream alone (`jetstream-limit`, same machine):\n")
    print("```")
    print(open(limit).read().strip())
    print("```")


STAGES = [
    ("submit: record the job", "api", "xenios_job_submit_stage_seconds", ("stage", "record")),
    ("submit: broker acknowledges the command", "api", "xenios_job_submit_stage_seconds", ("stage", "publish")),
    ("broker → consumer (queue wait)", "worker", "xenios_job_queue_wait_seconds", None),
    ("consumer: record the attempt's start", "worker", "xenios_job_start_seconds", None),
    ("handler run (echo)", "worker", "xenios_job_duration_seconds", None),
    ("events: stored → the API's follower", "api", "xenios_events_relay_delay_seconds", None),
]


def stage_rows(db, mode):
    """Per stage, medians over runs of its p50 and p99 during the measured phase."""
    rows = []
    for label, proc, name, selector in STAGES:
        if db.endswith("-one"):
            proc = "api"  # one process serves every histogram
        p50s, p99s = [], []
        for after in sorted(glob.glob(os.path.join(out, f"{db}-{mode}-*.{proc}.metrics"))):
            before = histograms(after.replace(".metrics", ".before.metrics"))
            for key, buckets in histograms(after).items():
                if key[0] != name or (selector and selector not in key[1]):
                    continue
                earlier = before.get(key, {})
                diff = {le: n - earlier.get(le, 0) for le, n in buckets.items()}
                p50s.append(quantile(diff, 0.5))
                p99s.append(quantile(diff, 0.99))
        if p50s:
            rows.append((label, med(p50s) * 1000, med(p99s) * 1000))
    return rows


def print_stages():
    modes = [(db, mode) for db, _ in LAYOUTS for mode in ("sse", "poll")]
    table = {key: {r[0]: r[1:] for r in stage_rows(*key)} for key in modes}
    print("\nWhere a job's time goes, from the processes' own histograms over the measured "
          "phase (p50 / p99 ms, interpolated inside the Prometheus buckets; medians over runs):\n")
    print("| stage | " + " | ".join(f"{db} {mode}" for db, mode in modes) + " |")
    print("|---|" + "---|" * len(modes))
    for label, *_ in STAGES:
        cells = []
        for key in modes:
            v = table[key].get(label)
            cells.append(f"{v[0]:.2f} / {v[1]:.2f}" if v else "–")
        print(f"| {label} | " + " | ".join(cells) + " |")


if glob.glob(os.path.join(out, "*.metrics")):
    print_stages()
