//! One invocation, start to end: read the event, decode and buffer records,
//! write what is due, and say which records Kinesis must send again.
//!
//! Knows neither Parquet nor S3 details: `encode` makes the bytes, `layout`
//! the keys, and a [`Sink`] stores them.

use std::sync::Arc;
use std::time::SystemTime;

use aws_lambda_events::streams::KinesisEventResponse;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::app::catalog_upkeep::CatalogUpkeep;
use crate::app::config::Config;
use crate::app::metrics;
use crate::app::part_writer::PartWriter;
use crate::app::stats::Stats;
use crate::edge::glue::Catalog;
use crate::edge::heartbeat::{self, Heartbeat};
use crate::edge::registry::{RegistryError, SchemaCache};
use crate::edge::shard_reader::ShardReader;
use crate::edge::sink::{time_left, Bounded, Sink};
use domain::acknowledgement::Ledger;
use domain::batcher::FlushMode;
use domain::batcher::{Batcher, DueReason, Part};
use domain::delivery::DeliveryLog;
use domain::dms::{self, Message, TableControl};
use domain::event::{self, EventError, KinesisBatch, KinesisRecord};
use domain::layout::{self, Hour};
use domain::names::RecordId;
use domain::quarantine::{self, QuarantineEntry};
use domain::schema::log_changes;
use domain::window::{WindowCache, WindowError, WindowState};

/// Why an invocation failed as a whole (Lambda then retries it with the
/// state it had).
#[derive(Debug, thiserror::Error)]
pub enum HandleError {
    #[error(transparent)]
    Event(#[from] EventError),
    #[error(transparent)]
    State(#[from] WindowError),
    /// A window's final invocation could not write everything (an outage,
    /// never the data): Lambda retries it until it succeeds.
    #[error("window {window} not written: {reason}; the final invocation will be retried")]
    WindowNotWritten { window: String, reason: String },
    /// The scheduled sweep could not list or read the spool.
    #[error("windows not swept: {0}")]
    Sweep(String),
    /// Records could not be made durable and cannot be reported one by one.
    #[error("records not durable: {0}; the batch will be retried")]
    NotDurable(String),
}

/// What an invocation returns.
#[derive(Debug)]
pub struct Outcome {
    /// The Lambda response: `{"batchItemFailures": [...]}` for Kinesis, a
    /// summary for a force flush.
    pub response: Value,
    pub stats: Stats,
    /// The sequence number Kinesis must redeliver from, if any.
    pub redeliver_from: Option<String>,
    /// This was a force flush (not a Kinesis batch).
    pub is_flush: bool,
}

/// The function's state: configuration, the sink and the warm buffers.
pub struct Pipeline<S> {
    pub(crate) config: Config,
    pub(crate) sink: S,
    pub(crate) state: Mutex<State>,
    pub(crate) emit_metrics: bool,
    heartbeat: Option<Arc<dyn Heartbeat>>,
    /// Keeps the Glue Data Catalog in step (`GLUE_DATABASE`).
    catalog: Option<CatalogUpkeep>,
    /// Reads a lost spool object's records again from the stream.
    pub(crate) shard_reader: Option<Arc<dyn ShardReader>>,
}

/// What a warm container keeps between invocations. Only `warm-lossy` mode
/// relies on it; otherwise it is a cache any environment may lack.
pub struct State {
    pub(crate) batcher: Batcher,
    deliveries: DeliveryLog,
    /// Quarantine files whose write failed, retried at the next chance.
    pending_quarantine: Vec<Vec<QuarantineEntry>>,
    /// Registered column types of the tables seen.
    pub(crate) schemas: SchemaCache,
    /// What this environment decoded of open tumbling windows.
    pub(crate) windows: WindowCache,
}

/// What one record became.
pub(crate) enum Ingested {
    Row,
    /// A DDL record for a table: its buffer is closed; its schema change is
    /// for [`Pipeline::apply_controls`] once the batch is decoded (the
    /// record is not durable until that change is registered).
    Control(TableControl),
    Task,
    Bad(QuarantineEntry),
}

/// Whether a plain batch goes through the environment's delivery log.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) enum Deliveries {
    /// Lambda's: a record at or below its lane's highest sequence number was
    /// delivered before (a retry) and is dropped.
    Deduplicate,
    /// Recovered from a durable copy ([`Event::Recovered`]): taken whatever
    /// this environment saw, and not noted (a later window recovered first
    /// must not hide an earlier one).
    Take,
}

impl<S: Sink> Pipeline<S> {
    pub fn new(config: Config, sink: S) -> Self {
        // Outside a tumbling window every batch is written before it is
        // acknowledged, as in `invocation` mode.
        let plain_mode = match config.flush_mode {
            FlushMode::Window => FlushMode::Invocation,
            mode => mode,
        };
        let batcher = Batcher::new(config.thresholds.clone(), plain_mode);
        let schemas = SchemaCache::new(&config.prefix, config.schema_refresh);
        Pipeline {
            config,
            sink,
            state: Mutex::new(State {
                batcher,
                deliveries: DeliveryLog::new(),
                pending_quarantine: Vec::new(),
                schemas,
                windows: WindowCache::default(),
            }),
            emit_metrics: true,
            heartbeat: None,
            catalog: None,
            shard_reader: None,
        }
    }

