//! Typed, stable Parquet and a lake that reproduces the source: the corpus
//! replayed with thresholds small enough to cut many files, read back with
//! pyarrow (types per column per file) and DuckDB (the latest-state SQL that
//! `cdc-batcher ddl` prints, compared with `expected_final_state.json`).

use std::path::{Path, PathBuf};

use crate::common::*;

/// Small enough that every table is cut into several files.
fn small_files() -> Vec<(&'static str, String)> {
    vec![
        ("BATCH_MAX_RECORDS_THRESHOLD", "5".to_string()),
        ("BATCH_MAX_AGE_SECONDS", "0".to_string()),
    ]
}

fn basic_events() -> Vec<PathBuf> {
    event_files(&corpus().join("events/basic"))
}

/// `ddl --dialect duckdb` for the lake in `dir`, written to a file.
fn duckdb_sql(dir: &Path) -> PathBuf {
    let (sql, ok) = ddl(
        &[],
        &["--lake", dir.to_str().unwrap(), "--dialect", "duckdb"],
    );
    assert!(ok, "ddl failed");
    let path = dir.join("latest.sql");
    std::fs::write(&path, sql).unwrap();
    path
}

fn check_everything(dir: &Path, events: &[PathBuf]) {
    let lake = check_lake(
        &["--dir".to_string(), dir.to_str().unwrap().to_string()],
        &["--expect-rows", "213"],
        events,
    );
    assert!(lake.ok, "{}", lake.summary);
    let sql = duckdb_sql(dir);
    let messages = corpus().join("dms_messages.jsonl");
    let check = check_schema(
        dir,
        &[
            "--sql",
            sql.to_str().unwrap(),
            "--messages",
            messages.to_str().unwrap(),
        ],
    );
    assert!(check.ok, "{}", check.summary);
    // Five tables, each cut into several files.
    let tables = check.summary["tables"].as_object().unwrap();
    assert_eq!(tables.len(), 5, "{}", check.summary);
    for (name, t) in tables {
        assert!(t["files"].as_u64().unwrap() >= 2, "{name}: {t}");
    }
}

#[test]
fn corpus_files_keep_their_types_and_the_latest_state_equals_the_source() {
    let dir = tempfile::tempdir().unwrap();
    let events = basic_events();
    let (summary, ok) = replay(&small_files(), dir.path().to_str().unwrap(), &events);
    assert!(ok, "{summary}");
    assert_eq!(summary["rows_written"], 213);
    // NUMERIC(13,2) → (16,4) and INT32 → INT64 in the corpus change no file type.
    assert_eq!(summary["column_type_changes"], 0, "{summary}");
    // The two BIGINTs DMS sent in scientific notation are counted.
    assert_eq!(summary["inexact_integers"], 2, "{summary}");
    check_everything(dir.path(), &events);
}

#[test]
fn tumbling_windows_reproduce_the_source_too() {
    // The corpus delivered as a window event source would: spooled batch by
    // batch, written by each window's final invocation.
    let dir = tempfile::tempdir().unwrap();
    let events = basic_events();
    let (summary, ok) = replay_with(
        &small_files(),
        &["--window", "60"],
        dir.path().to_str().unwrap(),
        &events,
    );
    assert!(ok, "{summary}");
    assert_eq!(summary["rows_written"], 213, "{summary}");
    assert!(
        summary["windows_written"].as_u64().unwrap() >= 2,
        "{summary}"
    );
    assert_eq!(summary["spooled"], summary["records"], "{summary}");
    check_everything(dir.path(), &events);
}

#[test]
fn a_second_container_writes_the_types_the_first_registered() {
    // The second process never sees the create-table records: it reads the
    // types from the registry the first one stored next to the data.
    let dir = tempfile::tempdir().unwrap();
    let events = basic_events();
    let (first, second) = events.split_at(events.len() / 2);
    for half in [first, second] {
        let (summary, ok) = replay(&small_files(), dir.path().to_str().unwrap(), half);
        assert!(ok, "{summary}");
    }
    check_everything(dir.path(), &events);
}

