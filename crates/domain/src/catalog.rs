//! What the Glue Data Catalog holds for a lake table (pure): the table
//! (Parquet SerDe, columns in Athena types, the metadata columns, partition
//! projection, location) and its latest-state view, both derived from the
//! table's registered schema with the same functions `cdc-batcher ddl` uses
//! (`sql`), so the catalog, the DDL and the files cannot drift apart.
//!
//! Every definition carries the schema version it was made from
//! ([`VERSION_PARAM`]); [`plan`] never replaces a newer one with an older one.

use std::collections::BTreeMap;

use crate::schema::{Origin, TableSchema};
use crate::sql::{self, Dialect, Lake};

/// Table parameter: the registry version the Glue table was made from.
pub const VERSION_PARAM: &str = "cdc_batcher.schema_version";
/// Table parameter: the registry version the latest-state view was made from.
pub const VIEW_VERSION_PARAM: &str = "cdc_batcher.view_version";
/// Table parameter naming the source table a catalog table holds
/// ([`source_param`]): a table that names another one is not replaced, and
/// this one takes [`sql::disambiguated_name`] instead.
pub const SOURCE_PARAM: &str = "cdc_batcher.source";

/// [`SOURCE_PARAM`]'s value: `["schema","table"]`, exactly as DMS names them.
pub fn source_param(schema: &str, table: &str) -> String {
    serde_json::json!([schema, table]).to_string()
}

/// Where catalog upkeep writes (`GLUE_DATABASE`, `ATHENA_WORKGROUP`,
/// `CATALOG_SINCE`).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CatalogSettings {
    pub database: String,
    /// The Athena workgroup the latest-state views are created in; none: no
    /// views (tables only).
    pub workgroup: Option<String>,
    /// First day partition projection enumerates, `YYYY-MM-DD`.
    pub since: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Column {
    pub name: String,
    /// Athena (Hive DDL) type name.
    pub ty: String,
    pub comment: String,
}

/// A Glue table for one lake table, at one schema version.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TableDefinition {
    /// `schema.table` at the source (for logs).
    pub source: String,
    /// The source schema and table names.
    pub schema: String,
    pub table: String,
    pub database: String,
    pub name: String,
    pub description: String,
    /// `s3://bucket/prefix/schema/table/`.
    pub location: String,
    pub columns: Vec<Column>,
    pub partition_keys: Vec<Column>,
    pub parameters: BTreeMap<String, String>,
    pub version: u64,
    /// The latest-state view, for tables with a known primary key.
    pub view: Option<ViewDefinition>,
    /// Make the view even if the catalog says it is at this version (an
    /// older statement of ours may have finished after it was made).
    pub rebuild_view: bool,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ViewDefinition {
    pub name: String,
    /// One `CREATE OR REPLACE VIEW` statement in Athena's SQL.
    pub sql: String,
}

pub const SERDE: &str = "org.apache.hadoop.hive.ql.io.parquet.serde.ParquetHiveSerDe";
pub const INPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetInputFormat";
pub const OUTPUT_FORMAT: &str = "org.apache.hadoop.hive.ql.io.parquet.MapredParquetOutputFormat";

/// What a column's comment says: where its type comes from, and DMS's name
/// when the lake name differs.
fn comment_of(c: &crate::schema::ColumnSpec) -> String {
    let by = match c.origin {
        Origin::Override => "type from COLUMN_TYPES",
        Origin::TableDef => "type declared by DMS",
        Origin::Inferred | Origin::Widened => "type inferred from values",
    };
    match &c.source_name {
        Some(source) => format!("{by}; source column {source}"),
        None => by.to_string(),
    }
}

fn metadata_comment(name: &str) -> &'static str {
    match name {
        "_op" => "insert, update, delete or load",
        "_dms_timestamp" => "DMS's timestamp of the change",
        "_commit_timestamp" => "source commit time, when DMS sent it",
        "_transaction_id" => "source transaction, when DMS sent it",
        "_shard_id" => "Kinesis shard the record came from",
        "_sequence_number" => "Kinesis sequence number of the record",
        "_ingested_at" => "when cdc-batcher took the record in",
        "_before_image" => "DMS before image (JSON), for updates",
        "_rescued" => "values that did not fit their column, as JSON text",
        _ => "",
    }
}

/// The Glue table (and view) for `schema` in `lake`, under its
/// [`sql::table_name`].
pub fn definition(schema: &TableSchema, lake: &Lake, with_view: bool) -> TableDefinition {
    definition_as(schema, lake, with_view, sql::table_name(schema))
}

