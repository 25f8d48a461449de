//! `FLUSH_MODE=window`: every acknowledged record is durable before Kinesis
//! moves past it, files stay large, and any environment can finish any work.
//!
//! - Each invocation of a shard's tumbling window writes the records it takes
//!   as one spool object (`If-None-Match`) before it returns, and lists it in
//!   the window's `state` (see `window`). A record at or below the highest
//!   sequence number the state lists is already spooled: a redelivery.
//! - The window's final invocation (`isFinalInvokeForWindow`, retried by
//!   Lambda until it succeeds) writes each table's rows of the window as
//!   Parquet, from this environment's cache when it holds exactly what the
//!   state lists, else from the spool objects.
//! - Where a file is cut depends only on the window's records in sequence
//!   order (`Batcher::for_window`), and its key only on its rows, so a retried
//!   final invocation, or two environments doing the same work, write the same
//!   objects once. An environment whose cache is in step writes parts that a
//!   threshold closed as soon as they close, and notes them in the state.
//!
//! Nothing here relies on memory surviving: the cache is taken out of the
//! environment for the length of an invocation, so a panic or an error drops
//! it, and the next invocation rebuilds from the spool.

use std::collections::{BTreeMap, HashSet};
use std::sync::Arc;
use std::time::SystemTime;

use futures_util::StreamExt as _;
use serde_json::json;

use crate::app::handler::{
    now_micros, Deliveries, HandleError, Ingested, Outcome, Pipeline, State,
};
use crate::app::part_writer::PartWriter;
use crate::app::redrive;
use crate::app::stats::Stats;
use crate::edge::heartbeat;
use crate::edge::shard_reader::{ReadError, ReadFrom};
use crate::edge::sink::{Bounded, Sink};
use domain::batcher::{DueReason, SkipRows};
use domain::dms::Message;
use domain::event::{sequence_cmp, KinesisRecord, WindowInfo};
use domain::names::RecordId;
use domain::quarantine::QuarantineEntry;
use domain::window::{
    quarantine_note, Builder, Spool, SpooledRecord, WindowId, WindowRules, WindowState,
    STATE_WARN_BYTES,
};

/// Spool objects read at once when a window is rebuilt.
const MAX_CONCURRENT_READS: usize = 8;

/// Records decoded between yields while a spool object uploads.
const FEED_YIELD_EVERY: usize = 64;

