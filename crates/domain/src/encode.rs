//! Buffered tokens → Arrow record batches → Snappy Parquet bytes (pure).
//!
//! Column types come from the table's registered schema (`schema`), not
//! from the rows of one file, so every file of a table has the same types.
//! Each column's tokens become one array per batch: columns whose tokens are
//! all of the type's own JSON kind (integers, doubles, booleans) are parsed
//! directly, the rest (decimals, dates, timestamps, hex binary, `t`/`f`
//! booleans, scientific-notation BIGINTs, text) are read as text and
//! converted exactly here. This is byte for byte what arrow-json's decoder
//! made of the same rows (`differential` checks it). A value that does not
//! fit its column never changes the column's type: the column is NULL in
//! that row and the value's text is kept in the row's `_rescued` column, a
//! JSON object `{"column": "text"}`.

use std::fmt::Write as _;
use std::ops::Range;
use std::sync::Arc;

use arrow::array::{
    new_null_array, Array, ArrayRef, BinaryArray, BooleanArray, Date32Array, Decimal128Array,
    Float64Array, Int64Array, StringArray, StringBuilder, TimestampMicrosecondArray,
};
use arrow::datatypes::{DataType, Field, Schema};
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;
use parquet::schema::types::ColumnPath;

use crate::batcher::Part;
use crate::row::{self, DataColumns, Kinds, Token};
use crate::types::{self, ColumnType, DecimalText, DECIMAL_PRECISION};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("arrow could not decode the buffered rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet writer failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
    #[error("{decoded} rows encoded of {expected}")]
    RowCount { decoded: usize, expected: usize },
    #[error("a buffered value could not be read as its column's JSON kind")]
    Token,
}

impl EncodeError {
    /// What failed, for a log line: the decoders' messages can quote a row
    /// value, and no row value may reach the logs.
    pub fn kind(&self) -> &'static str {
        match self {
            EncodeError::Arrow(_) => "Arrow rejected the columns",
            EncodeError::Parquet(_) => "the Parquet writer failed",
            EncodeError::RowCount { .. } => "another number of rows was encoded",
            EncodeError::Token => "a buffered value could not be read as its column's JSON kind",
        }
    }
}

/// Rows decoded per Arrow batch; bounds the decoder's working memory.
const BATCH_ROWS: usize = 8192;

/// Values of one column that did not fit its type (kept in `_rescued`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Rescued {
    pub column: String,
    pub ty: ColumnType,
    pub values: u64,
}

/// A Parquet file and what writing it found out.
#[derive(Debug)]
pub struct Encoded {
    pub bytes: Vec<u8>,
    /// Per column, how many values went to `_rescued` (never the values).
    pub rescued: Vec<Rescued>,
    /// BIGINTs DMS sent in scientific notation: digits were lost upstream.
    pub inexact_integers: u64,
}

/// The per-row column holding values that did not fit their column's type.
pub const RESCUED_COLUMN: &str = "_rescued";

/// The metadata columns every file ends with.
fn metadata_fields() -> [Field; 9] {
    [
        Field::new("_op", DataType::Utf8, false),
        Field::new("_dms_timestamp", types::timestamp(), false),
        Field::new("_commit_timestamp", types::timestamp(), true),
        Field::new("_transaction_id", DataType::Utf8, true),
        Field::new("_shard_id", DataType::Utf8, false),
        Field::new("_sequence_number", DataType::Utf8, false),
        Field::new("_ingested_at", types::timestamp(), false),
        Field::new("_before_image", DataType::Utf8, true),
        Field::new(RESCUED_COLUMN, DataType::Utf8, true),
    ]
}

/// How arrow-json reads a column headed for `ty`, given the JSON kinds the
/// buffer saw: natively when that is exact, else as text.
fn wire_type(ty: ColumnType, kinds: Kinds) -> DataType {
    let k = kinds.non_null();
    let only = |allowed: Kinds| k.union(allowed) == allowed;
    match ty {
        ColumnType::Int64 if only(Kinds::INT.union(Kinds::WIDE_INT)) => DataType::Int64,
        ColumnType::Float64 if only(Kinds::INT.union(Kinds::FLOAT)) => DataType::Float64,
        ColumnType::Boolean if only(Kinds::BOOL) => DataType::Boolean,
        _ => DataType::Utf8,
    }
}

