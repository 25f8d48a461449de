//! The AWS DMS Kinesis message model and its decoding (pure, no I/O).
//!
//! See `dms-kinesis-format.md`: the operation is `metadata.operation`, NULL
//! columns may be absent from `data`, key order is not guaranteed, and the
//! before image lives under a user-chosen top-level field. Values are kept as
//! their raw JSON tokens so that no number goes through `f64` here.

use std::borrow::Cow;
use std::fmt;

use serde::de::{DeserializeSeed, Deserializer, IgnoredAny, MapAccess, Visitor};
use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{Fields, Key, MaybeFields};
use crate::names::{column_name, lake_names, TableName};

/// Why a record could not become a row. Each one sends the record to quarantine.
#[derive(Debug, thiserror::Error, Clone, PartialEq, Eq)]
pub enum DecodeError {
    #[error("record data is not valid base64: {0}")]
    Base64(String),
    #[error("payload is empty")]
    Empty,
    #[error("payload is not UTF-8 (first bad byte at offset {0})")]
    NotUtf8(usize),
    #[error("payload is not JSON: {0}")]
    NotJson(String),
    #[error("payload is JSON but not an object")]
    NotAnObject,
    #[error("`metadata` is missing")]
    MissingMetadata,
    #[error("`metadata` is not a valid DMS metadata object: {0}")]
    BadMetadata(String),
    #[error("`metadata.{0}` is missing or empty")]
    MissingField(&'static str),
    #[error("`metadata.record-type` {0:?} is neither `data` nor `control`")]
    UnknownRecordType(String),
    #[error("`metadata.operation` {0:?} is not load, insert, update or delete")]
    UnknownOperation(String),
    #[error("`metadata.{field}` {value:?} is not an ISO 8601 UTC timestamp")]
    BadTimestamp { field: &'static str, value: String },
    #[error("`data` is missing on a {0} record")]
    MissingData(Operation),
    #[error("`data` is not a JSON object")]
    DataNotObject,
    #[error("data column {0:?} collides with a metadata column name")]
    ReservedColumn(String),
    #[error("data column {0:?} appears twice (column names are compared after lower-casing and replacing characters other than a-z, 0-9 and _)")]
    DuplicateColumn(String),
    #[error("data column {0:?} holds a string with an invalid escape (e.g. a lone surrogate)")]
    BadString(String),
}

/// The four row operations DMS emits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Operation {
    Load,
    Insert,
    Update,
    Delete,
}

impl Operation {
    pub fn as_str(self) -> &'static str {
        match self {
            Operation::Load => "load",
            Operation::Insert => "insert",
            Operation::Update => "update",
            Operation::Delete => "delete",
        }
    }
}

impl fmt::Display for Operation {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(self.as_str())
    }
}

/// What one DMS message means for the lake.
#[derive(Debug)]
pub enum Message<'a> {
    /// A row image to append to the table's history.
    Row(RowChange<'a>),
    /// DDL (or any other table-level control event): rows after it may have
    /// another shape, so the table's buffer is closed before them.
    TableControl(TableControl),
    /// A task-level control record (empty schema, e.g. `awsdms_apply_exceptions`).
    TaskControl { operation: String },
    /// A data record of one of DMS's own tables (`awsdms_status`,
    /// `awsdms_history`, `awsdms_suspended_tables`, ...): not source data.
    DmsTable { table: String },
}

/// DMS's own control tables: named `awsdms_*` (in the task's control schema,
/// or with an empty `schema-name`). A data record with no schema but a table
/// name is DMS's too.
fn is_dms_table(schema: Option<&str>, table: Option<&str>) -> bool {
    match (schema, table) {
        (_, Some(t))
            if t.get(..7)
                .is_some_and(|p| p.eq_ignore_ascii_case("awsdms_")) =>
        {
            true
        }
        (None, Some(_)) => true,
        _ => false,
    }
}

