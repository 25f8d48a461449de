//! The flat row a DMS change becomes: its `data` columns plus metadata
//! columns, as one line of JSON, and the JSON kinds seen per column.
//!
//! Rows are kept as JSON text (not a DOM) because that is compact in memory
//! and is exactly what arrow-json's decoder reads when the buffer is encoded.

use std::io::Write as _;

use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::dms::RowChange;

/// The JSON kinds seen in one column of a buffer, as a bit set.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Kinds(u8);

impl Kinds {
    pub const NULL: Kinds = Kinds(1);
    pub const BOOL: Kinds = Kinds(2);
    /// An integer that fits in i64.
    pub const INT: Kinds = Kinds(4);
    /// An integer beyond ±2^53, which f64 cannot hold exactly.
    pub const WIDE_INT: Kinds = Kinds(8);
    /// A number with a fraction or exponent.
    pub const FLOAT: Kinds = Kinds(16);
    /// An integer outside i64.
    pub const BIG_INT: Kinds = Kinds(32);
    /// A string (objects and arrays are stored as their JSON text).
    pub const STRING: Kinds = Kinds(64);

    pub fn contains(self, other: Kinds) -> bool {
        self.0 & other.0 == other.0
    }

    pub fn union(self, other: Kinds) -> Kinds {
        Kinds(self.0 | other.0)
    }

    /// Everything but NULL.
    pub fn non_null(self) -> Kinds {
        Kinds(self.0 & !Self::NULL.0)
    }

    /// The kind of one raw JSON token.
    pub fn of(raw: &str) -> Kinds {
        match raw.as_bytes().first() {
            Some(b'"' | b'{' | b'[') => Self::STRING,
            Some(b't' | b'f') => Self::BOOL,
            Some(b'n') | None => Self::NULL,
            Some(_) if raw.contains(['.', 'e', 'E']) => Self::FLOAT,
            Some(_) => match raw.parse::<i64>() {
                Ok(v) if v.unsigned_abs() > (1u64 << 53) => Self::INT.union(Self::WIDE_INT),
                Ok(_) => Self::INT,
                Err(_) => Self::BIG_INT,
            },
        }
    }
}

/// Column name → kinds seen, in first-seen order (the file's column order).
/// Hashed with foldhash: the default SipHash was a visible share of buffering.
pub type ColumnKinds = IndexMap<String, Kinds, hashbrown::DefaultHashBuilder>;

/// The delivery facts that become metadata columns.
#[derive(Debug, Clone, Copy)]
pub struct Delivery<'a> {
    pub shard_id: &'a str,
    pub sequence_number: &'a str,
    pub ingested_at_us: i64,
}

/// Appends `change` as one JSON line to `out` and records its column kinds.
/// Returns the number of bytes appended.
pub fn append_row(
    out: &mut Vec<u8>,
    kinds: &mut ColumnKinds,
    change: &RowChange<'_>,
    delivery: Delivery<'_>,
) -> usize {
    let start = out.len();
    out.push(b'{');
    for (i, (name, value)) in change.columns.iter().enumerate() {
        write_key(out, name);
        let kind = write_value(out, value);
        // Rows of a table mostly list their columns in the same order: try
        // the same position before hashing the name.
        let slot = match kinds.get_index_mut(i) {
            Some((k, v)) if k == name => Some(v),
            _ => kinds.get_mut(name.as_ref()),
        };
        match slot {
            Some(k) => *k = k.union(kind),
            None => {
                kinds.insert(name.to_string(), kind);
            }
        }
        out.push(b',');
    }
    write_key(out, "_op");
    write_str(out, change.operation.as_str());
    // Writes into a Vec cannot fail.
    let _ = write!(out, ",\"_dms_timestamp\":{}", change.dms_timestamp_us);
    if let Some(us) = change.commit_timestamp_us {
        let _ = write!(out, ",\"_commit_timestamp\":{us}");
    }
    if let Some(txn) = &change.transaction_id {
        out.push(b',');
        write_key(out, "_transaction_id");
        write_str(out, txn);
    }
    out.push(b',');
    write_key(out, "_shard_id");
    write_str(out, delivery.shard_id);
    out.push(b',');
    write_key(out, "_sequence_number");
    write_sequence_number(out, delivery.sequence_number);
    let _ = write!(out, ",\"_ingested_at\":{}", delivery.ingested_at_us);
    if let Some(image) = change.before_image {
        out.push(b',');
        write_key(out, "_before_image");
        write_str(out, &compact_json(image));
    }
    out.extend_from_slice(b"}\n");
    out.len() - start
}

/// Width `_sequence_number` is zero-padded to. Kinesis sequence numbers are
/// decimal strings of up to 56 digits in practice: wider than any integer
/// or DECIMAL(38), so they stay text, padded so that text order is numeric
/// order (`ORDER BY _sequence_number`). Longer ones are written as they are.
pub const SEQUENCE_WIDTH: usize = 64;

