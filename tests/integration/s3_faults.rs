//! The handler against a real S3 server (moto) behind a fault-injecting proxy:
//! outages, 5xx replies, dropped connections and slow replies lose no row and
//! write none twice. Kinesis is simulated: a reported failure makes the next
//! invocation start again from the reported sequence number.

use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::common::fault_proxy::{Fault, FaultProxy};
use crate::common::*;
use cdc_batcher::app::handler::{Outcome, Pipeline};
use cdc_batcher::app::invocation;
use cdc_batcher::edge::sink::S3Sink;
use serde_json::Value;

fn load(path: &Path) -> Value {
    serde_json::from_slice(&std::fs::read(path).expect("event file")).expect("event JSON")
}

/// The records of `event` from sequence number `from` on: what Kinesis sends
/// again after a partial batch failure.
fn records_from(event: &Value, from: &str) -> Value {
    let records: Vec<Value> = event["Records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| {
            let seq = r["kinesis"]["sequenceNumber"].as_str().unwrap();
            domain::event::sequence_cmp(seq, from).is_ge()
        })
        .cloned()
        .collect();
    serde_json::json!({ "Records": records })
}

/// Delivers an event file the way Kinesis does: again from the reported
/// sequence number until the function reports no failure. After `heal_after`
/// tries the proxy is healed (a long outage ends) so that every batch is
/// eventually acknowledged; it returns how many deliveries were needed.
async fn deliver(
    pipeline: &Pipeline<S3Sink>,
    proxy: &FaultProxy,
    file: &Path,
    heal_after: usize,
) -> usize {
    let mut event = load(file);
    for attempt in 1..=heal_after + 3 {
        if attempt > heal_after {
            proxy.set(None);
        }
        let out = invocation::handle(pipeline, &event.to_string(), None)
            .await
            .expect("kinesis event");
        match out.redeliver_from {
            Some(seq) => event = records_from(&event, &seq),
            None => return attempt,
        }
    }
    panic!("{}: still failing with a healthy S3", file.display());
}

fn failures(out: &Outcome) -> Vec<String> {
    out.response["batchItemFailures"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| f["itemIdentifier"].as_str().unwrap().to_string())
        .collect()
}

/// A client through the proxy that gives up quickly, so faults surface.
fn impatient_client(endpoint: &str) -> aws_sdk_s3::Client {
    s3_client_with(endpoint, 2, Duration::from_millis(1000))
}

