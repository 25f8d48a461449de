//! `cdc-batcher ddl`: prints the SQL that makes the lake queryable, from the
//! schema registry stored next to the data (see `sql` for what it contains).
//! `ddl --check` instead lists the files whose column types are not the
//! registered ones (see `file_types`), with the reason.

use std::fmt::Write as _;

use crate::dms::TableName;
use crate::file_types;
use crate::layout;
use crate::registry;
use crate::replay::Output;
use crate::sink::Sink;
use crate::sql::{self, Dialect, Lake};

const USAGE: &str = "usage: cdc-batcher ddl --lake <DIR | s3://bucket/prefix/> \
[--dialect athena|duckdb] [--database NAME] [--since YYYY-MM-DD] [--table schema.table] [--check]";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    lake: String,
    dialect: Dialect,
    database: String,
    since: String,
    table: Option<String>,
    check: bool,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut lake = None;
    let mut dialect = Dialect::Athena;
    let mut database = "cdc".to_string();
    let mut since = "2020-01-01".to_string();
    let mut table = None;
    let mut check = false;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        let mut value = || {
            it.next()
                .cloned()
                .ok_or_else(|| format!("{a} needs a value\n{USAGE}"))
        };
        match a.as_str() {
            "--lake" => lake = Some(value()?),
            "--dialect" => {
                dialect = match value()?.as_str() {
                    "athena" => Dialect::Athena,
                    "duckdb" => Dialect::DuckDb,
                    other => return Err(format!("--dialect {other}: use athena or duckdb")),
                }
            }
            "--database" => database = value()?,
            "--since" => since = value()?,
            "--table" => table = Some(value()?),
            "--check" => check = true,
            "-h" | "--help" => return Err(USAGE.to_string()),
            other => return Err(format!("unknown argument {other}\n{USAGE}")),
        }
    }
    if chrono::NaiveDate::parse_from_str(&since, "%Y-%m-%d").is_err() {
        return Err(format!("--since {since}: expected YYYY-MM-DD"));
    }
    let ok_name =
        |s: &str| !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_');
    if !ok_name(&database) {
        return Err(format!("--database {database}: letters, digits and _ only"));
    }
    Ok(Args {
        lake: lake.ok_or_else(|| format!("--lake is required\n{USAGE}"))?,
        dialect,
        database,
        since,
        table,
        check,
    })
}

/// Runs the command; returns the process exit code (2: bad arguments or
/// configuration, 1: nothing to print or the registry could not be read,
/// 3: `--check` found files that need a rewrite).
pub async fn run(args: &[String]) -> i32 {
    match sql_for(args).await {
        Ok((out, needs_rewrite)) => {
            print!("{out}");
            if needs_rewrite > 0 {
                eprintln!(
                    "{needs_rewrite} file(s) hold a column type other than the registered one"
                );
                3
            } else {
                0
            }
        }
        Err((code, message)) => {
            eprintln!("{message}");
            code
        }
    }
}

async fn sql_for(args: &[String]) -> Result<(String, usize), (i32, String)> {
    let args = parse_args(args).map_err(|e| (2, e))?;
    let output = Output::parse(&args.lake).map_err(|e| (2, format!("--lake {e}\n{USAGE}")))?;
    let (config, sink) = output.open().await.map_err(|e| (2, e))?;
    let root = match &output {
        Output::S3 { bucket, .. } => format!("s3://{bucket}/"),
        Output::Dir(dir) => {
            let abs = std::path::absolute(dir).unwrap_or_else(|_| dir.into());
            format!("{}/", abs.display().to_string().trim_end_matches('/'))
        }
    };
    let schemas = registry::load_all(&sink, &config.prefix)
        .await
        .map_err(|e| {
            (
                1,
                format!("reading the schema registry at {}: {e}", sink.location()),
            )
        })?;
    let lake = Lake {
        root,
        prefix: config.prefix.clone(),
        style: config.partition_style,
        database: args.database,
        since: args.since,
    };
    let selected: Vec<_> = schemas
        .iter()
        .filter(|s| {
            args.table
                .as_deref()
                .is_none_or(|t| t == format!("{}.{}", s.schema, s.table))
        })
        .collect();
    if selected.is_empty() {
        return Err((
            1,
            format!(
                "no table schema found under {}{}_schemas/ (the function registers a table \
                 when it writes its first file or sees its table-def)",
                sink.location(),
                config.prefix
            ),
        ));
    }
    let mut out = String::new();
    if args.check {
        let mut files = 0;
        for schema in selected {
            files += check_files(&sink, &config.prefix, schema, &mut out).await?;
        }
        return Ok((out, files));
    }
    for schema in selected {
        let table = TableName {
            schema: schema.schema.clone(),
            table: schema.table.clone(),
        };
        let keys = sink
            .list(&layout::table_dir(&config.prefix, &table))
            .await
            .map_err(|e| (1, format!("listing the files of {table}: {e}")))?;
        let has_files = keys.iter().any(|k| k.ends_with(".parquet"));
        let _ = write!(
            out,
            "-- {table}\n{}\n\n",
            sql::table_sql(schema, &lake, args.dialect, has_files)
        );
    }
    Ok((out, 0))
}

/// Appends a tab-separated line (key, column, file type, registered type,
/// reason) per mismatching column of `schema`'s files; returns how many
/// files have one.
async fn check_files<S: Sink>(
    sink: &S,
    prefix: &str,
    schema: &crate::schema::TableSchema,
    out: &mut String,
) -> Result<usize, (i32, String)> {
    let table = TableName {
        schema: schema.schema.clone(),
        table: schema.table.clone(),
    };
    let keys = sink
        .list(&layout::table_dir(prefix, &table))
        .await
        .map_err(|e| (1, format!("listing the files of {table}: {e}")))?;
    let mut files = 0;
    for key in keys.iter().filter(|k| k.ends_with(".parquet")) {
        let Some(bytes) = sink
            .get(key)
            .await
            .map_err(|e| (1, format!("reading {key}: {e}")))?
        else {
            continue;
        };
        let found = match file_types::footer_schema(bytes) {
            Ok(footer) => file_types::mismatches(schema, &footer),
            Err(e) => {
                let _ = writeln!(out, "{key}\t-\t-\t-\t{e}");
                files += 1;
                continue;
            }
        };
        files += usize::from(!found.is_empty());
        for m in found {
            let registered = m.registered.map_or("-".to_string(), |t| t.to_string());
            let _ = writeln!(
                out,
                "{key}\t{}\t{}\t{registered}\t{}",
                m.column, m.file_type, m.reason
            );
        }
    }
    Ok(files)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn arguments() {
        let a = parse_args(&args(&["--lake", "out", "--dialect", "duckdb"])).unwrap();
        assert_eq!(a.dialect, Dialect::DuckDb);
        assert_eq!(a.database, "cdc");
        for bad in [
            vec!["--dialect", "duckdb"],
            vec!["--lake", "x", "--dialect", "mysql"],
            vec!["--lake", "x", "--since", "yesterday"],
            vec!["--lake", "x", "--database", "a-b"],
            vec!["--lake"],
        ] {
            assert!(parse_args(&args(&bad)).is_err(), "{bad:?}");
        }
    }
}
