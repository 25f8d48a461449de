//! CloudWatch metrics as Embedded Metric Format log lines: one JSON object on
//! stdout per invocation, which CloudWatch Logs turns into metrics without a
//! client or an extra API call.

use serde_json::json;

use crate::app::stats::Stats;

/// The CloudWatch namespace of every metric.
pub const NAMESPACE: &str = "cdc-batcher";

/// The EMF document for one invocation.
pub fn document(
    stats: &Stats,
    buffered_bytes: usize,
    oldest_age_us: i64,
    now_ms: i64,
) -> serde_json::Value {
    let count = |name: &str| json!({"Name": name, "Unit": "Count"});
    // Every metric once for the stack and, when the batch names its stream,
    // once per stream (a second series; streams are few). No per-table series.
    let stream = stats.stream.as_deref().map(stream_name);
    let dimensions = match stream {
        Some(_) => json!([[], ["Stream"]]),
        None => json!([[]]),
    };
    let mut doc = json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": dimensions,
                "Metrics": [
                    count("RecordsIn"), count("RowsIn"), count("DuplicateRecords"),
                    count("QuarantinedRecords"), count("DeferredRecords"), count("FilesWritten"),
                    count("RowsWritten"), {"Name": "BytesWritten", "Unit": "Bytes"},
                    count("FlushFailures"), {"Name": "BufferedBytes", "Unit": "Bytes"},
                    {"Name": "OldestBufferedRowAge", "Unit": "Milliseconds"},
                    count("ColumnTypeChanges"), count("InexactIntegers"),
                    count("SpooledRecords"), count("WindowsWritten"), count("HeartbeatFailures"),
                    count("WindowsWithoutHeartbeat"), count("RescuedValues"), count("DmsTableRecords"),
                    count("CatalogUpdates"), count("CatalogFailures"), count("LostRanges"),
                    {"Name": "OpenWindowAge", "Unit": "Milliseconds"},
                ],
            }],
        },
        "RecordsIn": stats.records,
        "RowsIn": stats.rows,
        "DuplicateRecords": stats.duplicates,
        "QuarantinedRecords": stats.quarantined,
        "DeferredRecords": stats.deferred,
        "FilesWritten": stats.files,
        "RowsWritten": stats.rows_written,
        "BytesWritten": stats.bytes_written,
        "FlushFailures": stats.failed_files,
        "BufferedBytes": buffered_bytes,
        "OldestBufferedRowAge": oldest_age_us / 1000,
        "ColumnTypeChanges": stats.column_type_changes,
        "InexactIntegers": stats.inexact_integers,
        "SpooledRecords": stats.spooled,
        "WindowsWritten": stats.windows_written,
        "HeartbeatFailures": stats.heartbeat_failures,
        "WindowsWithoutHeartbeat": stats.windows_without_heartbeat,
        "RescuedValues": stats.rescued_values,
        "DmsTableRecords": stats.dms_table_records,
        "CatalogUpdates": stats.catalog_updates,
        "CatalogFailures": stats.catalog_failures,
        "LostRanges": stats.lost_ranges,
        "OpenWindowAge": stats.open_window_age_ms,
    });
    if let Some(name) = stream {
        doc["Stream"] = json!(name);
    }
    doc
}

/// `dms-cdc` of `arn:aws:kinesis:REGION:ACCOUNT:stream/dms-cdc`.
fn stream_name(arn: &str) -> &str {
    arn.rsplit_once(":stream/").map_or(arn, |(_, name)| name)
}

/// One EMF document per table written (`METRICS_PER_TABLE`): files, rows
/// and rescued values under the `Table` dimension (`schema.table`).
pub fn table_documents(stats: &Stats, now_ms: i64) -> Vec<serde_json::Value> {
    stats
        .tables
        .iter()
        .map(|(table, c)| {
            json!({
                "_aws": {
                    "Timestamp": now_ms,
                    "CloudWatchMetrics": [{
                        "Namespace": NAMESPACE,
                        "Dimensions": [["Table"]],
                        "Metrics": [
                            {"Name": "FilesWritten", "Unit": "Count"},
                            {"Name": "RowsWritten", "Unit": "Count"},
                            {"Name": "RescuedValues", "Unit": "Count"},
                        ],
                    }],
                },
                "Table": table,
                "FilesWritten": c.files,
                "RowsWritten": c.rows_written,
                "RescuedValues": c.rescued_values,
            })
        })
        .collect()
}

