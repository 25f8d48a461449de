//! What one invocation did, counted: the metrics' source, summed by
//! `replay` and reported by the commands.

use std::sync::Arc;

use serde::Serialize;

/// Counters for one invocation (or, summed, for a replay).
#[derive(Debug, Default, Clone, Serialize, PartialEq, Eq)]
pub struct Stats {
    /// Kinesis records received.
    pub records: u64,
    /// Rows buffered from them.
    pub rows: u64,
    /// Records skipped because this container already holds or wrote them.
    pub duplicates: u64,
    pub control_records: u64,
    pub quarantined: u64,
    /// Records not looked at because the invocation ran out of time.
    pub deferred: u64,
    /// Parquet files written (or found already written).
    pub files: u64,
    pub rows_written: u64,
    pub bytes_written: u64,
    /// Files that could not be written; their rows stay buffered.
    pub failed_files: u64,
    pub failed_rows: u64,
    /// Columns whose registered type changed (files before and after differ).
    pub column_type_changes: u64,
    /// BIGINTs DMS sent in scientific notation (digits lost upstream).
    pub inexact_integers: u64,
    /// Values kept as text in `_rescued` (they did not fit their column).
    pub rescued_values: u64,
    /// Data records of DMS's own tables (`awsdms_*`), skipped.
    pub dms_table_records: u64,
    /// Records written to a window's spool.
    pub spooled: u64,
    /// Tumbling windows whose files were all written.
    pub windows_written: u64,
    /// Streams whose heartbeat could not be sent (a force flush).
    pub heartbeat_failures: u64,
    /// Window invocations of a stream `HEARTBEAT_STREAMS` does not list: its
    /// quiet shards' windows get no heartbeat.
    pub windows_without_heartbeat: u64,
    /// Glue tables and latest-state views created or replaced.
    pub catalog_updates: u64,
    /// Tables whose catalog entry could not be brought to their schema
    /// version (tried again at the next invocation).
    pub catalog_failures: u64,
    /// Parts of a window closed early to keep it under `MAX_BUFFERED_BYTES`.
    pub budget_cuts: u64,
    /// Ranges of acknowledged records gone from the spool and the stream
    /// (recorded under `_errors/lost/`).
    pub lost_ranges: u64,
    /// How long ago the oldest window this invocation took further, and
    /// that holds spooled records, started (ms; the maximum, not a sum).
    pub open_window_age_ms: u64,
    /// The stream (ARN) the batch came from: the metrics' `Stream` dimension.
    #[serde(skip)]
    pub stream: Option<Arc<str>>,
    /// Per table (`schema.table`): what was written (`METRICS_PER_TABLE`).
    #[serde(skip)]
    pub tables: std::collections::BTreeMap<String, TableCounts>,
}

/// One table's share of an invocation's [`Stats`].
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct TableCounts {
    pub files: u64,
    pub rows_written: u64,
    pub rescued_values: u64,
}

impl Stats {
    pub fn add(&mut self, o: &Stats) {
        self.records += o.records;
        self.rows += o.rows;
        self.duplicates += o.duplicates;
        self.control_records += o.control_records;
        self.quarantined += o.quarantined;
        self.deferred += o.deferred;
        self.files += o.files;
        self.rows_written += o.rows_written;
        self.bytes_written += o.bytes_written;
        self.failed_files += o.failed_files;
        self.failed_rows += o.failed_rows;
        self.column_type_changes += o.column_type_changes;
        self.inexact_integers += o.inexact_integers;
        self.rescued_values += o.rescued_values;
        self.dms_table_records += o.dms_table_records;
        self.spooled += o.spooled;
        self.windows_written += o.windows_written;
        self.heartbeat_failures += o.heartbeat_failures;
        self.windows_without_heartbeat += o.windows_without_heartbeat;
        self.catalog_updates += o.catalog_updates;
        self.catalog_failures += o.catalog_failures;
        self.budget_cuts += o.budget_cuts;
        self.lost_ranges += o.lost_ranges;
        self.open_window_age_ms = self.open_window_age_ms.max(o.open_window_age_ms);
        if self.stream.is_none() {
            self.stream.clone_from(&o.stream);
        }
        for (table, c) in &o.tables {
            let mine = self.tables.entry(table.clone()).or_default();
            mine.files += c.files;
            mine.rows_written += c.rows_written;
            mine.rescued_values += c.rescued_values;
        }
    }
}