/// The metadata columns of `part`, in `metadata_fields` order.
fn metadata_arrays(part: &Part) -> Vec<ArrayRef> {
    let meta = &part.meta;
    let timestamps = |v: &[i64]| -> ArrayRef {
        Arc::new(TimestampMicrosecondArray::from(v.to_vec()).with_timezone("+00:00"))
    };
    let operations: StringArray = meta.operations.iter().map(|o| Some(o.as_str())).collect();
    let shards: StringArray = part.ids.iter().map(|id| Some(&*id.shard)).collect();
    let mut sequences =
        StringBuilder::with_capacity(part.ids.len(), part.ids.len() * row::SEQUENCE_WIDTH);
    for id in &part.ids {
        // Writes into a builder cannot fail; append_value ends the value.
        let _ = write!(sequences, "{}", row::PaddedSequence(&id.sequence));
        sequences.append_value("");
    }
    vec![
        Arc::new(operations),
        timestamps(&meta.dms_timestamps_us),
        Arc::new(
            TimestampMicrosecondArray::from(meta.commit_timestamps_us.clone())
                .with_timezone("+00:00"),
        ),
        Arc::new(meta.transaction_ids.finish_cloned()),
        Arc::new(shards),
        Arc::new(sequences.finish()),
        timestamps(&meta.ingested_at_us),
        Arc::new(meta.before_images.finish_cloned()),
    ]
}

/// Each batch of [`BATCH_ROWS`] rows as Arrow arrays, one per column of
/// `fields` (named data columns, each of its wire type), built straight from
/// the buffered tokens: every value is parsed once, by its column's type.
fn token_arrays(part: &Part, fields: &[Field]) -> Result<Vec<Vec<ArrayRef>>, EncodeError> {
    let data = &part.data;
    let columns: Vec<Option<usize>> = fields.iter().map(|f| data.column(f.name())).collect();
    let mut batches = Vec::new();
    let mut start = 0;
    while start < data.rows() {
        let end = (start + BATCH_ROWS).min(data.rows());
        let arrays = columns
            .iter()
            .zip(fields)
            .map(|(column, field)| token_array(data, *column, field.data_type(), start..end))
            .collect::<Result<Vec<_>, _>>()?;
        batches.push(arrays);
        start = end;
    }
    Ok(batches)
}

/// A bare token (number, `true`, `false`) parsed by `parse`. Any other
/// kind cannot reach a natively read column: [`wire_type`] reads a column
/// natively only when every token of it is of that kind.
fn bare<T>(token: Token<'_>, parse: impl Fn(&str) -> Option<T>) -> Result<Option<T>, EncodeError> {
    match token {
        Token::Null => Ok(None),
        Token::Bare(text) => parse(text).map(Some).ok_or(EncodeError::Token),
        Token::Quoted(_) => Err(EncodeError::Token),
    }
}

/// Column `column`'s values in `rows` as an array of `wire` (Int64,
/// Float64 or Boolean where [`wire_type`] allows, else text).
fn token_array(
    data: &DataColumns,
    column: Option<usize>,
    wire: &DataType,
    rows: Range<usize>,
) -> Result<ArrayRef, EncodeError> {
    let Some(column) = column else {
        return Ok(new_null_array(wire, rows.len()));
    };
    let mut tokens = rows.map(|row| data.value(column, row));
    Ok(match wire {
        DataType::Int64 => Arc::new(
            tokens
                .map(|t| bare(t, |s| s.parse::<i64>().ok()))
                .collect::<Result<Int64Array, _>>()?,
        ),
        DataType::Float64 => Arc::new(
            tokens
                .map(|t| bare(t, |s| s.parse::<f64>().ok()))
                .collect::<Result<Float64Array, _>>()?,
        ),
        DataType::Boolean => Arc::new(
            tokens
                .map(|t| {
                    bare(t, |s| match s {
                        "true" => Some(true),
                        "false" => Some(false),
                        _ => None,
                    })
                })
                .collect::<Result<BooleanArray, _>>()?,
        ),
        _ => {
            let mut out = StringBuilder::new();
            tokens.try_for_each(|token| {
                match token {
                    Token::Null => out.append_null(),
                    Token::Bare(text) => out.append_value(text),
                    Token::Quoted(quoted) => match quoted.get(1..quoted.len() - 1) {
                        // No escape: the text between the quotes is the value
                        // (the message decoder validated it).
                        Some(inner) if memchr::memchr(b'\\', inner.as_bytes()).is_none() => {
                            out.append_value(inner)
                        }
                        _ => out.append_value(
                            serde_json::from_str::<String>(quoted)
                                .map_err(|_| EncodeError::Token)?,
                        ),
                    },
                }
                Ok::<_, EncodeError>(())
            })?;
            Arc::new(out.finish())
        }
    })
}

