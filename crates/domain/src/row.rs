//! The rows a part buffers: their `data` columns column by column (each
//! value's JSON token), their metadata columns kept typed beside them, and
//! the JSON kinds seen per column.
//!
//! Values stay JSON tokens (not a DOM, not yet typed) because a column's
//! type is settled only when its file is written (the schema registry, or
//! inference from every row's kinds); tokens are compact and each is
//! converted once, straight into its column's Arrow array (`encode`).

use std::fmt;
use std::io::Write as _;

use arrow::array::{Array, StringArray, StringBuilder};
use indexmap::IndexMap;
use serde_json::value::RawValue;

use crate::dms::{Operation, RowChange};
use crate::names::RecordId;

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

/// What an empty cell of a part costs, charged by cut version 2 on: 4 bytes
/// of the token's end here; when encoded, 4 to 8 bytes of an Arrow offset or
/// value, a validity bit and a Parquet definition level (`encode`).
pub const ABSENT_CELL_BYTES: usize = 16;

/// A part's `data` columns, column by column: each value's JSON token as
/// the message spelled it (objects and arrays as a JSON string of their
/// compact text), copied once while the message is decoded. Encoding turns
/// each token into its column's type directly (`encode`): no row is
/// written as JSON and parsed again.
#[derive(Debug, Default)]
pub struct DataColumns {
    /// Column name → kinds seen; a column's index here is its index in
    /// `values`.
    kinds: ColumnKinds,
    values: Vec<Tokens>,
    rows: usize,
}

/// One column's tokens, row by row. An empty token is a row without the
/// column (every JSON token is at least one byte).
#[derive(Debug, Default)]
struct Tokens {
    /// A `String` so that a token is sliced out without validating it again.
    text: String,
    /// Where each row's token ends in `text`. `u32` halves the cost per
    /// value; a part's tokens stay far below 4 GiB (`Batcher` starts a new
    /// part at `MAX_PART_BYTES`).
    ends: Vec<u32>,
}

impl Tokens {
    fn push(&mut self, token: &str) {
        self.text.push_str(token);
        self.ends.push(self.text.len() as u32);
    }

    fn get(&self, row: usize) -> &str {
        let start = match row {
            0 => 0,
            _ => self.ends[row - 1] as usize,
        };
        self.text
            .get(start..self.ends[row] as usize)
            .unwrap_or_default()
    }
}

