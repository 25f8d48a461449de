//! cdc-batcher: AWS DMS change records from a Kinesis Data Stream, written to
//! S3 as typed, Snappy-compressed Parquet by an AWS Lambda function.
//!
//! Three layers, one folder each:
//! - `domain/`: the pure core, no I/O: DMS messages, rows, parts and windows,
//!   column types and schemas, Parquet encoding, keys, SQL.
//! - `edge/`: I/O behind narrow interfaces: the object store (`sink`), the
//!   schema registry stored in it, Kinesis heartbeats, the Glue Data Catalog.
//! - `app/`: configuration and orchestration: an invocation (`handler`,
//!   `windowed`, `part_writer`), the Lambda adapter, metrics, and the command line
//!   (`replay`, `ddl`, `redrive`).
//!
//! Paths name their layer (`cdc_batcher::domain::dms`); the `layers` test
//! below fails when a domain module imports `app` or `edge` or uses an I/O
//! crate, or when `edge` imports `app`.

pub mod domain {
    pub mod batcher;
    pub mod catalog;
    pub mod delivery;
    pub mod dms;
    pub mod encode;
    pub mod event;
    pub mod file_types;
    pub mod json;
    pub mod layout;
    pub mod names;
    pub mod quarantine;
    pub mod row;
    pub mod schema;
    pub mod sql;
    pub mod types;
    pub mod window;
}

pub mod edge {
    pub mod glue;
    pub mod heartbeat;
    pub mod registry;
    pub mod shard_reader;
    pub mod sink;
}

pub mod app {
    pub mod catalog_upkeep;
    pub mod cli;
    pub mod config;
    pub mod ddl;
    pub mod handler;
    pub mod invocation;
    pub mod lambda;
    pub mod logging;
    pub mod metrics;
    pub mod output;
    pub mod part_writer;
    pub mod redrive;
    pub mod replay;
    pub mod stats;
    pub mod windowed;
    pub mod windows;
}

/// The layers, as the compiler cannot see them in one crate: the domain
/// imports neither `app` nor `edge` and uses no I/O crate; `edge` imports
/// no `app`. Read from the sources, so a new file is checked too.
#[cfg(test)]
mod layers {
    use std::path::{Path, PathBuf};

    fn sources(dir: &Path) -> Vec<PathBuf> {
        let mut out = Vec::new();
        for entry in std::fs::read_dir(dir).unwrap() {
            let path = entry.unwrap().path();
            if path.is_dir() {
                out.extend(sources(&path));
            } else if path.extension().is_some_and(|e| e == "rs") {
                out.push(path);
            }
        }
        out
    }

    /// Lines of `layer`'s files that name one of `forbidden`.
    fn offending(layer: &str, forbidden: &[&str]) -> Vec<String> {
        let root = Path::new(env!("CARGO_MANIFEST_DIR"))
            .join("src")
            .join(layer);
        let files = sources(&root);
        assert!(!files.is_empty(), "no sources under {}", root.display());
        let mut found = Vec::new();
        for file in files {
            let text = std::fs::read_to_string(&file).unwrap();
            for (n, line) in text.lines().enumerate() {
                let code = line.split("//").next().unwrap_or("");
                for f in forbidden {
                    if code.contains(f) {
                        found.push(format!("{}:{}: {}", file.display(), n + 1, line.trim()));
                    }
                }
            }
        }
        found
    }

    #[test]
    fn the_domain_does_no_io_and_imports_no_outer_layer() {
        let forbidden = [
            "crate::app",
            "crate::edge",
            "tokio",
            "aws_sdk",
            "aws_config",
            "lambda_runtime",
            "std::fs",
            "std::net",
            "reqwest",
        ];
        let found = offending("domain", &forbidden);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }

    #[test]
    fn the_edge_imports_no_app() {
        let found = offending("edge", &["crate::app"]);
        assert!(found.is_empty(), "{}", found.join("\n"));
    }
}
