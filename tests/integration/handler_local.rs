//! The handler with a local-directory sink: time budget and force-flush
//! behaviour that needs no S3 server.

use std::collections::HashMap;
use std::time::{Duration, SystemTime};

use crate::common::*;
use cdc_batcher::app::config::Config;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::invocation;
use cdc_batcher::edge::sink::LocalDirSink;
use serde_json::{json, Value};

fn pipeline(dir: &std::path::Path, vars: &[(&str, &str)]) -> Pipeline<LocalDirSink> {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    let config = Config::from_lookup(|k| map.get(k).cloned()).unwrap();
    Pipeline::new(config, LocalDirSink::new(dir)).without_metrics()
}

fn first_event() -> Value {
    let f = &event_files(&corpus().join("events/basic"))[0];
    serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap()
}

#[tokio::test]
async fn near_the_deadline_records_are_left_for_redelivery() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("TIME_RESERVE_MS", "2000")]);
    let event = first_event();
    let deadline = SystemTime::now() + Duration::from_millis(1000);
    let out = invocation::handle(&p, &event.to_string(), Some(deadline))
        .await
        .unwrap();
    let first_seq = event["Records"][0]["kinesis"]["sequenceNumber"]
        .as_str()
        .unwrap();
    assert_eq!(out.redeliver_from.as_deref(), Some(first_seq));
    assert_eq!(out.stats.deferred, 25);
    assert_eq!(out.stats.rows, 0);
    assert_eq!(
        out.response,
        json!({"batchItemFailures": [{"itemIdentifier": first_seq}]})
    );

    // With time to spare the same batch is taken, and nothing is reported.
    let deadline = SystemTime::now() + Duration::from_secs(60);
    let out = invocation::handle(&p, &event.to_string(), Some(deadline))
        .await
        .unwrap();
    assert_eq!(out.redeliver_from, None);
    assert_eq!(out.stats.deferred, 0);
    assert!(out.stats.rows > 0);
}

#[tokio::test]
async fn invocation_mode_leaves_nothing_buffered() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("FLUSH_MODE", "invocation")]);
    let out = invocation::handle(&p, &first_event().to_string(), None)
        .await
        .unwrap();
    assert!(out.stats.files > 0);
    assert_eq!(p.buffered_rows().await, 0);
}

#[tokio::test]
async fn warm_mode_buffers_until_a_force_flush() {
    let dir = tempfile::tempdir().unwrap();
    let p = pipeline(dir.path(), &[("FLUSH_MODE", "warm-lossy")]);
    let out = invocation::handle(&p, &first_event().to_string(), None)
        .await
        .unwrap();
    let buffered = p.buffered_rows().await;
    assert!(buffered > 0);
    assert_eq!(
        out.stats.files, 0,
        "below every threshold, no DDL: nothing written yet"
    );
    let flush = invocation::handle(
        &p,
        &json!({"version": "0", "detail-type": "Scheduled Event",
                        "source": "aws.scheduler", "detail": "{}"})
        .to_string(),
        None,
    )
    .await
    .unwrap();
    assert!(flush.is_flush);
    assert_eq!(flush.stats.rows_written, buffered as u64);
    assert_eq!(p.buffered_rows().await, 0);
}

/// A Kinesis event holding one DMS insert into `s.t` with `data`.
fn insert_event(seq: u64, data: &str) -> String {
    use base64::Engine as _;
    let msg = format!(
        r#"{{"data":{data},"metadata":{{"timestamp":"2026-03-14T01:00:00.{seq:06}Z","record-type":"data","operation":"insert","schema-name":"s","table-name":"t"}}}}"#
    );
    let sequence = format!("4959000000000000000000000000000000000000000000000000{seq:04}");
    json!({"Records": [{
        "kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "s.t",
                    "sequenceNumber": sequence,
                    "data": base64::engine::general_purpose::STANDARD.encode(msg),
                    "approximateArrivalTimestamp": 1773450000.5},
        "eventSource": "aws:kinesis", "eventID": format!("shardId-000000000000:{sequence}"),
        "eventName": "aws:kinesis:record", "eventVersion": "1.0",
        "eventSourceARN": "arn:aws:kinesis:us-east-1:123456789012:stream/dms-cdc",
        "awsRegion": "us-east-1"}]})
    .to_string()
}