    /// Reads the records of a lost or damaged spool object again from the
    /// stream (window mode); see `windowed`.
    pub fn with_shard_reader(mut self, reader: Arc<dyn ShardReader>) -> Self {
        self.shard_reader = Some(reader);
        self
    }

    /// Sends heartbeats to `HEARTBEAT_STREAMS` on every force flush (window
    /// mode); see `heartbeat`.
    pub fn with_heartbeat(mut self, heartbeat: Arc<dyn Heartbeat>) -> Self {
        self.heartbeat = Some(heartbeat);
        self
    }

    /// Keeps the catalog in step with the registry at the end of every
    /// invocation (when `GLUE_DATABASE` is set); see `catalog_upkeep`.
    pub fn with_catalog(mut self, catalog: Arc<dyn Catalog>) -> Self {
        self.catalog = CatalogUpkeep::new(catalog, &self.config);
        self
    }

    /// Turns the per-invocation metric lines on stdout off (for `replay`,
    /// whose stdout is its summary).
    pub fn without_metrics(mut self) -> Self {
        self.emit_metrics = false;
        self
    }

    /// Rows held in memory, not yet written.
    pub async fn buffered_rows(&self) -> usize {
        self.state.lock().await.batcher.buffered_rows()
    }

    /// Bytes of row JSON held in memory.
    pub async fn buffered_bytes(&self) -> usize {
        self.state.lock().await.batcher.buffered_bytes()
    }

    pub fn sink(&self) -> &S {
        &self.sink
    }

    pub fn config(&self) -> &Config {
        &self.config
    }

    /// A Kinesis batch: a tumbling window's (in `window` mode, or a window
    /// an environment in that mode started) goes to the window runner
    /// (`windowed`); any other is written before it is acknowledged.
    pub async fn batch(
        &self,
        batch: KinesisBatch<'_>,
        deadline: Option<SystemTime>,
    ) -> Result<Outcome, HandleError> {
        // The paths are boxed: their futures are large (a debug build
        // overflowed a 2 MiB test thread's stack), and a box keeps them off
        // the caller's stack.
        match (&batch.window, self.config.flush_mode) {
            (Some(window), FlushMode::Window) => {
                Box::pin(self.handle_window(&batch.records, window, deadline)).await
            }
            // A window that an environment in `window` mode started (its
            // records are acknowledged and only in the spool) is carried
            // to its end whatever this environment's mode: a deployment
            // that switches modes loses nothing.
            (Some(window), _) if WindowState::from_lambda(window.state.as_deref())?.is_open() => {
                tracing::info!(
                    shard = window.shard_id.as_deref(),
                    window = window.start,
                    "a window started in window mode: finished as it was started"
                );
                Box::pin(self.handle_window(&batch.records, window, deadline)).await
            }
            (Some(_), _) => {
                // Tumbling windows without `window` mode: every batch is
                // handled on its own, and Lambda still needs a `state`.
                let mut outcome = Box::pin(self.handle_kinesis(
                    &batch.records,
                    deadline,
                    Deliveries::Deduplicate,
                ))
                .await;
                outcome.response["state"] = serde_json::json!({});
                Ok(outcome)
            }
            (None, _) => Ok(Box::pin(self.handle_kinesis(
                &batch.records,
                deadline,
                Deliveries::Deduplicate,
            ))
            .await),
        }
    }

