//! Object keys: where a table's file for one hour lands, and what it is called.
//!
//! A file's name is derived only from the identities of the rows in it, so
//! writing the same rows again gives the same key (and S3's `If-None-Match`
//! turns the second write into a no-op), while different rows never share a
//! key, even across concurrent containers.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use sha2::{Digest, Sha256};

use crate::names::{RecordId, TableName};

/// How the time partition is spelled in keys.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum PartitionStyle {
    /// `YYYY/MM/DD/HH`
    Plain,
    /// `year=YYYY/month=MM/day=DD/hour=HH`, which Hive, Glue and Athena discover.
    Hive,
}

/// A UTC hour, as hours since the Unix epoch.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Hour(pub i64);

impl Hour {
    pub fn from_micros(us: i64) -> Self {
        Hour(us.div_euclid(3_600_000_000))
    }

    fn start(self) -> DateTime<Utc> {
        DateTime::from_timestamp(self.0.saturating_mul(3600), 0).unwrap_or(DateTime::UNIX_EPOCH)
    }
}

/// Key segments longer than this are shortened (cut version 2 on): with
/// `S3_PREFIX` at most [`MAX_PREFIX_BYTES`] and Kinesis's own bounds on shard
/// ids (128 characters) and sequence numbers (129 digits), every key stays
/// within S3's 1,024 bytes, so no name can make a write fail for ever.
pub const MAX_SEGMENT_BYTES: usize = 150;

/// The longest `S3_PREFIX` accepted (checked at start-up).
pub const MAX_PREFIX_BYTES: usize = 256;

/// What a shortened segment keeps of its name before `_h` and the digest.
const SHORTENED_KEEP_BYTES: usize = 128;

/// `prefix/schema/table/<time partition>/` for `hour`, named by cut version
/// `cut` (see [`schema_segment`]).
pub fn partition_dir(
    prefix: &str,
    style: PartitionStyle,
    table: &TableName,
    hour: Hour,
    cut: u32,
) -> String {
    format!("{}{}", table_dir(prefix, table, cut), time_dir(style, hour))
}

/// A table's schema name as the first key segment under the prefix.
///
/// Up to cut version 1 it is [`path_segment`]. From 2 on, names may not
/// reach the function's own prefixes (`_spool/` and `_athena/`, which
/// lifecycle rules empty; `_errors/`, `_schemas/`): a leading `_` is spelled
/// `%5F` (a literal `%` is always escaped, so no other name gives it); and a
/// segment over [`MAX_SEGMENT_BYTES`] is shortened ([`shortened`]).
pub fn schema_segment(schema: &str, cut: u32) -> String {
    let segment = path_segment(schema);
    if cut < 2 {
        return segment;
    }
    let segment = match segment.strip_prefix('_') {
        Some(rest) => format!("%5F{rest}"),
        None => segment,
    };
    shortened(schema, segment)
}

/// A table's name as a key segment: [`path_segment`], and from cut version
/// 2 on shortened when over [`MAX_SEGMENT_BYTES`].
pub fn table_segment(table: &str, cut: u32) -> String {
    let segment = path_segment(table);
    if cut < 2 {
        segment
    } else {
        shortened(table, segment)
    }
}

