//! cdc-batcher: AWS DMS change records from Kinesis, buffered per table in a
//! warm Lambda container, written to S3 as Snappy-compressed Parquet.
//!
//! The core (`dms`, `row`, `batcher`, `encode`, `layout`, `quarantine`) is
//! pure; I/O lives at the edges (`sink`, `handler`, `lambda`, `replay`).

pub mod batcher;
pub mod config;
pub mod delivery;
pub mod dms;
pub mod encode;
pub mod event;
pub mod handler;
pub mod json;
pub mod lambda;
pub mod layout;
pub mod logging;
pub mod metrics;
pub mod quarantine;
pub mod replay;
pub mod row;
pub mod sink;
