//! SQL that makes a table's files queryable (pure): `CREATE EXTERNAL TABLE`
//! with partition projection for Athena, views over `read_parquet` for
//! DuckDB, and in both a latest-state view: the newest row per primary key
//! by change order, without deleted keys and keys a primary-key change
//! moved away.

use std::fmt::Write as _;

use chrono::DateTime;

use crate::layout::{self, PartitionStyle};
use crate::names::column_name;
use crate::names::TableName;
use crate::schema::TableSchema;
use crate::types::ColumnType;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Dialect {
    Athena,
    DuckDb,
}

/// Where the lake is and how it is laid out.
#[derive(Debug, Clone)]
pub struct Lake {
    /// `s3://bucket/` or a local directory ending in `/`.
    pub root: String,
    pub prefix: String,
    pub style: PartitionStyle,
    /// Athena database the tables and views go in.
    pub database: String,
    /// First day partition projection enumerates, `YYYY/MM/DD`.
    pub since: String,
}

/// The metadata columns, in file order, with their SQL types.
const METADATA: [(&str, &str); 9] = [
    ("_op", "string"),
    ("_dms_timestamp", "timestamp"),
    ("_commit_timestamp", "timestamp"),
    ("_transaction_id", "string"),
    ("_shard_id", "string"),
    ("_sequence_number", "string"),
    ("_ingested_at", "timestamp"),
    ("_before_image", "string"),
    ("_rescued", "string"),
];

/// `schema__table`: the SQL name of a lake table. Two source tables may
/// share it (`Sales.Orders` and `sales.orders`, `a_.b` and `a._b`): the
/// catalog gives the second one to arrive [`disambiguated_name`].
pub fn table_name(schema: &TableSchema) -> String {
    format!(
        "{}__{}",
        column_name(&schema.schema),
        column_name(&schema.table)
    )
}

/// The SQL name of each of `schemas` (in their order) for SQL printed by
/// hand: [`table_name`], except where a source table sorting before it has
/// that name already ([`disambiguated_name`]). The function's catalog gives
/// the plain name to the table that reached it first; `ddl --apply` reports
/// the names it used.
pub fn table_names(schemas: &[TableSchema]) -> Vec<String> {
    let mut order: Vec<usize> = (0..schemas.len()).collect();
    order.sort_by(|&a, &b| {
        (&schemas[a].schema, &schemas[a].table).cmp(&(&schemas[b].schema, &schemas[b].table))
    });
    let mut taken = std::collections::HashSet::new();
    let mut names = vec![String::new(); schemas.len()];
    for i in order {
        let name = table_name(&schemas[i]);
        names[i] = if taken.insert(name) {
            table_name(&schemas[i])
        } else {
            disambiguated_name(&schemas[i])
        };
    }
    names
}

/// [`table_name`], `__h` and 8 hex digits of a SHA-256 of the source names:
/// a name no other source table has.
pub fn disambiguated_name(schema: &TableSchema) -> String {
    use sha2::{Digest, Sha256};
    let mut hash = Sha256::new();
    hash.update(schema.schema.as_bytes());
    hash.update([0]);
    hash.update(schema.table.as_bytes());
    let digest = hash.finalize();
    let hex: String = digest[..4].iter().map(|b| format!("{b:02x}")).collect();
    format!("{}__h{hex}", table_name(schema))
}

/// Every statement for one table, `;`-terminated. `has_files`: whether the
/// table has a data file yet (DuckDB's `read_parquet` fails on none).
pub fn table_sql(
    schema: &TableSchema,
    name: &str,
    lake: &Lake,
    dialect: Dialect,
    has_files: bool,
) -> String {
    let table = match (dialect, has_files) {
        (Dialect::Athena, _) => athena_table(schema, name, lake),
        (Dialect::DuckDb, true) => duckdb_table(schema, name, lake),
        (Dialect::DuckDb, false) => duckdb_empty_table(schema, name),
    };
    format!("{table}\n\n{}", latest_view(schema, name, lake, dialect))
}