/// The Glue table (and view) for `schema` in `lake`, named `name`.
pub fn definition_as(
    schema: &TableSchema,
    lake: &Lake,
    with_view: bool,
    name: String,
) -> TableDefinition {
    let location = sql::location(schema, lake);
    let columns = schema
        .columns
        .iter()
        .map(|c| Column {
            name: c.name.clone(),
            ty: c.ty.athena(),
            comment: comment_of(c),
        })
        .chain(sql::metadata_columns().iter().map(|(n, t)| Column {
            name: n.to_string(),
            ty: t.to_string(),
            comment: metadata_comment(n).to_string(),
        }))
        .collect();
    let partition_keys = sql::partition_columns(lake.style)
        .iter()
        .map(|(n, t)| Column {
            name: n.to_string(),
            ty: t.to_string(),
            comment: "UTC hour of the change (partition projection)".into(),
        })
        .collect();
    let mut parameters: BTreeMap<String, String> =
        sql::table_properties(lake, &location).into_iter().collect();
    parameters.insert("EXTERNAL".into(), "TRUE".into());
    parameters.insert("classification".into(), "parquet".into());
    parameters.insert(VERSION_PARAM.into(), schema.version.to_string());
    parameters.insert(
        SOURCE_PARAM.into(),
        source_param(&schema.schema, &schema.table),
    );
    if !schema.primary_key.is_empty() {
        parameters.insert(
            "cdc_batcher.primary_key".into(),
            schema.primary_key.join(","),
        );
    }
    let source = format!("{}.{}", schema.schema, schema.table);
    let mut description =
        format!("Changes of {source}, one row per change, written by cdc-batcher");
    if let Some(us) = schema.dropped_at_us {
        let at = chrono::DateTime::from_timestamp_micros(us)
            .unwrap_or(chrono::DateTime::UNIX_EPOCH)
            .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
        parameters.insert("cdc_batcher.dropped_at".into(), at.clone());
        description.push_str(&format!(
            "; dropped at the source at {at} (the rows are history)"
        ));
    }
    let view = if with_view {
        sql::latest_view_statement(schema, lake, Dialect::Athena, &name).map(|sql| ViewDefinition {
            name: sql::view_name_of(&name),
            sql,
        })
    } else {
        None
    };
    TableDefinition {
        source,
        schema: schema.schema.clone(),
        table: schema.table.clone(),
        database: lake.database.clone(),
        name,
        description,
        location,
        columns,
        partition_keys,
        parameters,
        version: schema.version,
        view,
        rebuild_view: false,
    }
}

impl TableDefinition {
    /// Its [`SOURCE_PARAM`].
    pub fn source_param(&self) -> Option<&str> {
        self.parameters.get(SOURCE_PARAM).map(String::as_str)
    }
}

/// The version a stored table parameter names (0 when absent or unreadable:
/// a table made by hand, e.g. from `ddl`'s output, is taken over).
pub fn version_in(value: Option<&str>) -> u64 {
    value.and_then(|v| v.trim().parse().ok()).unwrap_or(0)
}

/// What to do with the catalog's table, given the version it holds.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Step {
    Create,
    /// Replace the stored definition (made from an older version).
    Update,
    /// The stored definition is this version's.
    Current,
    /// The stored definition is newer: another environment got further;
    /// leave it.
    Newer(u64),
}

