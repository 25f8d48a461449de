#!/usr/bin/env python3
"""Lists what cdc-batcher wrote and shows a few rows per table (pyarrow + DuckDB).

Usage: show_lake.py (--dir DIR | --s3-endpoint URL --bucket B) [--prefix cdc-data/] [--rows 3]
"""
import argparse
import json

import duckdb
import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--dir")
ap.add_argument("--s3-endpoint")
ap.add_argument("--bucket")
ap.add_argument("--prefix", default="cdc-data/")
ap.add_argument("--rows", type=int, default=3)
a = ap.parse_args()
if a.dir:
    fs, root = pafs.LocalFileSystem(), f"{a.dir.rstrip('/')}/{a.prefix}".rstrip("/")
else:
    fs = pafs.S3FileSystem(endpoint_override=a.s3_endpoint.split("://")[-1], scheme="http",
                           access_key="test", secret_key="test", region="us-east-1")
    root = f"{a.bucket}/{a.prefix}".rstrip("/")

infos = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
         if i.type == pafs.FileType.File]
tables = {}
for i in sorted(infos, key=lambda i: i.path):
    rel = i.path[len(root) + 1:]
    print(f"{i.size:>8}  {rel}")
    if rel.endswith(".parquet"):
        schema, table = rel.split("/")[:2]
        tables.setdefault(f"{schema}.{table}", []).append(pq.read_table(i.path, filesystem=fs))
    elif rel.endswith(".jsonl"):
        with fs.open_input_stream(i.path) as f:
            for line in f.read().decode().splitlines():
                e = json.loads(line)
                print(f"          quarantined {e['sequence_number']}: {e['error']}")

for name, parts in sorted(tables.items()):
    t = pa.concat_tables(parts, promote_options="permissive")
    print(f"\n{name}: {t.num_rows} rows in {len(parts)} file(s); first {a.rows}:")
    data_cols = [c for c in t.column_names if not c.startswith("_")][:4]
    cols = ", ".join(f'"{c}"' for c in data_cols + ["_op", "_dms_timestamp"])
    duckdb.sql(f"SELECT {cols} FROM t ORDER BY _dms_timestamp LIMIT {a.rows}").show()
