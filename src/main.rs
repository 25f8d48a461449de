//! Entry point: the Lambda runtime, `cdc-batcher replay` for local runs, or
//! `cdc-batcher ddl` for the SQL that queries the lake.

use std::sync::Arc;

use cdc_batcher::app::cli::{self, Cli};
use cdc_batcher::app::config::Config;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::{lambda, logging, redrive};
use cdc_batcher::edge::glue::GlueCatalog;
use cdc_batcher::edge::heartbeat::KinesisHeartbeat;
use cdc_batcher::edge::shard_reader::KinesisShardReader;
use cdc_batcher::edge::sink::S3Sink;
use clap::Parser as _;
use lambda_runtime::{service_fn, LambdaEvent};
use serde_json::value::RawValue;

fn main() -> Result<(), lambda_runtime::Error> {
    let started = std::time::Instant::now();
    limit_malloc_arenas();
    tokio::runtime::Builder::new_multi_thread()
        .enable_all()
        .build()?
        .block_on(run(started))
}

/// glibc gives each thread that allocates its own arena (up to eight per
/// core) and keeps what each freed: with parts encoded on blocking threads,
/// peak RSS rose by half. Two arenas keep it near one arena's figure
/// (BENCHMARKS.md, "Memory: malloc arenas").
#[cfg(all(target_os = "linux", target_env = "gnu"))]
fn limit_malloc_arenas() {
    // SAFETY: sets an allocator parameter; no other thread exists yet.
    unsafe {
        libc::mallopt(libc::M_ARENA_MAX, 2);
    }
}

#[cfg(not(all(target_os = "linux", target_env = "gnu")))]
fn limit_malloc_arenas() {}

async fn run(started: std::time::Instant) -> Result<(), lambda_runtime::Error> {
    logging::init()?;
    // Without arguments (how the Lambda runtime starts it) this is the function.
    if let Some(command) = Cli::parse().command {
        std::process::exit(cli::run(command).await);
    }

    let config = Config::from_env()?;
    let bucket = config.require_bucket()?.to_string();
    let sink = S3Sink::from_env(&bucket, &config.s3).await;
    let mut pipeline = Pipeline::new(config, sink)
        .with_shard_reader(Arc::new(KinesisShardReader::from_env().await));
    if !pipeline.config().heartbeat_streams.is_empty() {
        pipeline = pipeline.with_heartbeat(Arc::new(KinesisHeartbeat::from_env().await));
    }
    if let Some(catalog) = &pipeline.config().catalog {
        let glue = GlueCatalog::from_env(catalog.workgroup.clone()).await;
        pipeline = pipeline.with_catalog(Arc::new(glue));
    }
    let pipeline = Arc::new(pipeline);
    let startup_ms = started.elapsed().as_secs_f64() * 1000.0;
    tracing::info!(bucket, startup_ms, "cdc-batcher ready");

    // On SIGTERM (environment recycled) write what is buffered: Lambda allows
    // about 500 ms, see docs/guarantees.md.
    let on_shutdown = pipeline.clone();
    lambda_runtime::spawn_graceful_shutdown_handler(move || async move {
        tracing::info!("shutdown: flushing every buffer");
        on_shutdown.flush_all(None).await;
    })
    .await;

    let redrive = Arc::new(redrive::Clients::from_env().await);
    lambda_runtime::run(service_fn(|event: LambdaEvent<Box<RawValue>>| {
        let (pipeline, redrive) = (pipeline.clone(), redrive.clone());
        async move { lambda::invoke(&pipeline, &redrive, event).await }
    }))
    .await
}
