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
//! Every module is also reachable at the crate root (`cdc_batcher::dms`).

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
    pub mod lambda;
    pub mod logging;
    pub mod metrics;
    pub mod part_writer;
    pub mod redrive;
    pub mod replay;
    pub mod windowed;
    pub mod windows;
}

pub use app::{
    cli, config, ddl, handler, lambda, logging, metrics, part_writer, redrive, replay, windowed,
    windows,
};
pub use domain::{
    batcher, catalog, delivery, dms, encode, event, file_types, json, layout, quarantine, row,
    schema, sql, types, window,
};
pub use edge::{glue, heartbeat, registry, shard_reader, sink};
