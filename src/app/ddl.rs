//! `cdc-batcher ddl`: prints the SQL that makes the lake queryable, from the
//! schema registry stored next to the data (see `sql` for what it contains).
//! `ddl --check` instead lists the files whose column types are not the
//! registered ones (see `file_types`), with the reason.

use std::fmt::Write as _;

use crate::app::output::Output;
use crate::edge::registry;
use crate::edge::sink::Sink;
use domain::batcher::CUT_VERSION;
use domain::file_types;
use domain::layout;
use domain::names::TableName;
use domain::sql::{self, Dialect, Lake};

/// `cdc-batcher ddl`: the SQL that makes the lake queryable.
#[derive(Debug, clap::Args)]
#[command(
    about = "Print the SQL (Athena or DuckDB) that makes the lake queryable, from its schema registry",
    long_about = "Prints, for every table in the lake's schema registry, the table definition and a \
        latest-state view, in Athena's or DuckDB's SQL. With --check, lists instead every file \
        whose column types differ from the registered ones (one tab-separated line per column: \
        key, column, file type, registered type, reason).\n\n\
        With --apply, creates or updates the tables (and, with --workgroup, the latest-state \
        views) in the Glue Data Catalog, as the function does when GLUE_DATABASE is set.\n\n\
        Exit codes: 0 done, 1 no registry, it could not be read, or --apply failed for a table, \
        2 bad arguments or configuration, 3 --check found files that need a rewrite."
)]
pub struct DdlArgs {
    /// The lake: a local directory, or s3://bucket/prefix/
    #[arg(long, value_name = "DIR | s3://bucket/prefix/", value_parser = Output::parse)]
    lake: Output,
    #[arg(long, value_enum, default_value_t = DialectArg::Athena)]
    dialect: DialectArg,
    /// Athena database the tables and views go in (letters, digits and _)
    #[arg(long, default_value = "cdc", value_parser = database_name)]
    database: String,
    /// First day Athena's partition projection enumerates
    #[arg(long, value_name = "YYYY-MM-DD", default_value = "2020-01-01", value_parser = day)]
    since: String,
    /// Only this table
    #[arg(long, value_name = "schema.table")]
    table: Option<String>,
    /// List the files whose column types are not the registered ones, instead of the SQL
    #[arg(long, conflicts_with = "apply")]
    check: bool,
    /// Create or update the tables in the Glue Data Catalog (database --database) instead of
    /// printing SQL, as the function does (needs an s3:// lake); idempotent
    #[arg(long)]
    apply: bool,
    /// With --apply: the Athena workgroup the latest-state views are created in (none: tables only)
    #[arg(long, requires = "apply")]
    workgroup: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, clap::ValueEnum)]
enum DialectArg {
    Athena,
    Duckdb,
}

fn database_name(s: &str) -> Result<String, String> {
    if !s.is_empty() && s.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'_') {
        Ok(s.to_string())
    } else {
        Err("letters, digits and _ only".into())
    }
}

fn day(s: &str) -> Result<String, String> {
    chrono::NaiveDate::parse_from_str(s, "%Y-%m-%d")
        .map(|_| s.to_string())
        .map_err(|_| "expected YYYY-MM-DD".into())
}

