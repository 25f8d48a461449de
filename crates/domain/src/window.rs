//! A shard's tumbling window, as far as it must survive any one execution
//! environment: the `state` Lambda carries from invocation to invocation
//! (which spool objects hold the window's records, which parts are already
//! written), the spool objects' keys, and their content. Pure: no I/O.
//!
//! Lambda passes each invocation of a window the `state` the previous
//! successful one returned, and makes a final invocation
//! (`isFinalInvokeForWindow`) that it retries until it succeeds (Lambda
//! developer guide, "Implementing stateful Kinesis Data Streams processing in
//! Lambda"). So the state, not an environment's memory, says what the window
//! holds. What an environment decoded of a window is only a cache of it
//! (`WindowCache`), used while it is in step with the state.

use std::borrow::Cow;
use std::collections::HashMap;
use std::fmt::Write as _;
use std::io::{Read as _, Write as _};
use std::sync::Arc;
use std::time::{Duration, Instant};

use serde::{Deserialize, Serialize};
use sha2::{Digest, Sha256};

use crate::batcher::Batcher;
use crate::batcher::Thresholds;
use crate::event::{sequence_cmp, KinesisRecord};
use crate::names::RecordId;
use crate::quarantine::QuarantineEntry;

/// The member of Lambda's `state` map that holds ours. Lambda's state is a
/// JSON object; string values are what every runtime's types accept.
pub const STATE_KEY: &str = "cdc-batcher";

/// Lambda ends a window early when the state exceeds 1 MB per shard; we warn
/// well before (each invocation adds one sequence number, about 60 bytes).
pub const STATE_WARN_BYTES: usize = 256 * 1024;

/// The state format this build writes. It reads every version up to this
/// one; a newer one fails the invocation (Lambda retries it) instead of being
/// misread. History: 1 = spools + written; 2 = + the window's rules and its
/// first sequence number.
pub const STATE_VERSION: u32 = 3;
/// What a state without [`WindowState::started_before`] is written as: a
/// release that reads version 2 reads it (rollbacks stall only windows
/// that need version 3).
const PLAIN_STATE_VERSION: u32 = 2;

use crate::batcher::{BUDGET_BY_ROWS_FROM, BUDGET_CHECK_ROWS, CUT_VERSION};

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WindowError {
    #[error(
        "window state is not ours or is damaged ({0}); refusing to guess what the window holds"
    )]
    BadState(String),
    #[error("spool object {key} is damaged: {reason}")]
    BadSpool { key: String, reason: String },
    /// Written by a newer release: finishing it with this one could cut it
    /// differently (duplicate rows) or misread what it lists.
    #[error(
        "window state written by a newer release ({what} {found}, this build knows up to {known}): \
         the invocation fails and Lambda retries it; deploy that release again \
         (docs/operating.md \"Upgrades and rollbacks\")"
    )]
    Newer {
        what: &'static str,
        found: u32,
        known: u32,
    },
}

/// What decides where a window's files are cut, fixed when the window's
/// first batch is spooled. Every environment that takes the window further,
/// whatever it is configured with or whichever release it runs, cuts it with
/// these, so a rebuild writes the same files under the same keys as the
/// environment that started it (changing a threshold mid-window would
/// otherwise write rows a second time under other keys).
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowRules {
    /// [`CUT_VERSION`] of the release that started the window.
    #[serde(rename = "cut")]
    pub cut: u32,
    /// `BATCH_SIZE_BYTES_THRESHOLD`
    #[serde(rename = "b")]
    pub max_bytes: u64,
    /// `BATCH_MAX_RECORDS_THRESHOLD`
    #[serde(rename = "r")]
    pub max_records: u64,
    /// `MAX_BUFFERED_BYTES` (set from the memory size by default)
    #[serde(rename = "m")]
    pub max_buffered_bytes: u64,
}

impl WindowRules {
    /// The rules of a window started now with these thresholds.
    pub fn of(t: &Thresholds) -> WindowRules {
        WindowRules {
            cut: CUT_VERSION,
            max_bytes: t.max_bytes as u64,
            max_records: t.max_records as u64,
            max_buffered_bytes: t.max_buffered_bytes as u64,
        }
    }

    /// The thresholds to cut the window with (the age threshold plays no
    /// part in a window: it is cut by size, count, DDL records and budget).
    pub fn thresholds(&self, base: &Thresholds) -> Thresholds {
        let fit = |v: u64| usize::try_from(v).unwrap_or(usize::MAX);
        Thresholds {
            max_bytes: fit(self.max_bytes),
            max_records: fit(self.max_records),
            max_buffered_bytes: fit(self.max_buffered_bytes),
            ..base.clone()
        }
    }
}