impl<S: Sink> Pipeline<S> {
    /// One invocation of a tumbling window.
    pub(crate) async fn handle_window(
        &self,
        records: &[KinesisRecord<'_>],
        window: &WindowInfo,
        deadline: Option<SystemTime>,
    ) -> Result<Outcome, HandleError> {
        let now_us = now_micros();
        let sink = Bounded::new(&self.sink, deadline);
        let first = records.iter().find_map(|r| r.id.as_ref().ok());
        let mut stats = Stats {
            records: records.len() as u64,
            stream: window
                .stream_arn
                .as_deref()
                .map(Arc::from)
                .or_else(|| first.map(|i| i.stream.clone())),
            ..Stats::default()
        };
        let id = WindowId {
            stream_arn: window
                .stream_arn
                .clone()
                .or_else(|| first.map(|i| i.stream.to_string()))
                .unwrap_or_default(),
            shard: window
                .shard_id
                .clone()
                .or_else(|| first.map(|i| i.shard.to_string()))
                .unwrap_or_default(),
            start: window.start.clone(),
        };
        if !id.stream_arn.is_empty() && !self.config.heartbeat_streams.contains(&id.stream_arn) {
            // Counted (alarmed) every time; logged once per window.
            stats.windows_without_heartbeat = 1;
            if window.is_final || window.terminated_early {
                tracing::warn!(
                    stream = id.stream_arn,
                    "HEARTBEAT_STREAMS does not list this stream: its quiet shards' windows get no \
                     heartbeat and end only when a record arrives"
                );
            }
        }
        let mut wstate = WindowState::from_lambda(window.state.as_deref())?;
        // A window's first invocation: if this shard's window was started
        // before (the event source mapping created again delivers its
        // records a second time), it is cut by the rules its spool records.
        if wstate.rules.is_none() && wstate.spools.is_empty() {
            let before = self
                .spooled_before(&sink, &id)
                .await
                .map_err(HandleError::NotDurable)?;
            if let Some(rules) = before {
                wstate.mark_started_before();
                wstate.rules = rules;
            }
        }
        // Cut by the rules the window started under, whatever this
        // environment is configured with. Rules that come in the state are
        // durable; rules this invocation settles are not until its response
        // is acknowledged (a retry after a deployment may settle others).
        let rules_from_state = wstate.rules.is_some();
        let rules = wstate.settle_rules(&self.config.thresholds);
        let ending = window.is_final || window.terminated_early;

        let mut guard = self.state.lock().await;
        let state = &mut *guard;
        let mut builder = state.windows.take(&id, &wstate.spools, &rules);

        // Records the state already lists are a redelivery. Records without a
        // sequence number cannot be placed in the window: quarantined now.
        let mut fresh: Vec<KinesisRecord<'_>> = Vec::with_capacity(records.len());
        let mut unplaced = Vec::new();
        // Every record is named by the window's stream and shard, as the spool
        // names it: rows must have the same identity (and files the same keys)
        // whether they are written from this cache or from the spool.
        let (stream, shard): (Arc<str>, Arc<str>) = (
            Arc::from(id.stream_arn.as_str()),
            Arc::from(id.shard.as_str()),
        );
        for record in records {
            match &record.id {
                Err(e) => unplaced.push(QuarantineEntry::new(record, e.clone(), now_us)),
                Ok(rid) if wstate.holds(&rid.sequence) => stats.duplicates += 1,
                // A heartbeat has done its work by arriving: nothing to keep.
                Ok(_) if self.is_heartbeat(record) => stats.control_records += 1,
                Ok(rid) => {
                    let mut record = record.clone();
                    record.id = Ok(RecordId {
                        stream: stream.clone(),
                        shard: shard.clone(),
                        sequence: rid.sequence.clone(),
                    });
                    fresh.push(record);
                }
            }
        }
        // Out-of-order redeliveries are possible (Lambda developer guide): the
        // spool is kept in sequence order, each record once.
        fresh.sort_by(|a, b| sequence_cmp(seq(a), seq(b)));
        fresh.dedup_by(|a, b| seq(a) == seq(b));
        if !unplaced.is_empty() {
            stats.quarantined += unplaced.len() as u64;
            if !self.write_quarantine(&sink, &unplaced, now_us).await {
                return Err(HandleError::NotDurable(
                    "quarantine of records without a sequence number not written".into(),
                ));
            }
        }

        let mut redeliver_from = None;
        if let Some(last) = fresh.last().map(|r| seq(r).to_string()) {
            let spool = Spool::of(&id, &fresh, now_us).with_rules(&rules);
            let key = id.spool_key(&self.config.prefix, wstate.spools.len(), &last);
            // The first spool object of a window starts the cache.
            if wstate.spools.is_empty() {
                if builder.is_none() {
                    builder = Some(Builder::new(&rules, &self.config.thresholds));
                }
                wstate.first = fresh.first().map(|r| seq(r).to_string());
            }
            // The records are fed to the cache while their spool object
            // uploads: the batch waits one round trip, not a round trip plus
            // the decoding.
            let mut feeding = builder.take();
            // Counted only once the records are durable.
            let mut fed_stats = Stats::default();
            let put = sink.put(&key, spool.to_bytes(), "application/x-snappy-framed");
            let feed = async {
                match feeding.as_mut() {
                    Some(b) => {
                        self.feed(state, &sink, b, &fresh, &last, now_us, &mut fed_stats)
                            .await
                    }
                    None => false,
                }
            };
            let (stored, fed) = tokio::join!(put, feed);
            match stored {
                Ok(_) => {
                    stats.spooled += fresh.len() as u64;
                    tracing::debug!(key, records = fresh.len(), "spooled");
                    wstate.spools.push(last.clone());
                    stats.add(&fed_stats);
                    if fed {
                        builder = feeding;
                    }
                }
                Err(error) if ending => {
                    return Err(HandleError::WindowNotWritten {
                        window: describe(&id),
                        reason: format!("spool not written: {error}"),
                    });
                }
                // The cache holds rows that are not durable: it is dropped
                // (feeding was taken out of it), and the final invocation
                // rebuilds the window from its spool.
                Err(error) => {
                    // The state stays as it was: Kinesis sends these records again.
                    tracing::error!(key, %error, "spool not written: the batch will be redelivered");
                    redeliver_from = fresh.first().map(|r| seq(r).to_string());
                    stats.failed_files += 1;
                }
            }
        }

        // A window that holds acknowledged records is not in the lake yet:
        // its age is what an operator watches (`OpenWindowAge`).
        if wstate.is_open() {
            stats.open_window_age_ms = window_start_secs(&id.start)
                .map(|s| (now_us / 1000 - (s * 1000.0) as i64).max(0) as u64)
                .unwrap_or(0);
        }
        let response = if ending {
            let finished = self
                .finish(
                    state, &sink, &id, &wstate, builder, &rules, deadline, &mut stats,
                )
                .await;
            let finished = match finished {
                // Written before this invocation (by `windows finish`, the
                // sweep, or this invocation's earlier attempt): the records
                // the state lists that reached the spool after it are
                // written now, none twice.
                Ok(Finished::Before(covered)) => self
                    .write_late(state, &sink, &id, &wstate, covered, deadline, &mut stats)
                    .await
                    .map_err(|reason| (None, reason)),
                other => other.map(|_| ()),
            };
            if let Err((kept, reason)) = finished {
                if let Some(b) = kept {
                    state.windows.put(id.clone(), b);
                }
                self.conclude(state, deadline, &mut stats, None).await;
                return Err(HandleError::WindowNotWritten {
                    window: describe(&id),
                    reason,
                });
            }
            stats.windows_written += 1;
            // The window is done; Lambda starts the next one with a new state.
            json!({"state": {}, "batchItemFailures": []})
        } else {
            if let Some(mut b) = builder {
                // Parts are written early only under rules the state already
                // carried: a part written under rules that a retried first
                // invocation then replaced would be cut again, its rows
                // written twice.
                let marker = if rules_from_state {
                    self.window_marker(&sink, &id, &mut b).await
                } else {
                    Marker::Absent
                };
                let written_before = marker == Marker::Present;
                if rules_from_state && marker == Marker::Absent {
                    self.write_closed(state, &sink, &mut b, &mut wstate, &mut stats)
                        .await;
                }
                // A window written by hand (`windows finish`) keeps no cache:
                // its final invocation writes what it lacks (`write_late`).
                if !written_before {
                    state.windows.put(id.clone(), b);
                }
            }
            state
                .windows
                .evict(self.config.thresholds.max_buffered_bytes, &id);
            let size = wstate.lambda_bytes();
            if size > STATE_WARN_BYTES {
                tracing::warn!(
                    shard = id.shard,
                    window = id.start,
                    state_bytes = size,
                    "window state is large (Lambda ends a window early above 1 MB): \
                     raise BatchSize or MaximumBatchingWindowInSeconds, or shorten the window"
                );
            }
            let failures: Vec<serde_json::Value> = redeliver_from
                .iter()
                .map(|s| json!({ "itemIdentifier": s }))
                .collect();
            json!({"state": wstate.to_lambda(), "batchItemFailures": failures})
        };
        self.conclude(state, deadline, &mut stats, None).await;
        Ok(Outcome {
            response,
            stats,
            redeliver_from,
            is_flush: false,
        })
    }

    fn is_heartbeat(&self, record: &KinesisRecord<'_>) -> bool {
        if record.partition_key.as_deref() != Some(heartbeat::PARTITION_KEY) {
            return false;
        }
        let mut scratch = Vec::new();
        matches!(
            self.decode(record, &mut scratch),
            Ok(Message::TaskControl { operation }) if heartbeat::is_heartbeat(&operation)
        )
    }

    /// Takes a spool object's records into `builder`. False when a DDL
    /// record's schema change could not be registered: the builder is then
    /// out of step and must be dropped (the final invocation rebuilds it).
    #[allow(clippy::too_many_arguments)]
    async fn feed<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        builder: &mut Builder,
        records: &[KinesisRecord<'_>],
        last: &str,
        ingested_us: i64,
        stats: &mut Stats,
    ) -> bool {
        let mut scratch = Vec::new();
        let mut controls = Vec::new();
        let mut cut = 0;
        for (i, record) in records.iter().enumerate() {
            // Decoding does not wait on anything: yield now and then so that
            // a spool upload running beside it (`tokio::join!`) makes progress.
            if i % FEED_YIELD_EVERY == FEED_YIELD_EVERY - 1 {
                tokio::task::yield_now().await;
            }
            let Ok(rid) = &record.id else { continue };
            match self.ingest(
                &mut builder.batcher,
                record,
                rid,
                &mut scratch,
                ingested_us,
                stats,
            ) {
                Ingested::Row => cut += builder.row_fed(),
                Ingested::Task => {}
                Ingested::Control(control) => controls.push((control, rid.clone())),
                Ingested::Bad(entry) => builder.quarantine(entry),
            }
        }
        let applied = self
            .apply_controls(&mut state.schemas, sink, &controls, stats)
            .await;
        if let Some(error) = applied.into_iter().find_map(Result::err) {
            tracing::error!(%error, "control record not registered: the window will be rebuilt from its spool");
            return false;
        }
        let budget = builder.budget();
        cut += builder.batch_fed();
        if cut > 0 {
            tracing::info!(
                parts = cut,
                budget,
                "window over MAX_BUFFERED_BYTES: its largest parts are written early"
            );
            stats.budget_cuts += cut as u64;
        }
        builder.fed.push(last.to_string());
        true
    }

    /// Writes the parts a threshold or DDL record closed, unless the state
    /// says they are written; notes each one written in the state. A part
    /// that fails stays in the builder (its rows are in the spool).
    /// An earlier start of this window (its spool has objects): `Some`, with
    /// the rules its newest spool object records (only the attempt Lambda
    /// carried on reaches a later index); `None` when the spool is empty.
    async fn spooled_before<B: Sink>(
        &self,
        sink: &B,
        id: &WindowId,
    ) -> Result<Option<Option<WindowRules>>, String> {
        let dir = id.spool_dir(&self.config.prefix);
        let keys = sink
            .list(&dir)
            .await
            .map_err(|e| format!("window spool not listed: {e}"))?;
        let Some(newest) = keys.iter().filter(|k| k.ends_with(".jsonl.sz")).max() else {
            return Ok(None);
        };
        tracing::info!(
            shard = id.shard,
            window = id.start,
            "window started before (event source mapping created again?): its spool is written too"
        );
        let bytes = sink
            .get(newest)
            .await
            .map_err(|e| format!("spool object {newest} not read: {e}"))?;
        let rules = bytes
            .and_then(|b| Spool::from_bytes(newest, &b).ok())
            .and_then(|spool| spool.header.rules);
        if let Some(rules) = &rules {
            tracing::info!(
                shard = id.shard,
                window = id.start,
                ?rules,
                "cut by the rules it started with"
            );
        }
        Ok(Some(rules))
    }

    /// Whether the window was written before its end (`windows finish`
    /// by hand while Lambda still delivers it), asked only when `builder`
    /// has closed parts or quarantine files to write early: those would
    /// repeat rows the hand-written files hold. A marker that cannot be
    /// read (`Unknown`) keeps the closed parts for the window's end.
    async fn window_marker<B: Sink>(
        &self,
        sink: &B,
        id: &WindowId,
        builder: &mut Builder,
    ) -> Marker {
        let closed = builder.batcher.take_closed();
        if closed.is_empty() && builder.closed_quarantine.is_empty() {
            return Marker::Absent;
        }
        let done = sink.get(&id.done_key(&self.config.prefix)).await;
        for part in closed {
            builder.batcher.restore(part);
        }
        match done {
            Ok(None) => Marker::Absent,
            Ok(Some(_)) => {
                tracing::warn!(
                    shard = id.shard,
                    window = id.start,
                    "window written before its end (windows finish?): nothing written early; \
                     its final invocation writes what the lake lacks"
                );
                Marker::Present
            }
            Err(error) => {
                // Written at the end, where the marker is read again.
                tracing::warn!(shard = id.shard, window = id.start, %error,
                    "window marker not read: closed parts wait for the window's end");
                Marker::Unknown
            }
        }
    }

    async fn write_closed<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        builder: &mut Builder,
        wstate: &mut WindowState,
        stats: &mut Stats,
    ) {
        // Bad records cut into files of their own (see `Builder::quarantine`).
        let mut kept = Vec::new();
        for entries in std::mem::take(&mut builder.closed_quarantine) {
            let note = quarantine_note(&entries);
            if wstate.is_written(&note) {
                continue;
            }
            if self.write_quarantine(sink, &entries, now_micros()).await {
                stats.quarantined += entries.len() as u64;
                wstate.written.push(note);
            } else {
                kept.push(entries);
            }
        }
        builder.closed_quarantine = kept;
        let closed = builder.batcher.take_closed();
        let todo: Vec<_> = closed
            .into_iter()
            .filter(|p| !wstate.is_written(p.digest()))
            .map(|p| (p, DueReason::Window))
            .collect();
        if todo.is_empty() {
            return;
        }
        let written = PartWriter::new(&self.config)
            .write(&mut state.schemas, sink, todo, stats)
            .await;
        wstate.written.extend(written.digests);
        for part in written.failed {
            builder.batcher.restore(part);
        }
    }