fn corpus_set(name: &str) -> Vec<PathBuf> {
    event_files(&corpus().join("events").join(name))
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn s3_outage_loses_no_rows_and_redelivery_is_not_buffered_twice() {
    let moto = Moto::start();
    create_bucket(&s3_client(&moto.endpoint())).await;
    let proxy = FaultProxy::start(moto.port).await;
    let sink = S3Sink::from_client(impatient_client(&proxy.endpoint()), BUCKET);
    let pipeline =
        Pipeline::new(config(&[("BATCH_MAX_RECORDS_THRESHOLD", "20")]), sink).without_metrics();
    let events = corpus_set("basic");

    for f in &events[..3] {
        let out = invocation::handle(&pipeline, &load(f).to_string(), None)
            .await
            .unwrap();
        assert!(failures(&out).is_empty(), "healthy S3: {:?}", out.response);
    }
    let buffered_before = pipeline.buffered_rows().await;

    // S3 goes down: the due files fail, their rows stay buffered, and Kinesis
    // is asked to redeliver from the first of this batch's rows not written.
    proxy.set(Some(Fault::ServerError));
    let batch = load(&events[3]);
    let out = invocation::handle(&pipeline, &batch.to_string(), None)
        .await
        .unwrap();
    assert!(out.stats.failed_files > 0, "{:?}", out.stats);
    let from = out.redeliver_from.clone().expect("a failure is reported");
    assert_eq!(failures(&out), vec![from.clone()]);
    let batch_seqs: Vec<&str> = batch["Records"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["kinesis"]["sequenceNumber"].as_str().unwrap())
        .collect();
    assert!(
        batch_seqs.contains(&from.as_str()),
        "reported a record of this batch"
    );
    assert!(pipeline.buffered_rows().await >= buffered_before);

    // Redelivery while S3 is still down: nothing is buffered twice, and the
    // same failure is reported again.
    let again = records_from(&batch, &from);
    let redelivered = again["Records"].as_array().unwrap().len() as u64;
    let held = pipeline.buffered_rows().await;
    let out = invocation::handle(&pipeline, &again.to_string(), None)
        .await
        .unwrap();
    assert_eq!(out.stats.duplicates, redelivered);
    assert_eq!(out.stats.rows, 0);
    assert_eq!(out.redeliver_from.as_deref(), Some(from.as_str()));
    assert_eq!(
        pipeline.buffered_rows().await,
        held,
        "no row buffered twice"
    );

    // S3 is back: the redelivered batch is acknowledged and the held rows written.
    proxy.set(None);
    let out = invocation::handle(&pipeline, &again.to_string(), None)
        .await
        .unwrap();
    assert!(failures(&out).is_empty(), "{:?}", out.response);
    assert_eq!(out.stats.duplicates, redelivered);
    assert!(out.stats.files > 0);
    for f in &events[4..] {
        let out = invocation::handle(&pipeline, &load(f).to_string(), None)
            .await
            .unwrap();
        assert!(failures(&out).is_empty());
    }
    let flush = invocation::handle(
        &pipeline,
        &serde_json::json!({"force_flush": true}).to_string(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(flush.stats.failed_files, 0);
    assert_eq!(pipeline.buffered_rows().await, 0);
    assert!(proxy.faults_injected() > 0);

    let check = check_lake(
        &s3_location(&moto.endpoint()),
        &["--expect-rows", "213"],
        &events,
    );
    assert!(check.ok, "{}", check.summary);
}

/// Runs a corpus set with bad records mixed in through a proxy that injects
/// `fault` into 2 of every 3 requests, then heals and force-flushes.
async fn corpus_survives(fault: Fault, mode: &str) {
    let moto = Moto::start();
    create_bucket(&s3_client(&moto.endpoint())).await;
    let proxy = FaultProxy::start(moto.port).await;
    let sink = S3Sink::from_client(impatient_client(&proxy.endpoint()), BUCKET);
    let pipeline = Pipeline::new(
        config(&[("FLUSH_MODE", mode), ("BATCH_MAX_RECORDS_THRESHOLD", "30")]),
        sink,
    )
    .without_metrics();
    proxy.set_share(Some(fault), 2, 3);
    let events = corpus_set("mixed-bad");
    let mut redeliveries = 0;
    for f in &events {
        proxy.set_share(Some(fault), 2, 3);
        redeliveries += deliver(&pipeline, &proxy, f, 6).await - 1;
    }
    proxy.set(None);
    let flush = invocation::handle(
        &pipeline,
        &serde_json::json!({"force_flush": true}).to_string(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(flush.stats.failed_files, 0);
    assert!(proxy.faults_injected() > 0, "no fault was injected");
    assert!(redeliveries > 0, "faults never reached the function");

    let check = check_lake(
        &s3_location(&moto.endpoint()),
        &["--expect-rows", "213"],
        &events,
    );
    assert!(check.ok, "{fault:?} {mode}: {}", check.summary);
    assert_eq!(check.summary["quarantined"], 15);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_lose_nothing_warm() {
    corpus_survives(Fault::ServerError, "warm-lossy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_lose_nothing_per_invocation() {
    corpus_survives(Fault::ServerError, "invocation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing_warm() {
    corpus_survives(Fault::Drop, "warm-lossy").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn dropped_connections_lose_nothing_per_invocation() {
    corpus_survives(Fault::Drop, "invocation").await;
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_replies_write_nothing_twice() {
    // Slower than the client's attempt timeout: the PUT lands after the
    // client gave up, and the retry must find it rather than duplicate it.
    corpus_survives(Fault::Slow(Duration::from_millis(1300)), "invocation").await;
}

/// Window mode against a real S3 server through the fault proxy: each corpus
/// file is one shard's window, delivered as Lambda does (the returned state
/// goes to the next invocation; a failed invocation is sent again with the
/// state it had), ended by a final invocation retried until it succeeds.
async fn windows_survive(fault: Fault) {
    let moto = Moto::start();
    create_bucket(&s3_client(&moto.endpoint())).await;
    let proxy = FaultProxy::start(moto.port).await;
    let sink = S3Sink::from_client(impatient_client(&proxy.endpoint()), BUCKET);
    // Two environments: the final invocation goes to the one that saw nothing.
    let cfg = config(&[("BATCH_MAX_RECORDS_THRESHOLD", "30")]);
    let seen = Pipeline::new(cfg.clone(), sink.clone()).without_metrics();
    let fresh = Pipeline::new(cfg, sink).without_metrics();
    let events = corpus_set("mixed-bad");
    let (mut retries, mut rebuilt) = (0, 0);
    let mut shards = std::collections::BTreeSet::new();
    for (i, f) in events.iter().enumerate() {
        let event = load(f);
        let shard = event["Records"][0]["eventID"]
            .as_str()
            .unwrap()
            .split(':')
            .next()
            .unwrap()
            .to_string();
        shards.insert(shard.clone());
        let window = serde_json::json!({"start": format!("2026-03-14T01:{i:02}:00Z"),
            "end": format!("2026-03-14T01:{:02}:00Z", i + 2)});
        let wrap = |records: &Value, state: &Value, last: bool| {
            serde_json::json!({"Records": records, "window": window, "state": state,
                "shardId": shard, "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/dms",
                "isFinalInvokeForWindow": last, "isWindowTerminatedEarly": false})
        };
        let mut state = serde_json::json!({});
        let mut pending = event.clone();
        proxy.set_share(Some(fault), 2, 3);
        for attempt in 0.. {
            assert!(attempt < 40, "{}: the batch never got through", f.display());
            if attempt == 4 {
                proxy.set(None);
            }
            if let Ok(out) = invocation::handle(
                &seen,
                &wrap(&pending["Records"], &state, false).to_string(),
                None,
            )
            .await
            {
                state = out.response["state"].clone();
                match out.redeliver_from {
                    Some(seq) => pending = records_from(&pending, &seq),
                    None => break,
                }
            }
            retries += 1;
        }
        proxy.set_share(Some(fault), 2, 3);
        for attempt in 0.. {
            assert!(
                attempt < 40,
                "{}: the final invocation never succeeded",
                f.display()
            );
            if attempt == 8 {
                proxy.set(None);
            }
            let env = if attempt % 2 == 0 { &fresh } else { &seen };
            match invocation::handle(
                env,
                &wrap(&serde_json::json!([]), &state, true).to_string(),
                None,
            )
            .await
            {
                Ok(out) => {
                    assert_eq!(
                        out.response,
                        serde_json::json!({"state": {}, "batchItemFailures": []})
                    );
                    rebuilt += usize::from(attempt % 2 == 0);
                    break;
                }
                Err(_) => retries += 1,
            }
        }
    }
    proxy.set(None);
    assert!(proxy.faults_injected() > 0, "no fault was injected");
    assert!(retries > 0, "faults never reached the function");
    assert!(rebuilt > 0, "no final invocation read the spool");
    let check = check_lake(
        &s3_location(&moto.endpoint()),
        &["--expect-rows", "213"],
        &events,
    );
    assert!(check.ok, "{fault:?} window: {}", check.summary);
    assert_eq!(check.summary["quarantined"], 15);

    // The sweep over S3 (one listing with a delimiter per shard): every
    // window is written (an index key a fault kept out is looked up)…
    let sweep = r#"{"sweep_windows": true}"#;
    let report = invocation::handle(&fresh, sweep, None)
        .await
        .unwrap()
        .response;
    assert_eq!(report["open"], serde_json::json!([]), "{report}");
    assert_eq!(report["shards"], shards.len(), "{report}");
    // …until a window gets no final invocation.
    let first = load(&events[0]);
    let shard = shards.iter().next().unwrap();
    let records: Vec<&Value> = first["Records"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|r| r["eventID"].as_str().unwrap().starts_with(shard.as_str()))
        .collect();
    let open = serde_json::json!({"Records": records,
        "window": {"start": "2026-03-14T03:00:00Z", "end": "2026-03-14T03:02:00Z"},
        "state": {}, "shardId": shard,
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/dms",
        "isFinalInvokeForWindow": false, "isWindowTerminatedEarly": false});
    invocation::handle(&seen, &open.to_string(), None)
        .await
        .unwrap();
    let report = invocation::handle(&fresh, sweep, None)
        .await
        .unwrap()
        .response;
    let found = report["open"].as_array().unwrap();
    assert_eq!(found.len(), 1, "{report}");
    let dir = found[0]["dir"].as_str().unwrap();
    assert!(dir.ends_with("/20260314T030000Z/"), "{report}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn server_errors_lose_nothing_in_windows() {
    windows_survive(Fault::ServerError).await;
}
