//! `cdc-batcher ddl`: prints the SQL that makes the lake queryable, from the
//! schema registry stored next to the data (see `sql` for what it contains).

use crate::registry;
use crate::replay::Output;
use crate::sink::Sink;
use crate::sql::{self, Dialect, Lake};

const USAGE: &str = "usage: cdc-batcher ddl --lake <DIR | s3://bucket/prefix/> \
[--dialect athena|duckdb] [--database NAME] [--since YYYY-MM-DD] [--table schema.table]";

#[derive(Debug, PartialEq, Eq)]
struct Args {
    lake: String,
    dialect: Dialect,
    database: String,
    since: String,
    table: Option<String>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut lake = None;
    let mut dialect = Dialect::Athena;
    let mut database = "cdc".to_string();
    let mut since = "2020-01-01".to_string();
    let mut table = None;
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
    })
}

/// Runs the command; returns the process exit code (2: bad arguments or
/// configuration, 1: nothing to print or the registry could not be read).
pub async fn run(args: &[String]) -> i32 {
    match sql_for(args).await {
        Ok(sql) => {
            print!("{sql}");
            0
        }
        Err((code, message)) => {
            eprintln!("{message}");
            code
        }
    }
}

async fn sql_for(args: &[String]) -> Result<String, (i32, String)> {
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
    Ok(selected
        .into_iter()
        .map(|schema| {
            format!(
                "-- {}.{}\n{}\n\n",
                schema.schema,
                schema.table,
                sql::table_sql(schema, &lake, args.dialect)
            )
        })
        .collect())
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