/// A table-level control record.
#[derive(Debug)]
pub struct TableControl {
    pub table: TableName,
    pub operation: String,
    /// `metadata.timestamp` in µs, when present and valid.
    pub timestamp_us: Option<i64>,
    /// `control.table-def`, when DMS sent one (`IncludeControlDetails`).
    pub table_def: Option<TableDef>,
    /// A `table-def` that was there but could not be read; the record still
    /// closes the table's buffer (control records are advisory).
    pub table_def_error: Option<String>,
}

/// DMS's table definition: columns in the order DMS lists them.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDef {
    pub columns: Vec<ColumnDef>,
    pub primary_key: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ColumnDef {
    pub name: String,
    /// DMS's type name (`INT32`, `NUMERIC`, `WSTRING`, ...).
    pub type_name: String,
    pub precision: Option<u32>,
    pub scale: Option<u32>,
}

/// One data record, borrowing its values from the payload.
#[derive(Debug)]
pub struct RowChange<'a> {
    pub schema: Cow<'a, str>,
    pub table: Cow<'a, str>,
    pub operation: Operation,
    /// `metadata.timestamp`: when DMS built the message, in µs since the epoch.
    pub dms_timestamp_us: i64,
    /// `metadata.commit-timestamp` (only with transaction details), in µs.
    pub commit_timestamp_us: Option<i64>,
    /// `metadata.transaction-id`, a number or a string depending on the engine.
    pub transaction_id: Option<Cow<'a, str>>,
    /// The `data` columns in message order, values as raw JSON tokens.
    pub columns: Vec<(Cow<'a, str>, &'a RawValue)>,
    pub before_image: Option<&'a RawValue>,
}

impl RowChange<'_> {
    pub fn table_name(&self) -> TableName {
        TableName {
            schema: self.schema.to_string(),
            table: self.table.to_string(),
        }
    }

    /// The time the row is partitioned by: commit time, else DMS's message time.
    pub fn partition_time_us(&self) -> i64 {
        self.commit_timestamp_us.unwrap_or(self.dms_timestamp_us)
    }
}

/// Decodes the standard base64 `data` of a Kinesis record.
pub fn decode_base64(data: &str) -> Result<Vec<u8>, DecodeError> {
    let mut out = Vec::new();
    decode_base64_into(data, &mut out)?;
    Ok(out)
}

/// Like [`decode_base64`], reusing `out`'s allocation.
pub fn decode_base64_into(data: &str, out: &mut Vec<u8>) -> Result<(), DecodeError> {
    use base64::Engine as _;
    out.clear();
    base64::engine::general_purpose::STANDARD
        .decode_vec(data, out)
        .map_err(|e| DecodeError::Base64(e.to_string()))
}