/// `segment` (the key spelling of `raw`) when it fits in
/// [`MAX_SEGMENT_BYTES`]; else its first characters and `_h` with 16 hex
/// digits of a SHA-256 of `raw`, so two long names stay apart.
fn shortened(raw: &str, segment: String) -> String {
    if segment.len() <= MAX_SEGMENT_BYTES {
        return segment;
    }
    // Never split a character or a `%XX` escape (a `%` only starts one).
    let splits = |k: usize| {
        !segment.is_char_boundary(k)
            || segment.as_bytes()[..k]
                .iter()
                .rev()
                .take(2)
                .any(|&b| b == b'%')
    };
    let mut keep = SHORTENED_KEEP_BYTES;
    while splits(keep) {
        keep -= 1;
    }
    let digest = Sha256::digest(raw.as_bytes());
    let mut out = String::with_capacity(keep + 18);
    out.push_str(&segment[..keep]);
    out.push_str("_h");
    for b in &digest[..8] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// The hour a row is filed under: the hour of `time_us` (its commit time,
/// else DMS's message time), except from cut version 2 on for a time that
/// partition projection would never show — more than a year before the
/// record reached Kinesis or more than a day after (a clock or a metadata
/// fault: `0001-01-01`, `9999-12-31`). Such a row is filed under the hour it
/// reached Kinesis; its `_commit_timestamp` and `_dms_timestamp` keep what
/// DMS sent. The record's arrival time is part of the record (and of its
/// spool line), so every environment files the row the same way.
pub fn partition_hour(time_us: i64, arrival_us: Option<i64>, cut: u32) -> Hour {
    const YEAR_US: i64 = 366 * 24 * 3_600_000_000;
    const DAY_US: i64 = 24 * 3_600_000_000;
    // 2000-01-01: an arrival time before it is not Kinesis's (test data).
    const SANE_ARRIVAL_US: i64 = 946_684_800_000_000;
    match arrival_us {
        Some(arrival)
            if cut >= 2
                && arrival >= SANE_ARRIVAL_US
                && (time_us < arrival - YEAR_US || time_us > arrival + DAY_US) =>
        {
            Hour::from_micros(arrival)
        }
        _ => Hour::from_micros(time_us),
    }
}

fn time_dir(style: PartitionStyle, hour: Hour) -> String {
    let t = hour.start();
    let (y, m, d, h) = (t.year(), t.month(), t.day(), t.hour());
    match style {
        PartitionStyle::Plain => format!("{y:04}/{m:02}/{d:02}/{h:02}/"),
        PartitionStyle::Hive => format!("year={y:04}/month={m:02}/day={d:02}/hour={h:02}/"),
    }
}

/// `<shard>_<first seq>_<last seq>_<digest>`: the shard and sequence range say
/// where the rows came from; the digest of every row identity keeps two
/// different row sets with the same ends apart. `digest` is
/// [`rows_digest`] of `rows` (a part computes it once for its key and its
/// window state).
pub fn file_stem(rows: &[RecordId], digest: &str) -> String {
    let (Some(first), Some(last)) = (rows.first(), rows.last()) else {
        return "empty".to_string();
    };
    format!(
        "{}_{}_{}_{}",
        path_segment(&first.shard),
        path_segment(&first.sequence),
        path_segment(&last.sequence),
        digest
    )
}

/// The start of every data file's key in `dir` whose rows came from `shard`.
pub fn shard_files_prefix(dir: &str, shard: &str) -> String {
    format!("{dir}{}_", path_segment(shard))
}

/// A data file's first and last sequence numbers and digest, from its key
/// ([`file_stem`] inverted).
pub fn stem_parts(key: &str) -> Option<(&str, &str, &str)> {
    let stem = key.rsplit('/').next()?.strip_suffix(".parquet")?;
    let mut parts = stem.rsplitn(4, '_');
    let (digest, last, first) = (parts.next()?, parts.next()?, parts.next()?);
    parts.next()?;
    Some((first, last, digest))
}

/// 16 hex digits of a SHA-256 over every row's stream, shard and sequence
/// number: the last part of a file's name.
pub fn rows_digest(rows: &[RecordId]) -> String {
    let mut hash = Sha256::new();
    for id in rows {
        // Without a stream the digest is what it was before streams counted.
        if !id.stream.is_empty() {
            hash.update(id.stream.as_bytes());
            hash.update([0]);
        }
        hash.update(id.shard.as_bytes());
        hash.update([0]);
        hash.update(id.sequence.as_bytes());
        hash.update([0]);
    }
    let digest = hash.finalize();
    let mut short = String::with_capacity(16);
    for b in &digest[..8] {
        let _ = write!(short, "{b:02x}");
    }
    short
}

/// Key of a table's Parquet file, named by cut version `cut`.
pub fn data_key(
    prefix: &str,
    style: PartitionStyle,
    table: &TableName,
    hour: Hour,
    rows: &[RecordId],
    digest: &str,
    cut: u32,
) -> String {
    format!(
        "{}{}.parquet",
        partition_dir(prefix, style, table, hour, cut),
        file_stem(rows, digest)
    )
}

/// Key of a quarantine file for records that could not be decoded.
pub fn quarantine_key(
    prefix: &str,
    style: PartitionStyle,
    hour: Hour,
    rows: &[RecordId],
) -> String {
    format!(
        "{prefix}_errors/{}{}.jsonl",
        time_dir(style, hour),
        file_stem(rows, &rows_digest(rows))
    )
}

/// Directory of a table's schema registry versions (see `registry`). Names
/// are kept whole (registries written before cut version 2 are found where
/// they are) unless a version's key would then pass S3's 1,024 bytes (a key
/// no release could ever write): those are shortened as data keys are.
pub fn schema_dir(prefix: &str, table: &TableName) -> String {
    let (schema, name) = (path_segment(&table.schema), path_segment(&table.table));
    // `v{version:08}.json`, up to version 99,999,999.
    const VERSION_FILE_BYTES: usize = 14;
    let dir = format!("{prefix}_schemas/{schema}/{name}/");
    if dir.len() + VERSION_FILE_BYTES <= 1024 {
        return dir;
    }
    format!(
        "{prefix}_schemas/{}/{}/",
        shortened(&table.schema, schema),
        shortened(&table.table, name)
    )
}

/// Directory under which a table's data files lie (the Athena LOCATION),
/// named by cut version `cut`.
pub fn table_dir(prefix: &str, table: &TableName, cut: u32) -> String {
    format!(
        "{prefix}{}/{}/",
        schema_segment(&table.schema, cut),
        table_segment(&table.table, cut)
    )
}

/// Key for rows that could not be encoded as Parquet, kept as JSON lines.
pub fn unencodable_key(
    prefix: &str,
    table: &TableName,
    hour: Hour,
    rows: &[RecordId],
    digest: &str,
    cut: u32,
) -> String {
    format!(
        "{prefix}_errors/unencodable/{}/{}/{}{}.jsonl",
        schema_segment(&table.schema, cut),
        table_segment(&table.table, cut),
        time_dir(PartitionStyle::Plain, hour),
        file_stem(rows, digest)
    )
}

/// Keeps a name usable as one key segment: `/`, `%`, control characters and
/// `=` (which Hive reads as a partition) are percent-encoded.
fn path_segment(raw: &str) -> String {
    let mut out = String::with_capacity(raw.len());
    for ch in raw.chars() {
        if ch == '/' || ch == '%' || ch == '=' || ch.is_control() {
            let mut buf = [0u8; 4];
            for b in ch.encode_utf8(&mut buf).bytes() {
                let _ = write!(out, "%{b:02X}");
            }
        } else {
            out.push(ch);
        }
    }
    if out.is_empty() || out == "." || out == ".." {
        out = format!("%{}", out.len());
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::CUT_VERSION;
    use std::sync::Arc;

    fn id(shard: &str, seq: &str) -> RecordId {
        RecordId {
            stream: Arc::from(""),
            shard: Arc::from(shard),
            sequence: seq.to_string(),
        }
    }

    fn table() -> TableName {
        TableName {
            schema: "sales".into(),
            table: "client".into(),
        }
    }

    #[test]
    fn plain_and_hive_layouts() {
        // 2026-03-14T01:30:00Z
        let hour = Hour::from_micros(1_773_451_800_000_000);
        let rows = [
            id("shardId-000000000000", "100"),
            id("shardId-000000000000", "105"),
        ];
        let plain = data_key(
            "cdc-data/",
            PartitionStyle::Plain,
            &table(),
            hour,
            &rows,
            &rows_digest(&rows),
            CUT_VERSION,
        );
        assert!(
            plain.starts_with("cdc-data/sales/client/2026/03/14/01/shardId-000000000000_100_105_"),
            "{plain}"
        );
        assert!(plain.ends_with(".parquet"));
        let hive = data_key(
            "",
            PartitionStyle::Hive,
            &table(),
            hour,
            &rows,
            &rows_digest(&rows),
            CUT_VERSION,
        );
        assert!(
            hive.starts_with("sales/client/year=2026/month=03/day=14/hour=01/"),
            "{hive}"
        );
    }

    fn stem(rows: &[RecordId]) -> String {
        file_stem(rows, &rows_digest(rows))
    }

    #[test]
    fn same_rows_same_name_different_rows_different_name() {
        let a = [id("s", "1"), id("s", "2"), id("s", "3")];
        let b = [id("s", "1"), id("s", "4"), id("s", "3")];
        assert_eq!(stem(&a), stem(&a.clone()));
        assert_ne!(stem(&a), stem(&b));
        assert_ne!(stem(&a), stem(&[id("t", "1"), id("s", "2"), id("s", "3")]));
        // The same shard and sequence numbers in another stream: other rows.
        let other_stream: Vec<RecordId> = a
            .iter()
            .map(|r| RecordId {
                stream: Arc::from("arn:aws:kinesis:eu-west-1:123456789012:stream/b"),
                ..r.clone()
            })
            .collect();
        assert_ne!(stem(&a), stem(&other_stream));
    }

    #[test]
    fn hours_before_1970_floor_correctly() {
        assert_eq!(Hour::from_micros(-1), Hour(-1));
        let key = partition_dir(
            "",
            PartitionStyle::Plain,
            &table(),
            Hour::from_micros(-1),
            CUT_VERSION,
        );
        assert!(key.ends_with("1969/12/31/23/"), "{key}");
    }

    #[test]
    fn unsafe_names_are_escaped() {
        let t = TableName {
            schema: "a/b".into(),
            table: "x=y\n".into(),
        };
        let key = partition_dir("p/", PartitionStyle::Plain, &t, Hour(0), CUT_VERSION);
        assert!(key.starts_with("p/a%2Fb/x%3Dy%0A/1970/01/01/00/"), "{key}");
    }

    fn named(schema: &str, table: &str) -> TableName {
        TableName {
            schema: schema.into(),
            table: table.into(),
        }
    }

    #[test]
    fn no_schema_reaches_the_functions_own_prefixes() {
        for own in ["_spool", "_athena", "_errors", "_schemas", "_"] {
            let dir = table_dir("p/", &named(own, "t"), CUT_VERSION);
            assert!(dir.starts_with("p/%5F"), "{dir}");
            assert!(!dir.starts_with(&format!("p/{own}/")), "{dir}");
        }
        // A literal `%5F` is spelled `%255F`: the two names stay apart.
        assert_eq!(
            table_dir("p/", &named("%5Fspool", "t"), CUT_VERSION),
            "p/%255Fspool/t/"
        );
        // Only the leading `_`, and only the schema (tables sit below it).
        assert_eq!(table_dir("", &named("a_b", "_t"), CUT_VERSION), "a_b/_t/");
        // Cut version 1 windows keep the names they started with.
        assert_eq!(table_dir("p/", &named("_spool", "t"), 1), "p/_spool/t/");
    }

    #[test]
    fn long_names_are_shortened_apart_and_within_bounds() {
        let long = "x".repeat(400);
        let other = format!("{}y", "x".repeat(399));
        let a = table_segment(&long, CUT_VERSION);
        let b = table_segment(&other, CUT_VERSION);
        assert!(a.len() <= MAX_SEGMENT_BYTES && b.len() <= MAX_SEGMENT_BYTES);
        assert_ne!(a, b);
        assert!(a.starts_with(&"x".repeat(SHORTENED_KEEP_BYTES)), "{a}");
        assert_eq!(a, table_segment(&long, CUT_VERSION), "deterministic");
        // Exactly at the bound: kept as it is.
        let edge = "z".repeat(MAX_SEGMENT_BYTES);
        assert_eq!(table_segment(&edge, CUT_VERSION), edge);
        assert_ne!(
            table_segment(&format!("{edge}z"), CUT_VERSION),
            format!("{edge}z")
        );
        // Cut version 1: as long as the name.
        assert_eq!(table_segment(&long, 1), long);
        // Multi-byte characters and escapes are never split.
        for filler in ["é", "/", "日本", "a%"] {
            for lead in 0..4 {
                let name = format!("{}{}", "a".repeat(lead), filler.repeat(200));
                let seg = schema_segment(&name, CUT_VERSION);
                assert!(seg.len() <= MAX_SEGMENT_BYTES, "{seg}");
                let kept = seg.rsplit_once("_h").map(|(k, _)| k).unwrap_or(&seg);
                let bytes = kept.as_bytes();
                let n = bytes.len();
                assert!(
                    !bytes[n.saturating_sub(2)..].contains(&b'%'),
                    "an escape was split: {seg}"
                );
            }
        }
    }

    #[test]
    fn the_longest_possible_key_fits_in_s3s_1024_bytes() {
        // Kinesis: shard ids up to 128 characters, sequence numbers up to
        // 129 digits; names of any length; the longest accepted prefix.
        let prefix = format!("{}/", "p".repeat(MAX_PREFIX_BYTES - 1));
        let shard = "s".repeat(128);
        let seq = "9".repeat(129);
        let rows = [id(&shard, &seq), id(&shard, &seq)];
        let digest = rows_digest(&rows);
        let table = named(&"%/".repeat(300), &"日".repeat(300));
        for style in [PartitionStyle::Plain, PartitionStyle::Hive] {
            let key = data_key(
                &prefix,
                style,
                &table,
                Hour(i64::MAX / 4),
                &rows,
                &digest,
                CUT_VERSION,
            );
            assert!(key.len() <= 1024, "{} bytes", key.len());
        }
        // The longest: names just short enough to be kept whole.
        let widest = named(
            &"a".repeat(MAX_SEGMENT_BYTES),
            &"b".repeat(MAX_SEGMENT_BYTES),
        );
        let key = data_key(
            &prefix,
            PartitionStyle::Hive,
            &widest,
            Hour(0),
            &rows,
            &digest,
            CUT_VERSION,
        );
        assert_eq!(key.len(), 1005, "docs/lake.md gives this figure");
        // The registry's keys: whole while they fit, shortened beyond.
        let registry = format!("{}v99999999.json", schema_dir(&prefix, &table));
        assert!(registry.len() <= 1024, "{registry}");
        let fits = named(&"a".repeat(300), &"b".repeat(300));
        assert!(schema_dir(&prefix, &fits).ends_with(&format!("/{}/", "b".repeat(300))));
        let key = unencodable_key(&prefix, &table, Hour(0), &rows, &digest, CUT_VERSION);
        assert!(key.len() <= 1024, "{} bytes", key.len());
        // What cut version 1 did with the same names.
        let old = data_key(
            &prefix,
            PartitionStyle::Hive,
            &table,
            Hour(0),
            &rows,
            &digest,
            1,
        );
        assert!(old.len() > 1024);
    }

    #[test]
    fn commit_times_projection_cannot_show_are_filed_by_arrival() {
        let us = |s: &str| DateTime::parse_from_rfc3339(s).unwrap().timestamp_micros();
        let arrival = us("2026-03-14T01:30:00Z");
        let arrival_hour = Hour::from_micros(arrival);
        for wild in [
            "0001-01-01T00:00:00Z",
            "9999-12-31T23:59:59Z",
            "2025-03-12T00:00:00Z",
            "2026-03-15T02:00:00Z",
        ] {
            assert_eq!(
                partition_hour(us(wild), Some(arrival), CUT_VERSION),
                arrival_hour,
                "{wild}"
            );
            // Cut version 1 kept the commit time's hour.
            assert_eq!(
                partition_hour(us(wild), Some(arrival), 1),
                Hour::from_micros(us(wild))
            );
        }
        // Within a year before and a day after: the commit time's hour.
        for sane in [
            "2025-03-14T00:00:00Z",
            "2026-03-14T00:59:00Z",
            "2026-03-15T01:00:00Z",
        ] {
            assert_eq!(
                partition_hour(us(sane), Some(arrival), CUT_VERSION),
                Hour::from_micros(us(sane)),
                "{sane}"
            );
        }
        // No arrival time, or one no stream gives (test data): commit time.
        let old = us("1999-01-01T00:00:00Z");
        assert_eq!(partition_hour(0, None, CUT_VERSION), Hour(0));
        assert_eq!(partition_hour(0, Some(old), CUT_VERSION), Hour(0));
    }

    #[test]
    fn quarantine_keys_live_under_errors() {
        let key = quarantine_key("cdc-data/", PartitionStyle::Plain, Hour(0), &[id("s", "9")]);
        assert!(
            key.starts_with("cdc-data/_errors/1970/01/01/00/s_9_9_"),
            "{key}"
        );
        assert!(key.ends_with(".jsonl"));
    }

    #[test]
    fn a_data_keys_sequence_range_and_digest_read_back() {
        let rows = [
            id("shardId-000000000001", "7"),
            id("shardId-000000000001", "12"),
        ];
        let digest = rows_digest(&rows);
        let dir = "p/s/t/2026/03/14/01/";
        let key = format!("{dir}{}.parquet", file_stem(&rows, &digest));
        assert!(
            key.starts_with(&shard_files_prefix(dir, &rows[0].shard)),
            "{key}"
        );
        assert_eq!(stem_parts(&key), Some(("7", "12", digest.as_str())));
        assert_eq!(stem_parts("p/s/t/x.json"), None);
        assert_eq!(stem_parts("p/s/t/a_b.parquet"), None);
    }
}