    /// Writes everything of the window that is not written yet. On failure
    /// the builder (if in step) is handed back to be kept.
    #[allow(clippy::too_many_arguments)]
    async fn finish<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        id: &WindowId,
        wstate: &WindowState,
        builder: Option<Builder>,
        rules: &WindowRules,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) -> Result<Finished, (Option<Builder>, String)> {
        // Parts written from here on need no note in the state: the window
        // ends with this invocation.
        let mut notes = wstate.clone();
        let done_key = id.done_key(&self.config.prefix);
        // An attempt that met a lost range cut the window without it; this
        // environment's cache still holds those records and would cut it
        // as it was: once a loss is recorded, every attempt rebuilds.
        let check_lost = builder.is_some() && self.shard_reader.is_some();
        let lost_dir = id.lost_dir(&self.config.prefix);
        let (done, lost) = tokio::join!(sink.get(&done_key), async {
            if check_lost {
                Some(sink.list(&lost_dir).await)
            } else {
                None
            }
        });
        match done {
            Ok(Some(marker)) => {
                tracing::info!(
                    shard = id.shard,
                    window = id.start,
                    "window already written (a final invocation retried after it succeeded, \
                     or the window was finished from its spool)"
                );
                return Ok(Finished::Before(covered_objects(&marker)));
            }
            Ok(None) => {}
            Err(e) => return Err((builder, format!("window marker not read: {e}"))),
        }
        let builder = match lost {
            Some(Ok(lost)) if !lost.is_empty() => None,
            Some(Err(e)) => return Err((builder, format!("lost ranges not listed: {e}"))),
            _ => builder,
        };
        let mut b = match builder {
            Some(b) => b,
            None => self
                .rebuild(state, sink, id, &mut notes, rules, stats)
                .await
                .map_err(|reason| (None, reason))?,
        };
        self.write_closed(state, sink, &mut b, &mut notes, stats)
            .await;
        let rest: Vec<_> = b
            .batcher
            .take_all()
            .into_iter()
            .filter(|p| !notes.is_written(p.digest()))
            .map(|p| (p, DueReason::Window))
            .collect();
        let written = PartWriter::new(&self.config)
            .write(&mut state.schemas, sink, rest, stats)
            .await;
        let failed = written.failed.len();
        for part in written.failed {
            b.batcher.restore(part);
        }
        let now_us = now_micros();
        // Cut quarantine files that failed stay in the builder: not done.
        let quarantined = b.closed_quarantine.is_empty()
            && self.write_quarantine(sink, &b.quarantined, now_us).await;
        if quarantined {
            stats.quarantined += b.quarantined.len() as u64;
        }
        self.save_schemas(state, sink, stats).await;
        // An earlier start's spool objects: what they hold that the lake
        // lacks, before the window is marked written.
        let mut objects: Vec<String> = wstate
            .spools
            .iter()
            .enumerate()
            .map(|(index, last)| object_name(&id.spool_key("", index, last)).to_string())
            .collect();
        if wstate.started_before && (failed, quarantined) == (0, true) {
            match self
                .write_unlisted(state, sink, id, wstate, deadline, stats)
                .await
            {
                Ok(keys) => objects.extend(keys.iter().map(|k| object_name(k).to_string())),
                Err(reason) => return Err((Some(b), reason)),
            }
        }
        let unsaved = state.schemas.unsaved_records().len();
        let marked = (failed, quarantined, unsaved) == (0, true, 0) && {
            let marker = json!({
                "window_start": id.start,
                "spools": wstate.spools.len(),
                "objects": objects,
                "written_at": chrono::Utc::now().to_rfc3339(),
            });
            let body = serde_json::to_vec(&marker).unwrap_or_default();
            match sink.put(&done_key, body, "application/json").await {
                Ok(_) => {
                    // Only an index: a window without it is looked up by
                    // its `_done.json` (and indexed) by the sweep.
                    let index = id.done_index_key(&self.config.prefix);
                    if let Err(e) = sink.put(&index, Vec::new(), "text/plain").await {
                        tracing::warn!(key = index, error = %e, "window index marker not written");
                    }
                    true
                }
                Err(e) => {
                    tracing::error!(key = done_key, error = %e, "window marker not written");
                    false
                }
            }
        };
        match (failed, quarantined, unsaved) {
            (0, true, 0) if marked => {
                tracing::info!(
                    shard = id.shard, window = id.start, spools = wstate.spools.len(),
                    "window written"
                );
                Ok(Finished::Now)
            }
            _ => Err((
                Some(b),
                format!(
                    "{failed} file(s) not written, quarantine {}, {unsaved} schema change(s) not stored{}",
                    if quarantined { "written" } else { "not written" },
                    if marked { "" } else { ", window marker not written" }
                ),
            )),
        }
    }

    /// The records of a window that was written before its final invocation
    /// ran, whose rows no file holds: the spool objects the state lists that
    /// `_done.json` does not name (spooled after `windows finish` wrote the
    /// window by hand) are read, and what the lake lacks goes through the
    /// plain path, under the lake check `redrive` uses. A final invocation
    /// retried after it succeeded finds every object named and reads
    /// nothing.
    #[allow(clippy::too_many_arguments)]
    async fn write_late<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        id: &WindowId,
        wstate: &WindowState,
        covered: Option<HashSet<String>>,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) -> Result<(), String> {
        // A marker that names no objects (an older release's) was written
        // by a final invocation of this state: nothing came after it.
        let Some(covered) = covered else {
            return Ok(());
        };
        let mut spools = Vec::new();
        for (index, last) in wstate.spools.iter().enumerate() {
            let key = id.spool_key(&self.config.prefix, index, last);
            if covered.contains(object_name(&key)) {
                continue;
            }
            let read = match sink.get(&key).await {
                Ok(Some(bytes)) => Spool::from_bytes(&key, &bytes).map_err(|e| e.to_string()),
                Ok(None) => Err(format!("spool object {key} is missing")),
                Err(error) => return Err(format!("spool object {key} not read: {error}")),
            };
            let spool = match read {
                Ok(spool) => spool,
                // Acknowledged after the window was written and gone from
                // the spool: read again from the stream, or a recorded loss.
                Err(why) => {
                    let lost = LostSpool {
                        index,
                        key: &key,
                        after: index.checked_sub(1).map(|i| wstate.spools[i].as_str()),
                        first: wstate.first.as_deref(),
                        last,
                    };
                    self.recover(sink, id, &lost, &why, stats).await?.0
                }
            };
            spools.push(spool);
        }
        self.write_missing(state, id, spools, deadline, stats).await
    }

    /// The spool objects of the window's directory that `wstate` does not
    /// list: an earlier start's (and orphans of retried attempts, whose
    /// records are the state's too).
    async fn unlisted_spools<B: Sink>(
        &self,
        sink: &B,
        id: &WindowId,
        wstate: &WindowState,
    ) -> Result<Vec<String>, String> {
        let listed: std::collections::HashSet<String> = wstate
            .spools
            .iter()
            .enumerate()
            .map(|(index, last)| id.spool_key(&self.config.prefix, index, last))
            .collect();
        let keys = sink
            .list(&id.spool_dir(&self.config.prefix))
            .await
            .map_err(|e| format!("window spool not listed: {e}"))?;
        Ok(keys
            .into_iter()
            .filter(|k| k.ends_with(".jsonl.sz") && !listed.contains(k))
            .collect())
    }

    /// The records of an earlier start of the window (spool objects its
    /// state does not list) whose rows the lake lacks, written through the
    /// plain path.
    async fn write_unlisted<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        id: &WindowId,
        wstate: &WindowState,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) -> Result<Vec<String>, String> {
        let keys = self.unlisted_spools(sink, id, wstate).await?;
        let mut spools = Vec::with_capacity(keys.len());
        for key in &keys {
            let bytes = sink
                .get(key)
                .await
                .map_err(|e| format!("spool object {key} not read: {e}"))?;
            let read = match bytes {
                Some(b) => Spool::from_bytes(key, &b).map_err(|e| e.to_string()),
                None => Err(format!("spool object {key} is missing")),
            };
            match read {
                Ok(spool) => spools.push(spool),
                // Gone or damaged since: its records are read again from
                // the stream from the window's start to the object's last
                // (its name's), or the range is a recorded loss.
                Err(why) => {
                    let name = object_name(key).trim_end_matches(".jsonl.sz");
                    let (index, last) = name
                        .split_once('_')
                        .and_then(|(i, l)| Some((i.parse().ok()?, l)))
                        .ok_or_else(|| format!("{why}; and its name says no range"))?;
                    let lost = LostSpool {
                        index,
                        key,
                        after: None,
                        first: None,
                        last,
                    };
                    spools.push(self.recover(sink, id, &lost, &why, stats).await?.0);
                }
            }
        }
        self.write_missing(state, id, spools, deadline, stats)
            .await?;
        Ok(keys)
    }

    /// Writes the records of `spools` whose rows no file holds (the lake
    /// check `redrive` uses), through the plain path.
    async fn write_missing(
        &self,
        state: &mut State,
        id: &WindowId,
        spools: Vec<Spool>,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) -> Result<(), String> {
        let mut records: BTreeMap<(usize, String), SpooledRecord> = BTreeMap::new();
        for spool in spools {
            for r in spool.records {
                records.insert((r.sequence.len(), r.sequence.clone()), r);
            }
        }
        let records: Vec<SpooledRecord> = records.into_values().collect();
        let missing = redrive::not_in_lake(self, &id.stream_arn, &id.shard, &records).await?;
        if missing.is_empty() {
            return Ok(());
        }
        tracing::warn!(
            shard = id.shard,
            window = id.start,
            records = missing.len(),
            "spooled records no file holds (reached the window after it was written, or spooled by an earlier start of it): written now"
        );
        let (stream, shard): (Arc<str>, Arc<str>) =
            (id.stream_arn.as_str().into(), id.shard.as_str().into());
        let late: Vec<KinesisRecord<'_>> = missing
            .iter()
            .map(|r| r.kinesis_record(&stream, &shard))
            .collect();
        let (outcome, failed) =
            Box::pin(self.take_batch(state, &late, deadline, Deliveries::Take)).await;
        stats.add(&outcome.stats);
        match failed {
            Some(from) => Err(format!("late records from {} not written", from.sequence)),
            None => Ok(()),
        }
    }

    /// Reads the window's spool objects (several at once, fed in order) into
    /// a new builder, writing parts as they close.
    ///
    /// A range of records lost from both the spool and the stream moves
    /// every cut after it, so parts that earlier invocations wrote early
    /// (the state's `written`) would be cut again with other rows and
    /// written a second time. The rebuild then starts over: it surveys the
    /// window's tables and hours, lists the files already written for them,
    /// and leaves their rows out.
    async fn rebuild<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        id: &WindowId,
        notes: &mut WindowState,
        rules: &WindowRules,
        stats: &mut Stats,
    ) -> Result<Builder, String> {
        let survey = match self
            .rebuild_pass(state, sink, id, notes, rules, Pass::Write, stats)
            .await?
        {
            Rebuilt::Whole(builder) => return Ok(builder),
            Rebuilt::Lost(survey) => survey,
        };
        tracing::warn!(
            shard = id.shard,
            window = id.start,
            "records lost: rebuilding the window without the rows already written"
        );
        let skip = self.written_rows(sink, id, &survey.batcher, notes).await?;
        drop(survey);
        tracing::info!(
            shard = id.shard,
            window = id.start,
            parts = skip.len(),
            "files already written: their rows are left out"
        );
        match self
            .rebuild_pass(state, sink, id, notes, rules, Pass::Skip(skip), stats)
            .await?
        {
            Rebuilt::Whole(builder) | Rebuilt::Lost(builder) => Ok(builder),
        }
    }

    /// One pass over the window's spool objects. In a [`Pass::Write`] pass,
    /// from a lost range on nothing more is written and the pass only
    /// surveys the rest ([`Rebuilt::Lost`]).
    #[allow(clippy::too_many_arguments)]
    async fn rebuild_pass<B: Sink>(
        &self,
        state: &mut State,
        sink: &B,
        id: &WindowId,
        notes: &mut WindowState,
        rules: &WindowRules,
        pass: Pass,
        stats: &mut Stats,
    ) -> Result<Rebuilt, String> {
        let mut builder = Builder::new(rules, &self.config.thresholds);
        let first_pass = matches!(pass, Pass::Write);
        let mut lost = false;
        if let Pass::Skip(skip) = pass {
            builder.batcher.skip_rows(skip);
        }
        let keys: Vec<(usize, String, String)> = notes
            .spools
            .iter()
            .enumerate()
            .map(|(i, last)| (i, id.spool_key(&self.config.prefix, i, last), last.clone()))
            .collect();
        if !keys.is_empty() {
            tracing::info!(
                shard = id.shard,
                window = id.start,
                spools = keys.len(),
                "rebuilding the window from its spool"
            );
        }
        let mut reads = futures_util::stream::iter(keys)
            .map(|(index, key, last)| async move {
                let got = sink.get(&key).await;
                (index, key, last, got)
            })
            .buffered(MAX_CONCURRENT_READS);
        let spools = notes.spools.clone();
        while let Some((index, key, last, got)) = reads.next().await {
            // A missing or damaged object is not an outage: its records are
            // read again from the stream (an outage fails the invocation,
            // and Lambda retries it).
            let read = match got {
                Ok(Some(bytes)) => Spool::from_bytes(&key, &bytes).map_err(|e| e.to_string()),
                Ok(None) => Err(format!("spool object {key} is missing")),
                Err(error) => return Err(format!("spool object not read: {error}")),
            };
            let spool = match read {
                Ok(spool) => spool,
                Err(why) => {
                    let lost_spool = LostSpool {
                        index,
                        key: &key,
                        after: index.checked_sub(1).map(|i| spools[i].as_str()),
                        first: notes.first.as_deref(),
                        last: &last,
                    };
                    // The loss is counted once, in the first pass.
                    let mut again = Stats::default();
                    let counted = if first_pass { &mut *stats } else { &mut again };
                    let (spool, gap) = self.recover(sink, id, &lost_spool, &why, counted).await?;
                    lost |= gap && first_pass;
                    spool
                }
            };
            let records = spool.kinesis_records();
            let spooled_at = spool.header.spooled_at_us;
            if !self
                .feed(
                    state,
                    sink,
                    &mut builder,
                    &records,
                    &last,
                    spooled_at,
                    stats,
                )
                .await
            {
                return Err("a control record's schema change could not be stored".into());
            }
            if !lost {
                self.write_closed(state, sink, &mut builder, notes, stats)
                    .await;
            }
        }
        Ok(if lost {
            Rebuilt::Lost(builder)
        } else {
            Rebuilt::Whole(builder)
        })
    }

    /// The rows of files already written from this window: files of its
    /// shard in the tables and hours `survey` holds (their keys name their
    /// first and last sequence numbers) that are this window's — listed in
    /// its state as written, or holding exactly the rows `survey` has in that
    /// range (the digest tells another stream's file of the same shard id
    /// apart).
    async fn written_rows<B: Sink>(
        &self,
        sink: &B,
        id: &WindowId,
        survey: &domain::batcher::Batcher,
        notes: &WindowState,
    ) -> Result<SkipRows, String> {
        let mut skip = SkipRows::default();
        for (table, hour) in survey.table_hours() {
            let dir = domain::layout::partition_dir(
                &self.config.prefix,
                self.config.partition_style,
                &table,
                hour,
                survey.cut(),
            );
            let keys = sink
                .list(&domain::layout::shard_files_prefix(&dir, &id.shard))
                .await
                .map_err(|e| format!("files of {table} not listed: {e}"))?;
            for key in keys {
                let Some((first, last, digest)) = domain::layout::stem_parts(&key) else {
                    continue;
                };
                let ours = notes.is_written(digest)
                    || domain::layout::rows_digest(&survey.ids_between(&table, hour, first, last))
                        == digest;
                if ours {
                    skip.add(table.clone(), hour, first.to_string(), last.to_string());
                }
            }
        }
        Ok(skip)
    }
}