/// DuckDB's name for a lake type.
fn duckdb_type(ty: ColumnType) -> String {
    match ty {
        ColumnType::Boolean => "BOOLEAN".into(),
        ColumnType::Int64 => "BIGINT".into(),
        ColumnType::Float64 => "DOUBLE".into(),
        ColumnType::Decimal { scale } => format!("DECIMAL(38,{scale})"),
        ColumnType::Date => "DATE".into(),
        ColumnType::Timestamp => "TIMESTAMPTZ".into(),
        ColumnType::LocalTimestamp => "TIMESTAMP".into(),
        ColumnType::Binary => "BLOB".into(),
        ColumnType::String => "VARCHAR".into(),
    }
}

/// A registered table with no file yet: an empty table of its registered
/// columns, so the latest-state view (and queries) work until files come;
/// run `ddl` again then.
fn duckdb_empty_table(schema: &TableSchema, name: &str) -> String {
    let meta = |t: &str| match t {
        "timestamp" => "TIMESTAMPTZ",
        _ => "VARCHAR",
    };
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("  \"{}\" {}", c.name, duckdb_type(c.ty)))
        .chain(
            METADATA
                .iter()
                .map(|(n, t)| format!("  \"{n}\" {}", meta(t))),
        )
        .collect();
    format!(
        "-- No data file yet: an empty table with the registered columns (run ddl again once\n\
         -- files exist).\nCREATE OR REPLACE TABLE \"{}\" (\n{}\n);",
        name,
        columns.join(",\n")
    )
}

/// Where a table's files are: `{root}{prefix}{schema}/{table}/`.
pub fn location(schema: &TableSchema, lake: &Lake) -> String {
    let table = TableName {
        schema: schema.schema.clone(),
        table: schema.table.clone(),
    };
    format!(
        "{}{}",
        lake.root,
        layout::table_dir(&lake.prefix, &table, crate::batcher::CUT_VERSION)
    )
}

fn quote(s: &str) -> String {
    s.replace('\'', "''")
}

fn athena_table(schema: &TableSchema, name: &str, lake: &Lake) -> String {
    let loc = location(schema, lake);
    let mut sql = format!(
        "CREATE EXTERNAL TABLE IF NOT EXISTS `{}`.`{}` (\n",
        lake.database, name
    );
    let columns: Vec<String> = schema
        .columns
        .iter()
        .map(|c| format!("  `{}` {}", c.name, c.ty.athena()))
        .chain(METADATA.iter().map(|(n, t)| format!("  `{n}` {t}")))
        .collect();
    sql.push_str(&columns.join(",\n"));
    sql.push_str("\n)\n");
    let partitions: Vec<String> = partition_columns(lake.style)
        .iter()
        .map(|(n, t)| format!("`{n}` {t}"))
        .collect();
    let properties: Vec<String> = table_properties(lake, &loc)
        .iter()
        .map(|(k, v)| format!("  '{}' = '{}'", quote(k), quote(v)))
        .collect();
    let _ = write!(
        sql,
        "PARTITIONED BY ({})\nSTORED AS PARQUET\nLOCATION '{}'\nTBLPROPERTIES (\n{}\n);",
        partitions.join(", "),
        quote(&loc),
        properties.join(",\n")
    );
    sql
}

/// The metadata columns (name, SQL type), in file order.
pub fn metadata_columns() -> &'static [(&'static str, &'static str)] {
    &METADATA
}

/// A lake table's partition columns (name, SQL type): what partition
/// projection fills in from the key layout of `style`.
pub fn partition_columns(style: PartitionStyle) -> &'static [(&'static str, &'static str)] {
    match style {
        PartitionStyle::Plain => &[("dt", "string")],
        PartitionStyle::Hive => &[
            ("year", "int"),
            ("month", "int"),
            ("day", "int"),
            ("hour", "int"),
        ],
    }
}