    /// Records read back from a durable copy ([`Event::Recovered`]), written
    /// before the call returns, whatever this environment saw before.
    pub async fn write_recovered(
        &self,
        records: &[KinesisRecord<'_>],
        deadline: Option<SystemTime>,
    ) -> Outcome {
        Box::pin(self.handle_kinesis(records, deadline, Deliveries::Take)).await
    }

    /// A force flush: heartbeats, then every buffer written.
    pub async fn force_flush(&self, source: &str, deadline: Option<SystemTime>) -> Outcome {
        tracing::info!(source, "force flush requested");
        // Heartbeats first: a slow or failing write must not keep quiet
        // windows open. Sent in every mode: a window started in `window`
        // mode before a deployment switched modes still needs its end.
        let beats = match (self.config.flush_mode, &self.heartbeat) {
            (FlushMode::Window, _) | (_, Some(_)) => Some(self.send_heartbeats(deadline).await),
            _ => None,
        };
        let mut outcome = Box::pin(self.flush_all(deadline)).await;
        if let Some((sent, failed)) = beats {
            outcome.response["heartbeats"] = sent.into();
            outcome.stats.heartbeat_failures = failed;
        }
        outcome
    }

    /// One heartbeat into every open shard of each `HEARTBEAT_STREAMS`
    /// stream. Returns the shards reached and the streams that failed.
    async fn send_heartbeats(&self, deadline: Option<SystemTime>) -> (u64, u64) {
        let Some(hb) = &self.heartbeat else {
            return (0, 0);
        };
        let record = heartbeat::record(chrono::Utc::now());
        let (mut sent, mut failed) = (0, 0);
        for arn in &self.config.heartbeat_streams {
            let left = time_left(deadline).saturating_sub(crate::edge::sink::DEADLINE_MARGIN);
            match tokio::time::timeout(left, hb.beat(arn, &record)).await {
                Ok(Ok(n)) => {
                    tracing::info!(stream = arn, shards = n, "heartbeat sent");
                    sent += n as u64;
                }
                Ok(Err(error)) => {
                    tracing::error!(stream = arn, error, "heartbeat not sent: quiet shards' windows stay open until a record arrives");
                    failed += 1;
                }
                Err(_) => {
                    tracing::error!(
                        stream = arn,
                        "heartbeat timed out before the invocation deadline"
                    );
                    failed += 1;
                }
            }
        }
        (sent, failed)
    }

    /// The writing tail of a plain batch and a flush: quarantine entries
    /// first (with those an earlier invocation could not write), then
    /// schema changes (a file's rows are typed by its table's stored
    /// version), then the parts; a part not written goes back into the
    /// buffer. Returns the records of the parts not written.
    async fn write_through<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        quarantined: Vec<QuarantineEntry>,
        parts: Vec<(Part, DueReason)>,
        now_us: i64,
        stats: &mut Stats,
    ) -> Vec<RecordId> {
        self.retry_quarantine(state, sink, quarantined, now_us)
            .await;
        self.save_schemas(state, sink, stats).await;
        let written = PartWriter::new(&self.config)
            .write(&mut state.schemas, sink, parts, stats)
            .await;
        let failed = written
            .failed
            .iter()
            .flat_map(|p| p.ids.iter().cloned())
            .collect();
        for part in written.failed {
            state.batcher.restore(part);
        }
        failed
    }