/// One buffered value, as [`DataColumns::value`] hands it out.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Token<'a> {
    /// The row has no such column, or it is JSON `null`.
    Null,
    /// A JSON string token, quotes and escapes included.
    Quoted(&'a str),
    /// A number, `true` or `false`, as written.
    Bare(&'a str),
}

impl<'a> Token<'a> {
    fn of(text: &'a str) -> Token<'a> {
        match text.as_bytes().first() {
            None | Some(b'n') => Token::Null,
            Some(b'"') => Token::Quoted(text),
            Some(_) => Token::Bare(text),
        }
    }
}

impl DataColumns {
    pub fn kinds(&self) -> &ColumnKinds {
        &self.kinds
    }

    pub fn rows(&self) -> usize {
        self.rows
    }

    /// The index of column `name`, if any row had it.
    pub fn column(&self, name: &str) -> Option<usize> {
        self.kinds.get_index_of(name)
    }

    /// Column `column`'s value in `row`.
    pub fn value(&self, column: usize, row: usize) -> Token<'_> {
        Token::of(self.values[column].get(row))
    }

    /// Appends `change`'s `data` columns as a row and records their kinds.
    /// Returns what the row adds: its size as one JSON line
    /// (`{"name":value,…}\n`), plus `absent_cell_bytes` for each cell the
    /// part now holds empty for it (its columns the row lacks, and this
    /// column's earlier rows when the row brings a new one). A wide, sparse
    /// table costs memory per column × row, here and when encoded, that its
    /// JSON does not show ([`ABSENT_CELL_BYTES`]).
    pub fn push(&mut self, change: &RowChange<'_>, absent_cell_bytes: usize) -> usize {
        let row = self.rows;
        let columns_before = self.values.len();
        let mut size = 3 + change.columns.len().saturating_sub(1);
        let mut written = 0;
        let mut compact = String::new();
        for (i, (name, value)) in change.columns.iter().enumerate() {
            let (token, kind) = token_of(value, &mut compact);
            // Rows of a table mostly list their columns in the same order:
            // try the same position before hashing the name.
            let index = match self.kinds.get_index_mut(i) {
                Some((k, kinds)) if k == name => {
                    *kinds = kinds.union(kind);
                    i
                }
                _ => match self.kinds.get_full_mut(name.as_ref()) {
                    Some((index, _, kinds)) => {
                        *kinds = kinds.union(kind);
                        index
                    }
                    None => {
                        self.values.push(Tokens {
                            text: String::new(),
                            ends: vec![0; row],
                        });
                        self.kinds.insert_full(name.to_string(), kind).0
                    }
                },
            };
            let tokens = &mut self.values[index];
            if tokens.ends.len() > row {
                // A second value for one column: `dms::decode` rejects such
                // messages, so this is never reached; keep the first.
                continue;
            }
            tokens.push(token);
            size += name.len() + 3 + token.len();
            written += 1;
        }
        if written < self.values.len() {
            for tokens in &mut self.values {
                if tokens.ends.len() == row {
                    tokens.push("");
                }
            }
        }
        self.rows += 1;
        let absent = (self.values.len() - written) + (self.values.len() - columns_before) * row;
        size + absent * absent_cell_bytes
    }

    /// Each row as one JSON object of its `data` columns, a line each, in
    /// column order (the quarantine keeps rows that could not be encoded).
    pub fn json_lines(&self) -> Vec<u8> {
        let mut out = Vec::with_capacity(self.values.iter().map(|t| t.text.len()).sum());
        for row in 0..self.rows {
            out.push(b'{');
            let mut first = true;
            for ((name, _), tokens) in self.kinds.iter().zip(&self.values) {
                let token = tokens.get(row);
                if token.is_empty() {
                    continue;
                }
                if !first {
                    out.push(b',');
                }
                first = false;
                write_key(&mut out, name);
                out.extend_from_slice(token.as_bytes());
            }
            out.extend_from_slice(b"}\n");
        }
        out
    }
}

/// The token a value is buffered as, and its kind: scalars as they are (no
/// number is re-rendered); objects and arrays as a JSON string holding their
/// compact text (built in `scratch`).
fn token_of<'a>(raw: &'a RawValue, scratch: &'a mut String) -> (&'a str, Kinds) {
    let text = raw.get();
    if matches!(text.as_bytes().first(), Some(b'{' | b'[')) {
        // Serialising a &str into a String cannot fail.
        *scratch = serde_json::to_string(&compact_json(raw)).unwrap_or_default();
        (scratch.as_str(), Kinds::STRING)
    } else {
        (text, Kinds::of(text))
    }
}

/// A part's metadata columns, kept beside its row JSON rather than in it:
/// they come from the message's metadata and from the delivery, already
/// typed, so writing them as JSON for arrow-json to parse back was wasted
/// work (they were a third of the row JSON).
#[derive(Debug, Default)]
pub struct MetaColumns {
    pub operations: Vec<Operation>,
    pub dms_timestamps_us: Vec<i64>,
    pub commit_timestamps_us: Vec<Option<i64>>,
    pub transaction_ids: StringBuilder,
    pub ingested_at_us: Vec<i64>,
    /// The before image's compact JSON text.
    pub before_images: StringBuilder,
}

/// Memory one row's metadata and identity take besides their text.
const META_ROW_BYTES: usize = std::mem::size_of::<Operation>()
    + 2 * std::mem::size_of::<i64>()
    + std::mem::size_of::<Option<i64>>()
    + 2 * std::mem::size_of::<i32>()
    + std::mem::size_of::<RecordId>();

impl MetaColumns {
    /// Appends the metadata of `change`, delivered as `id`. Returns the
    /// bytes it holds (with the identity's), for the buffer size limits.
    pub fn push(&mut self, change: &RowChange<'_>, id: &RecordId, ingested_at_us: i64) -> usize {
        self.operations.push(change.operation);
        self.dms_timestamps_us.push(change.dms_timestamp_us);
        self.commit_timestamps_us.push(change.commit_timestamp_us);
        self.transaction_ids
            .append_option(change.transaction_id.as_deref());
        self.ingested_at_us.push(ingested_at_us);
        let image = change.before_image.map(compact_json);
        self.before_images.append_option(image.as_deref());
        META_ROW_BYTES
            + id.sequence.len()
            + change.transaction_id.as_deref().map_or(0, str::len)
            + image.as_deref().map_or(0, str::len)
    }

