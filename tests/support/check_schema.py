#!/usr/bin/env python3
"""Check that a typed cdc-batcher lake is queryable as one table per source table.

  1. Within each table directory ({prefix}{schema}/{table}/...), a column has the same Parquet
     physical, logical and converted type in every file. Athena, Spark and DuckDB's
     union_by_name read a table as one schema; a column that is INT64 in one file and
     BYTE_ARRAY in another fails (or silently casts) at query time.
  2. No file holds a type that common engines misread or reject: INT96 or nanosecond timestamps,
     unsigned integers, decimals with precision > 38. The metadata columns have their
     specified types (strings; timestamps in microseconds, _dms/_commit_timestamp UTC).
  3. With --sql: the DuckDB views the tool emits give, in "{schema}__{table}__latest", exactly
     the live rows of --expected (expected_final_state.json) keyed by primary key, value for
     value. Values are compared by type (check_lake.same_value): decimals numerically,
     timestamps as the same instant as the source text (which also covers "formats back to
     the source string"), dates, 0x-hex binary, sci-notation BIGINTs by their exact value.
  4. With --messages (the DMS .jsonl that fed the lake, optional): every data column's Arrow
     type is the one the newest control table-def that names it maps to (catches a writer
     that silently keeps everything as strings, which checks 1-3 would accept).
  5. Every data column of every file has the type the table's newest schema-registry version
     ({prefix}_schemas/{schema}/{table}/vN.json) registers for it.

Usage:
  check_schema.py --dir DIR [--prefix cdc-data/] --expected expected_final_state.json
                  [--sql FILE] [--tables sales.client,hr.employees] [--messages dms_messages.jsonl]
Prints a JSON summary; exits 1 listing the problems if any check fails.
"""
import argparse
import decimal
import json
import os
import re
import sys

import pyarrow as pa
import pyarrow.parquet as pq

# Shared with the row-level checker so that both judge values the same way.
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
sys.dont_write_bytecode = True  # no __pycache__ in the source tree
from check_lake import (  # noqa: E402
    JsonFloat, loads, registry_arrow, same_value, sanitize, to_decimal)

RESERVED = ("_errors", "_schemas")
UTC_NAMES = {"UTC", "+00:00", "Etc/UTC", "Z", "utc"}
META_TYPES = {"_op": "string", "_transaction_id": "string", "_shard_id": "string",
              "_sequence_number": "string", "_before_image": "string",
              "_dms_timestamp": "timestamp[us, UTC]", "_commit_timestamp": "timestamp[us, UTC]",
              "_ingested_at": "timestamp[us",  # prefix: its time zone is not specified
              "_rescued": "string"}


def short(v, n=100):
    r = repr(v)
    return r if len(r) <= n else f"{r[:n]}... ({len(r)} chars)"


def type_sig(col):
    """A Parquet column's type as text. is_from_converted_type / force_set_converted_type
    describe how the reader got the logical type, not the type, so they are left out."""
    logical = json.loads(col.logical_type.to_json())
    logical.pop("is_from_converted_type", None)
    logical.pop("force_set_converted_type", None)
    return f"{col.physical_type}/{json.dumps(logical, sort_keys=True)}/{col.converted_type}"


def arrow_name(t):
    """Arrow type as text, with the encodings that mean the same column type merged."""
    if pa.types.is_large_string(t) or pa.types.is_string_view(t):
        return "string"
    if pa.types.is_large_binary(t) or pa.types.is_binary_view(t):
        return "binary"
    if pa.types.is_timestamp(t):
        tz = "UTC" if t.tz in UTC_NAMES else t.tz
        return f"timestamp[{t.unit}, {tz}]" if tz else f"timestamp[{t.unit}]"
    return str(t)


def mapped_type(d):
    """Arrow type the spec (docs/lake.md "Column types") maps a DMS table-def column to."""
    ty = d.get("type", "").upper().split("(")[0]
    if ty in ("INT1", "INT2", "INT4", "INT8", "INT16", "INT32", "INT64", "UINT1", "UINT2", "UINT4",
              "TINYINT", "SMALLINT", "MEDIUMINT", "INT", "INTEGER", "BIGINT", "UINT16", "UINT32"):
        return "int64"
    if ty in ("UINT8", "UINT64"):
        return "decimal128(38, 0)"
    if ty in ("NUMERIC", "DECIMAL", "NUMBER"):
        p = d.get("precision")
        if p is None or p > 38:
            return "string"
        s = min(d.get("scale", 0) or 0, p)
        # scale max(s, 6), but never so large that the integer digits no longer fit
        return f"decimal128(38, {min(max(s, 6), 38 - (p - s))})"
    if ty in ("REAL4", "REAL8", "FLOAT", "FLOAT4", "FLOAT8", "FLOAT32", "FLOAT64", "DOUBLE", "REAL"):
        return "double"
    if ty in ("BOOLEAN", "BOOL", "BIT"):
        return "bool"
    if ty in ("DATE", "DATE32", "DATE64"):
        return "date32[day]"
    if ty in ("DATETIME", "DATETIME2", "SMALLDATETIME", "TIMESTAMP", "TIMESTAMP64"):
        return "timestamp[us]"  # wall clock: isAdjustedToUTC = false
    if ty in ("TIMESTAMPTZ", "DATETIMEOFFSET"):
        return "timestamp[us, UTC]"
    if ty in ("BYTES", "BLOB", "BINARY", "VARBINARY", "RAW"):
        return "binary"
    return "string"