    /// The last step of every stage: the catalog brought in step with the
    /// registry, then the invocation's log line and metrics.
    pub(crate) async fn conclude(
        &self,
        state: &mut State,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
        redeliver_from: Option<&RecordId>,
    ) {
        if let Some(upkeep) = &self.catalog {
            upkeep
                .sync(
                    &mut state.schemas,
                    &self.sink,
                    &self.config,
                    deadline,
                    stats,
                )
                .await;
        }
        self.report(state, stats, redeliver_from);
    }

    /// Writes every buffer now (force flush, shutdown, end of a replay).
    pub async fn flush_all(&self, deadline: Option<SystemTime>) -> Outcome {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let sink = Bounded::new(&self.sink, deadline);
        let now_us = now_micros();
        let mut stats = Stats::default();
        let parts = state
            .batcher
            .take_all()
            .into_iter()
            .map(|p| (p, DueReason::Forced))
            .collect();
        self.write_through(state, &sink, Vec::new(), parts, now_us, &mut stats)
            .await;
        self.conclude(state, deadline, &mut stats, None).await;
        Outcome {
            response: serde_json::json!({
                "flushed_files": stats.files,
                "flushed_rows": stats.rows_written,
                "failed_files": stats.failed_files,
                "buffered_rows": state.batcher.buffered_rows(),
            }),
            stats,
            redeliver_from: None,
            is_flush: true,
        }
    }