/// A window's `_done.json`, looked for before parts are written early.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Marker {
    Absent,
    Present,
    Unknown,
}

/// How a final invocation found its window.
enum Finished {
    /// Written by this invocation.
    Now,
    /// Written before (`_done.json` was there), from the spool objects it
    /// names (`None`: a marker of a release that did not name them).
    Before(Option<HashSet<String>>),
}

/// The spool objects (file names) a window's `_done.json` says it was
/// written from.
fn covered_objects(marker: &[u8]) -> Option<HashSet<String>> {
    let v: serde_json::Value = serde_json::from_slice(marker).ok()?;
    Some(
        v.get("objects")?
            .as_array()?
            .iter()
            .filter_map(|o| o.as_str().map(String::from))
            .collect(),
    )
}

/// A spool key's file name (what `_done.json` lists).
fn object_name(key: &str) -> &str {
    key.rsplit('/').next().unwrap_or(key)
}

/// What a pass over a window's spool does.
enum Pass {
    /// Feed and write parts as they close, until a lost range.
    Write,
    /// Feed and write, leaving out rows already written.
    Skip(SkipRows),
}

enum Rebuilt {
    Whole(Builder),
    /// A range was lost: the builder holds every table and hour of the
    /// window, but its cuts after the loss are not to be written.
    Lost(Builder),
}