/// What a window has made durable so far.
#[derive(Debug, Clone, Default, PartialEq, Eq, Serialize, Deserialize)]
pub struct WindowState {
    #[serde(rename = "v")]
    version: u32,
    /// The last sequence number of each spool object, in the order written;
    /// the last one is the highest sequence number the window holds.
    #[serde(rename = "spools", default)]
    pub spools: Vec<String>,
    /// Digests (file stems' last segment) of data parts already written.
    #[serde(rename = "written", default)]
    pub written: Vec<String>,
    /// The first sequence number spooled: where the window's records start
    /// in the shard, to read them again if a spool object is lost (absent
    /// in version 1 states).
    #[serde(rename = "from", default, skip_serializing_if = "Option::is_none")]
    pub first: Option<String>,
    /// How the window is cut (absent in version 1 states, whose windows are
    /// then fixed to the settings of the first environment of this release
    /// that meets them).
    #[serde(rename = "rules", default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<WindowRules>,
    /// The window's spool held objects when it started (state version 3):
    /// an earlier start of the same shard and window (the event source
    /// mapping created again) whose records the final invocation writes
    /// too, those the lake lacks.
    #[serde(rename = "pre", default, skip_serializing_if = "std::ops::Not::not")]
    pub started_before: bool,
}

impl WindowState {
    /// Reads our member of Lambda's `state` object (JSON text). No state or
    /// an empty object is a new window.
    pub fn from_lambda(state: Option<&str>) -> Result<WindowState, WindowError> {
        let Some(text) = state else {
            return Ok(WindowState::fresh());
        };
        let map: HashMap<String, serde_json::Value> =
            serde_json::from_str(text).map_err(|e| WindowError::BadState(e.to_string()))?;
        let Some(ours) = map.get(STATE_KEY) else {
            return Ok(WindowState::fresh());
        };
        let inner = ours
            .as_str()
            .ok_or_else(|| WindowError::BadState(format!("{STATE_KEY} is not a string")))?;
        let state: WindowState =
            serde_json::from_str(inner).map_err(|e| WindowError::BadState(e.to_string()))?;
        if state.version == 0 {
            return Err(WindowError::BadState("version 0".into()));
        }
        if state.version > STATE_VERSION {
            return Err(WindowError::Newer {
                what: "state version",
                found: state.version,
                known: STATE_VERSION,
            });
        }
        if let Some(rules) = state.rules.as_ref().filter(|r| r.cut > CUT_VERSION) {
            return Err(WindowError::Newer {
                what: "cut version",
                found: rules.cut,
                known: CUT_VERSION,
            });
        }
        Ok(state)
    }

    pub fn fresh() -> WindowState {
        WindowState {
            version: PLAIN_STATE_VERSION,
            ..WindowState::default()
        }
    }

    /// The value for the response's `state`.
    pub fn to_lambda(&self) -> serde_json::Value {
        let inner = serde_json::to_string(self).unwrap_or_default();
        serde_json::json!({ STATE_KEY: inner })
    }

    /// The rules this window is cut by: the recorded ones, or (a new window,
    /// or a version 1 state) `current`, which are recorded from now on. A
    /// version 1 state was written by a release that cut and named by cut
    /// version 1, so its window keeps that.
    pub fn settle_rules(&mut self, current: &Thresholds) -> WindowRules {
        let from_version_1 = self.version == 1;
        self.version = if self.started_before {
            STATE_VERSION
        } else {
            PLAIN_STATE_VERSION
        };
        self.rules
            .get_or_insert_with(|| WindowRules {
                cut: if from_version_1 { 1 } else { CUT_VERSION },
                ..WindowRules::of(current)
            })
            .clone()
    }

    /// The window's spool already held objects when it started: its final
    /// invocation also writes what they hold that the lake lacks.
    pub fn mark_started_before(&mut self) {
        self.started_before = true;
        self.version = STATE_VERSION;
    }

    /// Whether the window holds spooled records (acknowledged to Kinesis,
    /// durable only in the spool until the window is written).
    pub fn is_open(&self) -> bool {
        !self.spools.is_empty()
    }

    /// The highest sequence number already spooled in this window.
    pub fn high(&self) -> Option<&str> {
        self.spools.last().map(String::as_str)
    }

    /// Whether a record is already durable in this window's spool. Records
    /// are spooled as a prefix of the shard's sequence (see `windowed`), so
    /// "at or below the highest" is exact.
    pub fn holds(&self, sequence: &str) -> bool {
        self.high()
            .is_some_and(|h| sequence_cmp(sequence, h).is_le())
    }

    pub fn is_written(&self, digest: &str) -> bool {
        self.written.iter().any(|w| w == digest)
    }

    /// The serialised size Lambda will carry.
    pub fn lambda_bytes(&self) -> usize {
        self.to_lambda().to_string().len()
    }
}

/// Which window of which shard of which stream.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct WindowId {
    pub stream_arn: String,
    pub shard: String,
    /// `window.start` as Lambda sent it.
    pub start: String,
}

impl WindowId {
    /// `prefix/_spool/<stream>/<shard>/<window start>/`
    pub fn spool_dir(&self, prefix: &str) -> String {
        format!(
            "{prefix}_spool/{}/{}/{}/",
            stream_token(&self.stream_arn),
            key_safe(&self.shard),
            key_safe(&compact_time(&self.start))
        )
    }