/// Runs the command; returns the process exit code (2: bad arguments or
/// configuration, 1: nothing to print or the registry could not be read,
/// 3: `--check` found files that need a rewrite).
pub async fn run(args: DdlArgs) -> i32 {
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

async fn sql_for(args: DdlArgs) -> Result<(String, usize), (i32, String)> {
    let output = args.lake.clone();
    let dialect = match args.dialect {
        DialectArg::Athena => Dialect::Athena,
        DialectArg::Duckdb => Dialect::DuckDb,
    };
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
    if args.apply {
        let Output::S3 { .. } = output else {
            return Err((
                2,
                "--apply needs an s3:// lake: the catalog points at S3".into(),
            ));
        };
        let failed = apply(&selected, &lake, args.workgroup, &mut out).await;
        return match failed {
            0 => Ok((out, 0)),
            n => {
                print!("{out}");
                Err((
                    1,
                    format!("{n} table(s) not brought up to date in the catalog"),
                ))
            }
        };
    }
    if args.check {
        let mut files = 0;
        for schema in selected {
            files += check_files(&sink, &config.prefix, schema, &mut out).await?;
        }
        return Ok((out, files));
    }
    // Names over every table, so that `--table` names one as a full run does.
    let names = sql::table_names(&schemas);
    for schema in selected {
        let name = schemas
            .iter()
            .position(|s| std::ptr::eq(s, schema))
            .map_or_else(|| sql::table_name(schema), |i| names[i].clone());
        let table = TableName {
            schema: schema.schema.clone(),
            table: schema.table.clone(),
        };
        let keys = sink
            .list(&layout::table_dir(&config.prefix, &table, CUT_VERSION))
            .await
            .map_err(|e| (1, format!("listing the files of {table}: {e}")))?;
        let has_files = keys.iter().any(|k| k.ends_with(".parquet"));
        let _ = write!(
            out,
            "-- {table}\n{}\n\n",
            sql::table_sql(schema, &name, &lake, dialect, has_files)
        );
    }
    Ok((out, 0))
}

/// Brings every table's catalog entry to its registered version; appends a
/// tab-separated line (table, table step, view step) per table. Returns how
/// many failed.
async fn apply(
    schemas: &[&domain::schema::TableSchema],
    lake: &Lake,
    workgroup: Option<String>,
    out: &mut String,
) -> usize {
    let with_view = workgroup.is_some();
    let glue = crate::edge::glue::GlueCatalog::from_env(workgroup).await;
    let mut failed = 0;
    for schema in schemas {
        let (def, result) =
            crate::edge::glue::sync_schema(&glue, schema, lake, with_view, false).await;
        match result {
            Ok(s) => {
                let _ = writeln!(
                    out,
                    "{}\t{}.{}\tversion {}\ttable {:?}\tview {:?}",
                    def.source, def.database, def.name, def.version, s.table, s.view
                );
            }
            Err(e) => {
                failed += 1;
                let _ = writeln!(
                    out,
                    "{}\t{}.{}\tfailed: {e}",
                    def.source, def.database, def.name
                );
            }
        }
    }
    failed
}

/// Appends a tab-separated line (key, column, file type, registered type,
/// reason) per mismatching column of `schema`'s files; returns how many
/// files have one.
async fn check_files<S: Sink>(
    sink: &S,
    prefix: &str,
    schema: &domain::schema::TableSchema,
    out: &mut String,
) -> Result<usize, (i32, String)> {
    let table = TableName {
        schema: schema.schema.clone(),
        table: schema.table.clone(),
    };
    let keys = sink
        .list(&layout::table_dir(prefix, &table, CUT_VERSION))
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
    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: DdlArgs,
    }

    fn parse(a: &[&str]) -> Result<DdlArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("ddl").chain(a.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn arguments() {
        let a = parse(&["--lake", "out", "--dialect", "duckdb"]).unwrap();
        assert_eq!(a.dialect, DialectArg::Duckdb);
        assert_eq!(a.database, "cdc");
        for (bad, names) in [
            (vec!["--dialect", "duckdb"], "--lake"),
            (vec!["--lake", "x", "--dialect", "mysql"], "--dialect"),
            (vec!["--lake", "x", "--since", "yesterday"], "--since"),
            (vec!["--lake", "x", "--database", "a-b"], "--database"),
            (vec!["--lake"], "--lake"),
            (vec!["--lake", "x", "--check", "--apply"], "--apply"),
            (vec!["--lake", "x", "--workgroup", "wg"], "--apply"),
        ] {
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(names), "{bad:?}: {err}");
        }
    }
}
