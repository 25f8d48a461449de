//! One invocation, start to end: read the event, decode and buffer records,
//! write what is due, and say which records Kinesis must send again.
//!
//! Knows neither Parquet nor S3 details: `encode` makes the bytes, `layout`
//! the keys, and a [`Sink`] stores them.

use std::collections::HashSet;
use std::time::{Duration, SystemTime};

use aws_lambda_events::streams::KinesisEventResponse;
use serde::Serialize;
use serde_json::Value;
use tokio::sync::Mutex;

use crate::batcher::{Batcher, DueReason, Part};
use crate::config::Config;
use crate::delivery::DeliveryLog;
use crate::dms::{self, Message, TableControl};
use crate::encode;
use crate::event::{self, Event, EventError, KinesisRecord};
use crate::layout::{self, Hour, RecordId};
use crate::metrics;
use crate::quarantine::{self, QuarantineEntry};
use crate::registry::{RegistryError, SchemaCache};
use crate::schema::log_changes;
use crate::sink::{PutOutcome, Sink};
use crate::types::ColumnType;

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
    }
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
    config: Config,
    sink: S,
    state: Mutex<State>,
    emit_metrics: bool,
}

/// What a warm container keeps between invocations.
struct State {
    batcher: Batcher,
    deliveries: DeliveryLog,
    /// Quarantine files whose write failed, retried at the next chance.
    pending_quarantine: Vec<Vec<QuarantineEntry>>,
    /// Registered column types of the tables seen.
    schemas: SchemaCache,
}

/// A PUT is not started with less time than this left before the deadline.
const WRITE_MARGIN: Duration = Duration::from_millis(300);

