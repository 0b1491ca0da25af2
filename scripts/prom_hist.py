"""Prometheus histograms from the text exposition format, and their quantiles."""
import os
import re


def histograms(path):
    """Cumulative bucket counts per histogram series of a Prometheus text file."""
    series = {}
    if not os.path.exists(path):
        return series
    for line in open(path):
        m = re.match(r'^(\w+)_bucket\{(.*)\} (\S+)$', line.strip())
        if not m:
            continue
        labels = dict(re.findall(r'(\w+)="([^"]*)"', m.group(2)))
        le = float(labels.pop("le"))
        key = (m.group(1), tuple(sorted(labels.items())))
        series.setdefault(key, {})[le] = float(m.group(3))
    return series


def quantile(buckets, q):
    """The q-quantile of a histogram, interpolated inside its bucket (as PromQL does)."""
    bounds = sorted(buckets)
    total = buckets[bounds[-1]]
    if total <= 0:
        return None
    rank, lower, below = q * total, 0.0, 0.0
    for bound in bounds:
        if buckets[bound] >= rank:
            if bound == float("inf"):
                return lower
            inside = buckets[bound] - below
            return lower + (bound - lower) * ((rank - below) / inside if inside else 0)
        lower, below = bound, buckets[bound]
    return None
