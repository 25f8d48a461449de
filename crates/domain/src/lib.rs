//! The pure core of cdc-batcher: DMS messages, rows, parts and windows,
//! column types and schemas, Parquet encoding, object keys, SQL. No I/O:
//! this crate depends on neither tokio nor the AWS SDK, so the compiler
//! keeps it pure; the function's `edge` (I/O) and `app` (orchestration)
//! layers build on it.
//!
//! `names` holds the identifiers every module shares (a table's name, a
//! record's id, a column's lake name), so `dms`, `schema`, `row` and
//! `layout` import them from below instead of from each other.

pub mod acknowledgement;
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
pub mod registry;
pub mod row;
pub mod schema;
pub mod sql;
pub mod types;
pub mod window;