impl<S: Sink> Pipeline<S> {
    pub fn new(config: Config, sink: S) -> Self {
        let batcher = Batcher::new(config.thresholds.clone(), config.flush_mode);
        let schemas = SchemaCache::new(&config.prefix, config.schema_refresh);
        Pipeline {
            config,
            sink,
            state: Mutex::new(State {
                batcher,
                deliveries: DeliveryLog::new(),
                pending_quarantine: Vec::new(),
                schemas,
            }),
            emit_metrics: true,
        }
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

    /// Handles one invocation payload (JSON text). `deadline` is the
    /// invocation's deadline (none for replays).
    pub async fn handle(
        &self,
        payload: &str,
        deadline: Option<SystemTime>,
    ) -> Result<Outcome, EventError> {
        match event::classify(payload)? {
            Event::Kinesis(records) => Ok(self.handle_kinesis(&records, deadline).await),
            Event::ForceFlush { source } => {
                tracing::info!(source, "force flush requested");
                Ok(self.flush_all(deadline).await)
            }
        }
    }

    /// Writes every buffer now (force flush, shutdown, end of a replay).
    pub async fn flush_all(&self, deadline: Option<SystemTime>) -> Outcome {
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let now_us = now_micros();
        let mut stats = Stats::default();
        self.retry_quarantine(state, Vec::new(), now_us, deadline)
            .await;
        let parts = state
            .batcher
            .take_all()
            .into_iter()
            .map(|p| (p, DueReason::Forced))
            .collect();
        self.save_schemas(state, &mut stats).await;
        self.write_parts(state, parts, deadline, &mut stats).await;
        self.report(state, &stats, None);
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
    ) -> Outcome {
        let now_us = now_micros();
        let mut stats = Stats {
            records: records.len() as u64,
            ..Stats::default()
        };
        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let mut quarantined: Vec<QuarantineEntry> = Vec::new();
        // Records of this batch that are now held in memory or durable.
        let mut taken: Vec<&RecordId> = Vec::with_capacity(records.len());
        let mut deferred_from: Option<&RecordId> = None;
        let mut control_failed: Vec<RecordId> = Vec::new();
        let mut scratch = Vec::new();

        for (i, record) in records.iter().enumerate() {
            if i % 64 == 0 && time_left(deadline) < self.config.time_reserve {
                // Out of time: what was not looked at is sent again by Kinesis.
                stats.deferred = (records.len() - i) as u64;
                deferred_from = records[i..].iter().find_map(|r| r.id.as_ref().ok());
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
            if state.deliveries.is_duplicate(&id.shard, lane, &id.sequence) {
                stats.duplicates += 1;
                taken.push(id);
                continue;
            }
            match self.decode(record, &mut scratch) {
                Ok(Message::Row(change)) => {
                    state.batcher.push(id.clone(), &change, now_us);
                    stats.rows += 1;
                }
                Ok(Message::TableControl(control)) => {
                    tracing::info!(
                        table = %control.table, operation = control.operation,
                        "table control record: closing its buffer"
                    );
                    state.batcher.close_table(&control.table);
                    stats.control_records += 1;
                    if let Err(error) = self.apply_control(state, &control, id, &mut stats).await {
                        // Not recorded as delivered: the redelivery applies it again.
                        tracing::error!(table = %control.table, %error, "control record not applied: it will be redelivered");
                        control_failed.push(id.clone());
                        taken.push(id);
                        continue;
                    }
                }
                Ok(Message::TaskControl { operation }) => {
                    tracing::debug!(operation, "task-level control record skipped");
                    stats.control_records += 1;
                }
                Err(e) => {
                    tracing::warn!(
                        shard = %id.shard, sequence = %id.sequence, error = %e,
                        "record quarantined"
                    );
                    quarantined.push(QuarantineEntry::new(record, e.to_string(), now_us));
                }
            }
            state.deliveries.record(&id.shard, lane, &id.sequence);
            taken.push(id);
        }

        stats.quarantined = quarantined.len() as u64;
        self.retry_quarantine(state, quarantined, now_us, deadline)
            .await;
        self.save_schemas(state, &mut stats).await;
        let due = state.batcher.take_due(now_us);
        let failed = self.write_parts(state, due, deadline, &mut stats).await;

        // Not durable at the end of this invocation: rows of failed files,
        // quarantine entries not yet written, schema changes not stored,
        // records not looked at.
        let mut not_durable: HashSet<&RecordId> = failed.iter().collect();
        not_durable.extend(control_failed.iter());
        let unsaved = state.schemas.unsaved_records();
        not_durable.extend(unsaved.iter());
        let pending: Vec<RecordId> = state
            .pending_quarantine
            .iter()
            .flatten()
            .filter_map(QuarantineEntry::record_id)
            .collect();
        not_durable.extend(pending.iter());
        let redeliver_from = taken
            .into_iter()
            .filter(|id| not_durable.contains(id))
            .chain(deferred_from)
            .min_by(|a, b| event::sequence_cmp(&a.sequence, &b.sequence))
            .cloned();
        let mut response = KinesisEventResponse::default();
        if let Some(from) = &redeliver_from {
            // Kinesis sends everything from `from` on again; what this
            // container already holds or wrote is recognised then.
            response.add_failure(from.sequence.clone());
        }
        self.report(state, &stats, redeliver_from.as_ref());
        Outcome {
            response: serde_json::to_value(&response).unwrap_or(Value::Null),
            stats,
            redeliver_from: redeliver_from.map(|id| id.sequence),
            is_flush: false,
        }
    }

    /// base64 → bytes → DMS message. The message borrows from `scratch`.
    fn decode<'a>(
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
    async fn retry_quarantine(
        &self,
        state: &mut State,
        entries: Vec<QuarantineEntry>,
        now_us: i64,
        deadline: Option<SystemTime>,
    ) {
        let mut files = std::mem::take(&mut state.pending_quarantine);
        files.push(entries);
        for file in files {
            if !file.is_empty() && !self.write_quarantine(&file, now_us, deadline).await {
                state.pending_quarantine.push(file);
            }
        }
    }

    /// Writes the quarantined records; false if they could not be stored.
    async fn write_quarantine(
        &self,
        entries: &[QuarantineEntry],
        now_us: i64,
        deadline: Option<SystemTime>,
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
        match self
            .put_before_deadline(
                &key,
                quarantine::to_jsonl(entries),
                "application/x-ndjson",
                deadline,
            )
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

    /// Registers what a control record says about its table: the types of
    /// a `table-def`, or that the table was dropped.
    async fn apply_control(
        &self,
        state: &mut State,
        control: &TableControl,
        id: &RecordId,
        stats: &mut Stats,
    ) -> Result<(), RegistryError> {
        if let Some(error) = &control.table_def_error {
            tracing::warn!(table = %control.table, error, "table-def ignored: column types come from the values");
        }
        let dropped = control.operation == "drop-table";
        if control.table_def.is_none() && !dropped {
            return Ok(());
        }
        let overrides = self.config.overrides_for(&control.table);
        let schema = state
            .schemas
            .get(&self.sink, &control.table, overrides)
            .await?;
        let before = schema.clone();
        if let Some(def) = &control.table_def {
            let changes = schema.apply_table_def(def, overrides, self.config.decimal_min_scale);
            stats.column_type_changes += log_changes(&control.table, &changes, "table-def");
        }
        if let (true, Some(at)) = (dropped, control.timestamp_us) {
            schema.mark_dropped(at);
        }
        if *schema != before {
            state.schemas.mark_unsaved(&control.table, Some(id));
        }
        Ok(())
    }

    /// Stores every changed schema; what fails stays unsaved.
    async fn save_schemas(&self, state: &mut State, stats: &mut Stats) {
        stats.column_type_changes += state.schemas.save_all(&self.sink).await;
    }

    /// The types a part is written with, after registering its new columns
    /// and storing the schema if that changed it.
    async fn part_types(
        &self,
        state: &mut State,
        part: &Part,
        stats: &mut Stats,
    ) -> Result<Vec<(String, ColumnType)>, RegistryError> {
        let overrides = self.config.overrides_for(&part.table);
        let schema = state
            .schemas
            .get(&self.sink, &part.table, overrides)
            .await?;
        let (types, changes) = schema.resolve(&part.kinds);
        log_changes(&part.table, &changes, "values");
        if !changes.is_empty() {
            state.schemas.mark_unsaved(&part.table, None);
        }
        stats.column_type_changes += state.schemas.save(&self.sink, &part.table).await?;
        Ok(types)
    }

    /// Encodes a part with its table's registered types. A value that does
    /// not fit widens its column: the registry learns the wider type before
    /// the file is written, so no file has a type the registry does not.
    async fn encode_part(
        &self,
        state: &mut State,
        part: &Part,
        stats: &mut Stats,
    ) -> Result<Result<Vec<u8>, encode::EncodeError>, RegistryError> {
        let mut types = self.part_types(state, part, stats).await?;
        // Another container's wider types can arrive while storing ours: then
        // encode again with them (rare; bounded).
        for _ in 0..3 {
            let encoded = match encode::to_parquet(part, &types) {
                Ok(e) => e,
                Err(e) => return Ok(Err(e)),
            };
            if encoded.inexact_integers > 0 {
                tracing::warn!(
                    table = %part.table, values = encoded.inexact_integers,
                    "BIGINT values arrived in scientific notation: digits were lost before \
                     DMS sent them (set UseLargeIntegerValue=true on the DMS endpoint)"
                );
            }
            let overrides = self.config.overrides_for(&part.table);
            let schema = state
                .schemas
                .get(&self.sink, &part.table, overrides)
                .await?;
            let mut changes = Vec::new();
            for w in &encoded.widened {
                tracing::warn!(
                    table = %part.table, column = w.column, from = %w.from, to = %w.to,
                    value = truncate(&w.value, 80),
                    "value does not fit its column: the column is widened from this file on"
                );
                changes.extend(schema.widen(&w.column, w.to));
            }
            if !changes.is_empty() {
                stats.column_type_changes += changes.len() as u64;
                state.schemas.mark_unsaved(&part.table, None);
            }
            stats.column_type_changes += state.schemas.save(&self.sink, &part.table).await?;
            let schema = state
                .schemas
                .get(&self.sink, &part.table, overrides)
                .await?;
            let registered: Vec<(String, ColumnType)> = encoded
                .types
                .iter()
                .map(|(name, ty)| (name.clone(), schema.type_of(name).unwrap_or(*ty)))
                .collect();
            if registered == encoded.types {
                stats.inexact_integers += encoded.inexact_integers;
                return Ok(Ok(encoded.bytes));
            }
            types = registered;
        }
        Err(RegistryError::Unsettled(part.table.clone()))
    }

    /// Encodes and writes parts; a part that fails goes back to the batcher
    /// unchanged. Returns the ids of the rows that are still not durable.
    async fn write_parts(
        &self,
        state: &mut State,
        parts: Vec<(Part, DueReason)>,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) -> Vec<RecordId> {
        let mut failed = Vec::new();
        for (part, reason) in parts {
            let key = layout::data_key(
                &self.config.prefix,
                self.config.partition_style,
                &part.table,
                part.hour,
                &part.ids,
            );
            let encoded = match self.encode_part(state, &part, stats).await {
                Ok(e) => e,
                Err(error) => {
                    tracing::error!(
                        table = %part.table, rows = part.row_count(), %error,
                        "schema registry unavailable: rows stay buffered for the next attempt"
                    );
                    stats.failed_files += 1;
                    stats.failed_rows += part.row_count() as u64;
                    failed.extend(part.ids.iter().cloned());
                    state.batcher.restore(part);
                    continue;
                }
            };
            // A part that cannot be encoded would fail the same way forever and
            // block its table: its rows go to the quarantine as JSON lines instead.
            let (key, body, content_type) = match encoded {
                Ok(bytes) => (key, bytes, "application/vnd.apache.parquet"),
                Err(error) => {
                    let key = layout::unencodable_key(
                        &self.config.prefix,
                        &part.table,
                        part.hour,
                        &part.ids,
                    );
                    tracing::error!(
                        table = %part.table, key, rows = part.row_count(), %error,
                        "rows could not be encoded as Parquet: writing them to the quarantine"
                    );
                    stats.quarantined += part.row_count() as u64;
                    (key, part.json_lines(), "application/x-ndjson")
                }
            };
            let len = body.len() as u64;
            let written = self
                .put_before_deadline(&key, body, content_type, deadline)
                .await
                .map(|outcome| (outcome, len));
            match written {
                Ok((outcome, len)) => {
                    tracing::info!(
                        table = %part.table, key, rows = part.row_count(), bytes = len,
                        reason = ?reason, already_existed = outcome == PutOutcome::AlreadyExists,
                        "file written"
                    );
                    stats.files += 1;
                    stats.rows_written += part.row_count() as u64;
                    stats.bytes_written += len;
                }
                Err(error) => {
                    tracing::error!(
                        table = %part.table, key, rows = part.row_count(), %error,
                        "file not written: rows stay buffered for the next attempt"
                    );
                    stats.failed_files += 1;
                    stats.failed_rows += part.row_count() as u64;
                    failed.extend(part.ids.iter().cloned());
                    state.batcher.restore(part);
                }
            }
        }
        failed
    }

    async fn put_before_deadline(
        &self,
        key: &str,
        body: Vec<u8>,
        content_type: &'static str,
        deadline: Option<SystemTime>,
    ) -> Result<PutOutcome, String> {
        let Some(deadline) = deadline else {
            return self
                .sink
                .put(key, body, content_type)
                .await
                .map_err(|e| e.to_string());
        };
        let left = time_left(Some(deadline));
        if left < WRITE_MARGIN {
            return Err("not attempted: the invocation deadline is too near".into());
        }
        match tokio::time::timeout(left - WRITE_MARGIN, self.sink.put(key, body, content_type))
            .await
        {
            Ok(result) => result.map_err(|e| e.to_string()),
            Err(_) => Err("timed out before the invocation deadline".into()),
        }
    }

    fn report(&self, state: &State, stats: &Stats, redeliver_from: Option<&RecordId>) {
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
            pending_quarantine_files = state.pending_quarantine.len(),
            redeliver_from = redeliver_from.map(|id| id.sequence.as_str()),
            "invocation done"
        );
        if self.emit_metrics {
            metrics::emit(stats, batcher.buffered_bytes(), oldest_age_us);
        }
    }
}

fn truncate(s: &str, max: usize) -> &str {
    match s.char_indices().nth(max) {
        Some((i, _)) => &s[..i],
        None => s,
    }
}

fn now_micros() -> i64 {
    chrono::Utc::now().timestamp_micros()
}

fn time_left(deadline: Option<SystemTime>) -> Duration {
    match deadline {
        Some(d) => d
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO),
        None => Duration::MAX,
    }
}
