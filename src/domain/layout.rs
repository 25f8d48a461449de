//! Object keys: where a table's file for one hour lands, and what it is called.
//!
//! A file's name is derived only from the identities of the rows in it, so
//! writing the same rows again gives the same key (and S3's `If-None-Match`
//! turns the second write into a no-op), while different rows never share a
//! key, even across concurrent containers.

use std::fmt::Write as _;

use chrono::{DateTime, Datelike, Timelike, Utc};
use sha2::{Digest, Sha256};

use crate::dms::TableName;

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

/// Who delivered a record: its stream, shard and sequence number.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct RecordId {
    /// The stream's ARN (`eventSourceARN`); empty when the event did not say.
    /// Shard ids and sequence numbers repeat across streams.
    pub stream: std::sync::Arc<str>,
    pub shard: std::sync::Arc<str>,
    pub sequence: String,
}

/// `prefix/schema/table/<time partition>/` for `hour`.
pub fn partition_dir(prefix: &str, style: PartitionStyle, table: &TableName, hour: Hour) -> String {
    format!(
        "{prefix}{}/{}/{}",
        path_segment(&table.schema),
        path_segment(&table.table),
        time_dir(style, hour)
    )
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

/// Key of a table's Parquet file.
pub fn data_key(
    prefix: &str,
    style: PartitionStyle,
    table: &TableName,
    hour: Hour,
    rows: &[RecordId],
    digest: &str,
) -> String {
    format!(
        "{}{}.parquet",
        partition_dir(prefix, style, table, hour),
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

/// Directory of a table's schema registry versions (see `registry`).
pub fn schema_dir(prefix: &str, table: &TableName) -> String {
    format!(
        "{prefix}_schemas/{}/{}/",
        path_segment(&table.schema),
        path_segment(&table.table)
    )
}

/// Directory under which a table's data files lie (the Athena LOCATION).
pub fn table_dir(prefix: &str, table: &TableName) -> String {
    format!(
        "{prefix}{}/{}/",
        path_segment(&table.schema),
        path_segment(&table.table)
    )
}

/// Key for rows that could not be encoded as Parquet, kept as JSON lines.
pub fn unencodable_key(
    prefix: &str,
    table: &TableName,
    hour: Hour,
    rows: &[RecordId],
    digest: &str,
) -> String {
    format!(
        "{prefix}_errors/unencodable/{}/{}/{}{}.jsonl",
        path_segment(&table.schema),
        path_segment(&table.table),
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
        let key = partition_dir("", PartitionStyle::Plain, &table(), Hour::from_micros(-1));
        assert!(key.ends_with("1969/12/31/23/"), "{key}");
    }

    #[test]
    fn unsafe_names_are_escaped() {
        let t = TableName {
            schema: "a/b".into(),
            table: "x=y\n".into(),
        };
        let key = partition_dir("p/", PartitionStyle::Plain, &t, Hour(0));
        assert!(key.starts_with("p/a%2Fb/x%3Dy%0A/1970/01/01/00/"), "{key}");
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