/// Parses each value of `text`; one that does not parse becomes NULL and
/// its row (`first_row` + index) and text go to `rescued`.
fn each<T>(
    text: &StringArray,
    first_row: usize,
    rescued: &mut Vec<(usize, String)>,
    mut parse: impl FnMut(&str) -> Option<T>,
) -> Vec<Option<T>> {
    text.iter()
        .enumerate()
        .map(|(i, v)| {
            let s = v?;
            let out = parse(s);
            if out.is_none() {
                rescued.push((first_row + i, s.to_string()));
            }
            out
        })
        .collect()
}

/// Converts text to `ty` exactly (see [`each`] for values that do not fit).
/// Counts scientific-notation integers.
fn convert(
    text: &StringArray,
    ty: ColumnType,
    first_row: usize,
    rescued: &mut Vec<(usize, String)>,
    inexact: &mut u64,
) -> ArrayRef {
    match ty {
        ColumnType::String => Arc::new(text.clone()),
        ColumnType::Boolean => Arc::new(BooleanArray::from(self::each(
            text,
            first_row,
            rescued,
            types::parse_bool,
        ))),
        ColumnType::Int64 => {
            let mut scientific = 0;
            let values = self::each(text, first_row, rescued, |s| {
                let (v, sci) = types::parse_int64(s)?;
                scientific += u64::from(sci);
                Some(v)
            });
            *inexact += scientific;
            Arc::new(Int64Array::from(values))
        }
        ColumnType::Float64 => Arc::new(Float64Array::from(self::each(
            text,
            first_row,
            rescued,
            types::parse_float64,
        ))),
        ColumnType::Decimal { scale } => {
            let values = self::each(text, first_row, rescued, |s| {
                DecimalText::parse(s)?.unscaled(scale)
            });
            let scale = i8::try_from(scale).unwrap_or(0);
            // `unscaled` only returns values of at most 38 digits.
            Arc::new(
                Decimal128Array::from(values)
                    .with_precision_and_scale(DECIMAL_PRECISION, scale)
                    .unwrap_or_else(|_| Decimal128Array::new_null(text.len())),
            )
        }
        ColumnType::Date => Arc::new(Date32Array::from(self::each(
            text,
            first_row,
            rescued,
            types::parse_date,
        ))),
        ColumnType::Timestamp => Arc::new(
            TimestampMicrosecondArray::from(self::each(
                text,
                first_row,
                rescued,
                types::parse_timestamp,
            ))
            .with_timezone("+00:00"),
        ),
        ColumnType::LocalTimestamp => Arc::new(TimestampMicrosecondArray::from(self::each(
            text,
            first_row,
            rescued,
            types::parse_timestamp,
        ))),
        ColumnType::Binary => Arc::new(BinaryArray::from_iter(self::each(
            text,
            first_row,
            rescued,
            types::parse_hex,
        ))),
    }
}

/// The `_rescued` column: per row, a JSON object of the values that did not
/// fit (column order), or NULL.
fn rescued_json(
    rows: usize,
    mut rescued: Vec<(usize, usize, String)>,
    types: &[(String, ColumnType)],
) -> ArrayRef {
    rescued.sort_unstable_by_key(|(row, column, _)| (*row, *column));
    let mut out = StringBuilder::with_capacity(rows, 0);
    let mut it = rescued.into_iter().peekable();
    for row in 0..rows {
        let mut object: Option<String> = None;
        while let Some((_, column, text)) = it.next_if(|(r, _, _)| *r == row) {
            let o = object.get_or_insert_with(|| "{".to_string());
            if o.len() > 1 {
                o.push(',');
            }
            let name = types.get(column).map_or("", |(n, _)| n.as_str());
            // Serializing a string cannot fail.
            o.push_str(&serde_json::to_string(name).unwrap_or_default());
            o.push(':');
            o.push_str(&serde_json::to_string(&text).unwrap_or_default());
        }
        match object {
            Some(mut o) => {
                o.push('}');
                out.append_value(o);
            }
            None => out.append_null(),
        }
    }
    Arc::new(out.finish())
}

