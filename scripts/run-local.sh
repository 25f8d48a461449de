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
# A local Kinesis stream (on the same moto server) for the heartbeats.
HEARTBEAT_STREAMS=$(create_stream dms-cdc 2)
export HEARTBEAT_STREAMS
start_function
echo "function on 127.0.0.1:$LAMBDA_PORT, S3 and Kinesis on $S3_ENDPOINT (bucket $BUCKET); logs in target/local/"
# Plain batches, then one tumbling window invocation by invocation (each response's state is
# what the next event carries; the final invocation writes the window), a window Lambda ended
# early, the force flushes (a heartbeat into each shard of the stream), and the sweep that
# finds windows no final invocation wrote (none here).
for f in kinesis-1-load kinesis-2-cdc kinesis-3-malformed \
         window-1-first window-2-middle window-3-final window-4-terminated-early \
         force-flush eventbridge-scheduled scheduler-default sweep-windows; do
  printf '\n$ cargo lambda invoke --data-file events/%s.json\n' "$f"
  invoke "events/$f.json"
  echo
done
echo
python scripts/show_lake.py --s3-endpoint "$S3_ENDPOINT" --bucket "$BUCKET"