#[test]
fn overrides_win_and_values_that_do_not_fit_are_rescued_without_being_logged() {
    let dir = tempfile::tempdir().unwrap();
    let mut env = small_files();
    env.push((
        "COLUMN_TYPES",
        r#"{"sales.client.is_key_account":"boolean","sales.client.legal_name":"bigint"}"#
            .to_string(),
    ));
    let events = basic_events();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .arg("replay")
        .arg("--output")
        .arg(dir.path())
        .args(&events)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_LEVEL", "trace")
        .output()
        .unwrap();
    assert!(out.status.success());
    let summary: serde_json::Value =
        serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    assert_eq!(summary["column_type_changes"], 0, "{summary}");
    let rescued = summary["rescued_values"].as_u64().unwrap();
    assert!(rescued > 0, "{summary}");
    assert!(
        log.contains("kept as text in _rescued") && log.contains("legal_name"),
        "{log}"
    );
    // The row checker compares each rescued text with the source value exactly
    // (and the column's NULL); the schema checker finds one type per column,
    // the registered one, in every file.
    let lake = check_lake(
        &[
            "--dir".to_string(),
            dir.path().to_str().unwrap().to_string(),
        ],
        &["--expect-rows", "213"],
        &events,
    );
    assert!(lake.ok, "{}", lake.summary);
    let check = check_schema(dir.path(), &[]);
    assert!(check.ok, "{}", check.summary);
    let names = python_stdout(
        r#"
import sys, glob, json, pyarrow.parquet as pq
seen, texts = {}, []
for f in glob.glob(sys.argv[1] + "/cdc-data/sales/client/**/*.parquet", recursive=True):
    t = pq.read_table(f)
    for c in ("is_key_account", "legal_name"):
        seen.setdefault(c, set()).add(str(t.schema.field(c).type))
    texts += [json.loads(r)["legal_name"] for r in t.column("_rescued").to_pylist() if r]
print(json.dumps({"types": {k: sorted(v) for k, v in seen.items()}, "texts": texts}))
"#,
        &[dir.path().to_str().unwrap()],
    );
    let names: serde_json::Value = serde_json::from_str(&names).unwrap();
    assert_eq!(
        names["types"],
        serde_json::json!({"is_key_account": ["bool"], "legal_name": ["int64"]})
    );
    let texts = names["texts"].as_array().unwrap();
    assert_eq!(texts.len() as u64, rescued);
    // No rescued value appears in the log, at any level.
    for t in texts {
        let t = t.as_str().unwrap();
        assert!(!log.contains(t), "the log holds the value {t:?}");
    }
    let registry = std::fs::read_dir(dir.path().join("cdc-data/_schemas/sales/client"))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    let stored: serde_json::Value =
        serde_json::from_slice(&std::fs::read(registry).unwrap()).unwrap();
    let col = |name: &str| {
        stored["columns"]
            .as_array()
            .unwrap()
            .iter()
            .find(|c| c["name"] == name)
            .cloned()
            .unwrap()
    };
    assert_eq!(col("is_key_account")["type"], "boolean");
    assert_eq!(col("is_key_account")["origin"], "override");
    assert_eq!(col("legal_name")["type"], "bigint");
    assert_eq!(col("legal_name")["origin"], "override");
    assert_eq!(col("credit_limit")["type"], "decimal(38,6)");
}

#[test]
fn athena_ddl_comes_from_the_registry_in_s3() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    rt.block_on(create_bucket(&s3_client(&moto.endpoint())));
    let mut env = s3_env(&moto.endpoint());
    env.push(("PARTITION_STYLE", "hive".to_string()));
    let output = format!("s3://{BUCKET}/typed/");
    let (summary, ok) = replay(&env, &output, &basic_events());
    assert!(ok, "{summary}");
    let (sql, ok) = ddl(&env, &["--lake", &output, "--database", "lake"]);
    assert!(ok);
    for table in [
        "sales__client",
        "sales__sales_order",
        "sales__order_item",
        "sales__promo_staging",
        "hr__employees",
    ] {
        assert!(
            sql.contains(&format!(
                "CREATE EXTERNAL TABLE IF NOT EXISTS `lake`.`{table}`"
            )),
            "{table}: {sql}"
        );
        assert!(sql.contains(&format!(
            "CREATE OR REPLACE VIEW \"lake\".\"{table}__latest\""
        )));
    }
    assert!(sql.contains(&format!("LOCATION 's3://{BUCKET}/typed/sales/client/'")));
    assert!(sql.contains("`credit_limit` decimal(38,6)"));
    assert!(sql.contains("`signed_up_at` timestamp"));
    assert!(sql.contains("`attachment_md5` binary"));
    assert!(sql.contains("`promised_date` date"));
    assert!(sql.contains("'projection.hour.range' = '0,23'"));
    // The dropped table's view hides the rows from before the drop.
    assert!(sql.contains(
        "WHERE \"_dms_timestamp\" > from_iso8601_timestamp('2026-03-14T02:05:11.421562Z')"
    ));
}

#[test]
fn ddl_on_a_lake_without_a_registry_fails_and_says_why() {
    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .args(["ddl", "--lake", dir.path().to_str().unwrap()])
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(1));
    assert!(String::from_utf8_lossy(&out.stderr).contains("no table schema found"));
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .args(["ddl", "--lake", "x", "--dialect", "oracle"])
        .output()
        .unwrap();
    assert_eq!(bad.status.code(), Some(2));
}
