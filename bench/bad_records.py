#!/usr/bin/env python3
"""Kinesis events for the memory measurement of a window of malformed records
(BENCHMARKS.md "A window's bad records"): N records of about 1 KB each, in
1,000-record event files of one shard, all arriving inside one 120 s window.
`--kind bad`: payloads that are base64 but not a DMS message (quarantined);
`--kind good`: DMS data rows of the same size (buffered as rows);
`--kind sparse`: DMS rows of a 2,000-column table, each with 20 of its columns
(BENCHMARKS.md "Wide, sparse tables").

Usage: bench/bad_records.py --kind bad --records 40000 --out DIR
"""
import argparse
import base64
import json
import pathlib

STREAM = "arn:aws:kinesis:us-east-1:123456789012:stream/dms-cdc"
SHARD = "shardId-000000000000"
T0 = 1773450000  # 2026-03-14T01:00:00Z


def payload(kind: str, n: int) -> bytes:
    filler = f"{n:08d}" * 110  # ~900 characters
    if kind == "bad":
        return ('{"metadata": {"record-type": "data", "operation": "insert", "note": "'
                + filler + '"').encode()  # unterminated: not a DMS message
    msg = {"data": {"id": n, "note": filler},
           "metadata": {"timestamp": "2026-03-14T01:00:00.000000Z", "record-type": "data",
                        "operation": "insert", "partition-key-type": "schema-table",
                        "schema-name": "bench", "table-name": "t"}}
    if kind == "sparse":
        # 20 of 2,000 columns, a different set per row (deterministic).
        cols = sorted({(n * 7919 + k * 104729) % 2000 for k in range(20)})
        msg["data"] = {"id": n, **{f"c{c:04d}": f"v{n}-{c}" for c in cols}}
    return json.dumps(msg).encode()


def main() -> None:
    ap = argparse.ArgumentParser()
    ap.add_argument("--kind", choices=["bad", "good", "sparse"], required=True)
    ap.add_argument("--records", type=int, default=40000)
    ap.add_argument("--out", required=True)
    args = ap.parse_args()
    out = pathlib.Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    for start in range(0, args.records, 1000):
        records = []
        for n in range(start, min(start + 1000, args.records)):
            seq = f"{49658813620978000100000000000000000000000000000000000000 + n}"
            records.append({
                "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "bench.t",
                            "sequenceNumber": seq,
                            "data": base64.b64encode(payload(args.kind, n)).decode(),
                            "approximateArrivalTimestamp": T0 + n * 100 / args.records},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": f"{SHARD}:{seq}", "eventName": "aws:kinesis:record",
                "eventSourceARN": STREAM, "awsRegion": "us-east-1"})
        (out / f"{start // 1000:04d}.json").write_text(json.dumps({"Records": records}))


if __name__ == "__main__":
    main()