def registered(root, table):
    """column -> Arrow type of the table's newest registry version (check 5), or None."""
    schema, name = table.split(".", 1)
    d = os.path.join(root, "_schemas", schema, name)
    versions = sorted(f for f in os.listdir(d) if re.fullmatch(r"v\d+\.json", f)) \
        if os.path.isdir(d) else []
    if not versions:
        return None
    with open(os.path.join(d, versions[-1]), encoding="utf-8") as f:
        reg = json.load(f)
    return {c["name"]: registry_arrow(c["type"]) for c in reg["columns"]}


def show_key(k):
    return "(" + ", ".join(str(x[1]) for x in k) + ")"


def key_part(v):
    """Primary-key value comparable between JSON (int, str) and DuckDB (int, Decimal, date...)."""
    if isinstance(v, decimal.Decimal) or (isinstance(v, (int, float)) and not isinstance(v, bool)):
        d = v if isinstance(v, decimal.Decimal) else to_decimal(v)
        return ("n", int(d) if d == d.to_integral_value() else d.normalize())
    return ("s", v.isoformat() if hasattr(v, "isoformat") else str(v))


def scan_files(root, wanted, messages, problems, summary):
    """Checks 1, 2, 4 and 5 over every Parquet file under root."""
    sigs = {}  # table -> column -> type signature -> [files]
    registries = {}  # table -> registered column types
    for d, _dirs, names in os.walk(root):
        for name in sorted(n for n in names if n.endswith(".parquet")):
            path = os.path.join(d, name)
            rel = os.path.relpath(path, root)
            parts = rel.split(os.sep)
            if len(parts) < 3 or parts[0] in RESERVED:
                problems.append(f"{rel}: Parquet file outside a table directory")
                continue
            table = f"{parts[0]}.{parts[1]}"
            if wanted and table not in wanted:
                continue
            pschema = pq.ParquetFile(path).schema
            for i in range(len(pschema)):
                col = pschema.column(i)
                sigs.setdefault(table, {}).setdefault(col.path, {}).setdefault(type_sig(col), []).append(rel)
                logical = json.loads(col.logical_type.to_json())
                if col.physical_type == "INT96":
                    problems.append(f"{rel}: {col.path} is INT96")
                if logical.get("timeUnit") == "nanoseconds" or col.converted_type == "TIMESTAMP_NANOS":
                    problems.append(f"{rel}: {col.path} is a nanosecond timestamp")
                if logical.get("isSigned") is False or str(col.converted_type).startswith("UINT"):
                    problems.append(f"{rel}: {col.path} is an unsigned integer")
                if (logical.get("precision") or col.precision or 0) > 38:
                    problems.append(f"{rel}: {col.path} is a decimal of precision > 38")
            aschema = pq.read_schema(path)
            if table not in registries:
                registries[table] = registered(root, table)
            for field in aschema:
                reg = registries[table]
                if reg is not None and field.name not in META_TYPES:
                    if field.name not in reg:
                        problems.append(f"{rel}: {field.name} is not in the registry")
                    elif arrow_name(field.type) != reg[field.name]:
                        problems.append(f"{rel}: {field.name} is {field.type}, "
                                        f"registered {reg[field.name]}")
                want = META_TYPES.get(field.name)
                if want and not arrow_name(field.type).startswith(want):
                    problems.append(f"{rel}: {field.name} is {field.type}, expected {want}")
                if field.name not in META_TYPES and messages.get(table, {}).get(field.name):
                    want = mapped_type(messages[table][field.name])
                    if arrow_name(field.type) != want:
                        problems.append(f"{rel}: {field.name} is {field.type}, its table-def "
                                        f"{messages[table][field.name]} maps to {want} (widened?)")
    for table in sorted(wanted - set(sigs)) if wanted else ([] if sigs else ["any table"]):
        problems.append(f"{table}: no Parquet files under {root}")  # nothing checked is no pass
    for table, columns in sorted(sigs.items()):
        files = {f for col in columns.values() for fs in col.values() for f in fs}
        summary.setdefault(table, {}).update(files=len(files), columns=len(columns))
        for col, by_sig in sorted(columns.items()):
            if len(by_sig) > 1:
                detail = "; ".join(f"{sig} in {len(fs)} file(s) e.g. {fs[:3]}" for sig, fs in by_sig.items())
                problems.append(f"{table} column {col} has {len(by_sig)} types: {detail}")