    /// Where the loss of the window's `index`-th spool object's records is
    /// recorded (`prefix/_errors/lost/<stream>/<shard>/<window start>/`):
    /// one key per range, so a retried final invocation writes it once.
    pub fn lost_key(&self, prefix: &str, index: usize) -> String {
        format!("{}{index:06}.json", self.lost_dir(prefix))
    }

    /// Written once every file of the window is stored: a final
    /// invocation retried after one that succeeded (its response lost) has
    /// nothing left to do.
    pub fn done_key(&self, prefix: &str) -> String {
        format!("{}_done.json", self.spool_dir(prefix))
    }

    /// A second marker beside the window's spool directory
    /// (`prefix/_spool/<stream>/<shard>/<window start>.done`): one listing
    /// of a shard shows which windows are written without reading each
    /// `_done.json` (the scheduled sweep). `_done.json` stays the rule.
    pub fn done_index_key(&self, prefix: &str) -> String {
        format!("{}.done", self.spool_dir(prefix).trim_end_matches('/'))
    }

    /// Where the window's lost ranges are recorded.
    pub fn lost_dir(&self, prefix: &str) -> String {
        format!(
            "{prefix}_errors/lost/{}/{}/{}/",
            stream_token(&self.stream_arn),
            key_safe(&self.shard),
            key_safe(&compact_time(&self.start))
        )
    }

    /// The key of the window's `index`-th spool object whose last record is
    /// `last`: a retried invocation with the same records writes the same key.
    pub fn spool_key(&self, prefix: &str, index: usize, last: &str) -> String {
        format!(
            "{}{index:06}_{}.jsonl.sz",
            self.spool_dir(prefix),
            key_safe(last)
        )
    }
}

/// A stream's name (readable) and a digest of its whole ARN (two streams of
/// one name in other accounts or regions stay apart).
pub fn stream_token(arn: &str) -> String {
    let name = arn
        .rsplit('/')
        .next()
        .filter(|n| !n.is_empty())
        .unwrap_or("stream");
    let digest = Sha256::digest(arn.as_bytes());
    let mut out = key_safe(name);
    out.push('-');
    for b in &digest[..4] {
        let _ = write!(out, "{b:02x}");
    }
    out
}

/// `2026-03-14T01:02:00Z` → `20260314T010200Z`.
fn compact_time(t: &str) -> String {
    t.chars().filter(|c| !matches!(c, '-' | ':')).collect()
}

fn key_safe(s: &str) -> String {
    s.chars()
        .map(|c| {
            if c.is_ascii_alphanumeric() || matches!(c, '-' | '_' | '.') {
                c
            } else {
                '_'
            }
        })
        .collect()
}

/// One record as the spool keeps it: what arrived, enough to run it through
/// the pipeline again exactly as the first time.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpooledRecord {
    #[serde(rename = "s")]
    pub sequence: String,
    #[serde(rename = "k", default, skip_serializing_if = "Option::is_none")]
    pub partition_key: Option<String>,
    #[serde(rename = "t", default, skip_serializing_if = "Option::is_none")]
    pub arrival_seconds: Option<f64>,
    /// `kinesis.data` as delivered, or why it was unusable.
    #[serde(rename = "d", default, skip_serializing_if = "Option::is_none")]
    pub data: Option<String>,
    #[serde(rename = "e", default, skip_serializing_if = "Option::is_none")]
    pub data_error: Option<String>,
}

/// The first line of a spool object.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SpoolHeader {
    pub format: String,
    pub stream_arn: String,
    pub shard: String,
    pub window_start: String,
    /// When the records were spooled: every row's `_ingested_at`.
    pub spooled_at_us: i64,
    pub records: usize,
    /// The rules the window is cut by: a window started again for the same
    /// shard and start (the event source mapping created again) adopts
    /// them, so its parts are cut where the first one's were. Absent in
    /// objects written before.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub rules: Option<WindowRules>,
}

const SPOOL_FORMAT: &str = "cdc-batcher-spool/1";

/// A decoded spool object.
#[derive(Debug, Clone, PartialEq)]
pub struct Spool {
    pub header: SpoolHeader,
    pub records: Vec<SpooledRecord>,
}

