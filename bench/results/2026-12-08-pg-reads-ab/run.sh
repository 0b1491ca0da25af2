set -e
here=/work/main/bench/results/2026-12-02-experiments
i=0
for pair in 1 2 3 4; do
  for b in ${ORDER:-base head}; do
    i=$((i+1))
    db="ab_${b}_$i"
    psql -q "$XENIOS_TEST_POSTGRES_URL" -c "CREATE DATABASE $db"
    url="${XENIOS_TEST_POSTGRES_URL%/*}/$db"
    echo "$b $(DB_URL=$url bash $here/ab.sh /tmp/ab/target-$b/release ${MODE:-poll})"
  done
done
