#!/usr/bin/env bash
# usage: BIN=<bindir> PAIRS=3 target/debug/with-postgres -- bench/results/2026-12-07-experiments/pg-hot.sh
# Alternates the shipped schema with one that lets a job's status updates be HOT (see README).
cd "$(dirname "$0")/../../.."
for i in $(seq ${PAIRS:-3}); do
  for v in plain hot; do
    name="ab_${i}_${v}_$RANDOM"
    psql "$XENIOS_TEST_POSTGRES_URL" -qc "CREATE DATABASE $name" >/dev/null
    url="${XENIOS_TEST_POSTGRES_URL%/*}/$name"
    DATABASE_URL=$url ${BIN:-/tmp/bin-base}/xenios migrate --config /dev/null >/dev/null
    if [ $v = hot ]; then
      psql "$url" -q <<'SQL'
SET search_path = ai_backend;
DROP INDEX jobs_queued_created;
ALTER TABLE jobs SET (fillfactor = 70);
SQL
    fi
    echo "$v $(DB_URL=$url bash bench/results/2026-12-02-experiments/ab.sh ${BIN:-/tmp/bin-base} sse 2>/dev/null)"
    psql "$url" -tAc "SELECT n_tup_upd, n_tup_hot_upd FROM pg_stat_user_tables WHERE relname='jobs'"
  done
done