impl Spool {
    /// The records of an invocation that are to be spooled. Records without a
    /// shard and sequence number cannot be ordered and are not spooled.
    pub fn of(window: &WindowId, records: &[KinesisRecord<'_>], spooled_at_us: i64) -> Spool {
        let records: Vec<SpooledRecord> = records
            .iter()
            .filter_map(|r| {
                let id = r.id.as_ref().ok()?;
                let (data, data_error) = match &r.data {
                    Ok(d) => (Some(d.to_string()), None),
                    Err(e) => (None, Some(e.clone())),
                };
                Some(SpooledRecord {
                    sequence: id.sequence.clone(),
                    partition_key: r.partition_key.as_deref().map(String::from),
                    arrival_seconds: r.arrival_seconds,
                    data,
                    data_error,
                })
            })
            .collect();
        Spool::new(window, records, spooled_at_us)
    }

    fn new(window: &WindowId, records: Vec<SpooledRecord>, spooled_at_us: i64) -> Spool {
        Spool {
            header: SpoolHeader {
                format: SPOOL_FORMAT.to_string(),
                stream_arn: window.stream_arn.clone(),
                shard: window.shard.clone(),
                window_start: window.start.clone(),
                spooled_at_us,
                records: records.len(),
                rules: None,
            },
            records,
        }
    }

    /// The spool object names the rules its window is cut by.
    pub fn with_rules(mut self, rules: &WindowRules) -> Spool {
        self.header.rules = Some(rules.clone());
        self
    }

    /// A spool object's records read again from the stream (its object
    /// was lost), as the pipeline takes them: `kinesis.data` is base64.
    pub fn from_stream(
        window: &WindowId,
        records: &[crate::event::StreamRecord],
        spooled_at_us: i64,
    ) -> Spool {
        use base64::Engine as _;
        let records: Vec<SpooledRecord> = records
            .iter()
            .map(|r| SpooledRecord {
                sequence: r.sequence.clone(),
                partition_key: Some(r.partition_key.clone()),
                arrival_seconds: Some(r.arrival_seconds),
                data: Some(base64::engine::general_purpose::STANDARD.encode(&r.data)),
                data_error: None,
            })
            .collect();
        Spool::new(window, records, spooled_at_us)
    }

    /// JSON Lines (header first), Snappy-framed.
    pub fn to_bytes(&self) -> Vec<u8> {
        let mut text = Vec::with_capacity(
            self.records
                .iter()
                .map(|r| r.data.as_ref().map_or(64, |d| d.len() + 96))
                .sum(),
        );
        // Serialising strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut text, &self.header);
        text.push(b'\n');
        for r in &self.records {
            let _ = serde_json::to_writer(&mut text, r);
            text.push(b'\n');
        }
        let mut out = Vec::with_capacity(text.len() / 3);
        let mut encoder = snap::write::FrameEncoder::new(&mut out);
        let _ = encoder.write_all(&text);
        drop(encoder);
        out
    }

    pub fn from_bytes(key: &str, bytes: &[u8]) -> Result<Spool, WindowError> {
        let bad = |reason: String| WindowError::BadSpool {
            key: key.to_string(),
            reason,
        };
        let mut text = Vec::with_capacity(bytes.len() * 3);
        snap::read::FrameDecoder::new(bytes)
            .read_to_end(&mut text)
            .map_err(|e| bad(format!("not Snappy-framed: {e}")))?;
        let mut lines = text.split(|&b| b == b'\n').filter(|l| !l.is_empty());
        let header: SpoolHeader = lines
            .next()
            .ok_or_else(|| bad("empty".into()))
            .and_then(|l| serde_json::from_slice(l).map_err(|e| bad(format!("header: {e}"))))?;
        if header.format != SPOOL_FORMAT {
            return Err(bad(format!("format {:?}", header.format)));
        }
        let records = lines
            .map(|l| serde_json::from_slice(l).map_err(|e| bad(format!("record: {e}"))))
            .collect::<Result<Vec<SpooledRecord>, _>>()?;
        if records.len() != header.records {
            return Err(bad(format!(
                "{} records, header says {}",
                records.len(),
                header.records
            )));
        }
        Ok(Spool { header, records })
    }

    /// The records as the pipeline reads them, borrowing from the spool.
    pub fn kinesis_records(&self) -> Vec<KinesisRecord<'_>> {
        let stream: Arc<str> = Arc::from(self.header.stream_arn.as_str());
        let shard: Arc<str> = Arc::from(self.header.shard.as_str());
        self.records
            .iter()
            .map(|r| r.kinesis_record(&stream, &shard))
            .collect()
    }
}

impl SpooledRecord {
    /// The record as the pipeline reads it, borrowing from this one.
    pub fn kinesis_record(&self, stream: &Arc<str>, shard: &Arc<str>) -> KinesisRecord<'_> {
        KinesisRecord {
            id: Ok(RecordId {
                stream: stream.clone(),
                shard: shard.clone(),
                sequence: self.sequence.clone(),
            }),
            data: match (&self.data, &self.data_error) {
                (Some(d), _) => Ok(Cow::Borrowed(d.as_str())),
                (None, Some(e)) => Err(e.clone()),
                (None, None) => Err("record has no kinesis.data".to_string()),
            },
            partition_key: self.partition_key.as_deref().map(Cow::Borrowed),
            arrival_seconds: self.arrival_seconds,
        }
    }
}

/// A cached window unused this long is dropped (its final invocation went to
/// another environment).
const CACHE_IDLE: Duration = Duration::from_secs(1800);