/// The table properties that make Athena read a lake table: Snappy Parquet
/// and partition projection matching `layout::partition_dir` (no partitions
/// to register, new hours are queryable at once). `loc`: the table's
/// location, ending in `/`. The same list goes into the DDL and the Glue
/// table, so the two cannot differ.
pub fn table_properties(lake: &Lake, loc: &str) -> Vec<(String, String)> {
    let since = lake.since.replace('-', "/");
    let year = since.get(..4).unwrap_or("2020");
    let mut p: Vec<(&str, String)> = vec![
        ("parquet.compression", "SNAPPY".into()),
        ("projection.enabled", "true".into()),
    ];
    match lake.style {
        PartitionStyle::Plain => p.extend([
            ("projection.dt.type", "date".into()),
            ("projection.dt.format", "yyyy/MM/dd/HH".into()),
            ("projection.dt.range", format!("{since}/00,NOW")),
            ("projection.dt.interval", "1".into()),
            ("projection.dt.interval.unit", "HOURS".into()),
            ("storage.location.template", format!("{loc}${{dt}}/")),
        ]),
        PartitionStyle::Hive => p.extend([
            ("projection.year.type", "integer".into()),
            ("projection.year.range", format!("{year},2099")),
            ("projection.month.type", "integer".into()),
            ("projection.month.range", "1,12".into()),
            ("projection.month.digits", "2".into()),
            ("projection.day.type", "integer".into()),
            ("projection.day.range", "1,31".into()),
            ("projection.day.digits", "2".into()),
            ("projection.hour.type", "integer".into()),
            ("projection.hour.range", "0,23".into()),
            ("projection.hour.digits", "2".into()),
        ]),
    }
    p.into_iter().map(|(k, v)| (k.to_string(), v)).collect()
}

fn duckdb_table(schema: &TableSchema, name: &str, lake: &Lake) -> String {
    format!(
        "CREATE OR REPLACE VIEW \"{}\" AS\nSELECT * FROM read_parquet('{}**/*.parquet', \
         union_by_name = true, hive_partitioning = false);",
        name,
        quote(&location(schema, lake))
    )
}

/// A key column's value in the before image, typed like the column.
fn before_key(source: &str, ty: ColumnType, dialect: Dialect) -> String {
    let escaped = source.replace('"', "\\\"");
    let text = match dialect {
        Dialect::Athena => format!(
            "json_extract_scalar(\"_before_image\", '{}')",
            quote(&format!("$[\"{escaped}\"]"))
        ),
        Dialect::DuckDb => format!(
            "json_extract_string(\"_before_image\", '{}')",
            quote(&format!("$.\"{escaped}\""))
        ),
    };
    match (ty, dialect) {
        (ColumnType::String, _) => text,
        (ColumnType::Timestamp, Dialect::Athena) => format!("from_iso8601_timestamp({text})"),
        (ColumnType::Timestamp, Dialect::DuckDb) => format!("CAST({text} AS TIMESTAMPTZ)"),
        // Wall-clock digits: DMS's nominal `Z` dropped.
        (ColumnType::LocalTimestamp, Dialect::Athena) => {
            format!("CAST(replace(replace({text}, 'T', ' '), 'Z', '') AS timestamp)")
        }
        (ColumnType::LocalTimestamp, Dialect::DuckDb) => {
            format!("CAST(replace({text}, 'Z', '') AS TIMESTAMP)")
        }
        (ColumnType::Binary, Dialect::Athena) => format!("from_hex(substr({text}, 3))"),
        (ColumnType::Binary, Dialect::DuckDb) => format!("unhex(substr({text}, 3))"),
        (ColumnType::Boolean, _) => {
            format!("(lower({text}) IN ('t', 'true', '1'))")
        }
        (ty, _) => format!("CAST({text} AS {ty})"),
    }
}

