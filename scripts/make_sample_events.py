#!/usr/bin/env python3
"""Writes the sample invocation payloads in events/ (committed; rerun only to change them).

Picks messages from the test corpus (tests/fixtures/corpus) and wraps them as Lambda
Kinesis events of one shard with increasing sequence numbers, plus the three
force-flush shapes. Deterministic: a rerun gives byte-identical files.
"""
import base64
import hashlib
import json
import pathlib
import sys

ROOT = pathlib.Path(__file__).resolve().parent.parent
CORPUS = ROOT / "tests" / "fixtures" / "corpus"
OUT = ROOT / "events"
SHARD = "shardId-000000000000"
WINDOW_SHARD = "shardId-000000000001"
STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/dms-cdc"
BASE_SEQ = 49658813620978000100000000000000000000000000000000000000
ARRIVAL = 1773450000.000

# Corpus line numbers (1-based) per sample file; see dms_messages.index.tsv.
SAMPLES = {
    # task-level control, create-table with table-def, full load of two tables
    "kinesis-1-load.json": [1, 2, 6, 7, 8, 9, 10, 123, 124, 125, 126, 127],
    # CDC: insert/update/delete on two tables, add-column and drop-column DDL
    "kinesis-2-cdc.json": [146, 150, 154, 155, 157, 158, 159, 165, 166, 167, 190],
}
# The window shard's own data (other tables than the plain batches', so the quick start
# shows every row once): create-table and load of orders and their lines, then CDC with a
# column-type-change DDL record for each table (which closes their parts mid-window).
WINDOW_SAMPLES = {
    "first": [3, 4, 30, 31, 32, 33, 36, 37, 40, 41],
    "middle": [147, 148, 149, 151, 169, 170, 172, 173],
    # a window Lambda ended early: two order updates around a bad record
    "early": [194, 197],
}
# Good messages around malformed ones: bad base64, not JSON, unknown operation, empty.
MALFORMED_GOOD = [191, 192]
MALFORMED_BAD_LINES = [1, 7, 12]  # bad_messages.jsonl


def record(seq: int, data_b64: str, partition_key: str, i: int, shard: str = SHARD) -> dict:
    return {
        "kinesis": {
            "kinesisSchemaVersion": "1.0",
            "partitionKey": partition_key,
            "sequenceNumber": str(seq),
            "data": data_b64,
            "approximateArrivalTimestamp": round(ARRIVAL + i * 0.037, 3),
        },
        "eventSource": "aws:kinesis",
        "eventVersion": "1.0",
        "eventID": f"{shard}:{seq}",
        "eventName": "aws:kinesis:record",
        "invokeIdentityArn": "arn:aws:iam::123456789012:role/cdc-batcher",
        "awsRegion": "us-east-1",
        "eventSourceARN": STREAM,
    }


def partition_key(payload: bytes) -> str:
    try:
        meta = json.loads(payload)["metadata"]
        return f"{meta['schema-name']}.{meta['table-name']}" or "dms-task"
    except Exception:
        return "unparsed"