/// A spool object that could not be read, and the records it held: those
/// after `after` (or from `first`, for the window's first object) up to
/// `last`.
struct LostSpool<'a> {
    index: usize,
    key: &'a str,
    after: Option<&'a str>,
    first: Option<&'a str>,
    last: &'a str,
}

impl<S: Sink> Pipeline<S> {
    /// The records of a lost spool object, read again from the stream. What
    /// the stream no longer has either is gone from every durable place: the
    /// range is recorded under `_errors/lost/`, counted (`LostRanges`) and
    /// logged, and the window is written without it. Anything that may be
    /// an outage fails the invocation instead (Lambda retries it).
    async fn recover<B: Sink>(
        &self,
        sink: &B,
        id: &WindowId,
        lost: &LostSpool<'_>,
        why: &str,
        stats: &mut Stats,
    ) -> Result<(Spool, bool), String> {
        let Some(reader) = &self.shard_reader else {
            return Err(format!("{why}; no stream reader to read its records again"));
        };
        tracing::error!(
            shard = id.shard,
            window = id.start,
            key = lost.key,
            reason = why,
            "spool object unreadable: reading its records again from the stream"
        );
        let from = match (lost.after, lost.first) {
            (Some(after), _) => ReadFrom::Sequence(after.to_string()),
            (None, Some(first)) => ReadFrom::Sequence(first.to_string()),
            // A window from before the first sequence number was recorded.
            (None, None) => ReadFrom::Time(window_start_secs(&id.start)?),
        };
        let (mut records, gap) = match reader
            .read(&id.stream_arn, &id.shard, &from, lost.last)
            .await
        {
            Ok(range) => {
                let gap = match (&from, range.records.first()) {
                    (_, None) => Some(None),
                    (ReadFrom::Sequence(_), Some(_)) => range.first_available.clone().map(Some),
                    (ReadFrom::Time(_), Some(_)) => None,
                };
                (range.records, gap)
            }
            Err(ReadError::Gone(e)) => {
                tracing::error!(
                    shard = id.shard,
                    error = e,
                    "the stream no longer has the shard"
                );
                (Vec::new(), Some(None))
            }
            Err(ReadError::Unavailable(e)) => {
                return Err(format!("{why}, and the stream could not be read: {e}"))
            }
        };
        // Only the lost object's records: after the previous object's last.
        if let Some(after) = lost.after {
            records.retain(|r| sequence_cmp(&r.sequence, after).is_gt());
        }
        records.retain(|r| sequence_cmp(&r.sequence, lost.last).is_le());
        let lost_some = gap.is_some();
        if let Some(first_available) = gap {
            self.record_loss(sink, id, lost, why, first_available.as_deref(), stats)
                .await?;
        }
        Ok((Spool::from_stream(id, &records, now_micros()), lost_some))
    }

