"""Independent check of the Glue Data Catalog against the lake's files.

For every table in the Glue database: its definition (columns, partition
keys, projection properties, location) is read back from Glue, each Parquet
file under its location is read with pyarrow, and
- every file column is a Glue column whose type is the file's type
  (metadata columns included), and the file lies in a partition that the
  table's partition projection enumerates;
- the definition, turned into DuckDB DDL (CREATE TABLE with the Glue types),
  takes every file's rows with no cast that changes a value's type.
Prints one JSON summary line; exits 1 on any mismatch.
"""

import argparse
import json
import re
import sys
import tempfile
from pathlib import Path

import boto3
import duckdb
import pyarrow as pa
import pyarrow.parquet as pq

ap = argparse.ArgumentParser()
ap.add_argument("--endpoint", required=True)
ap.add_argument("--bucket", required=True)
ap.add_argument("--database", required=True)
ap.add_argument("--style", choices=["plain", "hive"], required=True)
args = ap.parse_args()

kw = dict(endpoint_url=args.endpoint, region_name="us-east-1",
          aws_access_key_id="test", aws_secret_access_key="test")
glue = boto3.client("glue", **kw)
s3 = boto3.client("s3", **kw)

DECIMAL = re.compile(r"decimal\((\d+),(\d+)\)")


def arrow_types(glue_type):
    """The Parquet/Arrow types a file may hold for a Glue (Hive) type."""
    m = DECIMAL.fullmatch(glue_type)
    if m:
        return [pa.decimal128(int(m[1]), int(m[2]))]
    return {
        "bigint": [pa.int64()],
        "double": [pa.float64()],
        "boolean": [pa.bool_()],
        "date": [pa.date32()],
        "string": [pa.string(), pa.large_string()],
        "binary": [pa.binary(), pa.large_binary()],
        # Hive's timestamp is both: UTC instants and wall-clock times.
        "timestamp": [pa.timestamp("us", tz="UTC"), pa.timestamp("us")],
    }[glue_type]


def duckdb_type(glue_type):
    m = DECIMAL.fullmatch(glue_type)
    if m:
        return f"DECIMAL({m[1]},{m[2]})"
    return {"bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE",
            "string": "VARCHAR", "binary": "BLOB", "timestamp": "TIMESTAMP"}[glue_type]


PLAIN = re.compile(r"(\d{4})/(\d{2})/(\d{2})/(\d{2})/[^/]+\.parquet")
HIVE = re.compile(r"year=(\d{4})/month=(\d{2})/day=(\d{2})/hour=(\d{2})/[^/]+\.parquet")

mismatches = []
summary = {"tables": 0, "files": 0, "rows": 0, "rows_in_files": 0}
tables = glue.get_tables(DatabaseName=args.database)["TableList"]
con = duckdb.connect()
con.execute("SET TimeZone = 'UTC'")
with tempfile.TemporaryDirectory() as tmp:
    for t in tables:
        if t.get("TableType") != "EXTERNAL_TABLE":
            continue
        summary["tables"] += 1
        name = t["Name"]
        sd = t["StorageDescriptor"]
        params = t["Parameters"]
        columns = {c["Name"]: c["Type"] for c in sd["Columns"]}
        partitions = [c["Name"] for c in t["PartitionKeys"]]
        location = sd["Location"]
        prefix = location.removeprefix(f"s3://{args.bucket}/")
        want = ["dt"] if args.style == "plain" else ["year", "month", "day", "hour"]
        if partitions != want:
            mismatches.append(f"{name}: partition keys {partitions}, expected {want}")
        if args.style == "plain" and params.get("storage.location.template") != location + "${dt}/":
            mismatches.append(f"{name}: storage.location.template does not match the location")
        since = params.get("projection.dt.range", params.get("projection.year.range", ""))
        keys = [o["Key"] for page in s3.get_paginator("list_objects_v2").paginate(
            Bucket=args.bucket, Prefix=prefix) for o in page.get("Contents", [])
            if o["Key"].endswith(".parquet")]
        paths = []
        for key in keys:
            rel = key[len(prefix):]
            m = (PLAIN if args.style == "plain" else HIVE).fullmatch(rel)
            if not m:
                mismatches.append(f"{key}: not in a partition the projection enumerates")
                continue
            if args.style == "plain" and "/".join(m.groups()) < since.split(",")[0]:
                mismatches.append(f"{key}: before projection.dt.range")
            path = Path(tmp) / key
            path.parent.mkdir(parents=True, exist_ok=True)
            s3.download_file(args.bucket, key, str(path))
            paths.append(str(path))
            schema = pq.read_schema(path)
            summary["files"] += 1
            summary["rows_in_files"] += pq.read_metadata(path).num_rows
            for field in schema:
                if field.name not in columns:
                    mismatches.append(f"{key}: column {field.name} not in the Glue table")
                elif field.type not in arrow_types(columns[field.name]):
                    mismatches.append(
                        f"{key}: {field.name} is {field.type} in the file, {columns[field.name]} in Glue")
        if not paths:
            continue
        ddl = ", ".join(f'"{c}" {duckdb_type(ty)}' for c, ty in columns.items())
        con.execute(f'CREATE TABLE "{name}" ({ddl})')
        files = ", ".join("'" + p.replace("'", "''") + "'" for p in paths)
        con.execute(f'INSERT INTO "{name}" BY NAME SELECT * FROM read_parquet([{files}], union_by_name = true, hive_partitioning = false)')
        summary["rows"] += con.execute(f'SELECT count(*) FROM "{name}"').fetchone()[0]

summary["mismatches"] = mismatches[:20]
print(json.dumps(summary))
sys.exit(1 if mismatches else 0)