/// The scheduled sweep's own document: emitted only by a sweep, so a
/// period without one has no data point (not a 0 that would clear the
/// alarm between sweeps).
pub fn sweep_document(
    open_windows: usize,
    oldest_open_age_ms: u64,
    abandoned_written: usize,
    now_ms: i64,
) -> serde_json::Value {
    json!({
        "_aws": {
            "Timestamp": now_ms,
            "CloudWatchMetrics": [{
                "Namespace": NAMESPACE,
                "Dimensions": [[]],
                "Metrics": [
                    {"Name": "OpenWindows", "Unit": "Count"},
                    {"Name": "OldestOpenWindowAge", "Unit": "Milliseconds"},
                    {"Name": "AbandonedWindowsWritten", "Unit": "Count"},
                ],
            }],
        },
        "OpenWindows": open_windows,
        "OldestOpenWindowAge": oldest_open_age_ms,
        "AbandonedWindowsWritten": abandoned_written,
    })
}

/// Prints the EMF lines. Plain stdout, not tracing: EMF must be the whole line.
pub fn emit(stats: &Stats, buffered_bytes: usize, oldest_age_us: i64, per_table: bool) {
    let now_ms = chrono::Utc::now().timestamp_millis();
    println!("{}", document(stats, buffered_bytes, oldest_age_us, now_ms));
    if per_table {
        for doc in table_documents(stats, now_ms) {
            println!("{doc}");
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_sweep_declares_what_it_sends() {
        let doc = sweep_document(2, 7_200_000, 3, 1);
        let declared = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap()
            .iter()
            .map(|m| m["Name"].as_str().unwrap().to_string())
            .collect::<Vec<_>>();
        assert_eq!(
            declared,
            [
                "OpenWindows",
                "OldestOpenWindowAge",
                "AbandonedWindowsWritten"
            ]
        );
        assert_eq!(doc["OpenWindows"], 2);
        assert_eq!(doc["OldestOpenWindowAge"], 7_200_000);
        assert_eq!(doc["AbandonedWindowsWritten"], 3);
    }

    #[test]
    fn every_declared_metric_has_a_value() {
        let stats = Stats {
            records: 3,
            failed_files: 1,
            ..Stats::default()
        };
        let doc = document(&stats, 10, 2500, 1);
        let declared = doc["_aws"]["CloudWatchMetrics"][0]["Metrics"]
            .as_array()
            .unwrap();
        assert_eq!(declared.len(), 23);
        for m in declared {
            let name = m["Name"].as_str().unwrap();
            assert!(doc[name].is_number(), "{name} has no value");
        }
        assert_eq!(doc["RecordsIn"], 3);
        assert_eq!(doc["FlushFailures"], 1);
        assert_eq!(doc["OldestBufferedRowAge"], 2);
        // Without a stream (a force flush) only the stack-wide series.
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[]])
        );
        assert!(doc.get("Stream").is_none());
    }

    #[test]
    fn per_table_documents_carry_the_table_dimension() {
        let mut stats = Stats::default();
        stats.tables.insert(
            "sales.client".into(),
            crate::app::stats::TableCounts {
                files: 2,
                rows_written: 10,
                rescued_values: 1,
            },
        );
        let docs = table_documents(&stats, 1);
        assert_eq!(docs.len(), 1);
        assert_eq!(docs[0]["Table"], "sales.client");
        assert_eq!(docs[0]["RowsWritten"], 10);
        assert_eq!(
            docs[0]["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([["Table"]])
        );
        assert!(table_documents(&Stats::default(), 1).is_empty());
    }

    #[test]
    fn a_batch_is_also_counted_under_its_stream() {
        let stats = Stats {
            records: 2,
            stream: Some("arn:aws:kinesis:us-east-1:123456789012:stream/dms-cdc".into()),
            ..Stats::default()
        };
        let doc = document(&stats, 0, 0, 1);
        assert_eq!(
            doc["_aws"]["CloudWatchMetrics"][0]["Dimensions"],
            json!([[], ["Stream"]])
        );
        assert_eq!(doc["Stream"], "dms-cdc");
    }
}