def table_defs(path):
    """table -> sanitised column -> newest table-def entry naming it (check 4)."""
    defs = {}
    with open(path, encoding="utf-8") as f:
        for line in f:
            msg = loads(line)
            md = msg.get("metadata", {})
            td = (msg.get("control") or {}).get("table-def")
            if md.get("record-type") == "control" and md.get("schema-name") and td:
                cols = defs.setdefault(f"{md['schema-name']}.{md['table-name']}", {})
                cols.update({sanitize(c): d for c, d in td.get("columns", {}).items()})
    return defs


def check_latest(sql_path, expected, wanted, problems, summary):
    """Check 3: the __latest views against expected_final_state.json."""
    import duckdb  # only needed here
    con = duckdb.connect()
    con.execute("SET TimeZone='UTC'")  # TIMESTAMPTZ comes back as an aware datetime either way
    try:
        with open(sql_path, encoding="utf-8") as f:
            con.execute(f.read())
    except (OSError, duckdb.Error) as e:
        problems.append(f"{sql_path}: cannot run: {str(e).splitlines()[0]}")
        return
    for name, t in expected["tables"].items():
        if wanted and name not in wanted:
            continue
        view = f'"{t["schema"]}__{t["table"]}__latest"'
        info = summary.setdefault(name, {})
        info["expected_rows"] = len(t["rows"])
        try:
            cur = con.execute(f"SELECT * FROM {view}")
        except duckdb.Error as e:
            problems.append(f"{name}: cannot read {view}: {str(e).splitlines()[0]}")
            continue
        cols = [d[0] for d in cur.description]
        got_rows = [dict(zip(cols, r)) for r in cur.fetchall()]
        info["view_rows"] = len(got_rows)
        info["missing_columns"] = [c for c in t["columns_all"] if sanitize(c) not in cols]
        pk = t["primary_key"]
        missing_pk = [c for c in pk if sanitize(c) not in cols]
        if missing_pk:
            problems.append(f"{name}: {view} has no key column(s) {missing_pk}")
            continue
        if t["dropped"] and got_rows:
            problems.append(f"{name}: table was dropped but {view} has {len(got_rows)} rows")
        got = {}
        for r in got_rows:
            k = tuple(key_part(r[sanitize(c)]) for c in pk)
            if k in got:
                problems.append(f"{name}: key {show_key(k)} appears twice in {view}")
            got[k] = r
        want = {tuple(key_part(r[c]) for c in pk): r for r in t["rows"]}
        for k in sorted(set(want) - set(got), key=str):
            problems.append(f"{name}: live key {show_key(k)} missing from {view}")
        for k in sorted(set(got) - set(want), key=str):
            problems.append(f"{name}: {view} has key {show_key(k)}, which is not live")
        bad_rows = 0
        for k in set(want) & set(got):
            exp, row, bad = want[k], got[k], []
            for col, val in exp.items():
                v = row.get(sanitize(col))  # absent column = NULL
                if not same_value(val, v, numeric_text=True):
                    bad.append(f"{col}: view {short(v)} != expected {short(val)}")
            exp_cols = {sanitize(c) for c in exp}
            bad += [f"{c}: view {short(row[c])}, expected NULL (not in the row)"
                    for c in cols if not c.startswith("_") and c not in exp_cols and row[c] is not None]
            if bad:
                bad_rows += 1
                problems += [f"{name} key {show_key(k)} {b}" for b in bad]
        info["rows_differing"] = bad_rows


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--dir", required=True)
    ap.add_argument("--prefix", default="cdc-data/")
    ap.add_argument("--expected", required=True)
    ap.add_argument("--sql")
    ap.add_argument("--tables", help="comma-separated schema.table names (default: all)")
    ap.add_argument("--messages", help="DMS .jsonl with the control table-defs (check 4)")
    a = ap.parse_args()
    root = os.path.join(a.dir, a.prefix)
    with open(a.expected, encoding="utf-8") as f:
        expected = json.loads(f.read(), parse_float=JsonFloat)
    wanted = set(filter(None, (a.tables or "").split(",")))
    unknown = wanted - set(expected["tables"])
    problems, summary = [], {}
    if unknown:
        problems.append(f"--tables names tables not in {a.expected}: {sorted(unknown)}")
    if not os.path.isdir(root):
        problems.append(f"{root} is not a directory")
    messages = table_defs(a.messages) if a.messages else {}
    scan_files(root, wanted, messages, problems, summary)
    if a.sql:
        check_latest(a.sql, expected, wanted, problems, summary)
    print(json.dumps({"tables": summary, "problems": problems[:50], "problem_count": len(problems)},
                     default=str))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
