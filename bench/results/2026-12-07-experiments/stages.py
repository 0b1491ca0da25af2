"""Quantiles of the stage histograms a run added (llm-stages.sh), and loadgen's figures."""
import sys, json, glob, os, importlib.util, re
out = sys.argv[1]
import statistics
def histograms(path):
    series = {}
    for line in open(path):
        m = re.match(r'^(\w+)_bucket\{(.*)\} (\S+)$', line.strip())
        if not m: continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        le = float(labels.pop("le"))
        series.setdefault((m.group(1), tuple(sorted(labels.items()))), {})[le] = float(m.group(3))
    return series
def quantile(b, q):
    bounds = sorted(b); total = b[bounds[-1]]
    if total <= 0: return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if b[bound] >= rank:
            if bound == float("inf"): return lower
            inside = b[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0)
        lower, below = bound, b[bound]
rows = {}
for after in sorted(glob.glob(f"{out}/*.after")):
    before = histograms(after.replace(".after", ".before"))
    for key, b in histograms(after).items():
        e = before.get(key, {})
        d = {le: n - e.get(le, 0) for le, n in b.items()}
        if d[max(d)] <= 0: continue
        name = key[0] + str(dict(key[1]))
        rows.setdefault(name, []).append((quantile(d, .5)*1000, quantile(d, .99)*1000, d[max(d)]))
for name, v in sorted(rows.items()):
    print(f"{name}: p50 {statistics.median(x[0] for x in v):.2f} p99 {statistics.median(x[1] for x in v):.2f} n {v[0][2]:.0f}")
for kind in ("direct", "xenios"):
    t = [json.load(open(f)) for f in sorted(glob.glob(f"{out}/{kind}-*.json"))]
    print(kind, [ (x.get("ttft",{}).get("p50_ms"), x.get("ttft",{}).get("p99_ms"), x.get("gap",{}).get("p99_ms")) for x in t])
