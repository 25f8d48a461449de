#!/usr/bin/env python3
"""Independent check of a lake written by cdc-batcher, read with pyarrow.

Given the Kinesis event files that went in, it checks that:
  * every DMS data record is in exactly one Parquet file, in its table's partition for
    the hour of its commit time (else DMS timestamp; the hour the record reached Kinesis
    when that time is over a year before it or over a day after), under its schema's
    and table's key segments (data_segment), with its data values and the
    metadata columns (_op, _dms_timestamp, _commit_timestamp, _transaction_id,
    _shard_id, _sequence_number, _ingested_at, _before_image, _rescued); a value in
    _rescued is NULL in its column and its text there is exactly the source value;
  * every data column of every file has the type the table's newest schema-registry
    version registers for it;
  * no other row is in the lake (control and malformed records make no rows);
  * every malformed record is in the _errors/ quarantine exactly once, with the
    `data` string exactly as it was in the event;
  * every column chunk is Snappy-compressed, no timestamp is in nanoseconds;
  * the only other objects are schema-registry versions _schemas/{schema}/{table}/vN.json
    and window-mode spool objects _spool/{stream}/{shard}/{window}/{index}_{seq}.jsonl.sz.

Values are compared by type (same_value): columns are typed (int64, decimal128, double,
bool, date32, timestamp[us, UTC] and timestamp[us] (wall clock: the same digits), binary,
string), DMS sends JSON tokens. Columns are found by the sanitised JSON key; a
column absent from a file is NULL. _sequence_number is zero-padded to 64 digits, so rows
are keyed by (shard, int(sequence number)).

Usage:
  check_lake.py (--dir DIR | --s3-endpoint URL --bucket B) [--prefix P]
                [--before-image-field F] EVENT.json... [--expect-rows N]
Prints a JSON summary; exits 1 listing the problems if any check fails.
(check_schema.py imports JsonFloat, loads, sanitize, to_decimal and same_value from here.)
"""
import argparse
import base64
import binascii
import datetime as dt
import decimal
import hashlib
import json
import math
import re
import sys
import urllib.parse

import pyarrow.fs as pafs
import pyarrow.parquet as pq

DATA_OPS = {"load", "insert", "update", "delete"}
META = ["_op", "_dms_timestamp", "_commit_timestamp", "_transaction_id", "_shard_id",
        "_sequence_number", "_ingested_at", "_before_image", "_rescued"]
SEQ_WIDTH = 64
SCHEMA_OBJECT = re.compile(r"_schemas/[^/]+/[^/]+/v\d+\.json")
# Window mode's spool: _spool/<stream>/<shard>/<window start>/<index>_<last seq>.jsonl.sz
SPOOL_OBJECT = re.compile(r"_spool/[^/]+/[^/]+/[^/]+/\d{6}_\d+\.jsonl\.sz")
# ... and the marker a window's final invocation writes once every file is stored.
# (and beside the window's directory, the index key the sweep lists: <window start>.done).
WINDOW_MARKER = re.compile(r"_spool/[^/]+/[^/]+/[^/]+(/_done\.json|\.done)")
# A range of records gone from both the spool and the stream (never expected in a test run).
LOST_RANGE = re.compile(r"_errors/lost/[^/]+/[^/]+/[^/]+/\d{6}\.json")


def path_segment(raw):
    """A name as one key segment: `/`, `%`, `=` and control characters percent-encoded."""
    out = "".join("".join(f"%{b:02X}" for b in ch.encode()) if ch in "/%=" or
                  ord(ch) < 0x20 or 0x7F <= ord(ch) <= 0x9F else ch for ch in raw)
    return f"%{len(out)}" if out in ("", ".", "..") else out


def data_segment(raw, schema):
    """A schema's or table's segment of a data key: a schema's leading `_` spelled `%5F`
    (never one of the function's own prefixes), a segment over 150 bytes shortened to
    its first <=128 bytes (no character or escape split), `_h` and 16 hex of SHA-256."""
    seg = path_segment(raw)
    if schema and seg.startswith("_"):
        seg = "%5F" + seg[1:]
    b = seg.encode()
    if len(b) <= 150:
        return seg
    keep = 128
    while (b[keep] & 0xC0) == 0x80 or b"%" in b[max(0, keep - 2):keep]:
        keep -= 1
    return b[:keep].decode() + "_h" + hashlib.sha256(raw.encode()).hexdigest()[:16]


