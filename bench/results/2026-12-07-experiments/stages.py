"""p50 / p99 (ms) and count of every histogram in Prometheus text files (the stages of
llm-stages.sh), interpolated inside the buckets as `make bench`'s summary does."""
import os
import sys

sys.path.insert(0, os.path.join(os.path.dirname(os.path.abspath(__file__)), "../../../scripts"))
from prom_hist import histograms, quantile  # noqa: E402

for path in sys.argv[1:]:
    for (name, labels), buckets in sorted(histograms(path).items()):
        if buckets[max(buckets)] > 0:
            print(f"{name}{dict(labels)}: p50 {quantile(buckets, .5) * 1000:.2f} "
                  f"p99 {quantile(buckets, .99) * 1000:.2f} n {buckets[max(buckets)]:.0f}")