    async fn handle_kinesis(
        &self,
        records: &[KinesisRecord<'_>],
        deadline: Option<SystemTime>,
        deliveries: Deliveries,
    ) -> Outcome {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let (mut outcome, redeliver_from) =
            self.take_batch(state, records, deadline, deliveries).await;
        self.conclude(state, deadline, &mut outcome.stats, redeliver_from.as_ref())
            .await;
        outcome
    }

    /// A plain batch, taken and written through `state` (already locked):
    /// what [`handle_kinesis`](Self::handle_kinesis) does before its last
    /// step, and what a window's late records go through.
    pub(crate) async fn take_batch(
        &self,
        state: &mut State,
        records: &[KinesisRecord<'_>],
        deadline: Option<SystemTime>,
        deliveries: Deliveries,
    ) -> (Outcome, Option<RecordId>) {
        let now_us = now_micros();
        let mut stats = Stats {
            records: records.len() as u64,
            stream: records
                .iter()
                .find_map(|r| r.id.as_ref().ok())
                .map(|id| id.stream.clone()),
            ..Stats::default()
        };
        let sink = Bounded::new(&self.sink, deadline);
        let mut quarantined: Vec<QuarantineEntry> = Vec::new();
        // Records of this batch that are now held in memory or durable.
        let mut ledger = Ledger::new();
        let mut control_failed: Vec<RecordId> = Vec::new();
        let mut controls: Vec<(TableControl, RecordId)> = Vec::new();
        let mut control_lanes: Vec<&str> = Vec::new();
        let mut scratch = Vec::new();
        // A redelivered batch may come out of order (Lambda developer guide):
        // lanes remember the highest sequence number, so take records in order.
        let mut ordered: Vec<&KinesisRecord<'_>> = records.iter().collect();
        let by_sequence = |a: &&KinesisRecord<'_>, b: &&KinesisRecord<'_>| match (&a.id, &b.id) {
            (Ok(a), Ok(b)) => event::sequence_cmp(&a.sequence, &b.sequence),
            (Ok(_), Err(_)) => std::cmp::Ordering::Less,
            (Err(_), Ok(_)) => std::cmp::Ordering::Greater,
            (Err(_), Err(_)) => std::cmp::Ordering::Equal,
        };
        if !ordered.is_sorted_by(|a, b| by_sequence(a, b).is_le()) {
            ordered.sort_by(by_sequence);
        }
        let records = ordered;

        for (i, &record) in records.iter().enumerate() {
            if i % 64 == 0 && time_left(deadline) < self.config.time_reserve {
                // Out of time: what was not looked at is sent again by Kinesis.
                stats.deferred = (records.len() - i) as u64;
                ledger.defer_from(records[i..].iter().find_map(|r| r.id.as_ref().ok()));
                tracing::warn!(
                    deferred = stats.deferred,
                    "invocation deadline near: leaving the rest of the batch for redelivery"
                );
                break;
            }
            let id = match &record.id {
                Ok(id) => id,
                Err(e) => {
                    quarantined.push(QuarantineEntry::new(record, e.clone(), now_us));
                    continue;
                }
            };
            let lane = record.partition_key.as_deref().unwrap_or("");
            if deliveries == Deliveries::Deduplicate && state.deliveries.is_duplicate(id, lane) {
                stats.duplicates += 1;
                ledger.take(id);
                continue;
            }
            match self.ingest(
                &mut state.batcher,
                record,
                id,
                &mut scratch,
                now_us,
                &mut stats,
            ) {
                Ingested::Row | Ingested::Task => {}
                Ingested::Control(control) => {
                    // Recorded as delivered once its change is registered.
                    controls.push((control, id.clone()));
                    control_lanes.push(lane);
                    ledger.take(id);
                    continue;
                }
                Ingested::Bad(entry) => quarantined.push(entry),
            }
            if deliveries == Deliveries::Deduplicate {
                state.deliveries.record(id, lane);
            }
            ledger.take(id);
        }
        let applied = self
            .apply_controls(&mut state.schemas, &sink, &controls, &mut stats)
            .await;
        for (((_, id), lane), result) in controls.iter().zip(control_lanes).zip(applied) {
            match result {
                Ok(()) if deliveries == Deliveries::Take => {}
                Ok(()) => state.deliveries.record(id, lane),
                Err(error) => {
                    // Not recorded as delivered: the redelivery applies it again.
                    tracing::error!(%error, "control record not applied: it will be redelivered");
                    control_failed.push(id.clone());
                }
            }
        }

        stats.quarantined = quarantined.len() as u64;
        let due = state.batcher.take_due(now_us);
        let failed = self
            .write_through(state, &sink, quarantined, due, now_us, &mut stats)
            .await;

        // Not durable at the end of this invocation: rows of failed files,
        // quarantine entries not yet written, schema changes not stored,
        // records not looked at.
        let unsaved = state.schemas.unsaved_records();
        let pending: Vec<RecordId> = state
            .pending_quarantine
            .iter()
            .flatten()
            .filter_map(QuarantineEntry::record_id)
            .collect();
        let not_durable = failed
            .iter()
            .chain(&control_failed)
            .chain(&unsaved)
            .chain(&pending);
        let redeliver_from = ledger.redeliver_from(not_durable);
        let mut response = KinesisEventResponse::default();
        if let Some(from) = &redeliver_from {
            // Kinesis sends everything from `from` on again; what this
            // container already holds or wrote is recognised then.
            response.add_failure(from.sequence.clone());
        }
        let outcome = Outcome {
            response: serde_json::to_value(&response).unwrap_or(Value::Null),
            stats,
            redeliver_from: redeliver_from.as_ref().map(|id| id.sequence.clone()),
            is_flush: false,
        };
        (outcome, redeliver_from)
    }

    /// Decodes one record and takes it in: a row into `batcher`, a DDL
    /// record into the schema registry (closing its table's parts first), a
    /// bad record as a quarantine entry. `ingested_us` is the row's
    /// `_ingested_at`.
    #[allow(clippy::too_many_arguments)]
    pub(crate) fn ingest(
        &self,
        batcher: &mut Batcher,
        record: &KinesisRecord<'_>,
        id: &RecordId,
        scratch: &mut Vec<u8>,
        ingested_us: i64,
        stats: &mut Stats,
    ) -> Ingested {
        match self.decode(record, scratch) {
            Ok(Message::Row(change)) => {
                // Whole milliseconds: the spool and a stream re-read give the
                // same instant, so a rebuilt window files rows as before.
                let arrival_us = record
                    .arrival_seconds
                    .map(|s| (s * 1e3).round() as i64 * 1_000);
                batcher.push(id.clone(), &change, ingested_us, arrival_us);
                stats.rows += 1;
                Ingested::Row
            }
            Ok(Message::TableControl(control)) => {
                tracing::info!(
                    table = %control.table, operation = control.operation,
                    "table control record: closing its buffer"
                );
                batcher.close_table(&control.table);
                stats.control_records += 1;
                Ingested::Control(control)
            }
            Ok(Message::DmsTable { table }) => {
                tracing::debug!(table, "record of a DMS control table skipped");
                stats.dms_table_records += 1;
                Ingested::Task
            }
            Ok(Message::TaskControl { operation }) => {
                tracing::debug!(operation, "task-level control record skipped");
                stats.control_records += 1;
                Ingested::Task
            }
            Err(e) => {
                tracing::warn!(
                    shard = %id.shard, sequence = %id.sequence, error = %e,
                    "record quarantined"
                );
                Ingested::Bad(QuarantineEntry::new(record, e.to_string(), ingested_us))
            }
        }
    }

    /// base64 → bytes → DMS message. The message borrows from `scratch`.
    pub(crate) fn decode<'a>(
        &self,
        record: &KinesisRecord<'_>,
        scratch: &'a mut Vec<u8>,
    ) -> Result<Message<'a>, dms::DecodeError> {
        let text = record
            .data
            .as_ref()
            .map_err(|e| dms::DecodeError::Base64(e.clone()))?;
        dms::decode_base64_into(text, scratch)?;
        dms::decode(scratch, &self.config.before_image_field)
    }

