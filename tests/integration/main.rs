//! The integration tests, one module per subject, in one test binary: the
//! crate and the AWS SDK are linked once, not once per file (`cargo test
//! --test integration <module>::` runs one subject). The simulation
//! (`tests/lambda_sim.rs`) stays a binary of its own.

mod common;

mod column_types;
mod concurrent_io;
mod glue_catalog;
mod handler_local;
mod heartbeat_kinesis;
mod no_values_in_logs;
mod redrive_kinesis;
mod replay_cli;
mod s3_faults;
mod schema_fidelity;