def registry_name(segment):
    """The name behind a schema registry key segment (path_segment inverted)."""
    if re.fullmatch(r"%[012]", segment):
        return ["", ".", ".."][int(segment[1:])]
    return urllib.parse.unquote(segment)


def partition_time(when, arrival):
    """The instant whose hour a row is filed under (layout::partition_hour)."""
    if arrival is None:
        return when
    arrival_us = round(arrival * 1e3) * 1000
    if arrival_us < 946_684_800_000_000:
        return when
    at = dt.datetime(1970, 1, 1, tzinfo=dt.timezone.utc) + dt.timedelta(microseconds=arrival_us)
    if when < at - dt.timedelta(days=366) or when > at + dt.timedelta(days=1):
        return at
    return when


class JsonFloat(float):
    """A JSON number with a fraction or exponent that remembers its token text.

    DMS sends large BIGINTs as 2.71828182845905E+17; an INT64 column stores the exact
    value of that text (271828182845905000), which no double equals, and a widened
    (string) column stores the text itself. Both need the text, not the float."""

    def __new__(cls, text):
        obj = super().__new__(cls, text)
        obj.text = text
        return obj


def loads(text):
    return json.loads(text, parse_float=JsonFloat)


def sanitize(name):
    """Parquet column name of a JSON key: lower-cased, every char outside [a-z0-9_] -> '_'."""
    return re.sub(r"[^a-z0-9_]", "_", name.lower())


def parse_ts(s, exact=False):
    # Python's fromisoformat takes at most 6 fractional digits; DMS sends up to 9.
    # With exact=True a value with sub-microsecond digits is refused: a timestamp[us]
    # column cannot hold that instant.
    m = re.fullmatch(r"(\d{4}-\d\d-\d\dT\d\d:\d\d:\d\d)(?:\.(\d{1,9}))?(Z|[+-]\d\d:\d\d)", s)
    if not m or (exact and (m.group(2) or "")[6:].strip("0")):
        raise ValueError(f"not a timestamp: {s!r}")
    frac = ((m.group(2) or "") + "000000")[:6]
    tz = "+00:00" if m.group(3) == "Z" else m.group(3)
    return dt.datetime.fromisoformat(f"{m.group(1)}.{frac}{tz}")


def to_decimal(v):
    """Exact value of a JSON number or numeric string as a Decimal, else None."""
    if isinstance(v, bool) or not isinstance(v, (int, float, str)):
        return None
    text = v.text if isinstance(v, JsonFloat) else repr(v) if isinstance(v, float) else v
    try:
        d = decimal.Decimal(text)
    except decimal.InvalidOperation:
        return None
    return d if d.is_finite() else None


# The texts the writer reads as booleans (crates/domain/src/types.rs parse_bool).
BOOL_TEXT = {t: True for t in ("true", "t", "TRUE", "T", "True", "1", "y", "yes")}
BOOL_TEXT.update({t: False for t in ("false", "f", "FALSE", "F", "False", "0", "n", "no")})


# Registry type names (crates/domain/src/types.rs) as Arrow types.
REGISTRY_TYPES = {"boolean": "bool", "bigint": "int64", "double": "double", "date": "date32[day]",
                  "timestamp": "timestamp[us, UTC]", "timestamp_ntz": "timestamp[us]",
                  "binary": "binary", "string": "string"}


def registry_arrow(name):
    m = re.fullmatch(r"decimal\(38,\s*(\d+)\)", name)
    return f"decimal128(38, {m.group(1)})" if m else REGISTRY_TYPES.get(name, f"? {name}")


def arrow_type(t):
    """An Arrow type as text, UTC zones spelled one way."""
    if str(t).startswith("timestamp[") and getattr(t, "tz", None):
        return f"timestamp[{t.unit}, UTC]" if t.tz in ("UTC", "+00:00", "Etc/UTC") else str(t)
    if str(t) in ("large_string", "string_view"):
        return "string"
    return str(t)