    /// Writes quarantine files still pending from earlier invocations, then
    /// `entries`; what fails stays pending.
    async fn retry_quarantine<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        entries: Vec<QuarantineEntry>,
        now_us: i64,
    ) {
        let mut files = std::mem::take(&mut state.pending_quarantine);
        files.push(entries);
        for file in files {
            if !file.is_empty() && !self.write_quarantine(sink, &file, now_us).await {
                state.pending_quarantine.push(file);
            }
        }
    }

    /// Writes the quarantined records; false if they could not be stored.
    /// The key depends only on the records, so writing them again is a no-op.
    pub(crate) async fn write_quarantine<B: Sink>(
        &self,
        sink: &B,
        entries: &[QuarantineEntry],
        now_us: i64,
    ) -> bool {
        if entries.is_empty() {
            return true;
        }
        let ids: Vec<RecordId> = entries.iter().filter_map(|e| e.record_id()).collect();
        let hour = entries
            .iter()
            .find_map(|e| e.approximate_arrival_timestamp)
            .map(|s| Hour::from_micros((s * 1e6) as i64))
            .unwrap_or(Hour::from_micros(now_us));
        let key = if ids.is_empty() {
            format!("{}_errors/unidentified/{now_us}.jsonl", self.config.prefix)
        } else {
            layout::quarantine_key(&self.config.prefix, self.config.partition_style, hour, &ids)
        };
        match sink
            .put(&key, quarantine::to_jsonl(entries), "application/x-ndjson")
            .await
        {
            Ok(_) => {
                tracing::info!(key, records = entries.len(), "quarantine written");
                true
            }
            Err(error) => {
                tracing::error!(key, %error, "quarantine write failed: records will be redelivered");
                false
            }
        }
    }

