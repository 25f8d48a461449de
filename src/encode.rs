//! Buffered JSON rows → Arrow record batches → Snappy Parquet bytes (pure).
//!
//! The column types come from the JSON kinds seen while the rows were
//! buffered; arrow-json's decoder then does the JSON → Arrow conversion.
//! Type rule for a column within one file:
//!
//! | kinds seen (ignoring null)                 | Parquet type          |
//! |--------------------------------------------|-----------------------|
//! | only booleans                              | BOOLEAN               |
//! | only integers that fit i64                 | INT64                 |
//! | floats, or floats and integers within ±2^53 | DOUBLE               |
//! | strings, objects, arrays (as JSON text)    | STRING                |
//! | anything else (mixed kinds, integers beyond i64, or integers beyond ±2^53 mixed with floats) | STRING holding the exact JSON token |
//! | only nulls                                 | STRING (all null)     |
//!
//! arrow-json's own schema inference widens int + float to float, which would
//! silently change BIGINT values above 2^53; hence the explicit rule.

use std::sync::Arc;

use arrow::datatypes::{DataType, Field, Schema, SchemaRef, TimeUnit};
use arrow::json::ReaderBuilder;
use arrow::record_batch::RecordBatch;
use parquet::arrow::arrow_writer::ArrowWriterOptions;
use parquet::arrow::ArrowWriter;
use parquet::basic::Compression;
use parquet::file::properties::WriterProperties;

use crate::batcher::Part;
use crate::row::{ColumnKinds, Kinds};

#[derive(Debug, thiserror::Error)]
pub enum EncodeError {
    #[error("arrow could not decode the buffered rows: {0}")]
    Arrow(#[from] arrow::error::ArrowError),
    #[error("parquet writer failed: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// Rows decoded per Arrow batch; bounds the decoder's working memory.
const BATCH_ROWS: usize = 8192;

/// The Arrow type of a data column that held `kinds`.
pub fn data_type_for(kinds: Kinds) -> DataType {
    let k = kinds.non_null();
    if k == Kinds::BOOL {
        DataType::Boolean
    } else if k == Kinds::INT || k == Kinds::INT.union(Kinds::WIDE_INT) {
        DataType::Int64
    } else if k == Kinds::FLOAT || k == Kinds::FLOAT.union(Kinds::INT) {
        DataType::Float64
    } else {
        DataType::Utf8
    }
}

fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

/// The file schema: data columns in first-seen order, then the metadata columns.
pub fn schema_for(kinds: &ColumnKinds) -> SchemaRef {
    let mut fields: Vec<Field> = kinds
        .iter()
        .map(|(name, k)| Field::new(name, data_type_for(*k), true))
        .collect();
    fields.extend([
        Field::new("_op", DataType::Utf8, false),
        Field::new("_dms_timestamp", timestamp(), false),
        Field::new("_commit_timestamp", timestamp(), true),
        Field::new("_transaction_id", DataType::Utf8, true),
        Field::new("_shard_id", DataType::Utf8, false),
        Field::new("_sequence_number", DataType::Utf8, false),
        Field::new("_ingested_at", timestamp(), false),
        Field::new("_before_image", DataType::Utf8, true),
    ]);
    Arc::new(Schema::new(fields))
}

/// Decodes a part's JSON lines into Arrow record batches.
pub fn to_record_batches(part: &Part) -> Result<(SchemaRef, Vec<RecordBatch>), EncodeError> {
    let schema = schema_for(&part.kinds);
    let mut decoder = ReaderBuilder::new(schema.clone())
        .with_coerce_primitive(true)
        .with_batch_size(BATCH_ROWS)
        .build_decoder()?;
    let mut batches = Vec::new();
    let mut rest = part.rows.as_slice();
    while !rest.is_empty() {
        let read = decoder.decode(rest)?;
        rest = &rest[read..];
        // The decoder stops when its batch is full: drain it and go on.
        match decoder.flush()? {
            Some(batch) => batches.push(batch),
            None if read == 0 => break,
            None => {}
        }
    }
    if let Some(batch) = decoder.flush()? {
        batches.push(batch);
    }
    Ok((schema, batches))
}

/// Encodes a part as one Snappy-compressed Parquet file.
pub fn to_parquet(part: &Part) -> Result<Vec<u8>, EncodeError> {
    let (schema, batches) = to_record_batches(part)?;
    let props = WriterProperties::builder()
        .set_compression(Compression::SNAPPY)
        .set_created_by(concat!("cdc-batcher ", env!("CARGO_PKG_VERSION")).to_string())
        .build();
    let mut out = Vec::with_capacity(part.rows.len() / 4);
    // Without the embedded Arrow schema every engine reads the plain Parquet
    // types (e.g. TIMESTAMP(MICROS, UTC) rather than Arrow's "+00:00" zone name).
    let options = ArrowWriterOptions::new()
        .with_properties(props)
        .with_skip_arrow_metadata(true);
    let mut writer = ArrowWriter::try_new_with_options(&mut out, schema, options)?;
    for batch in &batches {
        writer.write(batch)?;
    }
    writer.close()?;
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::Batcher;
    use crate::config::{FlushMode, Thresholds};
    use crate::dms::{decode, Message};
    use crate::layout::RecordId;
    use arrow::array::{Array, AsArray};
    use arrow::datatypes::{Float64Type, Int64Type, TimestampMicrosecondType};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;

    fn part_of(datas: &[&str]) -> Part {
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
                shard: Arc::from("shardId-1"),
                sequence: i.to_string(),
            };
            b.push(id, &change, 5);
        }
        let mut parts = b.take_all();
        assert_eq!(parts.len(), 1);
        parts.remove(0)
    }