    /// `rows` (this part's data lines) with each row's metadata members
    /// added: the whole row as text, as the quarantine keeps rows that could
    /// not be encoded.
    pub fn json_lines(&self, rows: &[u8], ids: &[RecordId]) -> Vec<u8> {
        let transaction_ids = self.transaction_ids.finish_cloned();
        let before_images = self.before_images.finish_cloned();
        fn text(a: &StringArray, i: usize) -> Option<&str> {
            a.is_valid(i).then(|| a.value(i))
        }
        let mut out = Vec::with_capacity(rows.len() * 2);
        for (i, (line, id)) in rows.split(|&b| b == b'\n').zip(ids).enumerate() {
            // `{…}` without its closing brace: the metadata members follow.
            let open = line.strip_suffix(b"}").unwrap_or(line);
            out.extend_from_slice(open);
            if open.len() > 1 {
                out.push(b',');
            }
            write_key(&mut out, "_op");
            write_str(&mut out, self.operations[i].as_str());
            // Writes into a Vec cannot fail.
            let _ = write!(out, ",\"_dms_timestamp\":{}", self.dms_timestamps_us[i]);
            if let Some(us) = self.commit_timestamps_us[i] {
                let _ = write!(out, ",\"_commit_timestamp\":{us}");
            }
            if let Some(txn) = text(&transaction_ids, i) {
                out.push(b',');
                write_key(&mut out, "_transaction_id");
                write_str(&mut out, txn);
            }
            out.push(b',');
            write_key(&mut out, "_shard_id");
            write_str(&mut out, &id.shard);
            out.push(b',');
            write_key(&mut out, "_sequence_number");
            write_str(&mut out, &PaddedSequence(&id.sequence).to_string());
            let _ = write!(out, ",\"_ingested_at\":{}", self.ingested_at_us[i]);
            if let Some(image) = text(&before_images, i) {
                out.push(b',');
                write_key(&mut out, "_before_image");
                write_str(&mut out, image);
            }
            out.extend_from_slice(b"}\n");
        }
        out
    }
}

/// Width `_sequence_number` is zero-padded to. Kinesis sequence numbers are
/// decimal strings of up to 56 digits in practice: wider than any integer
/// or DECIMAL(38), so they stay text, padded so that text order is numeric
/// order (`ORDER BY _sequence_number`). Longer ones are written as they are.
pub const SEQUENCE_WIDTH: usize = 64;

/// A sequence number as `_sequence_number` spells it: zero-padded to
/// [`SEQUENCE_WIDTH`] when it is all digits and shorter, else as it is.
pub struct PaddedSequence<'a>(pub &'a str);

impl fmt::Display for PaddedSequence<'_> {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let seq = self.0;
        let zeros = if seq.len() < SEQUENCE_WIDTH && seq.bytes().all(|b| b.is_ascii_digit()) {
            SEQUENCE_WIDTH - seq.len()
        } else {
            0
        };
        write!(f, "{:0>zeros$}{seq}", "")
    }
}

fn write_key(out: &mut Vec<u8>, key: &str) {
    // Column names are `[a-z0-9_]` (`schema::column_name`) and so are the
    // metadata names: nothing to escape, and this runs for every value.
    debug_assert!(key.bytes().all(|b| b >= 0x20 && b != b'"' && b != b'\\'));
    out.push(b'"');
    out.extend_from_slice(key.as_bytes());
    out.extend_from_slice(b"\":");
}

