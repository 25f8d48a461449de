//! The binary end to end: `cdc-batcher replay` over the developer corpus and
//! the sample events into a real S3 server (moto) and a local directory, read
//! back by the independent pyarrow checker; and start-up configuration errors.

use std::path::PathBuf;
use std::process::Command;

use crate::common::*;

const SETS: [(&str, u64); 6] = [
    ("basic", 213),
    ("three-shards", 213),
    ("bad-base64", 213),
    ("mixed-bad", 213),
    ("tabbed", 213),
    ("bad-only", 0),
];

#[test]
fn every_corpus_event_set_lands_exactly_once_in_s3() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_bucket(&s3_client(&moto.endpoint())));
    for (set, rows) in SETS {
        let events = event_files(&corpus().join("events").join(set));
        let output = format!("s3://{BUCKET}/{set}/");
        let (summary, ok) = replay(&s3_env(&moto.endpoint()), &output, &events);
        assert!(ok, "{set}: {summary}");
        assert_eq!(summary["rows"], rows, "{set}: {summary}");
        assert_eq!(summary["rows_written"], rows, "{set}: {summary}");
        assert_eq!(summary["buffered_rows"], 0);
        for field in ["files", "bytes_written", "seconds"] {
            assert!(summary[field].is_number(), "{field} missing: {summary}");
        }
        let prefix = format!("{set}/");
        let check = check_lake(
            &s3_location(&moto.endpoint()),
            &["--prefix", &prefix, "--expect-rows", &rows.to_string()],
            &events,
        );
        assert!(check.ok, "{set}: {}", check.summary);
        // Spread over three shards, some rows reach the function before their
        // table's create-table record: those files keep the inferred types,
        // and `ddl --check` lists exactly them for a rewrite.
        let needs_rewrite = check.summary["needs_rewrite"].as_u64().unwrap();
        if rows == 0 {
            continue; // no table, no registry
        }
        let (listed, ok) = ddl(&s3_env(&moto.endpoint()), &["--lake", &output, "--check"]);
        let mut files: Vec<&str> = listed
            .lines()
            .filter_map(|l| l.split('\t').next())
            .collect();
        files.dedup();
        assert_eq!(files.len() as u64, needs_rewrite, "{set}: {listed}");
        assert_eq!(ok, needs_rewrite == 0, "{set}");
        assert_eq!(
            needs_rewrite > 0,
            set == "three-shards",
            "{set}: {}",
            check.summary
        );
    }
}

#[test]
fn sample_events_replay_into_a_local_directory_and_the_checker_notices_a_lost_file() {
    let dir = tempfile::tempdir().unwrap();
    let events: Vec<PathBuf> = [
        "kinesis-1-load.json",
        "kinesis-2-cdc.json",
        "kinesis-3-malformed.json",
    ]
    .iter()
    .map(|f| repo().join("events").join(f))
    .collect();
    let mut with_flush = events.clone();
    with_flush.push(repo().join("events/scheduler-default.json"));
    let (summary, ok) = replay(&[], dir.path().to_str().unwrap(), &with_flush);
    assert!(ok, "{summary}");
    assert_eq!(summary["quarantined"], 4, "{summary}");
    let location = vec!["--dir".to_string(), dir.path().display().to_string()];
    let check = check_lake(&location, &["--expect-rows", "20"], &events);
    assert!(check.ok, "{}", check.summary);
    // What the quick start shows of it: each table as it is now.
    let shown = Command::new(python())
        .arg(repo().join("scripts/show_lake.py"))
        .args(["--dir", dir.path().to_str().unwrap(), "--cdc-batcher"])
        .arg(env!("CARGO_BIN_EXE_cdc-batcher"))
        .output()
        .unwrap();
    let text = String::from_utf8_lossy(&shown.stdout);
    assert!(
        shown.status.success(),
        "{text}{}",
        String::from_utf8_lossy(&shown.stderr)
    );
    for view in [
        "sales__client__latest): 9 rows",
        "hr__employees__latest): 5 rows",
    ] {
        assert!(text.contains(view), "{view}: {text}");
    }
    assert!(text.contains("Quarantined: 4 records"), "{text}");

    // The checker is not a rubber stamp: remove one file and it must object.
    let victim = walk(dir.path())
        .into_iter()
        .find(|p| p.extension().is_some_and(|e| e == "parquet"))
        .unwrap();
    std::fs::remove_file(victim).unwrap();
    let check = check_lake(&location, &[], &events);
    assert!(!check.ok, "{}", check.summary);
    assert!(check.summary["problems"]
        .to_string()
        .contains("not in the lake"));
}

