#!/usr/bin/env bash
# Smoke test of the real binary under the local Lambda emulator (cargo lambda
# watch) against moto: every file in events/ and the developer corpus (with
# bad records mixed in) are invoked; then rows are left buffered and the
# function gets SIGTERM, which must write them. The independent checker then
# reads the whole lake back. Run by scripts/test.sh (needs scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/local-stack.sh
CORPUS=${CORPUS:-../shared/corpus}
fail() { echo "smoke: FAIL: $*" >&2; echo "--- function log tail:" >&2; tail -20 "$STATE/function.log" >&2; exit 1; }

cargo build --quiet
start_moto
start_function

# A Kinesis response must list no failure; a flush must have written everything.
expect_ok() { # response-json file
  python - "$1" "$2" <<'PY' || fail "$2 answered $1"
import json, sys
r = json.loads(sys.argv[1])
ok = r.get("batchItemFailures") == [] if "batchItemFailures" in r else r.get("failed_files") == 0
sys.exit(0 if ok else 1)
PY
}

count_objects() {
  python - "$S3_ENDPOINT" "$BUCKET" <<'PY'
import sys, boto3
s3 = boto3.client("s3", endpoint_url=sys.argv[1], aws_access_key_id="test",
                  aws_secret_access_key="test", region_name="us-east-1")
print(sum(p.get("KeyCount", 0) for p in s3.get_paginator("list_objects_v2").paginate(Bucket=sys.argv[2])))
PY
}

n=0
for f in events/*.json "$CORPUS"/events/mixed-bad/shard*.json events/force-flush.json; do
  expect_ok "$(invoke "$f")" "$f"
  n=$((n + 1))
done
echo "smoke: $n invocations answered without failures"

# Fresh records (from another shard), left in the warm buffer.
python - events/kinesis-1-load.json "$STATE/sigterm-event.json" <<'PY'
import json, sys
ev = json.load(open(sys.argv[1]))
for r in ev["Records"]:
    seq = r["kinesis"]["sequenceNumber"]
    r["eventID"] = "shardId-000000000007:" + seq  # another shard: new records, not redeliveries
json.dump(ev, open(sys.argv[2], "w"))
PY
before=$(count_objects)
expect_ok "$(invoke "$STATE/sigterm-event.json")" sigterm-event.json
[ "$(count_objects)" = "$before" ] || fail "rows were written before SIGTERM; the test proves nothing"
pid=$(pgrep -f "$ROOT/target/debug/cdc-batcher$" || pgrep -f "target/debug/cdc-batcher$") || fail "function process not found"
kill -TERM $pid
for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && fail "function still running 5 s after SIGTERM"
after=$(count_objects)
[ "$after" -gt "$before" ] || fail "SIGTERM wrote nothing ($before objects before, $after after)"
echo "smoke: SIGTERM flushed the buffered rows ($before -> $after objects)"

python tests/support/check_lake.py --s3-endpoint "$S3_ENDPOINT" --bucket "$BUCKET" \
  events/kinesis-*.json "$CORPUS"/events/mixed-bad/shard*.json "$STATE/sigterm-event.json" \
  || fail "the lake does not match the events"
echo "smoke: 1 passed, 0 failed"
