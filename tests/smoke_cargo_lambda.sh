#!/usr/bin/env bash
# Smoke test of the real binary under the local Lambda emulator (cargo lambda
# watch) against moto (S3 and Kinesis):
#  1. window mode (the default): every file in events/ and the test corpus
#     (bad records mixed in); the sample window's final invocation reaches a
#     fresh process after the first one was killed (kill -9: no SIGTERM, memory
#     gone), which must write the window from its spool; force flushes put a
#     heartbeat into each shard of the stream;
#  2. warm-lossy mode: rows left buffered are written when the function gets
#     SIGTERM.
# The independent checker then reads the whole lake back. Run by scripts/test.sh
# (needs scripts/setup.sh).
set -euo pipefail
cd "$(dirname "$0")/.."
source scripts/lib/local-stack.sh
CORPUS=${CORPUS:-tests/fixtures/corpus}
fail() { echo "smoke: FAIL: $*" >&2; echo "--- function log tail:" >&2; tail -20 "$STATE/function.log" >&2; exit 1; }

# scripts/test.sh passes FUNCTION_BINARY (the binary the tests built); alone,
# the function is built as `cargo lambda watch` would build it.
[ -n "${FUNCTION_BINARY:-}" ] || cargo build --quiet
start_moto
HEARTBEAT_STREAMS=$(create_stream dms-cdc 2)
export HEARTBEAT_STREAMS
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
for f in events/kinesis-*.json events/force-flush.json events/eventbridge-scheduled.json \
         events/scheduler-default.json "$CORPUS"/events/mixed-bad/shard*.json events/force-flush.json; do
  expect_ok "$(invoke "$f")" "$f"
  n=$((n + 1))
done
echo "smoke: $n invocations answered without failures"

# The sample window: each response carries the state the next sample holds.
same_state() { # response-json next-event-file
  python - "$1" "$2" <<'PY' || fail "the state returned is not the one $2 carries: $1"
import json, sys
sys.exit(0 if json.loads(sys.argv[1])["state"] == json.load(open(sys.argv[2]))["state"] else 1)
PY
}
r=$(invoke events/window-1-first.json); expect_ok "$r" window-1; same_state "$r" events/window-2-middle.json
r=$(invoke events/window-2-middle.json); expect_ok "$r" window-2; same_state "$r" events/window-3-final.json
pid=$(function_pid) || fail "function process not found"
kill -KILL "$pid"
stop_function
start_function
r=$(invoke events/window-3-final.json); expect_ok "$r" window-3-final
[ "$(function_pid)" != "$pid" ] || fail "the final invocation ran in the killed process"
grep -q "rebuilding the window from its spool" "$STATE/function.log" || fail "the final invocation did not read the spool"
expect_ok "$(invoke events/window-4-terminated-early.json)" window-4
echo "smoke: the window's final invocation in a fresh process wrote it from the spool"

python - "$S3_ENDPOINT" <<'PY' || fail "no heartbeat in every shard"
import sys, boto3
k = boto3.client("kinesis", endpoint_url=sys.argv[1], aws_access_key_id="test",
                 aws_secret_access_key="test", region_name="us-east-1")
for shard in k.list_shards(StreamName="dms-cdc")["Shards"]:
    it = k.get_shard_iterator(StreamName="dms-cdc", ShardId=shard["ShardId"],
                              ShardIteratorType="TRIM_HORIZON")["ShardIterator"]
    beats = [r for r in k.get_records(ShardIterator=it)["Records"]
             if r["PartitionKey"] == "cdc-batcher-heartbeat"]
    assert beats, shard["ShardId"]
    print("smoke: heartbeats in", shard["ShardId"], len(beats))
PY

# warm-lossy: fresh records (from another shard), left in the warm buffer.
stop_function
FLUSH_MODE=warm-lossy start_function
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
pid=$(function_pid) || fail "function process not found"
kill -TERM $pid
for _ in $(seq 50); do kill -0 $pid 2>/dev/null || break; sleep 0.1; done
kill -0 $pid 2>/dev/null && fail "function still running 5 s after SIGTERM"
after=$(count_objects)
[ "$after" -gt "$before" ] || fail "SIGTERM wrote nothing ($before objects before, $after after)"
echo "smoke: SIGTERM flushed the buffered rows ($before -> $after objects)"

python tests/support/check_lake.py --s3-endpoint "$S3_ENDPOINT" --bucket "$BUCKET" \
  events/kinesis-*.json events/window-*.json "$CORPUS"/events/mixed-bad/shard*.json \
  "$STATE/sigterm-event.json" \
  || fail "the lake does not match the events"
echo "smoke: 1 passed, 0 failed"