/// `stored`: the version the catalog's table was made from, `None` when
/// there is no table.
pub fn plan(stored: Option<u64>, wanted: u64) -> Step {
    match stored {
        None => Step::Create,
        Some(v) if v < wanted => Step::Update,
        Some(v) if v == wanted => Step::Current,
        Some(v) => Step::Newer(v),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::CUT_VERSION;
    use crate::dms::{ColumnDef, TableDef};
    use crate::layout::{self, Hour, PartitionStyle};
    use crate::names::TableName;

    fn schema() -> TableSchema {
        let mut s = TableSchema::new(&TableName {
            schema: "sales".into(),
            table: "Order".into(),
        });
        let def = TableDef {
            columns: [("ID", "INT32"), ("amount", "NUMERIC"), ("at", "DATETIME")]
                .iter()
                .map(|(n, t)| ColumnDef {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    precision: Some(10),
                    scale: Some(2),
                })
                .collect(),
            primary_key: vec!["ID".into()],
        };
        s.apply_table_def(&def, &[], 6);
        s.version = 7;
        s
    }

    fn lake(style: PartitionStyle) -> Lake {
        Lake {
            root: "s3://lake/".into(),
            prefix: "cdc-data/".into(),
            style,
            database: "cdc".into(),
            since: "2026-01-01".into(),
        }
    }

    #[test]
    fn columns_types_and_metadata_follow_the_registry() {
        let d = definition(&schema(), &lake(PartitionStyle::Plain), true);
        assert_eq!(d.name, "sales__order");
        assert_eq!(d.location, "s3://lake/cdc-data/sales/Order/");
        let cols: Vec<(&str, &str)> = d
            .columns
            .iter()
            .map(|c| (c.name.as_str(), c.ty.as_str()))
            .collect();
        assert_eq!(
            &cols[..3],
            &[
                ("id", "bigint"),
                ("amount", "decimal(38,6)"),
                ("at", "timestamp")
            ]
        );
        assert_eq!(cols.len(), 3 + sql::metadata_columns().len());
        assert_eq!(cols[3], ("_op", "string"));
        assert!(
            d.columns[0].comment.contains("source column ID"),
            "{:?}",
            d.columns[0]
        );
        assert_eq!(d.parameters[VERSION_PARAM], "7");
        assert_eq!(d.parameters["cdc_batcher.primary_key"], "id");
        let view = d.view.unwrap();
        assert_eq!(view.name, "sales__order__latest");
        assert!(view
            .sql
            .starts_with("CREATE OR REPLACE VIEW \"cdc\".\"sales__order__latest\""));
        assert!(!view.sql.contains("--"), "one statement, no comments");
    }

    #[test]
    fn projection_matches_the_keys_the_writer_uses() {
        let hour = Hour::from_micros(1_773_450_000_000_000);
        let s = schema();
        let table = TableName {
            schema: "sales".into(),
            table: "Order".into(),
        };
        let plain = definition(&s, &lake(PartitionStyle::Plain), false);
        assert!(plain.view.is_none());
        assert_eq!(plain.partition_keys[0].name, "dt");
        let template =
            plain.parameters["storage.location.template"].replace("${dt}", "2026/03/14/01");
        let dir = layout::partition_dir(
            "cdc-data/",
            PartitionStyle::Plain,
            &table,
            hour,
            CUT_VERSION,
        );
        assert_eq!(template, format!("s3://lake/{dir}"));
        assert_eq!(plain.parameters["projection.dt.range"], "2026/01/01/00,NOW");

        let hive = definition(&s, &lake(PartitionStyle::Hive), false);
        let keys: Vec<&str> = hive
            .partition_keys
            .iter()
            .map(|c| c.name.as_str())
            .collect();
        assert_eq!(keys, ["year", "month", "day", "hour"]);
        assert!(!hive.parameters.contains_key("storage.location.template"));
        let dir =
            layout::partition_dir("cdc-data/", PartitionStyle::Hive, &table, hour, CUT_VERSION);
        assert!(dir.ends_with("year=2026/month=03/day=14/hour=01/"));
        assert_eq!(hive.parameters["projection.month.digits"], "2");
    }

    #[test]
    fn a_dropped_table_stays_and_says_so() {
        let mut s = schema();
        s.mark_dropped(1_773_450_000_000_000);
        let d = definition(&s, &lake(PartitionStyle::Plain), true);
        assert_eq!(
            d.parameters["cdc_batcher.dropped_at"],
            "2026-03-14T01:00:00.000000Z"
        );
        assert!(d.description.contains("dropped at the source"));
        assert!(d.view.unwrap().sql.contains("\"_dms_timestamp\" >"));
    }

    #[test]
    fn no_key_no_view() {
        let mut s = schema();
        s.primary_key.clear();
        assert!(definition(&s, &lake(PartitionStyle::Plain), true)
            .view
            .is_none());
    }

    #[test]
    fn never_back_to_an_older_version() {
        assert_eq!(plan(None, 3), Step::Create);
        assert_eq!(plan(Some(2), 3), Step::Update);
        assert_eq!(plan(Some(3), 3), Step::Current);
        assert_eq!(plan(Some(4), 3), Step::Newer(4));
        assert_eq!(version_in(Some("12")), 12);
        assert_eq!(version_in(Some("x")), 0);
        assert_eq!(version_in(None), 0);
    }
}
