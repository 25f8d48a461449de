//! Which files of a table hold a column type other than the registered one
//! (pure, given a file's footer): files written before a declaration or an
//! override replaced an inferred type. `cdc-batcher ddl --check` lists them
//! with the reason so they can be rewritten.

use arrow::datatypes::{DataType, Schema};

use crate::dms::METADATA_COLUMNS;
use crate::schema::{Origin, TableSchema};
use crate::types::ColumnType;

#[derive(Debug, thiserror::Error)]
pub enum FooterError {
    #[error("not a readable Parquet file: {0}")]
    Parquet(#[from] parquet::errors::ParquetError),
}

/// One column of one file whose type is not the registered type.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Mismatch {
    pub column: String,
    pub file_type: String,
    pub registered: Option<ColumnType>,
    pub reason: String,
}

/// The Arrow schema of a Parquet file's footer.
pub fn footer_schema(file: Vec<u8>) -> Result<Schema, FooterError> {
    let reader =
        parquet::arrow::arrow_reader::ArrowReaderMetadata::load(&bytes::Bytes::from(file), {
            parquet::arrow::arrow_reader::ArrowReaderOptions::new().with_skip_arrow_metadata(true)
        })?;
    Ok(reader.schema().as_ref().clone())
}

/// The `_sequence_number` of each row of a data file, in row order, as
/// Kinesis spelled it (the column's zero padding taken off).
pub fn sequence_numbers(file: Vec<u8>) -> Result<Vec<String>, FooterError> {
    use arrow::array::{Array as _, StringArray};
    use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
    use parquet::arrow::ProjectionMask;
    let builder = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(file))?;
    let Some(index) = builder
        .parquet_schema()
        .columns()
        .iter()
        .position(|c| c.name() == "_sequence_number")
    else {
        return Ok(Vec::new());
    };
    let mask = ProjectionMask::leaves(builder.parquet_schema(), [index]);
    let mut out = Vec::new();
    for batch in builder.with_projection(mask).build()? {
        let batch = batch.map_err(|e| parquet::errors::ParquetError::General(e.to_string()))?;
        let Some(column) = batch.column(0).as_any().downcast_ref::<StringArray>() else {
            continue;
        };
        for i in 0..column.len() {
            if column.is_valid(i) {
                let padded = column.value(i);
                let digits = padded.trim_start_matches('0');
                out.push(if digits.is_empty() && !padded.is_empty() {
                    "0".to_string()
                } else {
                    digits.to_string()
                });
            }
        }
    }
    Ok(out)
}

/// Does a file column of type `file` hold the registered type `ty`?
fn holds(file: &DataType, ty: ColumnType) -> bool {
    match (file, ty.arrow()) {
        // Readers name the UTC zone differently ("UTC", "+00:00").
        (DataType::Timestamp(u1, Some(_)), DataType::Timestamp(u2, Some(_))) => *u1 == u2,
        (f, want) => *f == want,
    }
}

/// The data columns of `file` whose type differs from `schema`'s.
pub fn mismatches(schema: &TableSchema, file: &Schema) -> Vec<Mismatch> {
    let mut out = Vec::new();
    for field in file.fields() {
        let name = field.name();
        if METADATA_COLUMNS.contains(&name.as_str()) {
            continue;
        }
        let registered = schema.type_of(name);
        if registered.is_some_and(|ty| holds(field.data_type(), ty)) {
            continue;
        }
        let reason = match registered {
            None => "the column is not in the registry".to_string(),
            Some(to) => match schema.retyped.iter().rev().find(|r| r.column == *name) {
                Some(r) => format!(
                    "registry version {} replaced {} by {} ({})",
                    r.version,
                    r.from,
                    r.to,
                    match r.by {
                        Origin::Override => "COLUMN_TYPES",
                        _ => "a DMS table-def",
                    }
                ),
                None => format!("registered as {to}; no replacement recorded"),
            },
        };
        out.push(Mismatch {
            column: name.clone(),
            file_type: field.data_type().to_string(),
            registered,
            reason,
        });
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dms::{ColumnDef, TableDef};
    use crate::names::TableName;
    use crate::row::Kinds;
    use arrow::datatypes::Field;

    #[test]
    fn a_file_written_before_a_declaration_is_listed_with_the_reason() {
        let table = TableName {
            schema: "s".into(),
            table: "t".into(),
        };
        let mut s = TableSchema::new(&table);
        let kinds = [("amount".to_string(), Kinds::STRING)]
            .into_iter()
            .collect();
        s.resolve(&kinds);
        s.version = 1;
        let old_file = Schema::new(vec![
            Field::new("amount", DataType::Utf8, true),
            Field::new("_op", DataType::Utf8, false),
        ]);
        assert!(mismatches(&s, &old_file).is_empty());
        let def = TableDef {
            columns: vec![ColumnDef {
                name: "amount".into(),
                type_name: "NUMERIC".into(),
                precision: Some(10),
                scale: Some(2),
            }],
            primary_key: vec![],
        };
        s.apply_table_def(&def, &[], 2);
        let m = mismatches(&s, &old_file);
        assert_eq!(m.len(), 1);
        assert_eq!(m[0].column, "amount");
        assert!(
            m[0].reason
                .contains("version 2 replaced string by decimal(38,2)"),
            "{m:?}"
        );
        let new_file = Schema::new(vec![Field::new(
            "amount",
            DataType::Decimal128(38, 2),
            true,
        )]);
        assert!(mismatches(&s, &new_file).is_empty());
        let utc = Schema::new(vec![Field::new(
            "at",
            DataType::Timestamp(arrow::datatypes::TimeUnit::Microsecond, Some("UTC".into())),
            true,
        )]);
        let mut t = TableSchema::new(&table);
        t.apply_overrides(&[("at".to_string(), ColumnType::Timestamp)]);
        assert!(mismatches(&t, &utc).is_empty());
        t.apply_overrides(&[("at".to_string(), ColumnType::LocalTimestamp)]);
        assert_eq!(mismatches(&t, &utc).len(), 1);
    }
}
