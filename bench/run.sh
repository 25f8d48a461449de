#!/usr/bin/env bash
# Reproduces the tables in BENCHMARKS.md: stage benchmarks (criterion) and the
# end-to-end comparison with the Python reference on the same synthetic events.
# Env: ROWS (200000), TABLES (20), RUNS (5), CRITERION=0 to skip cargo bench.
set -euo pipefail
cd "$(dirname "$0")/.."
ROWS=${ROWS:-200000}
TABLES=${TABLES:-20}
OUT=target/bench
CORPUS=${CORPUS:-../shared/corpus}
scripts/setup.sh
.venv/bin/python -m pip install --quiet -r bench/requirements.txt
mkdir -p "$OUT"
cargo build --release --quiet
ls -l target/release/cdc-batcher

if [ ! -f "$OUT/events/manifest.json" ]; then
  .venv/bin/python "$CORPUS/make_events.py" --synthetic --rows "$ROWS" --tables "$TABLES" \
    --batch-size 1000 --seed 2026 --out-dir "$OUT/events" --compact
fi
# ~3 MiB of row JSON for each of 20 tables: held in memory until the final flush.
if [ ! -f "$OUT/events-mem/manifest.json" ]; then
  .venv/bin/python "$CORPUS/make_events.py" --synthetic --rows 90000 --tables 20 \
    --batch-size 1000 --seed 7 --no-control --out-dir "$OUT/events-mem" --compact
fi
# 1000 tables under a 32 MiB buffer budget.
if [ ! -f "$OUT/events-1000/manifest.json" ]; then
  .venv/bin/python "$CORPUS/make_events.py" --synthetic --rows 100000 --tables 1000 \
    --batch-size 1000 --seed 9 --no-control --out-dir "$OUT/events-1000" --compact
fi

.venv/bin/python bench/compare.py
if [ "${CRITERION:-1}" = 1 ]; then
  cargo bench --bench pipeline -- --noplot 2>&1 | grep -E "^[a-z_/0-9+.A-Z]+|time:|thrpt:" | tee "$OUT/criterion.txt"
fi