/// What this environment decoded of a window, in step with a state.
pub struct Builder {
    pub batcher: Batcher,
    /// The spool objects fed, as the state lists them.
    pub fed: Vec<String>,
    /// Quarantined records not yet cut into a file.
    pub quarantined: Vec<QuarantineEntry>,
    quarantined_bytes: usize,
    /// Quarantined records cut into files, in order, not yet written.
    pub closed_quarantine: Vec<Vec<QuarantineEntry>>,
    /// The rules it cuts by: the window's, not this environment's settings.
    pub rules: WindowRules,
    /// Rows fed so far, in sequence order (where the memory bound is checked).
    rows_fed: u64,
    used: Instant,
}

impl Builder {
    /// A builder that cuts by `rules` (`base` gives what rules leave open).
    pub fn new(rules: &WindowRules, base: &Thresholds) -> Self {
        let thresholds = rules.thresholds(base);
        Builder {
            rules: rules.clone(),
            batcher: Batcher::for_window(thresholds, rules.cut),
            fed: Vec::new(),
            quarantined: Vec::new(),
            quarantined_bytes: 0,
            closed_quarantine: Vec::new(),
            rows_fed: 0,
            used: Instant::now(),
        }
    }
}

impl Builder {
    /// The window's `MAX_BUFFERED_BYTES` (its rules').
    pub fn budget(&self) -> usize {
        usize::try_from(self.rules.max_buffered_bytes).unwrap_or(usize::MAX)
    }

    /// After each row fed into `batcher`: from cut version 3 on, the memory
    /// bound is checked every [`BUDGET_CHECK_ROWS`] rows of the window, so
    /// where it cuts depends on the window's rows alone, not on how Lambda
    /// batched them. Returns the parts it closed.
    pub fn row_fed(&mut self) -> usize {
        self.rows_fed += 1;
        // `buffered_bytes` (open and closed parts) bounds the open parts'
        // bytes: below the budget, the full check would close nothing.
        if self.rules.cut < BUDGET_BY_ROWS_FROM
            || !self.rows_fed.is_multiple_of(BUDGET_CHECK_ROWS)
            || self.batcher.buffered_bytes() <= self.budget()
        {
            return 0;
        }
        self.batcher.close_largest_open(self.budget())
    }

    /// At the end of a batch: where cut versions 1 and 2 checked the bound
    /// (a window started by them is finished by their rule).
    pub fn batch_fed(&mut self) -> usize {
        if self.rules.cut >= BUDGET_BY_ROWS_FROM {
            return 0;
        }
        self.batcher.close_largest_open(self.budget())
    }

    /// Takes a quarantined record. A window's bad records count against its
    /// memory budget too: once they hold a quarter of it they are cut into a
    /// file of their own. The cut depends only on the records, in sequence
    /// order, and the window's rules, so a rebuild cuts where the cache did.
    pub fn quarantine(&mut self, entry: QuarantineEntry) {
        self.quarantined_bytes += entry.held_bytes();
        self.quarantined.push(entry);
        if self.quarantined_bytes >= self.budget() / 4 {
            self.closed_quarantine
                .push(std::mem::take(&mut self.quarantined));
            self.quarantined_bytes = 0;
        }
    }

    /// Bytes of the quarantined records held, cut or not.
    pub fn quarantine_bytes(&self) -> usize {
        self.quarantined_bytes
            + self
                .closed_quarantine
                .iter()
                .flatten()
                .map(QuarantineEntry::held_bytes)
                .sum::<usize>()
    }
}

/// The name a quarantine file of a window is noted by in the state's
/// `written` (beside data parts' digests).
pub fn quarantine_note(entries: &[QuarantineEntry]) -> String {
    let ids: Vec<RecordId> = entries
        .iter()
        .filter_map(QuarantineEntry::record_id)
        .collect();
    format!("q{}", crate::layout::rows_digest(&ids))
}

/// The windows this environment holds decoded (a cache: any may be missing).
#[derive(Default)]
pub struct WindowCache {
    builders: HashMap<WindowId, Builder>,
}

impl WindowCache {
    /// Takes the window's builder out if it holds exactly the spool objects
    /// `spools` lists and cuts by the window's `rules`; one that does not is
    /// dropped. (A retried first invocation can settle other rules than the
    /// attempt that started this builder, when a deployment came between.)
    pub fn take(
        &mut self,
        id: &WindowId,
        spools: &[String],
        rules: &WindowRules,
    ) -> Option<Builder> {
        let builder = self.builders.remove(id)?;
        if builder.fed == spools && builder.rules == *rules {
            Some(builder)
        } else {
            tracing::info!(
                shard = id.shard,
                window = id.start,
                "cached window out of step with its state: it will be rebuilt from the spool"
            );
            None
        }
    }

    pub fn put(&mut self, id: WindowId, mut builder: Builder) {
        builder.used = Instant::now();
        self.builders.insert(id, builder);
    }

    pub fn buffered_bytes(&self) -> usize {
        self.builders
            .values()
            .map(|b| b.batcher.buffered_bytes() + b.quarantine_bytes())
            .sum()
    }