def same_value(expected, got, numeric_text=False):
    """Does the lake value `got` (as pyarrow/DuckDB return it) equal the DMS JSON value?

    Dispatches on the type of `got`, i.e. on the column type the writer chose.
    numeric_text: a string column may hold any text numerically equal to a JSON number
    (the expected file re-serialises numbers, so the exact source token is not known)."""
    if expected is None or got is None:
        return expected is None and got is None
    if isinstance(got, bool):                       # before int: True == 1 in Python
        if isinstance(expected, str):               # PostgreSQL booleans arrive as "t"/"f"
            return BOOL_TEXT.get(expected) is got
        return expected is got
    if isinstance(got, (int, decimal.Decimal)):     # int64 or decimal128: exact value
        d = to_decimal(expected)                    # "12345.50", 42, 2.71828182845905E+17
        return d is not None and d == got
    if isinstance(got, float):
        d = to_decimal(expected)
        return d is not None and (got == float(d) or math.isclose(got, float(d), rel_tol=1e-15))
    if isinstance(got, dt.datetime):                # timestamp: the very same instant
        try:                                        # timestamp_ntz: the same digits
            if not isinstance(expected, str):
                return False
            want = parse_ts(expected, exact=True)
            return want == got if got.tzinfo is not None else want.replace(tzinfo=None) == got
        except ValueError:
            return False
    if isinstance(got, dt.date):                    # date32 from "YYYY-MM-DD"
        return expected == got.isoformat()
    if isinstance(got, (bytes, bytearray)):         # binary from "0x80057D94" (or bare hex)
        if not isinstance(expected, str):
            return False
        hexpart = expected[2:] if expected[:2] in ("0x", "0X") else expected
        return bytes(got).hex().upper() == hexpart.upper()
    if isinstance(got, str):                        # string, or a column widened to string
        if isinstance(expected, str):
            return got == expected
        if isinstance(expected, (dict, list)):      # objects are stored as JSON text
            try:
                return loads(got) == expected
            except ValueError:
                return False
        if isinstance(expected, bool):
            return got == ("true" if expected else "false")
        text = expected.text if isinstance(expected, JsonFloat) else str(expected)
        return got == text or (numeric_text and to_decimal(got) is not None
                               and to_decimal(got) == to_decimal(expected))
    return False


def seq_key(seq):
    """Sequence numbers compare as integers: the lake pads them, the events do not."""
    return int(seq) if isinstance(seq, str) and re.fullmatch(r"[0-9]+", seq) else seq


