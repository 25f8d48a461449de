//! No row value reaches a log line, at any level: every event set of the
//! developer corpus (good rows, DDL, malformed records) and the sample
//! events go through `replay` at `LOG_LEVEL=trace`, with column types that
//! force values into `_rescued`, and the log is searched for every value of
//! every row (data and before image). Values that are also names the logs
//! may print (schemas, tables, columns, operations) or that also appear in
//! a record's metadata are not searched for.

use std::collections::BTreeSet;

use crate::common::*;
use base64::Engine as _;
use serde_json::Value;

/// Every scalar value under `v`, as the text a log line would show.
fn values(v: &Value, out: &mut BTreeSet<String>) {
    match v {
        Value::String(s) => {
            out.insert(s.clone());
            // JSON columns hold JSON text: its own values too.
            if let Ok(inner @ (Value::Object(_) | Value::Array(_))) = serde_json::from_str(s) {
                values(&inner, out);
            }
        }
        Value::Number(n) => {
            out.insert(n.to_string());
        }
        Value::Array(a) => a.iter().for_each(|x| values(x, out)),
        Value::Object(o) => o.values().for_each(|x| values(x, out)),
        Value::Bool(_) | Value::Null => {}
    }
}

fn names(v: &Value, out: &mut BTreeSet<String>) {
    if let Value::Object(o) = v {
        for (k, x) in o {
            out.insert(k.to_lowercase());
            out.insert(k.clone());
            names(x, out);
        }
    }
}

/// `value` occurs in `log` as a whole token (a number inside a sequence
/// number or a file key is not that value).
fn appears(log: &str, value: &str) -> bool {
    let alnum = |c: Option<char>| c.is_some_and(|c| c.is_alphanumeric());
    log.match_indices(value).any(|(i, _)| {
        !alnum(log[..i].chars().next_back()) && !alnum(log[i + value.len()..].chars().next())
    })
}

#[test]
fn no_row_value_is_logged_at_any_level() {
    let mut files = Vec::new();
    for set in ["basic", "mixed-bad", "bad-base64", "tabbed", "three-shards"] {
        files.extend(event_files(&corpus().join("events").join(set)));
    }
    let (mut row_values, mut allowed) = (BTreeSet::new(), BTreeSet::new());
    for f in &files {
        let event: Value = serde_json::from_slice(&std::fs::read(f).unwrap()).unwrap();
        for r in event["Records"].as_array().unwrap() {
            let data = r["kinesis"]["data"].as_str().unwrap_or("");
            let Ok(bytes) = base64::engine::general_purpose::STANDARD.decode(data) else {
                continue;
            };
            let Ok(msg) = serde_json::from_slice::<Value>(&bytes) else {
                continue;
            };
            for field in ["data", "before-image", "BI"] {
                values(&msg[field], &mut row_values);
            }
            names(&msg, &mut allowed);
            values(&msg["metadata"], &mut allowed);
            values(&msg["control"], &mut allowed);
        }
    }
    // Short values ("1", "t", "x") match anywhere by chance.
    let searched: Vec<&String> = row_values
        .iter()
        .filter(|v| v.chars().count() >= 4 && !allowed.contains(*v))
        .collect();
    assert!(searched.len() > 100, "{}", searched.len());

    let dir = tempfile::tempdir().unwrap();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .arg("replay")
        .arg("--output")
        .arg(dir.path())
        .args(&files)
        .env("LOG_LEVEL", "trace")
        // Text where numbers, dates and booleans are declared: rescues.
        .env(
            "COLUMN_TYPES",
            r#"{"sales.client.legal_name":"bigint","hr.employees.first_name":"date","sales.client.is_key_account":"boolean"}"#,
        )
        .env("BATCH_MAX_RECORDS_THRESHOLD", "5")
        .output()
        .unwrap();
    let log = String::from_utf8_lossy(&out.stderr);
    let summary: Value = serde_json::from_str(String::from_utf8_lossy(&out.stdout).trim()).unwrap();
    assert!(summary["rescued_values"].as_u64().unwrap() > 0, "{summary}");
    assert!(summary["quarantined"].as_u64().unwrap() > 0, "{summary}");
    assert!(log.lines().count() > 100, "trace logging is on");
    let leaked: Vec<&&String> = searched.iter().filter(|v| appears(&log, v)).collect();
    assert!(leaked.is_empty(), "row values in the log: {leaked:?}");
}