    /// Drops idle windows, then the least recently used ones until what is
    /// held fits `budget` (`keep` stays).
    pub fn evict(&mut self, budget: usize, keep: &WindowId) {
        self.builders
            .retain(|id, b| id == keep || b.used.elapsed() < CACHE_IDLE);
        while self.buffered_bytes() > budget {
            let oldest = self
                .builders
                .iter()
                .filter(|(id, _)| *id != keep)
                .min_by_key(|(_, b)| b.used)
                .map(|(id, _)| id.clone());
            match oldest {
                Some(id) => {
                    tracing::info!(shard = id.shard, window = id.start, "memory budget: dropping a cached window (it will be rebuilt from the spool)");
                    self.builders.remove(&id);
                }
                None => break,
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn window() -> WindowId {
        WindowId {
            stream_arn: "arn:aws:kinesis:us-east-1:123456789012:stream/dms".into(),
            shard: "shardId-000000000001".into(),
            start: "2026-03-14T01:02:00Z".into(),
        }
    }

    fn record(seq: &str, data: Result<&str, &str>) -> KinesisRecord<'static> {
        KinesisRecord {
            id: Ok(RecordId {
                stream: Arc::from("arn:aws:kinesis:us-east-1:123456789012:stream/dms"),
                shard: Arc::from("shardId-000000000001"),
                sequence: seq.to_string(),
            }),
            data: data
                .map(|d| Cow::Owned(d.to_string()))
                .map_err(String::from),
            partition_key: Some(Cow::Borrowed("sales.client")),
            arrival_seconds: Some(1_773_450_000.25),
        }
    }

    #[test]
    fn state_round_trips_through_lambdas_state_object() {
        let mut s = WindowState::fresh();
        assert_eq!(s.high(), None);
        assert!(!s.holds("1"));
        s.spools.push("105".into());
        s.spools.push("230".into());
        s.written.push("abcd".into());
        let lambda = s.to_lambda();
        let text = lambda.to_string();
        let back = WindowState::from_lambda(Some(&text)).unwrap();
        assert_eq!(back, s);
        assert!(back.holds("230") && back.holds("99") && !back.holds("231"));
        assert!(back.holds("0229"), "numeric, not text order");
        assert!(back.is_written("abcd") && !back.is_written("abce"));
        assert!(s.lambda_bytes() < 100);
    }

    #[test]
    fn no_state_or_an_empty_one_is_a_new_window() {
        assert_eq!(
            WindowState::from_lambda(None).unwrap(),
            WindowState::fresh()
        );
        assert_eq!(
            WindowState::from_lambda(Some("{}")).unwrap(),
            WindowState::fresh()
        );
    }

    #[test]
    fn a_damaged_state_is_an_error_not_an_empty_window() {
        for bad in [
            "[1]",
            r#"{"cdc-batcher": 5}"#,
            r#"{"cdc-batcher": "{\"v\": 0}"}"#,
            r#"{"cdc-batcher": "not json"}"#,
        ] {
            assert!(
                matches!(
                    WindowState::from_lambda(Some(bad)),
                    Err(WindowError::BadState(_))
                ),
                "{bad}"
            );
        }
    }

    #[test]
    fn a_state_of_a_newer_release_is_refused_not_misread() {
        let newer_state = format!(r#"{{"cdc-batcher": "{{\"v\": {}}}"}}"#, STATE_VERSION + 1);
        assert_eq!(
            WindowState::from_lambda(Some(&newer_state)),
            Err(WindowError::Newer {
                what: "state version",
                found: STATE_VERSION + 1,
                known: STATE_VERSION
            })
        );
        let mut s = WindowState::fresh();
        let mut rules = s.settle_rules(&Thresholds::unlimited());
        rules.cut = CUT_VERSION + 1;
        s.rules = Some(rules);
        let err = WindowState::from_lambda(Some(&s.to_lambda().to_string())).unwrap_err();
        assert!(
            matches!(
                err,
                WindowError::Newer {
                    what: "cut version",
                    ..
                }
            ),
            "{err}"
        );
        assert!(err.to_string().contains("newer release"), "{err}");
    }

    #[test]
    fn a_windows_rules_are_fixed_when_it_starts_and_survive_other_settings() {
        let started = Thresholds {
            max_bytes: 1000,
            max_records: 2,
            max_age: Duration::from_secs(60),
            max_buffered_bytes: 1 << 20,
        };
        let mut s = WindowState::fresh();
        let rules = s.settle_rules(&started);
        assert_eq!(rules.cut, CUT_VERSION);
        s.spools.push("5".into());
        let back = WindowState::from_lambda(Some(&s.to_lambda().to_string())).unwrap();
        // Another deployment, other settings: the window keeps its own.
        let other = Thresholds {
            max_records: 3,
            max_buffered_bytes: 64 << 20,
            ..started.clone()
        };
        let mut later = back.clone();
        assert_eq!(later.settle_rules(&other), rules);
        let t = rules.thresholds(&other);
        assert_eq!(
            (t.max_bytes, t.max_records, t.max_buffered_bytes),
            (1000, 2, 1 << 20)
        );
        // Unlimited thresholds survive the round trip.
        let mut u = WindowState::fresh();
        let ur = u.settle_rules(&Thresholds::unlimited());
        assert_eq!(ur.thresholds(&started).max_records, usize::MAX);
    }

    #[test]
    fn a_version_1_state_is_read_and_fixed_to_the_first_settings_that_meet_it() {
        // As the release before rules were recorded wrote it.
        let v1 = r#"{"cdc-batcher": "{\"v\":1,\"spools\":[\"17\"],\"written\":[\"ab\"]}"}"#;
        let mut s = WindowState::from_lambda(Some(v1)).unwrap();
        assert!(s.is_open() && s.rules.is_none() && s.first.is_none());
        assert!(s.is_written("ab"));
        let t = Thresholds {
            max_records: 7,
            ..Thresholds::unlimited()
        };
        let rules = s.settle_rules(&t);
        assert_eq!(rules.max_records, 7);
        // Its parts were named by the release that started it: cut version 1.
        assert_eq!(rules.cut, 1);
        assert_eq!(Builder::new(&rules, &t).batcher.cut(), 1);
        let again = WindowState::from_lambda(Some(&s.to_lambda().to_string())).unwrap();
        assert_eq!(again.rules.as_ref().map(|r| r.max_records), Some(7));
        assert_eq!(again.version, PLAIN_STATE_VERSION);
    }

    #[test]
    fn only_a_window_started_before_needs_state_version_3() {
        let t = Thresholds::unlimited();
        let mut plain = WindowState::fresh();
        plain.settle_rules(&t);
        let text = plain.to_lambda().to_string();
        assert!(!text.contains("pre"), "{text}");
        assert_eq!(WindowState::from_lambda(Some(&text)).unwrap().version, 2);
        let mut again = WindowState::fresh();
        again.mark_started_before();
        again.settle_rules(&t);
        let read = WindowState::from_lambda(Some(&again.to_lambda().to_string())).unwrap();
        assert!(read.started_before);
        assert_eq!(read.version, STATE_VERSION);
    }

    #[test]
    fn a_windows_bad_records_are_cut_into_files_at_a_quarter_of_its_budget() {
        let base = Thresholds {
            max_buffered_bytes: 4 * 2000,
            ..Thresholds::unlimited()
        };
        let rules = WindowRules::of(&base);
        let mut b = Builder::new(&rules, &base);
        let bad = |seq: &str| {
            let mut e = QuarantineEntry::new(&record(seq, Ok(&"x".repeat(300))), "bad".into(), 0);
            e.quarantined_at = String::new();
            e
        };
        for seq in 1..=7 {
            b.quarantine(bad(&seq.to_string()));
        }
        // Each entry holds about 500 bytes: the fourth reaches 2,000.
        let sizes: Vec<usize> = b.closed_quarantine.iter().map(Vec::len).collect();
        assert_eq!(sizes, [4]);
        assert_eq!(b.quarantined.len(), 3);
        assert!(b.quarantine_bytes() >= 7 * 300);
        // The same records cut the same way: the same file, the same note.
        let mut again = Builder::new(&rules, &base);
        for seq in 1..=7 {
            again.quarantine(bad(&seq.to_string()));
        }
        assert_eq!(
            quarantine_note(&again.closed_quarantine[0]),
            quarantine_note(&b.closed_quarantine[0])
        );
        assert!(quarantine_note(&b.closed_quarantine[0]).starts_with('q'));
    }

    #[test]
    fn spool_keys_name_stream_shard_window_and_position() {
        let w = window();
        let key = w.spool_key("cdc-data/", 3, "4959");
        assert!(key.starts_with("cdc-data/_spool/dms-"), "{key}");
        assert!(
            key.ends_with("/shardId-000000000001/20260314T010200Z/000003_4959.jsonl.sz"),
            "{key}"
        );
        let other = WindowId {
            stream_arn: "arn:aws:kinesis:eu-west-1:123456789012:stream/dms".into(),
            ..w.clone()
        };
        assert_ne!(
            other.spool_dir(""),
            w.spool_dir(""),
            "same name, other region"
        );
    }

    #[test]
    fn spool_objects_round_trip_every_field() {
        let records = [
            record("7", Ok("eyJhIjoxfQ==")),
            record("9", Err("kinesis.data is a number")),
        ];
        let spool = Spool::of(&window(), &records, 1_773_450_001_000_000);
        let bytes = spool.to_bytes();
        let back = Spool::from_bytes("k", &bytes).unwrap();
        assert_eq!(back, spool);
        let again = back.kinesis_records();
        assert_eq!(again.len(), 2);
        assert_eq!(again[0].id, records[0].id);
        assert_eq!(again[0].data, records[0].data);
        assert_eq!(again[1].data, records[1].data);
        assert_eq!(again[0].partition_key, records[0].partition_key);
        assert_eq!(again[0].arrival_seconds, records[0].arrival_seconds);
    }

    #[test]
    fn damaged_spool_objects_are_errors() {
        let spool = Spool::of(&window(), &[record("7", Ok("e30="))], 0);
        let mut bytes = spool.to_bytes();
        assert!(Spool::from_bytes("k", &bytes[..bytes.len() / 2]).is_err());
        bytes.truncate(0);
        assert!(Spool::from_bytes("k", b"plain text").is_err());
    }

    #[test]
    fn a_cached_window_is_used_only_in_step_with_the_state() {
        let mut cache = WindowCache::default();
        let base = Thresholds::unlimited();
        let rules = WindowRules::of(&base);
        let mut b = Builder::new(&rules, &base);
        b.fed = vec!["5".into(), "9".into()];
        cache.put(window(), b);
        assert!(
            cache.take(&window(), &["5".into()], &rules).is_none(),
            "behind the state: dropped"
        );
        assert!(cache.take(&window(), &[], &rules).is_none(), "gone");
        let mut b = Builder::new(&rules, &base);
        b.fed = vec!["5".into()];
        cache.put(window(), b);
        let other = WindowId {
            shard: "shardId-000000000002".into(),
            ..window()
        };
        assert!(
            cache.take(&other, &["5".into()], &rules).is_none(),
            "another shard's window"
        );
        let other_rules = WindowRules {
            max_records: 3,
            ..rules.clone()
        };
        assert!(
            cache.take(&window(), &["5".into()], &other_rules).is_none(),
            "cut by other rules"
        );
        let mut b = Builder::new(&rules, &base);
        b.fed = vec!["5".into()];
        cache.put(window(), b);
        assert!(cache.take(&window(), &["5".into()], &rules).is_some());
    }

    /// Feeds `rows` (table, sequence number) into a builder by `rules`,
    /// a batch ending after each index in `batch_ends`: every part's rows.
    fn cut_by_batches(
        rules: &WindowRules,
        rows: &[(String, u32)],
        batch_ends: &[usize],
    ) -> Vec<Vec<String>> {
        use crate::dms::{decode, Message};
        let base = Thresholds {
            max_bytes: usize::MAX,
            max_records: usize::MAX,
            max_age: Duration::from_secs(60),
            max_buffered_bytes: usize::MAX,
        };
        let mut b = Builder::new(rules, &base);
        let mut parts = Vec::new();
        for (i, (table, seq)) in rows.iter().enumerate() {
            let text = format!(
                r#"{{"data":{{"id":{seq},"v":"{table}"}},"metadata":{{"timestamp":"2026-03-14T01:00:00Z",
                "record-type":"data","operation":"insert","schema-name":"s","table-name":"{table}"}}}}"#
            );
            let Message::Row(change) = decode(text.as_bytes(), "before-image").unwrap() else {
                panic!("not a row")
            };
            let id = RecordId {
                stream: Arc::from("s"),
                shard: Arc::from("shardId-0"),
                sequence: format!("{seq:05}"),
            };
            b.batcher.push(id, &change, 0, None);
            b.row_fed();
            if batch_ends.contains(&i) {
                b.batch_fed();
                parts.extend(b.batcher.take_closed());
            }
        }
        b.batch_fed();
        parts.extend(b.batcher.take_closed());
        parts.extend(b.batcher.take_all());
        let mut parts: Vec<Vec<String>> = parts
            .iter()
            .map(|p| p.ids.iter().map(|id| id.sequence.clone()).collect())
            .collect();
        // Keys depend on a part's rows only, not on when it was taken.
        parts.sort();
        parts
    }

    #[test]
    fn a_windows_memory_bound_cuts_the_same_rows_however_lambda_batched_them() {
        let rows: Vec<(String, u32)> = (0..400u32)
            .map(|i| (["a", "b", "c", "d"][(i * 7 % 4) as usize].to_string(), i))
            .collect();
        let mut rules = WindowRules::of(&Thresholds {
            max_bytes: usize::MAX,
            max_records: usize::MAX,
            max_age: Duration::from_secs(60),
            max_buffered_bytes: 6_000,
        });
        let one_batch = cut_by_batches(&rules, &rows, &[]);
        assert!(
            one_batch.len() > 4,
            "the bound never cut: {}",
            one_batch.len()
        );
        for ends in [
            vec![9, 99, 250],
            vec![0, 1, 2, 3, 150, 151],
            (0..400).step_by(37).collect(),
        ] {
            assert_eq!(
                cut_by_batches(&rules, &rows, &ends),
                one_batch,
                "batches ending at {ends:?}"
            );
        }
        // Cut version 2 checked at batch ends: other batches, other cuts
        // (which is why a window keeps the version it was started with).
        rules.cut = 2;
        assert_ne!(
            cut_by_batches(&rules, &rows, &[9, 99, 250]),
            cut_by_batches(&rules, &rows, &[150])
        );
    }
}
