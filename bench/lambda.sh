#!/usr/bin/env bash
# The Lambda-shaped benchmark (BENCHMARKS.md "At Lambda's CPU share"): the
# release binary in a cgroup with a Lambda memory size's CPU quota and memory
# limit, writing through a 30 ms latency proxy to a local S3 server.
# Needs root (cgroups). Env: MEMORY_SIZES ("128 512 1769"), TABLES_LIST
# ("1 20 200"), LATENCY_MS (30), ROWS (141000: about 120 MB of DMS JSON),
# RUN_TIMEOUT (300 s per run), BATCH_SIZE (1000 records per batch),
# CDC_BATCHER_BIN (target/release/cdc-batcher: another build, for an A/B run).
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
.venv/bin/python -m pip install --quiet -r bench/requirements.txt
cargo build --release --quiet
exec .venv/bin/python bench/lambda.py