def classify(data_field, before_field):
    """(kind, message): kind is 'row', 'control' or 'bad' (the function must quarantine)."""
    if not isinstance(data_field, str):
        return "bad", None
    try:
        raw = base64.b64decode(data_field, validate=True)
        text = raw.decode("utf-8")
        msg = loads(text)
    except (binascii.Error, ValueError):
        return "bad", None
    if not isinstance(msg, dict) or not isinstance(msg.get("metadata"), dict):
        return "bad", None
    meta = msg["metadata"]
    rtype, op = meta.get("record-type"), meta.get("operation")
    if not isinstance(op, str) or not op:
        return "bad", None
    if rtype == "control":
        return "control", msg
    if rtype != "data" or op not in DATA_OPS:
        return "bad", None
    schema, table = meta.get("schema-name"), meta.get("table-name")
    if not (isinstance(schema, str) and schema and isinstance(table, str) and table):
        return "bad", None
    if not isinstance(msg.get("data"), dict):
        return "bad", None
    try:
        parse_ts(meta["timestamp"])
        if meta.get("commit-timestamp"):
            parse_ts(meta["commit-timestamp"])
    except (KeyError, ValueError, TypeError):
        return "bad", None
    return "row", msg


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--dir")
    ap.add_argument("--s3-endpoint")
    ap.add_argument("--bucket")
    ap.add_argument("--prefix", default="cdc-data/")
    ap.add_argument("--before-image-field", default="before-image")
    ap.add_argument("--expect-rows", type=int)
    ap.add_argument("events", nargs="+")
    a = ap.parse_args()

    if a.dir:
        fs, root = pafs.LocalFileSystem(), a.dir.rstrip("/") + "/" + a.prefix
    else:
        host = a.s3_endpoint.split("://", 1)[-1]
        fs = pafs.S3FileSystem(endpoint_override=host, scheme="http", access_key="test",
                               secret_key="test", region="us-east-1")
        root = f"{a.bucket}/{a.prefix}"
    root = root.rstrip("/")

    expected_rows, expected_bad, raw_seq, arrivals = {}, {}, {}, {}
    for path in a.events:
        with open(path) as f:
            ev = json.load(f)
        for rec in ev.get("Records", []):
            k = rec.get("kinesis", {})
            seq = k.get("sequenceNumber")
            shard = rec.get("eventID", ":").split(":", 1)[0]
            kind, msg = classify(k.get("data"), a.before_image_field)
            key = (shard, seq_key(seq))
            raw_seq[key] = seq
            if kind == "row":
                # A record delivered again is still one row.
                expected_rows.setdefault(key, msg)
                arrivals.setdefault(key, k.get("approximateArrivalTimestamp"))
            elif kind == "bad":
                expected_bad.setdefault(key, k.get("data"))

    problems = []
    files = [i for i in fs.get_file_info(pafs.FileSelector(root, recursive=True, allow_not_found=True))
             if i.type == pafs.FileType.File]
    parquet = [i.path for i in files if i.path.endswith(".parquet")]
    errors = [i.path for i in files if i.path.endswith(".jsonl") and "/_errors/" in i.path]
    schemas = [i.path for i in files if SCHEMA_OBJECT.fullmatch(i.path[len(root) + 1:])]
    spools = [i.path for i in files if SPOOL_OBJECT.fullmatch(i.path[len(root) + 1:])
              or WINDOW_MARKER.fullmatch(i.path[len(root) + 1:])]
    lost = [i.path for i in files if LOST_RANGE.fullmatch(i.path[len(root) + 1:])]
    if lost:
        problems.append(f"ranges recorded as lost: {lost[:5]}")
    others = [i.path for i in files if i.path not in parquet and i.path not in errors
              and i.path not in schemas and i.path not in spools and i.path not in lost]
    if others:
        problems.append(f"unexpected objects: {others[:5]}")
    registered = {}  # "schema/table" dir -> (version, {column: arrow type}) of the newest version
    for path in schemas:  # the registry is read by the writer: each version must parse
        with fs.open_input_stream(path) as f:
            try:
                reg = json.loads(f.read().decode())
                if not isinstance(reg, dict):
                    problems.append(f"{path}: schema version is not a JSON object")
                    continue
            except ValueError as e:
                problems.append(f"{path}: schema version is not JSON: {e}")
                continue
        reg_schema, reg_table = path[len(root) + 1:].split("/")[1:3]
        # Keyed as the table's data files are.
        table_dir = (data_segment(registry_name(reg_schema), True) + "/"
                     + data_segment(registry_name(reg_table), False))
        version = int(path.rsplit("/v", 1)[1].split(".")[0])
        if version >= registered.get(table_dir, (-1, None))[0]:
            registered[table_dir] = (version, {c["name"]: registry_arrow(c["type"])
                                               for c in reg.get("columns", [])},
                                     {(r["column"], registry_arrow(r["from"]))
                                      for r in reg.get("retyped", [])})

    seen = {}
    needs_rewrite = set()
    for path in parquet:
        pf = pq.ParquetFile(path, filesystem=fs)
        for rg in range(pf.metadata.num_row_groups):
            for c in range(pf.metadata.num_columns):
                col = pf.metadata.row_group(rg).column(c)
                if col.compression != "SNAPPY":
                    problems.append(f"{path}: column {col.path_in_schema} is {col.compression}")
        table = pf.read()
        for field in table.schema:
            if str(field.type).startswith("timestamp[ns"):
                problems.append(f"{path}: {field.name} is a nanosecond timestamp")
        rel_dir = "/".join(path[len(root) + 1:].split("/")[:2])
        _, reg, retyped = registered.get(rel_dir, (0, None, set()))
        for field in table.schema:  # every file has the registered types
            if reg is not None and field.name not in META:
                if field.name not in reg:
                    problems.append(f"{path}: column {field.name} is not in the registry")
                elif (field.name, arrow_type(field.type)) in retyped:
                    # Written before a declaration replaced the inferred type: the registry
                    # records it and `ddl --check` lists the file for a rewrite.
                    needs_rewrite.add(path)
                elif arrow_type(field.type) != reg[field.name]:
                    problems.append(f"{path}: {field.name} is {field.type}, "
                                    f"registered {reg[field.name]}")
        missing_meta = [m for m in META if m not in table.schema.names]
        if missing_meta:
            problems.append(f"{path}: metadata columns missing: {missing_meta}")
            continue
        rel = path[len(root) + 1:]
        for row in table.to_pylist():
            got_seq = row["_sequence_number"]
            seq = (row["_shard_id"], seq_key(got_seq))
            if not isinstance(seq[1], int):
                problems.append(f"{rel}: _sequence_number {got_seq!r} is not a decimal number")
                continue
            if seq in seen:
                problems.append(f"row {seq} is in {seen[seq]} and again in {rel}")
                continue
            seen[seq] = rel
            if seq not in expected_rows:
                problems.append(f"{rel}: row {seq} does not come from a data record")
                continue
            if len(raw_seq[seq]) <= SEQ_WIDTH and len(got_seq) != SEQ_WIDTH:
                problems.append(f"row {seq} _sequence_number {got_seq!r} is not {SEQ_WIDTH} digits")
            shard, msg = seq[0], expected_rows[seq]
            meta, data = msg["metadata"], msg["data"]
            when = partition_time(parse_ts(meta.get("commit-timestamp") or meta["timestamp"]),
                                  arrivals.get(seq))
            want_dir = (f"{data_segment(meta['schema-name'], True)}/"
                        f"{data_segment(meta['table-name'], False)}/")
            plain = when.strftime("%Y/%m/%d/%H/")
            hive = when.strftime("year=%Y/month=%m/day=%d/hour=%H/")
            if not (rel.startswith(want_dir + plain) or rel.startswith(want_dir + hive)):
                problems.append(f"row {seq} is in {rel}, expected under {want_dir}{plain}")
            rescued = loads(row["_rescued"]) if row.get("_rescued") else {}
            for col, val in data.items():
                got = row.get(sanitize(col))  # absent column = NULL
                if sanitize(col) in rescued:
                    # A value its column's type cannot hold: NULL there, its text kept exactly.
                    text = rescued[sanitize(col)]
                    exact = val if isinstance(val, str) else \
                        (val.text if isinstance(val, JsonFloat) else json.dumps(val))
                    if got is not None or text != exact:
                        problems.append(f"row {seq} column {col}: rescued {text!r} (column "
                                        f"{got!r}) != {val!r}")
                    continue
                if not same_value(val, got):
                    problems.append(f"row {seq} column {col}: lake {got!r} != {val!r}")
            for col in rescued:
                if col not in {sanitize(c) for c in data}:
                    problems.append(f"row {seq} _rescued names {col}, not in the record")
            data_cols = {sanitize(c) for c in data}
            for col in table.schema.names:
                if not col.startswith("_") and col not in data_cols and row[col] is not None:
                    problems.append(f"row {seq} column {col} is {row[col]!r}, absent in the record")
            checks = {
                "_op": meta["operation"],
                "_dms_timestamp": parse_ts(meta["timestamp"]),
                "_commit_timestamp": parse_ts(meta["commit-timestamp"]) if meta.get("commit-timestamp") else None,
                "_transaction_id": None if meta.get("transaction-id") is None else str(meta["transaction-id"]),
                "_shard_id": shard,
            }
            for col, want in checks.items():
                if row[col] != want:
                    problems.append(f"row {seq} {col}: lake {row[col]!r} != {want!r}")
            image = msg.get(a.before_image_field)
            try:
                got_image = None if row["_before_image"] is None else loads(row["_before_image"])
            except ValueError:
                got_image = "<not JSON>"
            if got_image != image:
                problems.append(f"row {seq} _before_image: {row['_before_image']!r} != {image!r}")
            if row["_ingested_at"] is None:
                problems.append(f"row {seq} has no _ingested_at")
            for bad_id in range(39001, 39016):
                if row.get("client_id") == bad_id:
                    problems.append(f"row {seq} carries a malformed record's id {bad_id}")
    missing = sorted(set(expected_rows) - set(seen), key=str)
    if missing:
        problems.append(f"{len(missing)} data records are not in the lake, e.g. {missing[:3]}")

    quarantined = {}
    for path in errors:
        with fs.open_input_stream(path) as f:
            for line in f.read().decode().splitlines():
                e = json.loads(line)
                seq = (e.get("shard_id"), seq_key(e.get("sequence_number")))
                if seq in quarantined:
                    problems.append(f"quarantined record {seq} appears twice")
                quarantined[seq] = e
                if not e.get("error"):
                    problems.append(f"quarantined record {seq} has no error")
    for seq, data in expected_bad.items():
        if seq not in quarantined:
            problems.append(f"malformed record {seq} is not in the quarantine")
        elif quarantined[seq].get("data") != data:
            problems.append(f"quarantined record {seq}: data differs from what arrived")
    extra_q = sorted(set(quarantined) - set(expected_bad), key=str)
    if extra_q:
        problems.append(f"{len(extra_q)} good records were quarantined, e.g. {extra_q[:3]}")
    if a.expect_rows is not None and len(seen) != a.expect_rows:
        problems.append(f"lake has {len(seen)} rows, expected {a.expect_rows}")

    print(json.dumps({"files": len(parquet), "rows": len(seen), "expected_rows": len(expected_rows),
                      "quarantined": len(quarantined), "expected_quarantined": len(expected_bad),
                      "schema_objects": len(schemas), "needs_rewrite": len(needs_rewrite),
                      "problems": problems[:50], "problem_count": len(problems)}))
    return 1 if problems else 0


if __name__ == "__main__":
    sys.exit(main())