#[tokio::test]
async fn a_value_that_does_not_fit_is_rescued_and_every_file_keeps_the_type() {
    let dir = tempfile::tempdir().unwrap();
    let vars = [
        ("FLUSH_MODE", "invocation"),
        ("SCHEMA_REFRESH_SECONDS", "0"),
    ];
    let (a, b) = (pipeline(dir.path(), &vars), pipeline(dir.path(), &vars));
    let mut rescued = 0;
    for (container, seq, data) in [
        (&a, 1, r#"{"id":1,"x":1}"#),
        (&b, 2, r#"{"id":2,"x":2}"#),
        (&a, 3, r#"{"id":3,"x":1.5}"#),
        (&b, 4, r#"{"id":4,"x":3}"#),
    ] {
        let out = invocation::handle(container, &insert_event(seq, data), None)
            .await
            .unwrap();
        assert_eq!(out.stats.files, 1, "{data}");
        rescued += out.stats.rescued_values;
    }
    assert_eq!(rescued, 1);
    let types = python_stdout(
        r#"
import sys, glob, pyarrow.parquet as pq
rows = {}
for f in glob.glob(sys.argv[1] + "/cdc-data/s/t/**/*.parquet", recursive=True):
    t = pq.read_table(f)
    for i, x, r in zip(*(t.column(c).to_pylist() for c in ("id", "x", "_rescued"))):
        rows[i] = f"{t.schema.field('x').type}={x}/{r}"
print(" ".join(f"{k}:{v}" for k, v in sorted(rows.items())))
"#,
        &[dir.path().to_str().unwrap()],
    );
    // The value is kept exactly; the column stays bigint in every file.
    assert_eq!(
        types,
        r#"1:int64=1/None 2:int64=2/None 3:int64=None/{"x":"1.5"} 4:int64=3/None"#
    );
}

fn sample(name: &str) -> Value {
    serde_json::from_slice(&std::fs::read(repo().join("events").join(name)).unwrap()).unwrap()
}

fn walk_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out = Vec::new();
    let mut pending = vec![dir.to_path_buf()];
    while let Some(d) = pending.pop() {
        for e in std::fs::read_dir(&d).unwrap() {
            let p = e.unwrap().path();
            if p.is_dir() {
                pending.push(p);
            } else {
                out.push(p);
            }
        }
    }
    out
}

fn parquet_files(dir: &std::path::Path) -> Vec<std::path::PathBuf> {
    let mut out: Vec<_> = walk_files(dir)
        .into_iter()
        .filter(|p| p.extension().is_some_and(|x| x == "parquet"))
        .collect();
    out.sort();
    out
}

/// The sample window events chain: each invocation returns the state the next
/// sample carries, and a final invocation in another environment (nothing in
/// memory) writes the whole window from the spool, once.
#[tokio::test]
async fn the_sample_window_events_chain_and_the_final_works_anywhere() {
    let dir = tempfile::tempdir().unwrap();
    let first_env = pipeline(dir.path(), &[]);
    let first = invocation::handle(&first_env, &sample("window-1-first.json").to_string(), None)
        .await
        .unwrap();
    assert_eq!(first.response["batchItemFailures"], json!([]));
    assert_eq!(first.stats.spooled, 10);
    assert_eq!(
        first.stats.files, 0,
        "nothing is written before the window ends"
    );
    assert_eq!(
        first.response["state"],
        sample("window-2-middle.json")["state"]
    );
    let middle = invocation::handle(
        &first_env,
        &sample("window-2-middle.json").to_string(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        middle.response["state"],
        sample("window-3-final.json")["state"]
    );
    // Its DDL records closed four parts (two tables, two hours each): they are
    // complete, so they are written now, and the state says so.
    assert_eq!(middle.stats.files, 4);
    assert_eq!(parquet_files(dir.path()).len(), 4);

    // The final invocation reaches an environment that saw none of it.
    let other_env = pipeline(dir.path(), &[]);
    let fin = invocation::handle(&other_env, &sample("window-3-final.json").to_string(), None)
        .await
        .unwrap();
    assert_eq!(fin.response, json!({"state": {}, "batchItemFailures": []}));
    assert_eq!(fin.stats.windows_written, 1);
    let files = parquet_files(dir.path());
    assert!(!files.is_empty());
    let rows_in_window = first.stats.rows + middle.stats.rows;
    assert_eq!(
        middle.stats.rows_written + fin.stats.rows_written,
        rows_in_window
    );
    assert_eq!(files.len(), 4 + fin.stats.files as usize);

    // A final invocation retried after it succeeded (its response lost)
    // finds the window's marker and has nothing to do.
    let again = invocation::handle(&first_env, &sample("window-3-final.json").to_string(), None)
        .await
        .unwrap();
    assert_eq!(again.response, fin.response);
    assert_eq!(again.stats.rows_written, 0);
    assert_eq!(parquet_files(dir.path()), files, "nothing new");
    // Without the marker (an attempt that failed just before writing it), a
    // retry (here in the first environment, whose cache is in step) writes
    // the same files.
    let markers: Vec<_> = walk_files(dir.path())
        .into_iter()
        .filter(|p| p.ends_with("_done.json"))
        .collect();
    assert_eq!(markers.len(), 1, "one window, one marker");
    std::fs::remove_file(&markers[0]).unwrap();
    let again = invocation::handle(&first_env, &sample("window-3-final.json").to_string(), None)
        .await
        .unwrap();
    assert_eq!(again.stats.rows_written, fin.stats.rows_written);
    assert_eq!(
        parquet_files(dir.path()),
        files,
        "the same keys, nothing new"
    );

    // A window Lambda ended early is written like a final one, bad records
    // quarantined.
    let early = invocation::handle(
        &other_env,
        &sample("window-4-terminated-early.json").to_string(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(
        early.response,
        json!({"state": {}, "batchItemFailures": []})
    );
    assert_eq!(early.stats.rows_written, 2);
    assert_eq!(early.stats.quarantined, 1);
}

/// A redelivered batch (records the state already lists) is not spooled
/// again; a damaged state fails the invocation instead of starting over.
#[tokio::test]
async fn window_redeliveries_and_damaged_state() {
    let dir = tempfile::tempdir().unwrap();
    let env = pipeline(dir.path(), &[]);
    let mut replayed = sample("window-1-first.json");
    replayed["state"] = sample("window-2-middle.json")["state"].clone();
    let out = invocation::handle(&env, &replayed.to_string(), None)
        .await
        .unwrap();
    assert_eq!(out.stats.duplicates, 10);
    assert_eq!(out.stats.spooled, 0);
    assert_eq!(out.response["state"], replayed["state"]);

    let mut damaged = sample("window-2-middle.json");
    damaged["state"] = json!({"cdc-batcher": "{\"v\": 1, \"spools\": 7}"});
    let err = invocation::handle(&env, &damaged.to_string(), None)
        .await
        .unwrap_err();
    assert!(err.to_string().contains("window state"), "{err}");
}

/// Invocation mode under an event source mapping that has tumbling windows:
/// each batch is written as usual, and the response carries a state.
#[tokio::test]
async fn invocation_mode_answers_window_events_with_a_state() {
    let dir = tempfile::tempdir().unwrap();
    let env = pipeline(dir.path(), &[("FLUSH_MODE", "invocation")]);
    let out = invocation::handle(&env, &sample("window-1-first.json").to_string(), None)
        .await
        .unwrap();
    assert_eq!(out.response, json!({"state": {}, "batchItemFailures": []}));
    assert!(out.stats.files > 0);
}

/// A retried batch may arrive out of order (Lambda developer guide): taken in
/// sequence order, no record of a lane hides an earlier one.
#[tokio::test]
async fn a_batch_out_of_order_loses_no_record() {
    let dir = tempfile::tempdir().unwrap();
    let env = pipeline(dir.path(), &[("FLUSH_MODE", "invocation")]);
    let mut event = sample("kinesis-1-load.json");
    event["Records"].as_array_mut().unwrap().reverse();
    let out = invocation::handle(&env, &event.to_string(), None)
        .await
        .unwrap();
    assert_eq!(out.stats.duplicates, 0);
    assert_eq!(out.stats.rows, 9);
    assert_eq!(out.stats.rows_written, 9);
}

/// A window of a stream `HEARTBEAT_STREAMS` does not list is counted
/// (`WindowsWithoutHeartbeat`, alarmed): its quiet shards would wait.
#[tokio::test]
async fn a_window_of_a_stream_without_heartbeats_is_counted() {
    let arn = sample("window-1-first.json")["eventSourceARN"]
        .as_str()
        .unwrap()
        .to_string();
    for (listed, expected) in [("", 1), (arn.as_str(), 0)] {
        let dir = tempfile::tempdir().unwrap();
        let env = pipeline(dir.path(), &[("HEARTBEAT_STREAMS", listed)]);
        let out = invocation::handle(&env, &sample("window-1-first.json").to_string(), None)
            .await
            .unwrap();
        assert_eq!(out.stats.windows_without_heartbeat, expected, "{listed:?}");
    }
}

/// Runs `cdc-batcher windows ARGS` over the local lake `dir`; its stdout
/// lines as JSON, and whether it succeeded.
fn windows_command(dir: &std::path::Path, args: &[&str]) -> (Vec<Value>, bool) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .arg("windows")
        .arg(args[0])
        .args(["--lake", dir.to_str().unwrap()])
        .args(&args[1..])
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    let lines = String::from_utf8_lossy(&out.stdout)
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    (lines, out.status.success())
}

/// A window whose final invocation never comes (Lambda gave up on it): its
/// spool is listed, `windows finish` writes it (leaving out the parts its
/// DDL records closed and wrote early), every row once, and a final
/// invocation that arrives after all writes nothing.
#[tokio::test]
async fn an_abandoned_window_is_listed_and_finished_by_hand() {
    let dir = tempfile::tempdir().unwrap();
    let env = pipeline(dir.path(), &[]);
    let rows = abandon_sample_window(&env).await;
    let early = parquet_files(dir.path()).len();
    assert_eq!(early, 4, "the DDL records closed four parts");
    // A retried invocation's orphan: the same records under another index.
    let spools: Vec<_> = walk_files(dir.path())
        .into_iter()
        .filter(|p| p.to_string_lossy().ends_with(".jsonl.sz"))
        .collect();
    assert_eq!(spools.len(), 2);
    let orphan = spools[1].with_file_name("000002_1.jsonl.sz");
    std::fs::copy(&spools[1], &orphan).unwrap();

    let (open, ok) = windows_command(dir.path(), &["list"]);
    assert!(ok);
    assert_eq!(open.len(), 1, "{open:?}");
    assert_eq!(open[0]["spool_objects"], 3);
    let window_dir = open[0]["dir"].as_str().unwrap().to_string();
    assert!(window_dir.starts_with("_spool/dms-cdc-"), "{window_dir}");

    let (report, ok) = windows_command(dir.path(), &["finish", &window_dir]);
    assert!(ok, "{report:?}");
    let report = &report[0];
    assert_eq!(report["records"], 18, "{report}");
    let already = report["already_in_lake"].as_u64().unwrap();
    let written = report["rows_written"].as_u64().unwrap();
    assert!(already > 0, "{report}");
    assert_eq!(already + written, rows, "{report}");
    assert_eq!(windows_command(dir.path(), &["list"]).0.len(), 0);
    // The sweep sees it written too, by the index key `finish` wrote.
    let report = sweep(&env).await;
    assert_eq!(
        (&report["open"], &report["indexed"]),
        (&json!([]), &json!(0)),
        "{report}"
    );
    // A second finish is refused: the window is written.
    assert!(!windows_command(dir.path(), &["finish", &window_dir]).1);

    assert_sample_window_once(dir.path(), rows);

    // The final invocation Lambda still sends, late: nothing more.
    assert_a_final_invocation_writes_nothing(dir.path()).await;
}

/// The sample window's final invocation, in a fresh environment, writes no
/// row and no file.
async fn assert_a_final_invocation_writes_nothing(dir: &std::path::Path) {
    let files = parquet_files(dir);
    let late = invocation::handle(
        &pipeline(dir, &[]),
        &sample("window-3-final.json").to_string(),
        None,
    )
    .await
    .unwrap();
    assert_eq!(late.stats.rows_written, 0);
    assert_eq!(parquet_files(dir), files);
}

/// A stream that keeps records `retention` (only the retention is asked).
struct Retention(Option<Duration>);

impl cdc_batcher::edge::shard_reader::ShardReader for Retention {
    fn read<'a>(
        &'a self,
        _: &'a str,
        shard: &'a str,
        _: &'a cdc_batcher::edge::shard_reader::ReadFrom,
        _: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<
            cdc_batcher::edge::shard_reader::ShardRange,
            cdc_batcher::edge::shard_reader::ReadError,
        >,
    > {
        Box::pin(async move {
            Err(cdc_batcher::edge::shard_reader::ReadError::Unavailable(
                shard.to_string(),
            ))
        })
    }

    fn retention<'a>(
        &'a self,
        stream_arn: &'a str,
    ) -> futures_util::future::BoxFuture<
        'a,
        Result<Duration, cdc_batcher::edge::shard_reader::ReadError>,
    > {
        Box::pin(async move {
            self.0.ok_or_else(|| {
                cdc_batcher::edge::shard_reader::ReadError::Unavailable(stream_arn.into())
            })
        })
    }
}

/// The sample window (March 2026: months old) left without its final
/// invocation is written by the sweep once the stream cannot hold its
/// records any more: every spooled row once. Not while a record may still
/// come, not without knowing the retention, never in `warm-lossy`.
#[tokio::test]
async fn the_sweep_writes_a_window_no_record_of_which_can_still_arrive() {
    let dir = tempfile::tempdir().unwrap();
    let open = |vars: &[(&str, &str)], retention: Option<Duration>| {
        pipeline(dir.path(), vars).with_shard_reader(std::sync::Arc::new(Retention(retention)))
    };
    let env = open(&[], None);
    let rows = abandon_sample_window(&env).await;
    let early = parquet_files(dir.path());
    let year = Duration::from_secs(365 * 86_400);
    let day = Duration::from_secs(86_400);
    let in_reach = open(&[], Some(year));
    let unknown = open(&[], None);
    let lossy = open(&[("FLUSH_MODE", "warm-lossy")], Some(day));
    for (who, env) in [
        ("in reach", &in_reach),
        ("unknown", &unknown),
        ("lossy", &lossy),
    ] {
        let report = sweep(env).await;
        assert_eq!(
            report["open"].as_array().unwrap().len(),
            1,
            "{who}: {report}"
        );
        assert_eq!(report["finished"], json!([]), "{who}: {report}");
    }
    assert_eq!(parquet_files(dir.path()), early);

    // An older window the sweep cannot write (its one spool object is
    // damaged) fails the sweep, but does not hold back the one behind it.
    let window = walk_files(dir.path())
        .into_iter()
        .find(|p| p.to_string_lossy().ends_with(".jsonl.sz"))
        .expect("a spool object")
        .parent()
        .unwrap()
        .to_path_buf();
    let name = window
        .file_name()
        .unwrap()
        .to_string_lossy()
        .replacen("2026", "2025", 1);
    let damaged = window.with_file_name(name);
    std::fs::create_dir_all(&damaged).unwrap();
    std::fs::write(damaged.join("0.jsonl.sz"), b"not a spool object").unwrap();
    let env = open(&[], Some(day));
    let failed = invocation::handle(&env, &sample("sweep-windows.json").to_string(), None).await;
    assert!(failed.is_err(), "the damaged window was not reported");
    std::fs::remove_dir_all(&damaged).unwrap();
    // The sweep that met the damaged window wrote the sample window all
    // the same: the next one finds nothing open and nothing to write.
    let report = sweep(&env).await;
    assert_eq!(
        (&report["open"], &report["finished"]),
        (&json!([]), &json!([])),
        "{report}"
    );
    let done = walk_files(dir.path())
        .into_iter()
        .find(|p| p.ends_with("_done.json"))
        .expect("_done.json");
    let marker: Value = serde_json::from_slice(&std::fs::read(done).unwrap()).unwrap();
    assert_eq!(marker["by"], "the scheduled sweep");

    assert_sample_window_once(dir.path(), rows);

    // Nothing is left open, and the next sweep writes nothing.
    let files = parquet_files(dir.path());
    let report = sweep(&env).await;
    assert_eq!(
        (&report["open"], &report["finished"]),
        (&json!([]), &json!([])),
        "{report}"
    );
    assert_eq!(parquet_files(dir.path()), files);
}

/// Records recovered from a durable copy (a window's spool, a redriven
/// range) are taken whatever the environment saw before: a sweep or a
/// redrive that writes a shard's later records first must not take the
/// earlier ones for Lambda redeliveries (the delivery log keeps only each
/// lane's highest sequence number). The lake's own check leaves out what is
/// already written.
#[tokio::test]
async fn records_recovered_out_of_order_are_all_written() {
    use domain::event::{classify, Event};
    let dir = tempfile::tempdir().unwrap();
    let env = pipeline(dir.path(), &[]);
    let text = sample("kinesis-2-cdc.json").to_string();
    let Ok(Event::Kinesis(batch)) = classify(&text) else {
        panic!("the sample is a Kinesis event")
    };
    let records = batch.records;
    assert!(records.len() >= 2, "{}", records.len());
    let (earlier, later) = records.split_at(records.len() / 2);
    let mut rows = 0;
    for part in [later, earlier] {
        let outcome = invocation::invoke(&env, Event::Recovered(part.to_vec()), None)
            .await
            .unwrap();
        assert_eq!(outcome.stats.duplicates, 0, "{:?}", outcome.stats);
        rows += outcome.stats.rows_written;
    }
    let location = vec!["--dir".to_string(), dir.path().display().to_string()];
    let events = [repo().join("events").join("kinesis-2-cdc.json")];
    let check = check_lake(&location, &["--expect-rows", &rows.to_string()], &events);
    assert!(check.ok, "{}", check.summary);
}

/// The sample window's first two batches, and no final invocation: the
/// window Lambda gave up on. Returns their rows.
async fn abandon_sample_window(env: &Pipeline<LocalDirSink>) -> u64 {
    let mut rows = 0;
    for name in ["window-1-first.json", "window-2-middle.json"] {
        rows += invocation::handle(env, &sample(name).to_string(), None)
            .await
            .unwrap()
            .stats
            .rows;
    }
    rows
}

/// A window finished by hand (`windows finish`) while Lambda had not given
/// up on it: its next batch is spooled into the written window (in the
/// environment that caches the window, whose DDL records close parts it
/// would write early, or in another) and its final invocation finds
/// `_done.json`. The records that reached the spool after the hand-written
/// part are written then, and no row twice.
#[tokio::test]
async fn records_that_reach_a_window_finished_by_hand_are_written_once() {
    let scratch = tempfile::tempdir().unwrap();
    let rows = abandon_sample_window(&pipeline(scratch.path(), &[])).await;
    for same_env in [true, false] {
        let dir = tempfile::tempdir().unwrap();
        let env = pipeline(dir.path(), &[]);
        let first = invocation::handle(&env, &sample("window-1-first.json").to_string(), None)
            .await
            .unwrap();
        let (open, ok) = windows_command(dir.path(), &["list"]);
        assert!(ok);
        let window_dir = open[0]["dir"].as_str().unwrap().to_string();
        let (report, ok) = windows_command(dir.path(), &["finish", &window_dir]);
        assert!(ok, "{report:?}");
        assert_eq!(report[0]["rows_written"].as_u64(), Some(first.stats.rows));

        // Lambda goes on: the next batch, then the final invocation.
        let other_env = pipeline(dir.path(), &[]);
        let middle_env = if same_env { &env } else { &other_env };
        let middle = invocation::handle(
            middle_env,
            &sample("window-2-middle.json").to_string(),
            None,
        )
        .await
        .unwrap();
        assert_eq!(middle.stats.files, 0, "nothing written early ({same_env})");
        let fin = invocation::handle(middle_env, &sample("window-3-final.json").to_string(), None)
            .await
            .unwrap();
        assert_eq!(fin.response, json!({"state": {}, "batchItemFailures": []}));
        assert!(
            fin.stats.rows_written > 0,
            "the middle batch's rows ({same_env})"
        );
        assert_sample_window_once(dir.path(), rows);

        // The final invocation again (a retry after success): nothing more.
        assert_a_final_invocation_writes_nothing(dir.path()).await;
    }
}

/// Every row of the sample window's first two batches is in the lake at
/// `dir` exactly once (the independent checker over their records).
fn assert_sample_window_once(dir: &std::path::Path, rows: u64) {
    let events: Vec<std::path::PathBuf> = ["window-1-first.json", "window-2-middle.json"]
        .iter()
        .map(|f| repo().join("events").join(f))
        .collect();
    let location = vec!["--dir".to_string(), dir.display().to_string()];
    let check = check_lake(&location, &["--expect-rows", &rows.to_string()], &events);
    assert!(check.ok, "{}", check.summary);
}

/// What `{"sweep_windows": true}` answers.
async fn sweep(p: &Pipeline<LocalDirSink>) -> Value {
    invocation::handle(p, &sample("sweep-windows.json").to_string(), None)
        .await
        .unwrap()
        .response
}

#[tokio::test]
async fn the_sweep_finds_the_windows_no_final_invocation_wrote() {
    let dir = tempfile::tempdir().unwrap();
    let env = pipeline(dir.path(), &[]);
    assert_eq!(sweep(&env).await["open"], json!([]), "an empty lake");
    for name in ["window-1-first.json", "window-2-middle.json"] {
        invocation::handle(&env, &sample(name).to_string(), None)
            .await
            .unwrap();
    }
    let report = sweep(&env).await;
    let open = report["open"].as_array().unwrap();
    assert_eq!(open.len(), 1, "{report}");
    let window_dir = open[0]["dir"].as_str().unwrap();
    assert!(window_dir.starts_with("_spool/dms-cdc-"), "{window_dir}");
    // The sample window started in 2026-03: months, not seconds.
    assert!(
        open[0]["age_seconds"].as_u64().unwrap() > 86_400,
        "{report}"
    );

    // Its final invocation writes it, with the index key beside it.
    invocation::handle(&env, &sample("window-3-final.json").to_string(), None)
        .await
        .unwrap();
    let index = dir.path().join(format!(
        "cdc-data/{}.done",
        window_dir.trim_end_matches('/')
    ));
    assert!(index.exists(), "{}", index.display());
    let report = sweep(&env).await;
    assert_eq!(report["open"], json!([]), "{report}");
    assert_eq!(report["indexed"], 0, "{report}");

    // A window written before the index existed: looked up by its
    // `_done.json`, not reported, and indexed for the next sweep.
    std::fs::remove_file(&index).unwrap();
    let report = sweep(&env).await;
    assert_eq!(report["open"], json!([]), "{report}");
    assert_eq!(report["indexed"], 1, "{report}");
    assert!(index.exists());
}