/// Encodes a part as one Snappy-compressed Parquet file whose data columns
/// are `types` (the registered types of the part's columns, in file order).
pub fn to_parquet(part: &Part, types: &[(String, ColumnType)]) -> Result<Encoded, EncodeError> {
    encode_with(part, types, token_arrays)
}

/// [`to_parquet`] with the data columns' wire arrays made by `read` (the
/// tests compare [`token_arrays`] with arrow-json's reading of the rows).
fn encode_with(
    part: &Part,
    types: &[(String, ColumnType)],
    read: impl FnOnce(&Part, &[Field]) -> Result<Vec<Vec<ArrayRef>>, EncodeError>,
) -> Result<Encoded, EncodeError> {
    let kinds_of = |name: &str| part.kinds().get(name).copied().unwrap_or_default();
    let wire: Vec<DataType> = types
        .iter()
        .map(|(name, ty)| wire_type(*ty, kinds_of(name)))
        .collect();
    let fields: Vec<Field> = types
        .iter()
        .zip(&wire)
        .map(|((name, _), w)| Field::new(name, w.clone(), true))
        .collect();
    let mut columns = read(part, &fields)?;

    let mut inexact_integers = 0;
    let mut rescued_rows: Vec<(usize, usize, String)> = Vec::new(); // (row, column, text)
    let mut rescued = Vec::new();
    for (i, ((name, ty), wire)) in types.iter().zip(&wire).enumerate() {
        if *wire != DataType::Utf8 || *ty == ColumnType::String {
            continue;
        }
        let mut misfits = Vec::new();
        let mut first_row = 0;
        for cols in columns.iter_mut() {
            let rows = cols[i].len();
            if let Some(text) = cols[i].as_any().downcast_ref::<StringArray>() {
                cols[i] = convert(text, *ty, first_row, &mut misfits, &mut inexact_integers);
            }
            first_row += rows;
        }
        if !misfits.is_empty() {
            rescued.push(Rescued {
                column: name.clone(),
                ty: *ty,
                values: misfits.len() as u64,
            });
            rescued_rows.extend(misfits.into_iter().map(|(row, text)| (row, i, text)));
        }
    }
    let rescued_column = rescued_json(part.row_count(), rescued_rows, types);

    let mut fields: Vec<Field> = types
        .iter()
        .map(|(name, ty)| Field::new(name, ty.arrow(), true))
        .collect();
    fields.extend(metadata_fields());
    let schema = Arc::new(Schema::new(fields));

    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(concat!("cdc-batcher ", env!("CARGO_PKG_VERSION")).to_string())
        // Every row's sequence number differs: a dictionary only costs
        // hashing each value before the writer falls back to plain pages.
        .set_column_dictionary_enabled(ColumnPath::from("_sequence_number"), false)
        .build();
    let mut out = Vec::with_capacity(part.bytes / 4);
    // Without the embedded Arrow schema every engine reads the plain Parquet
    // types (e.g. TIMESTAMP(MICROS, UTC) rather than Arrow's "+00:00" zone name).
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(&mut out, schema.clone(), options)?;
    let mut metadata = metadata_arrays(part);
    metadata.push(rescued_column);
    let mut offset = 0;
    for mut cols in columns {
        // Batches are BATCH_ROWS long but the last; a part without data
        // columns has rows all the same (their metadata).
        let rows = cols
            .first()
            .map_or((part.row_count() - offset).min(BATCH_ROWS), |c| c.len());
        cols.extend(metadata.iter().map(|m| m.slice(offset, rows)));
        offset += rows;
        writer.write(&RecordBatch::try_new(schema.clone(), cols)?)?;
    }
    if offset != part.row_count() {
        return Err(EncodeError::RowCount {
            decoded: offset,
            expected: part.row_count(),
        });
    }
    writer.close()?;
    Ok(Encoded {
        bytes: out,
        rescued,
        inexact_integers,
    })
}