/// Decodes one DMS message. `before_image_field` is the task's
/// `BeforeImageSettings.FieldName`.
pub fn decode<'a>(payload: &'a [u8], before_image_field: &str) -> Result<Message<'a>, DecodeError> {
    let text =
        simdutf8::compat::from_utf8(payload).map_err(|e| DecodeError::NotUtf8(e.valid_up_to()))?;
    if text.trim().is_empty() {
        return Err(DecodeError::Empty);
    }
    let top = {
        let mut de = serde_json::Deserializer::from_str(text);
        let top = TopLevel { before_image_field }
            .deserialize(&mut de)
            .and_then(|top| de.end().map(|()| top));
        match top {
            Ok(t) => t,
            Err(e) if e.classify() == serde_json::error::Category::Data => {
                return Err(DecodeError::NotAnObject)
            }
            Err(e) => return Err(DecodeError::NotJson(e.to_string())),
        }
    };
    let Top {
        metadata,
        data,
        before_image,
        control,
    } = top;
    let metadata = metadata.ok_or(DecodeError::MissingMetadata)?;
    let meta: Metadata<'a> = serde_json::from_str(metadata.get())
        .map_err(|e| DecodeError::BadMetadata(e.to_string()))?;

    let record_type = meta
        .record_type
        .map(|k| k.0)
        .ok_or(DecodeError::MissingField("record-type"))?;
    let operation = meta
        .operation
        .map(|k| k.0)
        .filter(|o| !o.is_empty())
        .ok_or(DecodeError::MissingField("operation"))?;
    let schema = meta.schema_name.map(|k| k.0).filter(|s| !s.is_empty());
    let table = meta.table_name.map(|k| k.0).filter(|s| !s.is_empty());

    match record_type.as_ref() {
        "control" => {
            let dms_own = is_dms_table(schema.as_deref(), table.as_deref());
            return Ok(match (schema, table) {
                (Some(schema), Some(table)) if !dms_own => {
                    let (table_def, table_def_error) = match control.map(table_def) {
                        Some(Ok(def)) => (def, None),
                        Some(Err(e)) => (None, Some(e)),
                        None => (None, None),
                    };
                    Message::TableControl(TableControl {
                        table: TableName {
                            schema: schema.into_owned(),
                            table: table.into_owned(),
                        },
                        operation: operation.to_string(),
                        timestamp_us: meta
                            .timestamp
                            .and_then(|t| parse_timestamp_us("timestamp", &t.0).ok()),
                        table_def,
                        table_def_error,
                    })
                }
                _ => Message::TaskControl {
                    operation: operation.to_string(),
                },
            });
        }
        "data" => {}
        other => return Err(DecodeError::UnknownRecordType(other.to_string())),
    }

    let operation = match operation.as_ref() {
        "load" => Operation::Load,
        "insert" => Operation::Insert,
        "update" => Operation::Update,
        "delete" => Operation::Delete,
        other => return Err(DecodeError::UnknownOperation(other.to_string())),
    };
    if is_dms_table(schema.as_deref(), table.as_deref()) {
        return Ok(Message::DmsTable {
            table: table.map(Cow::into_owned).unwrap_or_default(),
        });
    }
    let schema = schema.ok_or(DecodeError::MissingField("schema-name"))?;
    let table = table.ok_or(DecodeError::MissingField("table-name"))?;
    let timestamp = meta
        .timestamp
        .map(|k| k.0)
        .ok_or(DecodeError::MissingField("timestamp"))?;
    let dms_timestamp_us = parse_timestamp_us("timestamp", &timestamp)?;
    let commit_timestamp_us = meta
        .commit_timestamp
        .map(|k| k.0)
        .filter(|s| !s.is_empty())
        .map(|s| parse_timestamp_us("commit-timestamp", &s))
        .transpose()?;
    let transaction_id = meta.transaction_id.and_then(raw_scalar_text);

    let data = data.ok_or(DecodeError::MissingData(operation))?;
    let mut columns = data.0.ok_or(DecodeError::DataNotObject)?;
    // The same key twice is malformed JSON; two keys that spell one lake
    // name are not (see `lake_names`).
    if let Some(dup) = first_duplicate(&columns.0) {
        return Err(DecodeError::DuplicateColumn(dup.to_string()));
    }
    if columns
        .0
        .iter()
        .any(|(k, _)| !matches!(column_name(k), Cow::Borrowed(_)))
    {
        let raw: Vec<&str> = columns.0.iter().map(|(k, _)| k.as_ref()).collect();
        let lake: Vec<String> = lake_names(&raw).into_iter().map(Cow::into_owned).collect();
        for ((name, _), lake) in columns.0.iter_mut().zip(lake) {
            if *name != lake {
                *name = Cow::Owned(lake);
            }
        }
    }
    if let Some((name, _)) = columns.0.iter().find(|(k, _)| is_reserved(k)) {
        return Err(DecodeError::ReservedColumn(name.to_string()));
    }
    // Values are copied as raw tokens; the raw reader accepts `\u` escapes that
    // are not valid text (lone surrogates), which no Parquet writer would take.
    if let Some((name, _)) = columns.0.iter().find(|(_, v)| !valid_string_escapes(v)) {
        return Err(DecodeError::BadString(name.to_string()));
    }
    let before_image = before_image.filter(|b| b.get() != "null");

    Ok(Message::Row(RowChange {
        schema,
        table,
        operation,
        dms_timestamp_us,
        commit_timestamp_us,
        transaction_id,
        columns: columns.0,
        before_image,
    }))
}