    #[test]
    fn type_rule() {
        let t = |ks: &[Kinds]| data_type_for(ks.iter().fold(Kinds::default(), |a, k| a.union(*k)));
        assert_eq!(t(&[Kinds::INT, Kinds::NULL]), DataType::Int64);
        assert_eq!(t(&[Kinds::INT, Kinds::WIDE_INT]), DataType::Int64);
        assert_eq!(t(&[Kinds::INT, Kinds::FLOAT]), DataType::Float64);
        assert_eq!(
            t(&[Kinds::INT, Kinds::WIDE_INT, Kinds::FLOAT]),
            DataType::Utf8
        );
        assert_eq!(t(&[Kinds::BIG_INT]), DataType::Utf8);
        assert_eq!(t(&[Kinds::BOOL]), DataType::Boolean);
        assert_eq!(t(&[Kinds::BOOL, Kinds::STRING]), DataType::Utf8);
        assert_eq!(t(&[Kinds::NULL]), DataType::Utf8);
    }

    #[test]
    fn rows_decode_with_absent_columns_as_null() {
        let part = part_of(&[
            r#"{"id":1,"name":"a","price":1.5}"#,
            r#"{"id":2,"ok":true}"#,
        ]);
        let (schema, batches) = to_record_batches(&part).unwrap();
        let names: Vec<&str> = schema.fields().iter().map(|f| f.name().as_str()).collect();
        assert_eq!(&names[..4], ["id", "name", "price", "ok"]);
        let b = &batches[0];
        assert_eq!(b.num_rows(), 2);
        let id = b.column(0).as_primitive::<Int64Type>();
        assert_eq!(id.values(), &[1, 2]);
        assert!(b.column(1).is_null(1));
        assert!(b.column(3).is_null(0));
        let ts = b
            .column_by_name("_dms_timestamp")
            .unwrap()
            .as_primitive::<TimestampMicrosecondType>();
        assert_eq!(ts.value(0), 1_773_450_000_000_001);
    }

    #[test]
    fn conflicting_kinds_keep_exact_text() {
        let part = part_of(&[
            r#"{"big":9223372036854775800,"mixed":1,"f":1}"#,
            r#"{"big":2.71828182845905E+17,"mixed":"x","f":0.5}"#,
        ]);
        let (_, batches) = to_record_batches(&part).unwrap();
        let b = &batches[0];
        let big = b.column_by_name("big").unwrap().as_string::<i32>();
        assert_eq!(big.value(0), "9223372036854775800");
        assert_eq!(big.value(1), "2.71828182845905E+17");
        let mixed = b.column_by_name("mixed").unwrap().as_string::<i32>();
        assert_eq!((mixed.value(0), mixed.value(1)), ("1", "x"));
        let f = b.column_by_name("f").unwrap().as_primitive::<Float64Type>();
        assert_eq!(f.values(), &[1.0, 0.5]);
    }

    #[test]
    fn many_rows_span_several_arrow_batches() {
        let rows: Vec<String> = (0..BATCH_ROWS + 10)
            .map(|i| format!(r#"{{"id":{i}}}"#))
            .collect();
        let refs: Vec<&str> = rows.iter().map(String::as_str).collect();
        let part = part_of(&refs);
        let (_, batches) = to_record_batches(&part).unwrap();
        assert_eq!(
            batches.iter().map(|b| b.num_rows()).sum::<usize>(),
            BATCH_ROWS + 10
        );
    }

    #[test]
    fn parquet_is_snappy_and_reads_back() {
        let part = part_of(&[r#"{"id":1,"name":"日本"}"#, r#"{"id":2}"#]);
        let bytes = to_parquet(&part).unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes)).unwrap();
        let meta = reader.metadata().clone();
        let col = meta.row_group(0).column(0);
        assert_eq!(col.compression(), Compression::SNAPPY);
        let batches: Vec<RecordBatch> = reader.build().unwrap().map(|b| b.unwrap()).collect();
        let names = batches[0]
            .column_by_name("name")
            .unwrap()
            .as_string::<i32>();
        assert_eq!(names.value(0), "日本");
        assert_eq!(batches[0].num_rows(), 2);
    }
}
