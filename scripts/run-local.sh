#!/usr/bin/env bash
# Quick start: set up, run the function under `cargo lambda watch` against a
# local S3 server, invoke it with every sample event in events/, and show what
# it wrote. No AWS account needed.
set -euo pipefail
cd "$(dirname "$0")/.."
scripts/setup.sh
cargo build --quiet
source scripts/lib/local-stack.sh
start_moto
start_function
echo "function on 127.0.0.1:$LAMBDA_PORT, S3 on $S3_ENDPOINT (bucket $BUCKET); logs in target/local/"
for f in kinesis-1-load kinesis-2-cdc kinesis-3-malformed force-flush eventbridge-scheduled scheduler-default; do
  printf '\n$ cargo lambda invoke --data-file events/%s.json\n' "$f"
  invoke "events/$f.json"
  echo
done
echo
python scripts/show_lake.py --s3-endpoint "$S3_ENDPOINT" --bucket "$BUCKET"