/// The members of a DMS message that matter, read in one pass: `data` is
/// split into its columns while the message is scanned (not kept as raw
/// text and scanned again), the rest stays raw.
struct Top<'a> {
    metadata: Option<&'a RawValue>,
    data: Option<MaybeFields<'a>>,
    before_image: Option<&'a RawValue>,
    control: Option<&'a RawValue>,
}

/// Reads a [`Top`]; the before image's field name is the task's choice.
struct TopLevel<'f> {
    before_image_field: &'f str,
}

impl<'de> DeserializeSeed<'de> for TopLevel<'_> {
    type Value = Top<'de>;

    fn deserialize<D: Deserializer<'de>>(self, d: D) -> Result<Self::Value, D::Error> {
        d.deserialize_map(self)
    }
}

impl<'de> Visitor<'de> for TopLevel<'_> {
    type Value = Top<'de>;

    fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str("a DMS message object")
    }

    fn visit_map<A: MapAccess<'de>>(self, mut map: A) -> Result<Self::Value, A::Error> {
        let mut top = Top {
            metadata: None,
            data: None,
            before_image: None,
            control: None,
        };
        while let Some(key) = map.next_key::<Key<'de>>()? {
            match key.0.as_ref() {
                "metadata" => top.metadata = Some(map.next_value()?),
                "data" => top.data = Some(map.next_value()?),
                "control" => top.control = Some(map.next_value()?),
                k if k == self.before_image_field => top.before_image = Some(map.next_value()?),
                _ => {
                    map.next_value::<IgnoredAny>()?;
                }
            }
        }
        Ok(top)
    }
}

/// Reads `control.table-def`; `Ok(None)` when the control object has none.
fn table_def(control: &RawValue) -> Result<Option<TableDef>, String> {
    #[derive(Deserialize)]
    struct Column {
        #[serde(rename = "type")]
        type_name: String,
        precision: Option<u32>,
        scale: Option<u32>,
    }
    let control: Fields<'_> =
        serde_json::from_str(control.get()).map_err(|e| format!("`control`: {e}"))?;
    let Some(def) = control.get("table-def") else {
        return Ok(None);
    };
    let def: Fields<'_> =
        serde_json::from_str(def.get()).map_err(|e| format!("`control.table-def`: {e}"))?;
    let mut columns = Vec::new();
    if let Some(cols) = def.get("columns") {
        let cols: Fields<'_> = serde_json::from_str(cols.get())
            .map_err(|e| format!("`control.table-def.columns`: {e}"))?;
        for (name, spec) in cols.0 {
            let c: Column = serde_json::from_str(spec.get())
                .map_err(|e| format!("`control.table-def.columns.{name}`: {e}"))?;
            columns.push(ColumnDef {
                name: name.into_owned(),
                type_name: c.type_name,
                precision: c.precision,
                scale: c.scale,
            });
        }
    }
    let primary_key = match def.get("primary-key") {
        Some(pk) => serde_json::from_str(pk.get())
            .map_err(|e| format!("`control.table-def.primary-key`: {e}"))?,
        None => Vec::new(),
    };
    Ok(Some(TableDef {
        columns,
        primary_key,
    }))
}

/// Metadata column names the function adds to every row; a data column may
/// not use them.
pub const METADATA_COLUMNS: [&str; 9] = [
    "_op",
    "_dms_timestamp",
    "_commit_timestamp",
    "_transaction_id",
    "_shard_id",
    "_sequence_number",
    "_ingested_at",
    "_before_image",
    "_rescued",
];