fn timestamp_literal(us: i64, dialect: Dialect) -> String {
    let t = DateTime::from_timestamp_micros(us).unwrap_or(DateTime::UNIX_EPOCH);
    match dialect {
        Dialect::Athena => format!(
            "from_iso8601_timestamp('{}')",
            t.format("%Y-%m-%dT%H:%M:%S%.6fZ")
        ),
        Dialect::DuckDb => format!("TIMESTAMPTZ '{}'", t.format("%Y-%m-%d %H:%M:%S%.6f+00")),
    }
}

/// The latest-state view, or a comment saying why there is none.
fn latest_view(schema: &TableSchema, name: &str, lake: &Lake, dialect: Dialect) -> String {
    if schema.primary_key.is_empty() {
        let declared = schema
            .columns
            .iter()
            .any(|c| c.origin == crate::schema::Origin::TableDef);
        let why = if declared {
            "DMS's table-def for it lists no primary key"
        } else {
            "DMS sent no table-def for it (IncludeControlDetails=true on the endpoint sends one)"
        };
        return format!("-- {name}: no primary key known ({why}), so no latest-state view.");
    }
    format!(
        "-- Latest row per primary key ({}) in change order; deleted keys and keys a\n\
         -- primary-key change moved away (seen in the before image) are left out.\n{}",
        schema.primary_key.join(", "),
        view_statement(schema, lake, dialect, name)
    )
}

/// The latest-state view's name: `schema__table__latest`.
pub fn view_name(schema: &TableSchema) -> String {
    view_name_of(&table_name(schema))
}

/// The latest-state view's name for the table named `table`.
pub fn view_name_of(table: &str) -> String {
    format!("{table}__latest")
}

/// `CREATE OR REPLACE VIEW` of the latest-state view of the table named
/// `name`, one statement without comments (what the function submits to
/// Athena), or `None` for a table without a known primary key.
pub fn latest_view_statement(
    schema: &TableSchema,
    lake: &Lake,
    dialect: Dialect,
    name: &str,
) -> Option<String> {
    (!schema.primary_key.is_empty()).then(|| view_statement(schema, lake, dialect, name))
}