#[cfg(test)]
mod differential;

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::Batcher;
    use crate::batcher::{FlushMode, Thresholds};
    use crate::dms::{decode, Message};
    use crate::names::RecordId;
    use crate::names::TableName;
    use crate::schema::TableSchema;
    use arrow::array::AsArray;
    use arrow::datatypes::{
        Date32Type, Decimal128Type, Float64Type, Int64Type, TimestampMicrosecondType,
    };
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    pub(super) fn part_of(datas: &[&str]) -> Part {
        let mut b = Batcher::new(Thresholds::unlimited(), FlushMode::Warm);
        for (i, data) in datas.iter().enumerate() {
            let text = format!(
                r#"{{"data":{data},"metadata":{{"timestamp":"2026-03-14T01:00:00.000001Z",
                "record-type":"data","operation":"insert","schema-name":"s","table-name":"t"}}}}"#
            );
            let Message::Row(change) = decode(text.as_bytes(), "before-image").unwrap() else {
                panic!()
            };
            let id = RecordId {
                stream: std::sync::Arc::from(""),
                shard: Arc::from("shardId-1"),
                sequence: i.to_string(),
            };
            b.push(id, &change, 5, None);
        }
        let mut parts = b.take_all();
        assert_eq!(parts.len(), 1);
        parts.remove(0)
    }

    /// Types as the registry would give them with nothing declared.
    fn inferred(part: &Part) -> Vec<(String, ColumnType)> {
        let table = TableName {
            schema: "s".into(),
            table: "t".into(),
        };
        TableSchema::new(&table).resolve(part.kinds()).0
    }

    fn read_back(bytes: &[u8]) -> RecordBatch {
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.to_vec())).unwrap();
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        arrow::compute::concat_batches(&batches[0].schema(), &batches).unwrap()
    }

    fn typed(cols: &[(&str, ColumnType)]) -> Vec<(String, ColumnType)> {
        cols.iter().map(|(n, t)| (n.to_string(), *t)).collect()
    }

    #[test]
    fn absent_columns_are_null_and_null_only_columns_wait_for_a_type() {
        let part = part_of(&[
            r#"{"id":1,"name":"a","price":1.5,"nothing":null}"#,
            r#"{"id":2,"ok":true}"#,
        ]);
        let encoded = to_parquet(&part, &inferred(&part)).unwrap();
        let b = read_back(&encoded.bytes);
        let names: Vec<String> = b
            .schema()
            .fields()
            .iter()
            .map(|f| f.name().clone())
            .collect();
        assert_eq!(&names[..4], ["id", "name", "price", "ok"]);
        assert!(!names.contains(&"nothing".to_string()));
        assert_eq!(b.num_rows(), 2);
        assert_eq!(b.column(0).as_primitive::<Int64Type>().values(), &[1, 2]);
        assert!(b.column(1).is_null(1));
        assert!(b.column(3).is_null(0));
        let ts = b
            .column_by_name("_dms_timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_773_450_000_000_001);
        assert!(encoded.rescued.is_empty());
        assert_eq!(b.column_by_name("_rescued").unwrap().null_count(), 2);
    }

    #[test]
    fn declared_types_convert_exactly() {
        let part = part_of(&[
            r#"{"amount":"12345678901234.56","day":"1899-12-30","at":"2026-03-14T01:02:03.5Z",
                "blob":"0x80057D94","flag":"t","big":2.71828182845905E+17,"ratio":1}"#,
            r#"{"amount":-0.01,"day":"9999-12-31","at":"2026-03-14T01:02:03Z","blob":"0x",
                "flag":"f","big":-9223372036854775799,"ratio":0.25}"#,
        ]);
        let types = typed(&[
            ("amount", ColumnType::Decimal { scale: 6 }),
            ("day", ColumnType::Date),
            ("at", ColumnType::Timestamp),
            ("blob", ColumnType::Binary),
            ("flag", ColumnType::Boolean),
            ("big", ColumnType::Int64),
            ("ratio", ColumnType::Float64),
        ]);
        let encoded = to_parquet(&part, &types).unwrap();
        assert!(encoded.rescued.is_empty(), "{:?}", encoded.rescued);
        assert_eq!(encoded.inexact_integers, 1);
        let b = read_back(&encoded.bytes);
        let amount = b.column(0).as_primitive::<Decimal128Type>();
        assert_eq!(amount.value(0), 12_345_678_901_234_560_000);
        assert_eq!(amount.value(1), -10_000);
        assert_eq!(amount.data_type(), &DataType::Decimal128(38, 6));
        let day = b.column(1).as_primitive::<Date32Type>();
        assert_eq!((day.value(0), day.value(1)), (-25_569, 2_932_896));
        let at = b.column(2).as_primitive::<TimestampMicrosecondType>();
        assert_eq!(at.value(0) - at.value(1), 500_000);
        let blob = b.column(3).as_binary::<i32>();
        assert_eq!(
            (blob.value(0), blob.value(1)),
            (&[0x80, 0x05, 0x7D, 0x94][..], &[][..])
        );
        let flag = b.column(4).as_boolean();
        assert!(flag.value(0) && !flag.value(1));
        let big = b.column(5).as_primitive::<Int64Type>();
        assert_eq!(
            big.values(),
            &[271_828_182_845_905_000, -9_223_372_036_854_775_799]
        );
        assert_eq!(
            b.column(6).as_primitive::<Float64Type>().values(),
            &[1.0, 0.25]
        );
    }

    #[test]
    fn a_value_that_does_not_fit_is_rescued_and_the_type_stays() {
        let part = part_of(&[
            r#"{"amount":"1.50","code":"12","n":1,"day":"2026-01-01","at":"2026-01-01T00:00:00Z"}"#,
            r#"{"amount":"1.125","code":"n/a","n":9223372036854775808,"day":"0000-00-00",
                "at":"2026-01-01T00:00:00.123456789Z","b":"0xF"}"#,
            r#"{"amount":"2","code":"7","n":2,"b":"0x0f"}"#,
        ]);
        let types = typed(&[
            ("amount", ColumnType::Decimal { scale: 2 }),
            ("code", ColumnType::Int64),
            ("n", ColumnType::Int64),
            ("day", ColumnType::Date),
            ("at", ColumnType::LocalTimestamp),
            ("b", ColumnType::Binary),
        ]);
        let encoded = to_parquet(&part, &types).unwrap();
        assert_eq!(encoded.rescued.len(), 6, "{:?}", encoded.rescued);
        assert!(encoded.rescued.iter().all(|r| r.values == 1));
        let b = read_back(&encoded.bytes);
        // Every column keeps its registered type.
        assert_eq!(b.column(0).data_type(), &DataType::Decimal128(38, 2));
        assert_eq!(b.column(1).data_type(), &DataType::Int64);
        assert_eq!(b.column(3).data_type(), &DataType::Date32);
        assert_eq!(
            b.column(4).data_type(),
            &DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, None)
        );
        let amount = b.column(0).as_primitive::<Decimal128Type>();
        assert_eq!((amount.value(0), amount.value(2)), (150, 200));
        assert!(amount.is_null(1));
        for c in 0..6 {
            assert!(b.column(c).is_null(1), "column {c} row 1");
        }
        let rescued = b.column_by_name("_rescued").unwrap().as_string::<i32>();
        assert!(rescued.is_null(0) && rescued.is_null(2));
        let row: serde_json::Value = serde_json::from_str(rescued.value(1)).unwrap();
        assert_eq!(
            row,
            serde_json::json!({"amount": "1.125", "code": "n/a", "n": "9223372036854775808",
                "day": "0000-00-00", "at": "2026-01-01T00:00:00.123456789Z", "b": "0xF"})
        );
        // Keys in file column order.
        assert!(rescued.value(1).starts_with(r#"{"amount":"#));
    }

    #[test]
    fn text_columns_keep_every_token_exactly() {
        let part = part_of(&[
            r#"{"big":9223372036854775800,"mixed":1,"j":{"a":[1,2]}}"#,
            r#"{"big":2.71828182845905E+17,"mixed":"x","j":"[]"}"#,
        ]);
        let encoded = to_parquet(&part, &inferred(&part)).unwrap();
        let b = read_back(&encoded.bytes);
        let big = b.column_by_name("big").unwrap().as_string::<i32>();
        assert_eq!(big.value(0), "9223372036854775800");
        assert_eq!(big.value(1), "2.71828182845905E+17");
        let mixed = b.column_by_name("mixed").unwrap().as_string::<i32>();
        assert_eq!((mixed.value(0), mixed.value(1)), ("1", "x"));
        let j = b.column_by_name("j").unwrap().as_string::<i32>();
        assert_eq!((j.value(0), j.value(1)), (r#"{"a":[1,2]}"#, "[]"));
    }

    #[test]
    fn many_rows_span_several_arrow_batches() {
        let rows: Vec<String> = (0..BATCH_ROWS + 10)
            .map(|i| format!(r#"{{"id":{i},"d":"2026-01-01"}}"#))
            .collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let part = part_of(&refs);
        let types = typed(&[("id", ColumnType::Int64), ("d", ColumnType::Date)]);
        let b = read_back(&to_parquet(&part, &types).unwrap().bytes);
        assert_eq!(b.num_rows(), BATCH_ROWS + 10);
        assert_eq!(
            b.column(1)
                .as_primitive::<Date32Type>()
                .value(BATCH_ROWS + 5),
            20_454
        );
        // Metadata columns are built beside the JSON: they must stay aligned
        // with their rows across Arrow batches.
        let seq = b
            .column_by_name("_sequence_number")
            .unwrap()
            .as_string::<i32>();
        let i = BATCH_ROWS + 5;
        assert_eq!(seq.value(i).trim_start_matches('0'), i.to_string());
        assert_eq!(seq.value(i).len(), crate::row::SEQUENCE_WIDTH);
        assert_eq!(
            b.column(0).as_primitive::<Int64Type>().value(i),
            i64::try_from(i).unwrap()
        );
    }

    #[test]
    fn unique_sequence_numbers_are_written_without_a_dictionary() {
        let part = part_of(&[r#"{"id":1}"#, r#"{"id":2}"#]);
        let bytes = to_parquet(&part, &inferred(&part)).unwrap().bytes;
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let group = reader.metadata().row_group(0);
        let chunk = |name: &str| {
            group
                .columns()
                .iter()
                .find(|c| c.column_path().string() == name)
                .unwrap()
        };
        assert!(chunk("_sequence_number").dictionary_page_offset().is_none());
        // Other columns keep the writer's default.
        assert!(chunk("_shard_id").dictionary_page_offset().is_some());
    }

    #[test]
    fn rows_without_data_columns_keep_their_metadata() {
        let part = part_of(&["{}", "{}", "{}"]);
        let types = inferred(&part);
        assert!(types.is_empty());
        let b = read_back(&to_parquet(&part, &types).unwrap().bytes);
        assert_eq!(b.num_rows(), 3);
        let ops = b.column_by_name("_op").unwrap().as_string::<i32>();
        assert_eq!(ops.iter().flatten().collect::<Vec<_>>(), ["insert"; 3]);
        let ts = b.column_by_name("_dms_timestamp").unwrap();
        assert_eq!(
            ts.as_primitive::<TimestampMicrosecondType>().value(2),
            1_773_450_000_000_001
        );
        assert_eq!(b.column_by_name("_shard_id").unwrap().null_count(), 0);
        assert_eq!(
            b.column_by_name("_commit_timestamp").unwrap().null_count(),
            3
        );
    }

    #[test]
    fn parquet_is_snappy_and_reads_back() {
        let part = part_of(&[r#"{"id":1,"name":"日本"}"#, r#"{"id":2}"#]);
        let bytes = to_parquet(&part, &inferred(&part)).unwrap().bytes;
        let reader =
            ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone())).unwrap();
        let col = reader.metadata().row_group(0).column(0);
        assert_eq!(col.compression(), Compression::SNAPPY);
        let b = read_back(&bytes);
        assert_eq!(
            b.column_by_name("name")
                .unwrap()
                .as_string::<i32>()
                .value(0),
            "日本"
        );
        assert_eq!(b.num_rows(), 2);
    }
}