fn first_duplicate<'c>(columns: &'c [(Cow<'_, str>, &RawValue)]) -> Option<&'c str> {
    // Rows are narrow enough that a quadratic scan beats hashing below ~32 columns.
    if columns.len() <= 32 {
        return columns.iter().enumerate().find_map(|(i, (k, _))| {
            columns[..i]
                .iter()
                .any(|(p, _)| p == k)
                .then_some(k.as_ref())
        });
    }
    let mut seen = std::collections::HashSet::with_capacity(columns.len());
    columns
        .iter()
        .find_map(|(k, _)| (!seen.insert(k.as_ref())).then_some(k.as_ref()))
}

fn valid_string_escapes(raw: &RawValue) -> bool {
    let t = raw.get();
    let escaped_unicode =
        || memchr::memchr_iter(b'\\', t.as_bytes()).any(|i| t.as_bytes().get(i + 1) == Some(&b'u'));
    !(t.starts_with('"') && escaped_unicode()) || serde_json::from_str::<String>(t).is_ok()
}

fn is_reserved(name: &str) -> bool {
    name.starts_with('_') && METADATA_COLUMNS.contains(&name)
}

/// `YYYY-MM-DDTHH:MM:SS[.fraction]Z` (any RFC 3339 offset) to µs since the epoch.
pub fn parse_timestamp_us(field: &'static str, value: &str) -> Result<i64, DecodeError> {
    chrono::DateTime::parse_from_rfc3339(value)
        .map(|t| t.timestamp_micros())
        .map_err(|_| DecodeError::BadTimestamp {
            field,
            value: value.to_string(),
        })
}

/// The text of a JSON string or number token; `None` for null and structures.
fn raw_scalar_text(raw: &RawValue) -> Option<Cow<'_, str>> {
    let t = raw.get();
    match t.as_bytes().first() {
        Some(b'"') => serde_json::from_str::<Cow<'_, str>>(t).ok(),
        Some(b'-' | b'0'..=b'9') => Some(Cow::Borrowed(t)),
        _ => None,
    }
}

// `Key` rather than `Cow<str>`: serde deserialises `Option<Cow<str>>` as an
// owned copy; `Key` borrows from the payload unless the text has escapes.
#[derive(Deserialize)]
struct Metadata<'a> {
    #[serde(borrow, default)]
    timestamp: Option<Key<'a>>,
    #[serde(rename = "record-type", borrow, default)]
    record_type: Option<Key<'a>>,
    #[serde(borrow, default)]
    operation: Option<Key<'a>>,
    #[serde(rename = "schema-name", borrow, default)]
    schema_name: Option<Key<'a>>,
    #[serde(rename = "table-name", borrow, default)]
    table_name: Option<Key<'a>>,
    #[serde(rename = "commit-timestamp", borrow, default)]
    commit_timestamp: Option<Key<'a>>,
    #[serde(rename = "transaction-id", borrow, default)]
    transaction_id: Option<&'a RawValue>,
}

#[cfg(test)]
mod tests {
    use super::*;