fn write_sequence_number(out: &mut Vec<u8>, seq: &str) {
    if seq.len() < SEQUENCE_WIDTH && seq.bytes().all(|b| b.is_ascii_digit()) {
        out.push(b'"');
        out.resize(out.len() + SEQUENCE_WIDTH - seq.len(), b'0');
        out.extend_from_slice(seq.as_bytes());
        out.push(b'"');
    } else {
        write_str(out, seq);
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    write_str(out, key);
    out.push(b':');
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
}

/// Copies a scalar token as it is (no number is re-rendered); objects and
/// arrays become a JSON string holding their compact text.
fn write_value(out: &mut Vec<u8>, raw: &RawValue) -> Kinds {
    let text = raw.get();
    if matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
        write_str(out, &compact_json(raw));
        Kinds::STRING
    } else {
        out.extend_from_slice(text.as_bytes());
        Kinds::of(text)
    }
}

/// The value's JSON text without insignificant whitespace (DMS's default
/// message format is indented with tabs).
fn compact_json(raw: &RawValue) -> String {
    let text = raw.get();
    if !text.contains(['\n', '\t', ' ', '\r']) {
        return text.to_string();
    }
    serde_json::from_str::<serde_json::Value>(text)
        .map(|v| v.to_string())
        .unwrap_or_else(|_| text.to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dms::{decode, Message};

    fn row_of(msg: &str) -> (String, ColumnKinds) {
        let Message::Row(change) = decode(msg.as_bytes(), "before-image").unwrap() else {
            panic!("not a row")
        };
        let mut out = Vec::new();
        let mut kinds = ColumnKinds::default();
        let n = append_row(
            &mut out,
            &mut kinds,
            &change,
            Delivery {
                shard_id: "shardId-000000000001",
                sequence_number: "4955",
                ingested_at_us: 7,
            },
        );
        assert_eq!(n, out.len());
        (String::from_utf8(out).unwrap(), kinds)
    }

    #[test]
    fn token_kinds() {
        assert_eq!(Kinds::of("\"x\""), Kinds::STRING);
        assert_eq!(Kinds::of("true"), Kinds::BOOL);
        assert_eq!(Kinds::of("null"), Kinds::NULL);
        assert_eq!(Kinds::of("-42"), Kinds::INT);
        assert_eq!(
            Kinds::of("9223372036854775807"),
            Kinds::INT.union(Kinds::WIDE_INT)
        );
        assert_eq!(Kinds::of("9223372036854775808"), Kinds::BIG_INT);
        assert_eq!(Kinds::of("2.71828182845905E+17"), Kinds::FLOAT);
        assert_eq!(Kinds::of("1e-05"), Kinds::FLOAT);
    }

    #[test]
    fn row_line_has_data_then_metadata() {
        let (line, kinds) = row_of(
            r#"{"data":{"id":9223372036854775800,"n":null,"j":{"a": [1, 2]},"s":"é\"\n"},
            "before-image":{"id":1},
            "metadata":{"timestamp":"1970-01-01T00:00:01Z","commit-timestamp":"1970-01-01T00:00:00.5Z",
            "record-type":"data","operation":"update","schema-name":"s","table-name":"t",
            "transaction-id":12}}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(line.ends_with("}\n"));
        // The integer token is copied, not re-rendered through f64.
        assert!(line.contains("\"id\":9223372036854775800,"), "{line}");
        assert_eq!(v["j"], r#"{"a":[1,2]}"#);
        assert_eq!(v["s"], "é\"\n");
        assert_eq!(v["_op"], "update");
        assert_eq!(v["_dms_timestamp"], 1_000_000);
        assert_eq!(v["_commit_timestamp"], 500_000);
        assert_eq!(v["_transaction_id"], "12");
        assert_eq!(v["_shard_id"], "shardId-000000000001");
        assert_eq!(
            v["_sequence_number"],
            format!("{}4955", "0".repeat(SEQUENCE_WIDTH - 4))
        );
        assert_eq!(v["_ingested_at"], 7);
        assert_eq!(v["_before_image"], r#"{"id":1}"#);
        let names: Vec<&str> = kinds.keys().map(String::as_str).collect();
        assert_eq!(names, ["id", "n", "j", "s"]);
        assert_eq!(kinds["n"], Kinds::NULL);
        assert_eq!(kinds["j"], Kinds::STRING);
    }

    #[test]
    fn absent_optional_metadata_is_left_out() {
        let (line, _) = row_of(
            r#"{"data":{},"metadata":{"timestamp":"1970-01-01T00:00:01Z","record-type":"data",
            "operation":"load","schema-name":"s","table-name":"t"}}"#,
        );
        assert!(!line.contains("_commit_timestamp"));
        assert!(!line.contains("_transaction_id"));
        assert!(!line.contains("_before_image"));
        assert!(line.starts_with("{\"_op\":\"load\""), "{line}");
    }
}
