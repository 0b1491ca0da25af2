#!/usr/bin/env bash
# Where the first token's time goes through the gateway: 2026-12-02's llm-stages.sh (the setup
# of `make bench-llm`: 64 streams against mock-llm, straight and through /api/v1/llm/stream),
# then the quantiles of the stage histograms both processes kept over its runs (stages.py).
# Needs the release build and target/bench-tools of a `make bench-llm`.
#   bench/results/2026-12-07-experiments/llm-stages.sh [bindir] [N] [C] [RUNS]
set -u
here=$(cd "$(dirname "$0")" && pwd)
export LLM_DIR=${LLM_DIR:-/tmp/xenios-llm-stages}
bash "$here/../2026-12-02-experiments/llm-stages.sh" "$@"
python3 "$here/stages.py" "$LLM_DIR"/api.metrics "$LLM_DIR"/llm.metrics
