#!/usr/bin/env python3
"""The usual Python version of this Lambda, for comparison: a list of dicts per table,
then pandas DataFrame -> pyarrow Table -> Snappy Parquet once a buffer crosses its
size or row threshold. Written the way the well-known version is (with its operation
field fixed, so that both produce the same rows), S3 replaced by a local directory.

Usage: reference_lambda.py --output DIR EVENT.json...   (prints one JSON summary line)
"""
import argparse
import base64
import json
import os
import time
import uuid
from collections import defaultdict

import pandas as pd
import pyarrow as pa
import pyarrow.parquet as pq

BATCH_SIZE_BYTES_THRESHOLD = int(os.environ.get("BATCH_SIZE_BYTES_THRESHOLD", 5 * 1024 * 1024))
BATCH_MAX_RECORDS_THRESHOLD = int(os.environ.get("BATCH_MAX_RECORDS_THRESHOLD", 10000))

buffers = defaultdict(list)
buffer_sizes = defaultdict(int)
stats = {"rows": 0, "files": 0, "bytes_written": 0, "peak_buffered_bytes": 0}


def lambda_handler(event, output):
    for record in event["Records"]:
        payload = base64.b64decode(record["kinesis"]["data"])
        message = json.loads(payload)
        metadata = message["metadata"]
        if metadata.get("record-type") != "data":
            continue
        row = dict(message.get("data") or {})
        row["_op"] = metadata["operation"]
        row["_dms_timestamp"] = metadata["timestamp"]
        row["_commit_timestamp"] = metadata.get("commit-timestamp")
        row["_transaction_id"] = str(metadata.get("transaction-id"))
        row["_shard_id"] = record["eventID"].split(":")[0]
        row["_sequence_number"] = record["kinesis"]["sequenceNumber"]
        key = f"{metadata['schema-name']}.{metadata['table-name']}"
        buffers[key].append(row)
        buffer_sizes[key] += len(json.dumps(row))
        stats["rows"] += 1
        held = sum(buffer_sizes.values())
        stats["peak_buffered_bytes"] = max(stats["peak_buffered_bytes"], held)
        if (buffer_sizes[key] >= BATCH_SIZE_BYTES_THRESHOLD
                or len(buffers[key]) >= BATCH_MAX_RECORDS_THRESHOLD):
            flush(key, output)


def flush(key, output):
    rows = buffers.pop(key, [])
    buffer_sizes.pop(key, None)
    if not rows:
        return
    df = pd.DataFrame(rows)
    table = pa.Table.from_pandas(df, preserve_index=False)
    schema, name = key.split(".", 1)
    ts = rows[0]["_dms_timestamp"]
    directory = os.path.join(output, schema, name, ts[0:4], ts[5:7], ts[8:10], ts[11:13])
    os.makedirs(directory, exist_ok=True)
    path = os.path.join(directory, f"{uuid.uuid4()}.parquet")
    pq.write_table(table, path, compression="snappy")
    stats["files"] += 1
    stats["bytes_written"] += os.path.getsize(path)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--output", required=True)
    ap.add_argument("events", nargs="+")
    a = ap.parse_args()
    start = time.perf_counter()
    for path in a.events:
        with open(path) as f:
            lambda_handler(json.load(f), a.output)
    for key in list(buffers):
        flush(key, a.output)
    stats["seconds"] = time.perf_counter() - start
    print(json.dumps(stats))


if __name__ == "__main__":
    main()
