//! An invocation that meets many tables waits a few S3 round trips, not one
//! per table: the registry reads (a cold environment's first look at each
//! table), the registry writes and the uploads are each in flight together.
//! Observed at a proxy in front of a real S3 server (moto) that delays every
//! answer, so requests that were sent one after another cannot overlap.

use std::time::Duration;

use crate::common::fault_proxy::{max_in_flight, Fault, FaultProxy};
use crate::common::*;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::invocation;
use cdc_batcher::edge::sink::S3Sink;
use serde_json::{json, Value};

const TABLES: usize = 40;

fn create(table: &str) -> Value {
    json!({"control": {"table-def": {"columns": {"id": {"type": "INT32"}, "name": {"type": "STRING"}},
                                     "primary-key": ["id"]}},
           "metadata": {"timestamp": "2026-03-14T01:00:00Z", "record-type": "control",
                        "operation": "create-table", "partition-key-type": "task-id",
                        "schema-name": "s", "table-name": table}})
}

fn row(table: &str, id: u64) -> Value {
    json!({"data": {"id": id, "name": format!("n{id}")}, "metadata": {
        "timestamp": "2026-03-14T01:00:00.000001Z", "record-type": "data",
        "operation": "insert", "partition-key-type": "schema-table",
        "schema-name": "s", "table-name": table}})
}

/// A create-table record and three rows for each of [`TABLES`] tables.
fn many_tables() -> Vec<Value> {
    (0..TABLES)
        .flat_map(|t| {
            let table = format!("t{t:02}");
            let mut m = vec![create(&table)];
            m.extend((0..3).map(|i| row(&table, i)));
            m
        })
        .collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn many_tables_cost_round_trips_in_parallel() {
    let moto = Moto::start();
    create_bucket(&s3_client(&moto.endpoint())).await;
    let proxy = FaultProxy::start(moto.port).await;
    proxy.set(Some(Fault::Slow(Duration::from_millis(40))));
    let client = s3_client_with(&proxy.endpoint(), 3, Duration::from_secs(10));
    let pipeline = Pipeline::new(
        config(&[("FLUSH_MODE", "invocation")]),
        S3Sink::from_client(client, BUCKET),
    )
    .without_metrics();

    let mut seq = 0;
    let out = invocation::handle(&pipeline, &kinesis_event(0, &mut seq, &many_tables()), None)
        .await
        .unwrap();
    assert_eq!(out.redeliver_from, None, "{:?}", out.response);
    assert_eq!(out.stats.files, TABLES as u64, "{:?}", out.stats);
    assert_eq!(out.stats.rows_written, 3 * TABLES as u64);

    let spans = proxy.take_spans();
    let lists = |l: &str| l.starts_with("GET ") && l.contains("list-type=2");
    let schema_puts = |l: &str| l.starts_with("PUT ") && l.contains("/_schemas/");
    let data_puts = |l: &str| l.starts_with("PUT ") && l.contains("/s/t");
    for (what, filter) in [
        ("registry reads", &lists as &dyn Fn(&str) -> bool),
        ("registry writes", &schema_puts),
        ("uploads", &data_puts),
    ] {
        let n = spans.iter().filter(|s| filter(&s.line)).count();
        assert!(n >= TABLES, "{what}: {n} requests");
        let most = max_in_flight(&spans, filter);
        assert!(most >= 8, "{what}: at most {most} of {n} in flight at once");
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn a_window_of_many_tables_is_written_in_parallel() {
    let moto = Moto::start();
    create_bucket(&s3_client(&moto.endpoint())).await;
    let proxy = FaultProxy::start(moto.port).await;
    proxy.set(Some(Fault::Slow(Duration::from_millis(40))));
    let client = s3_client_with(&proxy.endpoint(), 3, Duration::from_secs(10));
    let pipeline =
        Pipeline::new(config(&[]), S3Sink::from_client(client, BUCKET)).without_metrics();

    // One batch, then the window's final invocation (no new records): the
    // final invocation writes every table of the window.
    let mut seq = 0;
    let window = |records: &str, state: Value, is_final: bool| {
        let mut event: Value = serde_json::from_str(records).unwrap();
        event["window"] = json!({"start": "2026-03-14T01:00:00Z", "end": "2026-03-14T01:02:00Z"});
        event["state"] = state;
        event["shardId"] = json!("shardId-000000000000");
        event["eventSourceARN"] = json!(STREAM_ARN);
        event["isFinalInvokeForWindow"] = json!(is_final);
        event["isWindowTerminatedEarly"] = json!(false);
        event.to_string()
    };
    let first = invocation::handle(
        &pipeline,
        &window(
            &kinesis_event(0, &mut seq, &many_tables()),
            json!({}),
            false,
        ),
        None,
    )
    .await
    .unwrap();
    assert_eq!(first.stats.files, 0, "{:?}", first.stats);
    proxy.take_spans();
    let state = first.response["state"].clone();
    let last = invocation::handle(
        &pipeline,
        &window(&kinesis_event(0, &mut seq, &[]), state, true),
        None,
    )
    .await
    .unwrap();
    assert_eq!(last.stats.files, TABLES as u64, "{:?}", last.stats);
    assert_eq!(last.stats.rows_written, 3 * TABLES as u64);

    let spans = proxy.take_spans();
    let data_puts = |l: &str| l.starts_with("PUT ") && l.contains("/s/t");
    let schema_puts = |l: &str| l.starts_with("PUT ") && l.contains("/_schemas/");
    assert!(max_in_flight(&spans, data_puts) >= 8, "uploads in series");
    assert!(
        max_in_flight(&spans, schema_puts) >= 8,
        "registry writes in series"
    );
}