    /// Registers what each control record says about its table, in order,
    /// after reading the registry for all their tables at once (a cold
    /// environment meeting a `create-table` for each of 200 tables waits a
    /// few round trips, not 200). One result per control record.
    pub(crate) async fn apply_controls<B: Sink>(
        &self,
        schemas: &mut SchemaCache,
        sink: &B,
        controls: &[(TableControl, RecordId)],
        stats: &mut Stats,
    ) -> Vec<Result<(), RegistryError>> {
        let tables = controls
            .iter()
            .filter(|(c, _)| changes_schema(c))
            .map(|(c, _)| &c.table);
        let with_overrides = self.config.with_overrides(tables);
        let unavailable = schemas.get_many(sink, &with_overrides, false).await;
        let mut results = Vec::with_capacity(controls.len());
        for (control, id) in controls {
            let result = match unavailable.get(&control.table) {
                Some(error) => Err(RegistryError::Unavailable {
                    table: control.table.clone(),
                    reason: error.to_string(),
                }),
                None => self.apply_control(schemas, sink, control, id, stats).await,
            };
            results.push(result);
        }
        results
    }

    /// Registers what a control record says about its table: the types of
    /// a `table-def`, or that the table was dropped.
    async fn apply_control<B: Sink>(
        &self,
        schemas: &mut SchemaCache,
        sink: &B,
        control: &TableControl,
        id: &RecordId,
        stats: &mut Stats,
    ) -> Result<(), RegistryError> {
        if let Some(error) = &control.table_def_error {
            tracing::warn!(table = %control.table, error, "table-def ignored: column types come from the values");
        }
        if !changes_schema(control) {
            return Ok(());
        }
        let dropped = control.operation == "drop-table";
        let overrides = self.config.overrides_for(&control.table);
        let schema = schemas.get(sink, &control.table, overrides).await?;
        let before = schema.clone();
        let mut unknown = Vec::new();
        if let Some(def) = &control.table_def {
            let declared = schema.apply_table_def(def, overrides, self.config.decimal_min_scale);
            stats.column_type_changes +=
                log_changes(&control.table, &declared.changes, "table-def");
            for (column, registered, now) in &declared.kept {
                tracing::warn!(
                    table = %control.table, column, %registered, declared = %now,
                    "table-def declares another type: the registered type is kept so every \
                     file reads with one table definition; values it cannot hold go to _rescued"
                );
            }
            unknown = declared.unknown;
        }
        if let (true, Some(at)) = (dropped, control.timestamp_us) {
            schema.mark_dropped(at);
        }
        if *schema != before {
            schemas.mark_unsaved(&control.table, Some(id));
        }
        for (column, type_name) in unknown {
            if schemas.first_report(&control.table, &column, &type_name) {
                tracing::warn!(
                    table = %control.table, column, dms_type = type_name,
                    "table-def type name not known: the column's type is inferred from its values"
                );
            }
        }
        Ok(())
    }

    /// Stores every changed schema; what fails stays unsaved.
    pub(crate) async fn save_schemas<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        stats: &mut Stats,
    ) {
        stats.column_type_changes += state.schemas.save_all(sink).await;
    }

    pub(crate) fn report(&self, state: &State, stats: &Stats, redeliver_from: Option<&RecordId>) {
        let batcher = &state.batcher;
        let oldest_age_us = batcher.oldest_age_us(now_micros()).unwrap_or(0);
        tracing::info!(
            records = stats.records,
            rows = stats.rows,
            duplicates = stats.duplicates,
            quarantined = stats.quarantined,
            deferred = stats.deferred,
            files = stats.files,
            bytes_written = stats.bytes_written,
            failed_files = stats.failed_files,
            buffered_rows = batcher.buffered_rows(),
            buffered_bytes = batcher.buffered_bytes(),
            cached_window_bytes = state.windows.buffered_bytes(),
            spooled = stats.spooled,
            pending_quarantine_files = state.pending_quarantine.len(),
            redeliver_from = redeliver_from.map(|id| id.sequence.as_str()),
            "invocation done"
        );
        if self.emit_metrics {
            let held = batcher.buffered_bytes() + state.windows.buffered_bytes();
            metrics::emit(stats, held, oldest_age_us, self.config.metrics_per_table);
        }
    }
}

/// Whether a control record says anything about its table's schema.
fn changes_schema(control: &TableControl) -> bool {
    control.table_def.is_some() || control.operation == "drop-table"
}

pub(crate) fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}
