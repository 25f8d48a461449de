#!/usr/bin/env python3
"""Shows what an analyst sees in a lake cdc-batcher wrote: per table, its changes and where
its files are, and the table as it is now (the latest-state view that `cdc-batcher ddl`
generates, run in DuckDB); then what was quarantined and why. No file names, no row twice.

Usage: show_lake.py (--dir DIR | --s3-endpoint URL --bucket B) [--prefix cdc-data/]
                    [--rows 3] [--cdc-batcher target/debug/cdc-batcher]
"""
import argparse
import collections
import json
import pathlib
import subprocess
import sys
import tempfile

import duckdb
import pyarrow.fs as pafs
import pyarrow.parquet as pq

ROOT = pathlib.Path(__file__).resolve().parent.parent

ap = argparse.ArgumentParser()
ap.add_argument("--dir")
ap.add_argument("--s3-endpoint")
ap.add_argument("--bucket")
ap.add_argument("--prefix", default="cdc-data/")
ap.add_argument("--rows", type=int, default=3)
ap.add_argument("--cdc-batcher", default=str(ROOT / "target/debug/cdc-batcher"))
a = ap.parse_args()
prefix = a.prefix.rstrip("/") + "/"
if a.dir:
    fs, root = pafs.LocalFileSystem(), f"{a.dir.rstrip('/')}/{prefix}".rstrip("/")
    shown_root = f"{a.dir.rstrip('/')}/{prefix}"
else:
    fs = pafs.S3FileSystem(endpoint_override=a.s3_endpoint.split("://")[-1], scheme="http",
                           access_key="test", secret_key="test", region="us-east-1")
    root = f"{a.bucket}/{prefix}".rstrip("/")
    shown_root = f"s3://{a.bucket}/{prefix}"

infos = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
         if i.type == pafs.FileType.File]
# A local copy of the data files and the registry, for DuckDB and `ddl`.
local = pathlib.Path(tempfile.mkdtemp(prefix="show-lake-"))
files = collections.defaultdict(list)  # "schema/table" key dir -> [(hour dir, rows)]
quarantined = collections.Counter()
windows = 0
for i in infos:
    rel = i.path[len(root) + 1:]
    if rel.endswith(".parquet") or rel.startswith("_schemas/"):
        target = local / prefix / rel
        target.parent.mkdir(parents=True, exist_ok=True)
        with fs.open_input_stream(i.path) as src:
            target.write_bytes(src.read())
        if rel.endswith(".parquet"):
            parts = rel.split("/")
            rows = pq.read_metadata(target).num_rows
            files["/".join(parts[:2])].append(("/".join(parts[2:-1]), rows))
    elif rel.startswith("_errors/") and rel.endswith(".jsonl"):
        with fs.open_input_stream(i.path) as f:
            for line in f.read().decode().splitlines():
                quarantined[json.loads(line).get("error", "?").split(":")[0]] += 1
    elif rel.startswith("_spool/") and rel.endswith("/_done.json"):
        windows += 1

print(f"\nThe lake at {shown_root}: {len(files)} tables, "
      f"{sum(len(v) for v in files.values())} Parquet files, {windows} windows written\n")
ddl = subprocess.run([a.cdc_batcher, "ddl", "--lake", str(local), "--dialect", "duckdb"],
                     capture_output=True, text=True)
if ddl.returncode != 0:
    sys.exit(f"cdc-batcher ddl failed: {ddl.stderr.strip()}")
db = duckdb.connect()
db.execute(ddl.stdout)
# `-- schema.table` heads each table's statements; its first view is the table's SQL name.
sql_names, heading = {}, None
for line in ddl.stdout.splitlines():
    if line.startswith("-- ") and heading is None:
        heading = line[3:]
    elif line.startswith(("CREATE OR REPLACE VIEW \"", "CREATE OR REPLACE TABLE \"")):
        if heading is not None:
            sql_names[heading] = line.split('"')[1]
        heading = None
    elif not line.startswith("--"):
        heading = None
registry = {}
for path in sorted((local / prefix / "_schemas").glob("*/*/v*.json")):
    entry = json.loads(path.read_text())
    registry[f"{path.parent.parent.name}/{path.parent.name}"] = entry  # newest wins (sorted)

for key_dir, parts in sorted(files.items()):
    entry = registry.get(key_dir)
    if entry is None:
        continue
    name = sql_names.get(f"{entry['schema']}.{entry['table']}")
    if name is None:
        continue
    hours = sorted({h for h, _ in parts})
    changes = sum(r for _, r in parts)
    print(f"{entry['schema']}.{entry['table']}: {changes} changes in {len(parts)} files, "
          f"{len(hours)} hour partition(s) under {shown_root}{key_dir}/")
    keys = entry.get("primary_key") or []
    views = {r[0] for r in db.sql("SELECT view_name FROM duckdb_views()").fetchall()}
    if not keys or f"{name}__latest" not in views:
        print("  (no primary key known: no latest-state view)\n")
        continue
    latest = f'"{name}__latest"'
    count = db.sql(f"SELECT count(*) FROM {latest}").fetchall()[0][0]
    data_cols = [c for c in db.sql(f"SELECT * FROM {latest} LIMIT 0").columns
                 if not c.startswith("_")]
    shown = keys + [c for c in data_cols if c not in keys][:max(0, 4 - len(keys))]
    cols = ", ".join(f'"{c}"' for c in shown + ["_op"])
    order = ", ".join(f'"{k}"' for k in keys)
    print(f"  as it is now ({name}__latest): {count} rows; the first {a.rows} by key:")
    db.sql(f"SELECT {cols} FROM {latest} ORDER BY {order} LIMIT {a.rows}").show()

if quarantined:
    total = sum(quarantined.values())
    reasons = ", ".join(f"{n} {kind}" for kind, n in quarantined.most_common())
    print(f"Quarantined: {total} records under {shown_root}_errors/ ({reasons})")
print(f"Query it yourself: {pathlib.Path(a.cdc_batcher).name} ddl --lake {local} "
      "--dialect duckdb, then run the SQL in DuckDB")