#[test]
fn replaying_the_same_events_again_writes_no_new_object() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(&moto.endpoint());
    rt.block_on(create_bucket(&client));
    let events = event_files(&corpus().join("events/basic"));
    let output = format!("s3://{BUCKET}/lake/");
    let env = s3_env(&moto.endpoint());
    let (first, ok) = replay(&env, &output, &events);
    assert!(ok, "{first}");
    let keys_after_first = list_keys(&rt, &client);
    let (second, ok) = replay(&env, &output, &events);
    assert!(ok, "{second}");
    assert_eq!(list_keys(&rt, &client), keys_after_first);
    assert_eq!(first["files"], second["files"]);
    let check = check_lake(
        &s3_location(&moto.endpoint()),
        &["--prefix", "lake/", "--expect-rows", "213"],
        &events,
    );
    assert!(check.ok, "{}", check.summary);
}

#[test]
fn hive_partitions_and_a_custom_prefix() {
    let dir = tempfile::tempdir().unwrap();
    let events = event_files(&corpus().join("events/basic"));
    let env = vec![
        ("PARTITION_STYLE", "hive".to_string()),
        ("S3_PREFIX", "raw/dms".to_string()),
    ];
    let (summary, ok) = replay(&env, dir.path().to_str().unwrap(), &events);
    assert!(ok, "{summary}");
    let keys: Vec<String> = walk(dir.path())
        .iter()
        .map(|p| p.strip_prefix(dir.path()).unwrap().display().to_string())
        .collect();
    assert!(keys
        .iter()
        .any(|k| k.starts_with("raw/dms/hr/employees/year=2026/month=03/day=14/hour=01/")));
    let location = vec!["--dir".to_string(), dir.path().display().to_string()];
    let check = check_lake(
        &location,
        &["--prefix", "raw/dms/", "--expect-rows", "213"],
        &events,
    );
    assert!(check.ok, "{}", check.summary);
}

