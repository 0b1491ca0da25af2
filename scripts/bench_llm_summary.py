#!/usr/bin/env python3
"""Medians of `make bench-llm` runs as Markdown."""
import glob
import json
import os
import statistics
import sys

out = sys.argv[1]


def med(values):
    values = [v for v in values if v is not None]
    return statistics.median(values) if values else float("nan")


def runs(prefix):
    return [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, f"{prefix}-*.json")))]


def first_json(text):
    found, i = [], 0
    while (i := text.find("{", i)) >= 0:
        try:
            value, end = json.JSONDecoder().raw_decode(text[i:])
            found.append(value)
            i += end
        except ValueError:
            i += 1
    return found


rows = [("straight to mock-llm", runs("direct")), ("xenios /api/v1/llm/stream", runs("xenios")),
        ("xenios /v1/chat/completions", runs("openai")), ("xenios /api/v1/llm/stream, 256 streams", runs("xenios256"))]
relay = os.path.join(out, "fastapi-relay.txt")
if os.path.exists(relay):
    parsed = [v for v in first_json(open(relay).read()) if v.get("mode") == "sse"]
    if len(parsed) == 2:
        rows.insert(1, ("FastAPI relay baseline (same run)", [parsed[1]]))
print(f"# make bench-llm — {os.path.basename(out)}\n")
print("200 tokens 5 ms apart per stream (mock-llm defaults); medians over runs.\n")
print("| path | C | streams/s | events/s | first token p50 / p99 ms | gap p50 / p99 ms | failures | runs |")
print("|---|---|---|---|---|---|---|---|")
for name, data in rows:
    if not data:
        continue
    print(f"| {name} | {data[0]['c']} | {med([d['streams_per_s'] for d in data]):.1f} | "
          f"{med([d['events_per_s'] for d in data]):.0f} | "
          f"{med([d['ttft']['p50_ms'] for d in data]):.2f} / {med([d['ttft']['p99_ms'] for d in data]):.2f} | "
          f"{med([d['gap']['p50_ms'] for d in data]):.2f} / {med([d['gap']['p99_ms'] for d in data]):.2f} | "
          f"{sum(d['failures'] for d in data)} | {len(data)} |")
rss = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "rss-*.json")))]
if rss:
    print(f"\nPeak RSS under 256 streams: xenios-api {med([r['api_rss_kib'] / 1024 for r in rss]):.0f} MB, "
          f"xenios-llm {med([r['llm_rss_kib'] / 1024 for r in rss]):.0f} MB.")
cpu = [json.load(open(p)) for p in sorted(glob.glob(os.path.join(out, "cpu-*.json")))]
xenios = runs("xenios")
streams = [d["streams"] for d in xenios]
if cpu and len(cpu) == len(streams):
    per = {k: med([c[k] * 1000 / n for c, n in zip(cpu, streams)]) for k in cpu[0]}
    ours = med([sum(c[k] for k in ("api", "llm", "nats")) * 1000 / n for c, n in zip(cpu, streams)])
    print(f"\nCPU per stream through `/api/v1/llm/stream` at {xenios[0]['c']} streams "
          "(ms of user + system time per 200-token stream, medians over runs): "
          f"xenios-api {per['api']:.2f}, xenios-llm {per['llm']:.2f}, nats-server {per['nats']:.2f} "
          f"(together {ours:.2f}); mock-llm, the provider itself, {per['mock']:.2f}.")