    const INSERT: &str = r#"{"data":{"id":1,"name":"a\"b","price":"12.50","tags":{"x":[1,2]}},
        "metadata":{"timestamp":"2026-03-14T01:00:00.016011Z","record-type":"data",
        "operation":"insert","partition-key-type":"schema-table","schema-name":"sales",
        "table-name":"client","transaction-id":87978110091475}}"#;

    fn row(msg: Message<'_>) -> RowChange<'_> {
        match msg {
            Message::Row(r) => r,
            other => panic!("expected a row, got {other:?}"),
        }
    }

    #[test]
    fn decodes_an_insert_with_metadata_operation() {
        let r = row(decode(INSERT.as_bytes(), "before-image").unwrap());
        assert_eq!(r.operation, Operation::Insert);
        assert_eq!(r.table_name().to_string(), "sales.client");
        assert_eq!(r.dms_timestamp_us, 1_773_450_000_016_011);
        assert_eq!(r.commit_timestamp_us, None);
        assert_eq!(r.partition_time_us(), r.dms_timestamp_us);
        assert_eq!(r.transaction_id.as_deref(), Some("87978110091475"));
        let names: Vec<&str> = r.columns.iter().map(|(k, _)| k.as_ref()).collect();
        assert_eq!(names, ["id", "name", "price", "tags"]);
        assert_eq!(r.columns[1].1.get(), r#""a\"b""#);
        assert_eq!(r.columns[2].1.get(), r#""12.50""#);
    }

    #[test]
    fn a_top_level_op_field_is_not_the_operation() {
        // The Python version read `Op`; DMS's Kinesis format has only metadata.operation.
        let msg = r#"{"Op":"I","data":{"id":1},"metadata":{"timestamp":"2026-03-14T01:00:00Z",
            "record-type":"data","schema-name":"s","table-name":"t"}}"#;
        assert_eq!(
            decode(msg.as_bytes(), "before-image").unwrap_err(),
            DecodeError::MissingField("operation")
        );
    }

    #[test]
    fn commit_timestamp_and_before_image_are_kept() {
        let msg = r#"{"data":{"id":2},"before-image":{"id":1},"metadata":{
            "timestamp":"2026-03-14T01:00:00.5Z","commit-timestamp":"2026-03-14T00:59:59.000000Z",
            "record-type":"data","operation":"update","schema-name":"s","table-name":"t",
            "transaction-id":"abc"}}"#;
        let r = row(decode(msg.as_bytes(), "before-image").unwrap());
        assert_eq!(r.commit_timestamp_us, Some(1_773_449_999_000_000));
        assert_eq!(r.partition_time_us(), 1_773_449_999_000_000);
        assert_eq!(r.before_image.unwrap().get(), r#"{"id":1}"#);
        assert_eq!(r.transaction_id.as_deref(), Some("abc"));
        // Another field name configured: the image is not picked up.
        let r = row(decode(msg.as_bytes(), "custom-field").unwrap());
        assert!(r.before_image.is_none());
    }

    #[test]
    fn tabbed_multiline_messages_decode() {
        let msg = "{\n\t\"data\":\t{\n\t\t\"id\":\t7\n\t},\n\t\"metadata\":\t{\n\t\t\"timestamp\":\t\"2026-03-14T01:00:00Z\",\n\t\t\"record-type\":\t\"data\",\n\t\t\"operation\":\t\"load\",\n\t\t\"schema-name\":\t\"s\",\n\t\t\"table-name\":\t\"t\"\n\t}\n}\n";
        let r = row(decode(msg.as_bytes(), "before-image").unwrap());
        assert_eq!(r.operation, Operation::Load);
        assert_eq!(r.columns[0].1.get(), "7");
    }

    #[test]
    fn control_records_are_table_or_task_level() {
        let ddl = r#"{"control":{},"metadata":{"timestamp":"2026-03-14T01:00:00Z",
            "record-type":"control","operation":"drop-table","schema-name":"sales",
            "table-name":"promo"}}"#;
        match decode(ddl.as_bytes(), "before-image").unwrap() {
            Message::TableControl(c) => {
                assert_eq!(c.table.to_string(), "sales.promo");
                assert_eq!(c.operation, "drop-table");
                assert_eq!(c.timestamp_us, Some(1_773_450_000_000_000));
                assert_eq!((c.table_def, c.table_def_error), (None, None));
            }
            other => panic!("{other:?}"),
        }
        let task = r#"{"metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"control",
            "operation":"create-table","schema-name":"","table-name":"awsdms_apply_exceptions"}}"#;
        assert!(matches!(
            decode(task.as_bytes(), "before-image").unwrap(),
            Message::TaskControl { .. }
        ));
    }

    #[test]
    fn malformed_payloads_get_a_specific_error() {
        let meta = |extra: &str| {
            format!(
                r#"{{"data":{{"id":1}},"metadata":{{"timestamp":"2026-03-14T01:00:00Z",{extra}}}}}"#
            )
        };
        let cases: Vec<(Vec<u8>, DecodeError)> = vec![
            (b"".to_vec(), DecodeError::Empty),
            (b"  \n".to_vec(), DecodeError::Empty),
            (vec![b'{', 0xff, b'}'], DecodeError::NotUtf8(1)),
            (b"[1]".to_vec(), DecodeError::NotAnObject),
            (b"\"{}\"".to_vec(), DecodeError::NotAnObject),
            (b"{\"data\":{}}".to_vec(), DecodeError::MissingMetadata),
            (
                meta(r#""operation":"insert","schema-name":"s","table-name":"t""#).into_bytes(),
                DecodeError::MissingField("record-type"),
            ),
            (
                meta(r#""record-type":"data","operation":"merge","schema-name":"s","table-name":"t""#)
                    .into_bytes(),
                DecodeError::UnknownOperation("merge".into()),
            ),
            (
                meta(r#""record-type":"data","operation":"insert","schema-name":"s""#).into_bytes(),
                DecodeError::MissingField("table-name"),
            ),
            (
                meta(r#""record-type":"weird","operation":"insert""#).into_bytes(),
                DecodeError::UnknownRecordType("weird".into()),
            ),
            (
                br#"{"metadata":{"timestamp":"yesterday","record-type":"data","operation":"insert","schema-name":"s","table-name":"t"},"data":{}}"#.to_vec(),
                DecodeError::BadTimestamp { field: "timestamp", value: "yesterday".into() },
            ),
            (
                br#"{"metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"data","operation":"update","schema-name":"s","table-name":"t"},"data":null}"#.to_vec(),
                DecodeError::DataNotObject,
            ),
            (
                br#"{"metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"data","operation":"insert","schema-name":"s","table-name":"t"}}"#.to_vec(),
                DecodeError::MissingData(Operation::Insert),
            ),
            (
                br#"{"metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"data","operation":"insert","schema-name":"s","table-name":"t"},"data":{"_op":1}}"#.to_vec(),
                DecodeError::ReservedColumn("_op".into()),
            ),
            (
                br#"{"metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"data","operation":"insert","schema-name":"s","table-name":"t"},"data":{"a":1,"b":2,"a":"x"}}"#.to_vec(),
                DecodeError::DuplicateColumn("a".into()),
            ),
            (
                // Found by the fuzzer: a lone low surrogate.
                br#"{"metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"data","operation":"insert","schema-name":"s","table-name":"t"},"data":{"a":"x\udf34"}}"#.to_vec(),
                DecodeError::BadString("a".into()),
            ),
        ];
        for (payload, want) in cases {
            let got = decode(&payload, "before-image").unwrap_err();
            assert_eq!(got, want, "payload {:?}", String::from_utf8_lossy(&payload));
        }
        assert!(matches!(
            decode(b"{\"data\":", "before-image").unwrap_err(),
            DecodeError::NotJson(_)
        ));
        assert!(matches!(
            decode(br#"{"metadata":[1]}"#, "before-image").unwrap_err(),
            DecodeError::BadMetadata(_)
        ));
        assert!(matches!(
            decode(br#"{"metadata":{"table-name":5}}"#, "before-image").unwrap_err(),
            DecodeError::BadMetadata(_)
        ));
    }

    #[test]
    fn escaped_keys_are_unescaped() {
        let msg = r#"{"data":{"caf\u00e9":1},"metadata":{"timestamp":"2026-03-14T01:00:00Z",
            "record-type":"data","operation":"insert","schema-name":"s","table-name":"t"}}"#;
        let r = row(decode(msg.as_bytes(), "before-image").unwrap());
        // Unescaped, then spelled the way Athena accepts.
        assert_eq!(r.columns[0].0, "caf_u00e9");
    }

    #[test]
    fn base64_errors_are_reported() {
        assert_eq!(decode_base64("aGk=").unwrap(), b"hi");
        assert!(matches!(decode_base64("!!"), Err(DecodeError::Base64(_))));
    }

    #[test]
    fn table_def_keeps_column_order_and_types() {
        let msg = r#"{"control":{"table-def":{"columns":{"so_id":{"type":"INT64","nullable":false},
            "Total":{"type":"NUMERIC","precision":13,"scale":2,"nullable":false},
            "a":{"type":"WSTRING","length":16}},"primary-key":["so_id"]}},
            "metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"control",
            "operation":"create-table","schema-name":"sales","table-name":"o"}}"#;
        let Message::TableControl(c) = decode(msg.as_bytes(), "before-image").unwrap() else {
            panic!()
        };
        let def = c.table_def.unwrap();
        let names: Vec<&str> = def.columns.iter().map(|c| c.name.as_str()).collect();
        assert_eq!(names, ["so_id", "Total", "a"]);
        assert_eq!(def.columns[1].type_name, "NUMERIC");
        assert_eq!(
            (def.columns[1].precision, def.columns[1].scale),
            (Some(13), Some(2))
        );
        assert_eq!(def.primary_key, ["so_id"]);
    }

    #[test]
    fn unreadable_table_def_is_reported_not_fatal() {
        let msg = r#"{"control":{"table-def":{"columns":{"x":{"type":7}}}},
            "metadata":{"timestamp":"2026-03-14T01:00:00Z","record-type":"control",
            "operation":"create-table","schema-name":"s","table-name":"t"}}"#;
        let Message::TableControl(c) = decode(msg.as_bytes(), "before-image").unwrap() else {
            panic!()
        };
        assert!(c.table_def.is_none());
        assert!(c.table_def_error.unwrap().contains("columns.x"));
    }

    #[test]
    fn records_of_dms_own_tables_are_recognised() {
        for (schema, table) in [
            ("", "awsdms_status"),
            ("dmsctl", "awsdms_history"),
            ("", "x"),
        ] {
            let msg = format!(
                r#"{{"data":{{"a":1}},"metadata":{{"timestamp":"2026-03-14T01:00:00Z",
                "record-type":"data","operation":"insert","schema-name":"{schema}","table-name":"{table}"}}}}"#
            );
            assert!(
                matches!(
                    decode(msg.as_bytes(), "before-image"),
                    Ok(Message::DmsTable { .. })
                ),
                "{schema}.{table}"
            );
        }
        let msg = r#"{"control":{"table-def":{"columns":{"a":{"type":"INT32"}}}},"metadata":{
            "timestamp":"2026-03-14T01:00:00Z","record-type":"control","operation":"create-table",
            "schema-name":"dmsctl","table-name":"awsdms_suspended_tables"}}"#;
        assert!(matches!(
            decode(msg.as_bytes(), "before-image"),
            Ok(Message::TaskControl { .. })
        ));
    }

    #[test]
    fn column_names_become_athena_names() {
        let msg = r#"{"data":{"OrderID":1,"unit price":2},"metadata":{"timestamp":"2026-03-14T01:00:00Z",
            "record-type":"data","operation":"insert","schema-name":"s","table-name":"t"}}"#;
        let r = row(decode(msg.as_bytes(), "before-image").unwrap());
        let names: Vec<&str> = r.columns.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names, ["orderid", "unit_price"]);
        // Two source names that spell one lake name stay two columns.
        let clash = msg.replace("unit price", "orderid");
        let r = row(decode(clash.as_bytes(), "before-image").unwrap());
        let names: Vec<&str> = r.columns.iter().map(|(n, _)| n.as_ref()).collect();
        assert_eq!(names[1], "orderid");
        assert!(names[0].starts_with("orderid__"), "{names:?}");
    }
}
