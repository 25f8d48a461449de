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
use crate::dms::{self, Message};
use crate::encode;
use crate::event::{self, Event, EventError, KinesisRecord};
use crate::layout::{self, Hour, RecordId};
use crate::metrics;
use crate::quarantine::{self, QuarantineEntry};
use crate::sink::{PutOutcome, Sink};

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
}

/// A PUT is not started with less time than this left before the deadline.
const WRITE_MARGIN: Duration = Duration::from_millis(300);

impl<S: Sink> Pipeline<S> {
    pub fn new(config: Config, sink: S) -> Self {
        let batcher = Batcher::new(config.thresholds.clone(), config.flush_mode);
        Pipeline {
            config,
            sink,
            state: Mutex::new(State {
                batcher,
                deliveries: DeliveryLog::new(),
                pending_quarantine: Vec::new(),
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
        self.write_parts(&mut state.batcher, parts, deadline, &mut stats)
            .await;
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
                Ok(Message::TableControl { table, operation }) => {
                    tracing::info!(%table, operation, "table control record: closing its buffer");
                    state.batcher.close_table(&table);
                    stats.control_records += 1;
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
        let due = state.batcher.take_due(now_us);
        let failed = self
            .write_parts(&mut state.batcher, due, deadline, &mut stats)
            .await;

        // Not durable at the end of this invocation: rows of failed files,
        // quarantine entries not yet written, records not looked at.
        let mut not_durable: HashSet<&RecordId> = failed.iter().collect();
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

    /// Encodes and writes parts; a part that fails goes back to the batcher
    /// unchanged. Returns the ids of the rows that are still not durable.
    async fn write_parts(
        &self,
        batcher: &mut Batcher,
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
            // A part that cannot be encoded would fail the same way forever and
            // block its table: its rows go to the quarantine as JSON lines instead.
            let (key, body, content_type) = match encode::to_parquet(&part) {
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
                    (key, part.rows.clone(), "application/x-ndjson")
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
                    batcher.restore(part);
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