fn write_str(out: &mut Vec<u8>, s: &str) {
    // Serialising a &str into a Vec cannot fail.
    let _ = serde_json::to_writer(&mut *out, s);
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

    fn change_of(msg: &str) -> RowChange<'_> {
        let Message::Row(change) = decode(msg.as_bytes(), "before-image").unwrap() else {
            panic!("not a row")
        };
        change
    }

    fn id(sequence: &str) -> RecordId {
        RecordId {
            stream: std::sync::Arc::from(""),
            shard: std::sync::Arc::from("shardId-000000000001"),
            sequence: sequence.to_string(),
        }
    }

    /// The data line, and the whole line (data and metadata) as the
    /// quarantine writes it.
    fn row_of(msg: &str) -> (String, String, ColumnKinds) {
        let change = change_of(msg);
        let mut data = DataColumns::default();
        let n = data.push(&change, ABSENT_CELL_BYTES);
        let out = data.json_lines();
        assert_eq!(n, out.len());
        let kinds = data.kinds().clone();
        let mut meta = MetaColumns::default();
        let held = meta.push(&change, &id("4955"), 7);
        assert!(held >= META_ROW_BYTES + 4);
        let whole = meta.json_lines(&out, &[id("4955")]);
        (
            String::from_utf8(out).unwrap(),
            String::from_utf8(whole).unwrap(),
            kinds,
        )
    }

    #[test]
    fn columns_keep_each_rows_values_whatever_their_order() {
        let meta = r#","metadata":{"timestamp":"1970-01-01T00:00:01Z","record-type":"data",
            "operation":"insert","schema-name":"s","table-name":"t"}}"#;
        let rows = [
            r#"{"a":1,"b":"x\"y"}"#,
            r#"{"b":null,"c":[1, 2]}"#,
            r#"{"c":true,"a":2.5}"#,
            r#"{}"#,
        ];
        let mut data = DataColumns::default();
        let mut sizes = Vec::new();
        for row in rows {
            let msg = format!(r#"{{"data":{row}{meta}"#);
            sizes.push(data.push(&change_of(&msg), 0));
        }
        assert_eq!(data.rows(), 4);
        // Each row counts as its own JSON line did (structures compacted).
        assert_eq!(sizes, [19, 23, 19, 3]);
        // Charging empty cells: row 2 lacks `a` and brings `c`, which row 1
        // lacks; row 3 lacks `b`; row 4 lacks all three.
        let mut charged = DataColumns::default();
        let sizes: Vec<usize> = rows
            .iter()
            .map(|row| charged.push(&change_of(&format!(r#"{{"data":{row}{meta}"#)), 16))
            .collect();
        assert_eq!(sizes, [19, 23 + 2 * 16, 19 + 16, 3 + 3 * 16]);
        let (a, b, c) = (0, 1, 2);
        assert_eq!(data.column("c"), Some(c));
        assert_eq!(data.column("d"), None);
        let column = |i: usize| (0..4).map(|row| data.value(i, row)).collect::<Vec<_>>();
        assert_eq!(
            column(a),
            [
                Token::Bare("1"),
                Token::Null,
                Token::Bare("2.5"),
                Token::Null
            ]
        );
        assert_eq!(
            column(b),
            [
                Token::Quoted(r#""x\"y""#),
                Token::Null,
                Token::Null,
                Token::Null
            ]
        );
        assert_eq!(
            column(c),
            [
                Token::Null,
                Token::Quoted(r#""[1,2]""#),
                Token::Bare("true"),
                Token::Null
            ]
        );
        assert_eq!(
            String::from_utf8(data.json_lines()).unwrap(),
            "{\"a\":1,\"b\":\"x\\\"y\"}\n{\"b\":null,\"c\":\"[1,2]\"}\n{\"a\":2.5,\"c\":true}\n{}\n"
        );
        let kinds = data.kinds();
        assert_eq!(kinds["a"], Kinds::INT.union(Kinds::FLOAT));
        assert_eq!(kinds["b"], Kinds::STRING.union(Kinds::NULL));
        assert_eq!(kinds["c"], Kinds::STRING.union(Kinds::BOOL));
    }

    #[test]
    fn sequence_numbers_are_padded_only_when_numeric_and_short() {
        assert_eq!(
            PaddedSequence("42").to_string(),
            format!("{}42", "0".repeat(62))
        );
        let long = "1".repeat(SEQUENCE_WIDTH + 1);
        assert_eq!(PaddedSequence(&long).to_string(), long);
        assert_eq!(PaddedSequence("4a").to_string(), "4a");
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
        let (data, line, kinds) = row_of(
            r#"{"data":{"id":9223372036854775800,"n":null,"j":{"a": [1, 2]},"s":"é\"\n"},
            "before-image":{"id":1},
            "metadata":{"timestamp":"1970-01-01T00:00:01Z","commit-timestamp":"1970-01-01T00:00:00.5Z",
            "record-type":"data","operation":"update","schema-name":"s","table-name":"t",
            "transaction-id":12}}"#,
        );
        let v: serde_json::Value = serde_json::from_str(&line).unwrap();
        assert!(line.ends_with("}\n"));
        assert!(
            line.starts_with(data.trim_end_matches("}\n")),
            "{data} / {line}"
        );
        let d: serde_json::Value = serde_json::from_str(&data).unwrap();
        assert_eq!(
            d.as_object().unwrap().len(),
            4,
            "only the data columns: {data}"
        );
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
        let (data, line, _) = row_of(
            r#"{"data":{},"metadata":{"timestamp":"1970-01-01T00:00:01Z","record-type":"data",
            "operation":"load","schema-name":"s","table-name":"t"}}"#,
        );
        assert!(!line.contains("_commit_timestamp"));
        assert!(!line.contains("_transaction_id"));
        assert!(!line.contains("_before_image"));
        assert!(line.starts_with("{\"_op\":\"load\""), "{line}");
        assert_eq!(data, "{}\n");
    }
}
