#!/usr/bin/env bash
# `make function-order`: regenerate bins/function-order.txt, the order in which release builds
# lay out the binaries' functions (build.rs hands the file to the linker). About 25 minutes.
#
# Why: a process's resident set counts each page of its binary's code that it has run, and the
# kernel maps code in 64 KiB runs around each page it faults in. In the compiler's order the
# few thousand functions a service runs lie spread over 15–20 MB of code, so most of that
# becomes resident; listed first, they fill a few megabytes.
#
# How: build the binaries with every function calling `mcount` on entry (RUSTC_BOOTSTRAP lets
# this stable compiler take -Z instrument-mcount; legacy mangling, as release builds use), run
# the benchmarks' workloads (echo jobs over SSE and polled, SQLite and PostgreSQL, API and
# worker apart and in one process, LLM streams through mock-llm) with a preloaded mcount that
# records each function once, then list them, grouped by the kinds of process that ran them.
#
# Regenerate after dependency updates or large changes: a function missing from the file is
# not wrong, only placed among the cold code. `make bench` reports how much of the list the
# binaries it measured still hold.
set -euo pipefail
root=$(cd "$(dirname "$0")/.." && pwd)
cd "$root"
work=$root/target/function-order
experiments=$root/bench/results/2026-12-02-experiments
mkdir -p "$work"
scripts/ensure-deps.sh nats postgres python
[ -d target/bench-tools/bench ] || { mkdir -p target/bench-tools; cp -r ../shared/bench target/bench-tools/bench; }
(cd target/bench-tools/bench/loadgen && cargo build --release -q)
(cd target/bench-tools/bench/mock-llm && cargo build --release -q)
cargo build -q -p xenios-devstack --bin with-postgres

# The release profile unchanged: symbol names (their hashes) depend on it, not on RUSTFLAGS,
# so the names recorded are the release build's.
CARGO_TARGET_DIR=$work/target RUSTC_BOOTSTRAP=1 CFLAGS=-pg \
  RUSTFLAGS="-Z instrument-mcount -C force-frame-pointers=yes -Z unstable-options -C symbol-mangling-version=legacy" \
  cargo build --release -q --bin xenios --bin xenios-api
# The recording must not touch vector registers: they may hold the function's arguments.
cc -O2 -mgeneral-regs-only -fPIC -shared -o "$work/libmcount.so" scripts/function-order/mcount.c

instrumented=$work/bin
rm -rf "$instrumented" "$work/pcs"
mkdir -p "$instrumented" "$work/pcs"
cp "$work/target/release/xenios" "$work/target/release/xenios-api" "$instrumented/"
# llm-stages.sh runs `xenios-llm`; the CLI's worker serves the same consumer.
printf '#!/bin/sh\nexec %s/xenios worker --kind llm "$@"\n' "$instrumented" >"$instrumented/xenios-llm"
chmod +x "$instrumented/xenios-llm"

export LD_PRELOAD=$work/libmcount.so MCOUNT_DIR=$work/pcs MCOUNT_TAG=sqlite
NJOBS=3000 "$experiments/ab.sh" "$instrumented" sse
NJOBS=1500 "$experiments/ab.sh" "$instrumented" poll
LAYOUT=one NJOBS=2000 "$experiments/ab.sh" "$instrumented" sse
"$experiments/llm-stages.sh" "$instrumented" 320 64 1
MCOUNT_TAG=pg target/debug/with-postgres -- bash -c "
  DB_URL=\$XENIOS_TEST_POSTGRES_URL NJOBS=2000 '$experiments/ab.sh' '$instrumented' sse
  DB_URL=\$XENIOS_TEST_POSTGRES_URL NJOBS=1000 '$experiments/ab.sh' '$instrumented' poll"
unset LD_PRELOAD MCOUNT_DIR MCOUNT_TAG

python3 scripts/function-order/order.py "$work/pcs" bins/function-order.txt \
  "$instrumented/xenios,$instrumented/xenios-api"