    /// Writes the record of a lost range (no row values: where it was, why).
    async fn record_loss<B: Sink>(
        &self,
        sink: &B,
        id: &WindowId,
        lost: &LostSpool<'_>,
        why: &str,
        first_available: Option<&str>,
        stats: &mut Stats,
    ) -> Result<(), String> {
        let key = id.lost_key(&self.config.prefix, lost.index);
        let record = json!({
            "stream_arn": id.stream_arn,
            "shard_id": id.shard,
            "window_start": id.start,
            "spool_key": lost.key,
            // The lost records are those after `after_sequence_number` (or
            // from `first_sequence_number`) and before `first_available`
            // (up to `last_sequence_number` when none is left).
            "after_sequence_number": lost.after,
            "first_sequence_number": if lost.after.is_none() { lost.first } else { None },
            "first_available": first_available,
            "last_sequence_number": lost.last,
            "spool_error": why,
            "detected_at": chrono::Utc::now().to_rfc3339(),
        });
        let body = serde_json::to_vec_pretty(&record).unwrap_or_default();
        sink.put(&key, body, "application/json")
            .await
            .map_err(|e| format!("lost range not recorded ({key}): {e}"))?;
        stats.lost_ranges += 1;
        tracing::error!(
            key, shard = id.shard, window = id.start,
            after = lost.after, last = lost.last, first_available,
            "records lost: gone from the spool and from the stream; the window is written without them"
        );
        Ok(())
    }
}

/// `window.start` in epoch seconds.
fn window_start_secs(start: &str) -> Result<f64, String> {
    chrono::DateTime::parse_from_rfc3339(start)
        .map(|t| t.timestamp() as f64)
        .map_err(|e| format!("window start {start:?} is not RFC 3339: {e}"))
}

fn seq<'a>(record: &'a KinesisRecord<'_>) -> &'a str {
    record.id.as_ref().map_or("", |id| id.sequence.as_str())
}

fn describe(id: &WindowId) -> String {
    format!("{} {} {}", id.stream_arn, id.shard, id.start)
}
