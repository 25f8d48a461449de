//! cdc-batcher: AWS DMS change records from Kinesis, buffered per table in a
//! warm Lambda container, written to S3 as Snappy-compressed Parquet.
//!
//! The core (`dms`, `row`, `batcher`, `types`, `schema`, `encode`, `layout`,
//! `quarantine`, `sql`) is pure; I/O lives at the edges (`sink`, `registry`,
//! `handler`, `lambda`, `replay`, `ddl`).

pub mod batcher;
pub mod cli;
pub mod config;
pub mod ddl;
pub mod delivery;
pub mod dms;
pub mod encode;
pub mod event;
pub mod file_types;
pub mod handler;
pub mod heartbeat;
pub mod json;
pub mod lambda;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod quarantine;
pub mod redrive;
pub mod registry;
pub mod replay;
pub mod row;
pub mod schema;
pub mod sink;
pub mod sql;
pub mod types;
pub mod window;
pub mod windowed;