def main() -> int:
    lines = (CORPUS / "dms_messages.jsonl").read_bytes().split(b"\n")
    bad = (CORPUS / "bad_messages.jsonl").read_bytes().split(b"\n")
    counter = 0

    def next_record(payload: bytes | None, raw_data: str | None = None,
                    shard: str = SHARD) -> dict:
        nonlocal counter
        counter += 1
        seq = BASE_SEQ + counter * 1_000_003
        data = raw_data if raw_data is not None else base64.b64encode(payload).decode()
        return record(seq, data, partition_key(payload or b""), counter, shard)

    OUT.mkdir(exist_ok=True)
    for name, picks in SAMPLES.items():
        recs = [next_record(lines[n - 1]) for n in picks]
        write(name, {"Records": recs})
    recs = [next_record(lines[MALFORMED_GOOD[0] - 1])]
    recs.append(next_record(None, raw_data="{not base64!}"))
    for n in MALFORMED_BAD_LINES:
        recs.append(next_record(bad[n - 1]))
    recs.append(next_record(lines[MALFORMED_GOOD[1] - 1]))
    write("kinesis-3-malformed.json", {"Records": recs})

    # One tumbling window of another shard, invocation by invocation, with the
    # state each invocation returns (FLUSH_MODE=window, default thresholds: no
    # file is written before the final invocation), then a window that Lambda
    # ended early.
    w1 = ("2026-03-14T01:00:00Z", "2026-03-14T01:02:00Z")
    w2 = ("2026-03-14T01:02:00Z", "2026-03-14T01:04:00Z")
    first = [next_record(lines[n - 1], shard=WINDOW_SHARD) for n in WINDOW_SAMPLES["first"]]
    middle = [next_record(lines[n - 1], shard=WINDOW_SHARD) for n in WINDOW_SAMPLES["middle"]]
    spools = []
    WINDOW_FIRST[w1[0]] = first[0]["kinesis"]["sequenceNumber"]
    write("window-1-first.json", window_event(first, w1, spools))
    spools.append(first[-1]["kinesis"]["sequenceNumber"])
    write("window-2-middle.json", window_event(middle, w1, spools))
    spools.append(middle[-1]["kinesis"]["sequenceNumber"])
    written = closed_by_ddl(first + middle)
    write("window-3-final.json", window_event([], w1, spools, final=True, written=written))
    early = [next_record(lines[WINDOW_SAMPLES["early"][0] - 1], shard=WINDOW_SHARD),
             next_record(None, raw_data="{not base64!}", shard=WINDOW_SHARD),
             next_record(lines[WINDOW_SAMPLES["early"][1] - 1], shard=WINDOW_SHARD)]
    write("window-4-terminated-early.json", window_event(early, w2, [], early=True))

    write("force-flush.json", {"force_flush": True})
    write("sweep-windows.json", {"sweep_windows": True})
    write("eventbridge-scheduled.json", {
        "version": "0", "id": "53dc4d37-cffa-4f76-80c9-8b7d4a4d2eaa",
        "detail-type": "Scheduled Event", "source": "aws.events",
        "account": "123456789012", "time": "2026-03-14T02:00:00Z", "region": "us-east-1",
        "resources": ["arn:aws:events:us-east-1:123456789012:rule/cdc-batcher-flush"],
        "detail": {}})
    write("scheduler-default.json", {
        "version": "0", "id": "1b8c3e6e-55b3-4ee5-a3c9-5c1a1b0c9f11",
        "detail-type": "Scheduled Event", "source": "aws.scheduler",
        "account": "123456789012", "time": "2026-03-14T02:01:00Z", "region": "us-east-1",
        "resources": ["arn:aws:scheduler:us-east-1:123456789012:schedule/default/cdc-batcher-flush"],
        "detail": "{}"})
    return 0


def closed_by_ddl(records: list) -> list:
    """Digests of the parts a DDL record closed (and the function wrote) in a window.

    An independent restatement of the function's cut for this sample: a table's rows
    go to one part per hour; a DDL record for the table closes its parts; closed parts
    are written in table order, then in the order they were opened. A part's digest is
    the first 8 bytes of SHA-256 over stream, shard and sequence number of each row,
    each followed by a NUL byte. `tests/integration/handler_local.rs` checks it against the function.
    """
    open_parts = {}  # table -> {hour: [records]}
    closed = {}  # table -> [parts]
    for r in records:
        msg = json.loads(base64.b64decode(r["kinesis"]["data"]))
        meta = msg["metadata"]
        table = (meta["schema-name"], meta["table-name"])
        if meta["record-type"] == "control" and meta["schema-name"]:
            closed.setdefault(table, []).extend(open_parts.pop(table, {}).values())
        elif meta["record-type"] == "data":
            hour = meta["timestamp"][:13]
            open_parts.setdefault(table, {}).setdefault(hour, []).append(r)
    digests = []
    for table in sorted(closed):
        for part in closed[table]:
            h = hashlib.sha256()
            for r in part:
                for field in (STREAM, r["eventID"].split(":")[0], r["kinesis"]["sequenceNumber"]):
                    h.update(field.encode() + b"\0")
            digests.append(h.hexdigest()[:16])
    return digests


# Each sample window's first sequence number, by window start.
WINDOW_FIRST: dict = {}


def window_event(records: list, window: tuple, spools: list, final: bool = False,
                 early: bool = False, written: list | None = None) -> dict:
    """A tumbling-window invocation; `spools` is what the window's state lists."""
    state = {}
    if spools:
        # State version 2: the window's first sequence number and the rules it is
        # cut by, fixed by its first invocation (default thresholds; the memory
        # budget of an environment without AWS_LAMBDA_FUNCTION_MEMORY_SIZE).
        inner = {"v": 2, "spools": spools, "written": written or [],
                 "from": WINDOW_FIRST[window[0]],
                 "rules": {"cut": 3, "b": 5242880, "r": 10000, "m": 357913941}}
        state = {"cdc-batcher": json.dumps(inner, separators=(",", ":"))}
    return {"Records": records, "window": {"start": window[0], "end": window[1]},
            "state": state, "shardId": WINDOW_SHARD, "eventSourceARN": STREAM,
            "isFinalInvokeForWindow": final, "isWindowTerminatedEarly": early}


def write(name: str, obj: dict) -> None:
    (OUT / name).write_text(json.dumps(obj, indent=2, ensure_ascii=False) + "\n")


if __name__ == "__main__":
    sys.exit(main())