fn view_statement(schema: &TableSchema, lake: &Lake, dialect: Dialect, name: &str) -> String {
    let view_name = view_name_of(name);
    let (source, view) = match dialect {
        Dialect::Athena => (
            format!("\"{}\".\"{name}\"", lake.database),
            format!("\"{}\".\"{view_name}\"", lake.database),
        ),
        Dialect::DuckDb => (format!("\"{name}\""), format!("\"{view_name}\"")),
    };
    let keys: Vec<(String, String, ColumnType)> = schema
        .primary_key
        .iter()
        .map(|k| {
            let spec = schema.columns.iter().find(|c| &c.name == k);
            let source = spec
                .and_then(|c| c.source_name.clone())
                .unwrap_or_else(|| k.clone());
            (k.clone(), source, spec.map_or(ColumnType::String, |c| c.ty))
        })
        .collect();
    let key_cols: Vec<String> = (1..=keys.len()).map(|i| format!("\"_key_{i}\"")).collect();
    let as_row: Vec<String> = keys
        .iter()
        .zip(&key_cols)
        .map(|((k, _, _), alias)| format!("\"{k}\" AS {alias}"))
        .collect();
    let as_before: Vec<String> = keys
        .iter()
        .zip(&key_cols)
        .map(|((_, src, ty), alias)| format!("{} AS {alias}", before_key(src, *ty, dialect)))
        .collect();
    let present: Vec<String> = keys
        .iter()
        .map(|(_, src, ty)| format!("{} IS NOT NULL", before_key(src, *ty, dialect)))
        .collect();
    let differs: Vec<String> = keys
        .iter()
        .map(|(k, src, ty)| format!("{} <> \"{k}\"", before_key(src, *ty, dialect)))
        .collect();
    let dropped = schema
        .dropped_at_us
        .map(|us| {
            format!(
                "\n  WHERE \"_dms_timestamp\" > {}",
                timestamp_literal(us, dialect)
            )
        })
        .unwrap_or_default();
    let output = match dialect {
        Dialect::DuckDb => format!(
            "* EXCLUDE ({}, \"_moved_away\", \"_rank\")",
            key_cols.join(", ")
        ),
        Dialect::Athena => schema
            .columns
            .iter()
            .map(|c| format!("\"{}\"", c.name))
            .chain(METADATA.iter().map(|(n, _)| format!("\"{n}\"")))
            .collect::<Vec<_>>()
            .join(", "),
    };
    format!(
        "CREATE OR REPLACE VIEW {view} AS\n\
         WITH changes AS (\n  SELECT * FROM {source}{dropped}\n),\n\
         keyed AS (\n  SELECT *, {as_row}, false AS \"_moved_away\" FROM changes\n  UNION ALL\n  \
         SELECT *, {as_before}, true AS \"_moved_away\" FROM changes\n  \
         WHERE \"_op\" = 'update' AND {present} AND ({differs})\n),\n\
         ranked AS (\n  SELECT *, row_number() OVER (PARTITION BY {keys} \
         ORDER BY \"_dms_timestamp\" DESC, \"_sequence_number\" DESC) AS \"_rank\" FROM keyed\n)\n\
         SELECT {output} FROM ranked\nWHERE \"_rank\" = 1 AND NOT \"_moved_away\" AND \"_op\" <> 'delete';",
        as_row = as_row.join(", "),
        as_before = as_before.join(", "),
        present = present.join(" AND "),
        differs = differs.join(" OR "),
        keys = key_cols.join(", "),
    )
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::batcher::CUT_VERSION;
    use crate::dms::{ColumnDef, TableDef};
    use crate::layout::Hour;

    fn schema() -> TableSchema {
        let table = TableName {
            schema: "sales".into(),
            table: "order_item".into(),
        };
        let mut s = TableSchema::new(&table);
        let def = TableDef {
            columns: ["so_id", "line_no", "note"]
                .iter()
                .zip(["INT64", "INT16", "WSTRING"])
                .map(|(n, t)| ColumnDef {
                    name: n.to_string(),
                    type_name: t.to_string(),
                    precision: None,
                    scale: None,
                })
                .collect(),
            primary_key: vec!["so_id".into(), "line_no".into()],
        };
        s.apply_table_def(&def, &[], 6);
        s
    }

    fn lake(style: PartitionStyle) -> Lake {
        Lake {
            root: "s3://bucket/".into(),
            prefix: "cdc-data/".into(),
            style,
            database: "cdc".into(),
            since: "2026-01-01".into(),
        }
    }

    #[test]
    fn projection_template_matches_the_key_layout() {
        let s = schema();
        let sql = athena_table(&s, &table_name(&s), &lake(PartitionStyle::Plain));
        assert!(sql.contains("`so_id` bigint,"), "{sql}");
        assert!(sql.contains("`_dms_timestamp` timestamp"), "{sql}");
        let template = sql
            .split("'storage.location.template' = '")
            .nth(1)
            .and_then(|r| r.split('\'').next())
            .unwrap();
        // The hour partition the writer uses, spelled as projection would.
        let hour = Hour::from_micros(1_773_450_000_000_000);
        let dir = layout::partition_dir(
            "cdc-data/",
            PartitionStyle::Plain,
            &table(),
            hour,
            CUT_VERSION,
        );
        assert_eq!(
            template.replace("${dt}", "2026/03/14/01"),
            format!("s3://bucket/{dir}")
        );
    }

    fn table() -> TableName {
        TableName {
            schema: "sales".into(),
            table: "order_item".into(),
        }
    }

    #[test]
    fn hive_layout_uses_integer_projection() {
        let sql = athena_table(&schema(), "t", &lake(PartitionStyle::Hive));
        let hour = Hour::from_micros(1_773_450_000_000_000);
        let dir = layout::partition_dir(
            "cdc-data/",
            PartitionStyle::Hive,
            &table(),
            hour,
            CUT_VERSION,
        );
        assert!(dir.ends_with("year=2026/month=03/day=14/hour=01/"), "{dir}");
        assert!(sql.contains("'projection.month.digits' = '2'"));
        assert!(sql.contains("'projection.year.range' = '2026,2099'"));
    }

    #[test]
    fn latest_view_follows_composite_key_changes() {
        let mut s = schema();
        s.mark_dropped(1_773_450_000_000_000);
        let sql = latest_view(
            &s,
            &table_name(&s),
            &lake(PartitionStyle::Plain),
            Dialect::DuckDb,
        );
        assert!(sql.contains("PARTITION BY \"_key_1\", \"_key_2\""), "{sql}");
        assert!(sql.contains(
            "CAST(json_extract_string(\"_before_image\", '$.\"line_no\"') AS bigint) <> \"line_no\""
        ));
        assert!(
            sql.contains("TIMESTAMPTZ '2026-03-14 01:00:00.000000+00'"),
            "{sql}"
        );
        let athena = latest_view(
            &s,
            &table_name(&s),
            &lake(PartitionStyle::Plain),
            Dialect::Athena,
        );
        assert!(athena.contains("json_extract_scalar(\"_before_image\", '$[\"so_id\"]')"));
        assert!(athena.contains("from_iso8601_timestamp('2026-03-14T01:00:00.000000Z')"));
    }

    #[test]
    fn no_key_no_view_and_the_comment_says_what_dms_sent() {
        let s = TableSchema::new(&table());
        let sql = latest_view(
            &s,
            &table_name(&s),
            &lake(PartitionStyle::Plain),
            Dialect::Athena,
        );
        assert!(sql.contains("DMS sent no table-def"), "{sql}");
        let mut s = schema();
        s.primary_key.clear();
        let sql = latest_view(
            &s,
            &table_name(&s),
            &lake(PartitionStyle::Plain),
            Dialect::Athena,
        );
        assert!(
            sql.contains("table-def for it lists no primary key"),
            "{sql}"
        );
    }

    #[test]
    fn source_tables_sharing_a_name_get_names_of_their_own() {
        let of = |schema: &str, table: &str| {
            TableSchema::new(&TableName {
                schema: schema.into(),
                table: table.into(),
            })
        };
        let schemas = [
            of("sales", "orders"),
            of("a", "_b"),
            of("Sales", "Orders"),
            of("a_", "b"),
            of("hr", "staff"),
        ];
        let names = table_names(&schemas);
        // The first in source-name order keeps the plain name.
        assert_eq!(names[2], "sales__orders");
        assert_eq!(names[1], "a___b");
        assert_eq!(names[4], "hr__staff");
        assert_eq!(names[0], disambiguated_name(&schemas[0]));
        assert_eq!(names[3], disambiguated_name(&schemas[3]));
        assert!(names[0].starts_with("sales__orders__h") && names[0].len() == 24);
        let unique: std::collections::HashSet<&String> = names.iter().collect();
        assert_eq!(unique.len(), names.len());
        // Stable: the same names whatever order the registry lists them in.
        let mut reversed = schemas.to_vec();
        reversed.reverse();
        let mut again = table_names(&reversed);
        again.reverse();
        assert_eq!(again, names);
    }

    #[test]
    fn a_table_without_files_is_an_empty_duckdb_table() {
        let sql = table_sql(
            &schema(),
            "sales__order_item",
            &lake(PartitionStyle::Plain),
            Dialect::DuckDb,
            false,
        );
        assert!(
            sql.contains("CREATE OR REPLACE TABLE \"sales__order_item\""),
            "{sql}"
        );
        assert!(sql.contains("\"so_id\" BIGINT"), "{sql}");
        assert!(sql.contains("\"_rescued\" VARCHAR"), "{sql}");
        assert!(!sql.contains("read_parquet"));
    }
}