#[test]
fn an_unrecognised_event_is_reported_not_a_crash() {
    let dir = tempfile::tempdir().unwrap();
    let bogus = dir.path().join("bogus.json");
    std::fs::write(
        &bogus,
        r#"{"Records":[{"eventSource":"aws:sqs","body":"x"}]}"#,
    )
    .unwrap();
    // Files are read into one reused buffer: a bad one must not leak into
    // the next.
    let latin1 = dir.path().join("latin1.json");
    std::fs::write(&latin1, b"{\"force_flush\": \"caf\xe9\"}").unwrap();
    let missing = dir.path().join("missing.json");
    let out_dir = dir.path().join("out");
    let (summary, ok) = replay(&[], out_dir.to_str().unwrap(), &[bogus, latin1, missing]);
    assert!(!ok);
    let errors: Vec<String> = summary["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e.as_str().unwrap().to_string())
        .collect();
    assert_eq!(errors.len(), 3, "{summary}");
    assert!(errors[0].contains("aws:sqs"), "{summary}");
    assert!(errors[1].contains("latin1.json: not UTF-8"), "{summary}");
    assert!(errors[2].contains("missing.json"), "{summary}");
}

#[test]
fn bad_configuration_stops_start_up_naming_the_variable() {
    let cases: [(&[(&str, &str)], &str); 4] = [
        (&[], "S3_BUCKET_NAME"),
        (
            &[
                ("S3_BUCKET_NAME", "lake"),
                ("BATCH_MAX_RECORDS_THRESHOLD", "lots"),
            ],
            "BATCH_MAX_RECORDS_THRESHOLD",
        ),
        (
            &[("S3_BUCKET_NAME", "lake"), ("PARTITION_STYLE", "daily")],
            "PARTITION_STYLE",
        ),
        (
            &[("S3_BUCKET_NAME", "lake"), ("LOG_LEVEL", "loud")],
            "LOG_LEVEL",
        ),
    ];
    for (env, var) in cases {
        let out = Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
            .env_clear()
            .envs(env.iter().copied())
            .output()
            .unwrap();
        assert!(!out.status.success(), "{var}: started anyway");
        let stderr = String::from_utf8_lossy(&out.stderr);
        assert!(stderr.contains(var), "{var}: {stderr}");
    }
}

fn walk(dir: &std::path::Path) -> Vec<PathBuf> {
    let mut out = Vec::new();
    for entry in std::fs::read_dir(dir).unwrap() {
        let p = entry.unwrap().path();
        if p.is_dir() {
            out.extend(walk(&p));
        } else {
            out.push(p);
        }
    }
    out.sort();
    out
}

fn list_keys(rt: &tokio::runtime::Runtime, client: &aws_sdk_s3::Client) -> Vec<String> {
    rt.block_on(async {
        let mut keys = Vec::new();
        let mut pages = client
            .list_objects_v2()
            .bucket(BUCKET)
            .into_paginator()
            .send();
        while let Some(page) = pages.next().await {
            for o in page.unwrap().contents() {
                keys.push(o.key().unwrap().to_string());
            }
        }
        keys.sort();
        keys
    })
}

#[test]
fn the_same_events_twice_and_overlapping_batches_give_no_duplicate_rows() {
    let dir = tempfile::tempdir().unwrap();
    let events = event_files(&corpus().join("events/mixed-bad"));
    // Every record of the set, then windows that overlap by 15 records.
    let mut records = Vec::new();
    for f in &events {
        let ev: serde_json::Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        records.extend(ev["Records"].as_array().unwrap().iter().cloned());
    }
    let mut overlapping = Vec::new();
    let mut start = 0;
    while start < records.len() {
        let end = (start + 30).min(records.len());
        let path = dir.path().join(format!("window-{start:04}.json"));
        let body = serde_json::json!({ "Records": records[start..end] });
        std::fs::write(&path, body.to_string()).unwrap();
        overlapping.push(path);
        start += 15;
    }
    let mut inputs = events.clone();
    inputs.extend(events.iter().cloned());
    inputs.extend(overlapping);

    let out = dir.path().join("lake");
    let (summary, ok) = replay(&[], out.to_str().unwrap(), &inputs);
    assert!(ok, "{summary}");
    assert_eq!(summary["rows"], 213, "{summary}");
    assert!(summary["duplicates"].as_u64().unwrap() >= 241, "{summary}");
    let location = vec!["--dir".to_string(), out.display().to_string()];
    let check = check_lake(&location, &["--expect-rows", "213"], &events);
    assert!(check.ok, "{}", check.summary);
    assert_eq!(check.summary["quarantined"], 15);
}

/// A DMS insert into `schema.table` committed at `commit`.
fn insert(schema: &str, table: &str, commit: &str, id: u64) -> serde_json::Value {
    serde_json::json!({"data": {"id": id}, "metadata": {
        "timestamp": "2026-03-14T01:30:00.000000Z", "commit-timestamp": commit,
        "record-type": "data", "operation": "insert", "partition-key-type": "schema-table",
        "schema-name": schema, "table-name": table, "transaction-id": id}})
}

#[test]
fn names_and_commit_times_that_could_escape_the_lake_stay_in_it() {
    let dir = tempfile::tempdir().unwrap();
    // Longer than a data key's 150-byte segments, short enough for a local
    // file system's 255-byte names (the registry keeps names whole).
    let long = "t".repeat(250);
    let messages = vec![
        // Schemas named like the function's own prefixes: `_spool/` and
        // `_athena/` are emptied by lifecycle rules, `_errors/` and
        // `_schemas/` are the quarantine and the registry.
        insert("_spool", "orders", "2026-03-14T01:30:00Z", 1),
        insert("_athena", "orders", "2026-03-14T01:30:00Z", 2),
        insert("_errors", "orders", "2026-03-14T01:30:00Z", 3),
        insert("_schemas", "orders", "2026-03-14T01:30:00Z", 4),
        // Names shortened in data keys (two that differ only past the cut).
        insert(&"s".repeat(200), &long, "2026-03-14T01:30:00Z", 5),
        insert(
            &"s".repeat(200),
            &format!("{long}x"),
            "2026-03-14T01:30:00Z",
            6,
        ),
        // Commit times partition projection never shows.
        insert("sales", "orders", "9999-12-31T23:59:59Z", 7),
        insert("sales", "orders", "0001-01-01T00:00:00Z", 8),
        insert("sales", "orders", "2026-03-14T01:30:00Z", 9),
    ];
    let event = dir.path().join("event.json");
    std::fs::write(&event, kinesis_event(0, &mut 0, &messages)).unwrap();
    let out = dir.path().join("lake");
    let (summary, ok) = replay(&[], out.to_str().unwrap(), std::slice::from_ref(&event));
    assert!(ok, "{summary}");
    assert_eq!(summary["rows"], 9, "{summary}");
    let root = out.join("cdc-data");
    let keys: Vec<String> = walk(&root)
        .iter()
        .filter(|p| p.extension().is_some_and(|e| e == "parquet"))
        .map(|p| p.strip_prefix(&root).unwrap().display().to_string())
        .collect();
    assert_eq!(keys.len(), 7, "{keys:?}");
    for key in &keys {
        assert!(
            !key.starts_with('_'),
            "a data file under an own prefix: {key}"
        );
        assert!(key.len() + "cdc-data/".len() <= 1024, "{key}");
    }
    for own in ["spool", "athena", "errors", "schemas"] {
        assert!(
            keys.iter()
                .any(|k| k.starts_with(&format!("%5F{own}/orders/"))),
            "{keys:?}"
        );
    }
    // Rows stamped in year 1 and 9999 are in the hour their record arrived
    // (2026-03-14 01:00), beside the ordinary one.
    let orders: Vec<&String> = keys
        .iter()
        .filter(|k| k.starts_with("sales/orders/"))
        .collect();
    assert_eq!(orders.len(), 1, "{keys:?}");
    assert!(
        orders[0].starts_with("sales/orders/2026/03/14/01/"),
        "{keys:?}"
    );
    // The independent checker agrees: every row once, where the rules put it,
    // with the registry's types.
    let location = vec!["--dir".to_string(), out.display().to_string()];
    let check = check_lake(&location, &["--expect-rows", "9"], &[event]);
    assert!(check.ok, "{}", check.summary);
}
