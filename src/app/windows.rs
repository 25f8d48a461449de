//! `cdc-batcher windows`: the tumbling windows a lake's spool holds that no
//! final invocation has written (`list`), and writing one of them from its
//! spool by hand (`finish`) when Lambda has given up on it: its final
//! invocation's retries ran out, its records expired, or the event source
//! mapping was deleted (Lambda developer guide, "Using Lambda with Kinesis":
//! a batch that exhausts `MaximumRetryAttempts` or `MaximumRecordAgeInSeconds`
//! is skipped; only its own range reaches the on-failure destination).
//!
//! A window is open while its spool directory
//! (`_spool/<stream>/<shard>/<window start>/`) has spool objects and no
//! `_done.json`. `finish` reads every spool object of the window (the
//! records of orphaned objects, which a retried invocation wrote again under
//! another key, are the same records: taken once by sequence number), leaves
//! out the rows files of the window's stream and shard already hold (written
//! early or by a final invocation that failed later), writes the rest, and
//! writes `_done.json`. A final invocation that still comes writes only the
//! records its spool holds that the lake lacks (`windowed::write_late`).
//!
//! The scheduled sweep (`{"sweep_windows": true}`) finds open windows
//! without reading every spool object: a written window also has a
//! `<window start>.done` key beside its directory, so one listing per shard
//! (with a delimiter) shows the windows to look at; those are checked by
//! their `_done.json` (windows written before the index existed get it
//! then). The oldest open window's age is a metric with an alarm: a window
//! Lambda gave up on is never silent.
//!
//! The sweep also writes (`finish`) an open window once Lambda can no longer
//! deliver any of its records ([`past_lambdas_reach`]): Kinesis makes a
//! record inaccessible when it outlives the stream's retention period
//! ("Change the data retention period", Kinesis developer guide), so a
//! final invocation that could still come, and write the window at the same
//! time, would carry records that no longer exist. Before that point only
//! an operator, who knows the mapping gave up, runs `finish` by hand.

use std::collections::{BTreeMap, BTreeSet};
use std::time::{Duration, SystemTime};

use chrono::{DateTime, NaiveDateTime, Utc};
use futures_util::stream::{self, StreamExt};
use serde::Serialize;

use crate::app::handler::{HandleError, Outcome, Pipeline};
use crate::app::metrics;
use crate::app::output::Output;
use crate::app::redrive::{write_chunk, CHUNK};
use crate::app::stats::Stats;
use crate::edge::shard_reader::ShardReader;
use crate::edge::sink::{Bounded, Listing, Sink, SinkError};
use domain::batcher::FlushMode;
use domain::window::{Spool, SpooledRecord};

/// `_done.json` reads per sweep: after an upgrade, windows written before
/// the index are indexed over a few sweeps, not in one long invocation.
pub const SWEEP_LOOKUPS: usize = 400;
const SWEEP_CONCURRENCY: usize = 8;

/// Lambda's longest tumbling window (`TumblingWindowInSeconds` ≤ 900): a
/// window's records arrived before its start plus this.
const LONGEST_WINDOW: Duration = Duration::from_secs(900);
/// Lambda's longest invocation (a function's timeout ≤ 900 s): one that
/// began before its records expired may still be running.
const LONGEST_INVOCATION: Duration = Duration::from_secs(900);
/// Clocks that disagree (the window's start is Lambda's, `now` is ours).
const CLOCK_MARGIN: Duration = Duration::from_secs(600);
/// Kinesis keeps records at least 24 hours: a younger window is not looked
/// at.
const SHORTEST_RETENTION: Duration = Duration::from_secs(24 * 3600);
/// Windows a sweep writes at most (each as long as a final invocation).
pub const SWEEP_FINISHES: usize = 4;

/// Whether no record of a window that started `age` ago can still reach the
/// function from a stream that keeps records for `retention` (pure): its
/// records arrived within the window, expired `retention` later, and the
/// last invocation that could carry one has ended.
pub fn past_lambdas_reach(age: Duration, retention: Duration) -> bool {
    age > LONGEST_WINDOW + retention + LONGEST_INVOCATION + CLOCK_MARGIN
}

/// `cdc-batcher windows`.
#[derive(Debug, clap::Args)]
#[command(
    about = "List the tumbling windows whose spool no final invocation has written, or write one",
    long_about = "Lists the tumbling windows a lake's spool holds that no final invocation has \
        written (window mode), or writes one from its spool: for a window Lambda has given up \
        on (its final invocation's retries ran out, its records expired, the event source \
        mapping was deleted). Do not finish a window whose final invocation Lambda may still \
        retry: run `list` again after the window's end plus the mapping's retry time.\n\n\
        Exit codes: 0 done, 1 the lake could not be read or a file not written, 2 bad \
        arguments or configuration."
)]
pub struct WindowsArgs {
    #[command(subcommand)]
    action: Action,
}

#[derive(Debug, clap::Subcommand)]
enum Action {
    /// Print one JSON line per open window (stream, shard, window start, spool objects)
    List {
        /// The lake: s3://bucket/prefix/ or a local directory
        #[arg(long, value_name = "s3://bucket/prefix/ | DIR", value_parser = Output::parse)]
        lake: Output,
    },
    /// Write one open window from its spool, then mark it written
    Finish {
        /// The lake: s3://bucket/prefix/ or a local directory
        #[arg(long, value_name = "s3://bucket/prefix/ | DIR", value_parser = Output::parse)]
        lake: Output,
        /// The window's spool directory under the prefix, as `list` prints it
        /// (`_spool/<stream>/<shard>/<window start>/`)
        #[arg(value_name = "SPOOL_DIR")]
        dir: String,
    },
}

/// One window whose spool no final invocation has written.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct OpenWindow {
    /// Under the prefix: `_spool/<stream>/<shard>/<window start>/`.
    pub dir: String,
    pub spool_objects: usize,
}

/// The open windows among the keys under `{prefix}_spool/` (pure).
pub fn open_windows(prefix: &str, keys: &[String]) -> Vec<OpenWindow> {
    let mut dirs: BTreeMap<&str, (usize, bool)> = BTreeMap::new();
    for key in keys {
        let Some(rel) = key.strip_prefix(prefix) else {
            continue;
        };
        let Some((dir, name)) = rel.rsplit_once('/') else {
            continue;
        };
        if dir.split('/').count() != 4 || !dir.starts_with("_spool/") {
            continue;
        }
        let entry = dirs.entry(dir).or_default();
        if name == "_done.json" {
            entry.1 = true;
        } else if name.ends_with(".jsonl.sz") {
            entry.0 += 1;
        }
    }
    dirs.into_iter()
        .filter(|(_, (objects, done))| *objects > 0 && !done)
        .map(|(dir, (objects, _))| OpenWindow {
            dir: format!("{dir}/"),
            spool_objects: objects,
        })
        .collect()
}

/// An open window the sweep found.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct FoundWindow {
    /// Under the prefix: `_spool/<stream>/<shard>/<window start>/`.
    pub dir: String,
    /// Since the window started (`None`: its name is not a time).
    pub age_seconds: Option<u64>,
}

/// What a sweep saw (no row values).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct SweepReport {
    pub open: Vec<FoundWindow>,
    /// Windows this sweep wrote ([`finish_abandoned`]): no longer in `open`.
    pub finished: Vec<Finished>,
    pub shards: u64,
    /// Written windows that lacked the index key and got it.
    pub indexed: u64,
    /// Windows not looked up in this sweep ([`SWEEP_LOOKUPS`]); the next
    /// sweeps take them.
    pub deferred: u64,
}

impl SweepReport {
    /// The oldest open window's age (0 without one).
    pub fn oldest_age(&self) -> Duration {
        let secs = self.open.iter().filter_map(|w| w.age_seconds).max();
        Duration::from_secs(secs.unwrap_or(0))
    }
}

/// The windows of one shard's level that have no `.done` index key (pure).
pub fn unindexed(level: &Listing) -> Vec<&str> {
    let indexed: BTreeSet<&str> = level
        .keys
        .iter()
        .filter_map(|k| k.strip_suffix(".done"))
        .collect();
    level
        .dirs
        .iter()
        .map(String::as_str)
        .filter(|d| !indexed.contains(d.trim_end_matches('/')))
        .collect()
}

/// How long before `now` the window whose directory is `dir` started (its
/// last segment is Lambda's `window.start` without `-` and `:`).
pub fn window_age(dir: &str, now: DateTime<Utc>) -> Option<Duration> {
    let name = dir.trim_end_matches('/').rsplit('/').next()?;
    // Lambda sends UTC (`…Z`, or `+00:00`, which keys spell `_0000`): the
    // seconds are enough for an age.
    let start = NaiveDateTime::parse_from_str(name.get(..15)?, "%Y%m%dT%H%M%S")
        .ok()?
        .and_utc();
    Some((now - start).to_std().unwrap_or(Duration::ZERO))
}

/// Finds the open windows under `{prefix}_spool/`: one listing per stream
/// and shard, then `_done.json` of each window without an index key.
pub async fn sweep<S: Sink>(
    sink: &S,
    prefix: &str,
    now: DateTime<Utc>,
) -> Result<SweepReport, SinkError> {
    let mut report = SweepReport::default();
    let mut candidates = Vec::new();
    for stream_dir in sink.list_dirs(&format!("{prefix}_spool/")).await?.dirs {
        for shard_dir in sink.list_dirs(&stream_dir).await?.dirs {
            report.shards += 1;
            let level = sink.list_dirs(&shard_dir).await?;
            candidates.extend(unindexed(&level).into_iter().map(str::to_string));
        }
    }
    // Newest first: the windows written before the index existed are the
    // old ones; a window Lambda just gave up on is looked at now.
    candidates.sort_unstable_by(|a, b| b.cmp(a));
    report.deferred = candidates.len().saturating_sub(SWEEP_LOOKUPS) as u64;
    candidates.truncate(SWEEP_LOOKUPS);
    let looked_up: Vec<_> = stream::iter(candidates)
        .map(|dir| async move {
            let done = sink.get(&format!("{dir}_done.json")).await;
            (dir, done)
        })
        .buffered(SWEEP_CONCURRENCY)
        .collect()
        .await;
    for (dir, done) in looked_up {
        if done?.is_some() {
            let index = format!("{}.done", dir.trim_end_matches('/'));
            sink.put(&index, Vec::new(), "text/plain").await?;
            report.indexed += 1;
        } else {
            let rel = dir.strip_prefix(prefix).unwrap_or(&dir).to_string();
            report.open.push(FoundWindow {
                age_seconds: window_age(&rel, now).map(|a| a.as_secs()),
                dir: rel,
            });
        }
    }
    report.open.sort_by(|a, b| a.dir.cmp(&b.dir));
    Ok(report)
}

/// The scheduled sweep: finds the windows whose spooled records no final
/// invocation has written  and sends their count and
/// the oldest one's age. A listing that fails fails the invocation: an
/// incomplete sweep must not report "nothing open".
pub async fn sweep_windows<S: Sink>(
    pipeline: &Pipeline<S>,
    deadline: Option<SystemTime>,
) -> Result<Outcome, HandleError> {
    let sink = Bounded::new(&pipeline.sink, deadline);
    let mut report = sweep(&sink, &pipeline.config.prefix, chrono::Utc::now())
        .await
        .map_err(|e| HandleError::Sweep(e.to_string()))?;
    // Windows out of Lambda's reach are written here, through the path
    // that writes before it returns: never in `warm-lossy`, whose
    // buffers would hold them in memory only.
    let mut unfinished = None;
    if let (Some(reader), FlushMode::Window | FlushMode::Invocation) =
        (&pipeline.shard_reader, pipeline.config.flush_mode)
    {
        let (finished, error) =
            finish_abandoned(pipeline, reader.as_ref(), &report, deadline).await;
        report
            .open
            .retain(|w| !finished.iter().any(|f| f.dir == w.dir));
        report.finished = finished;
        unfinished = error;
    }
    for f in &report.finished {
        tracing::warn!(
            window = f.dir,
            records = f.records,
            rows_written = f.rows_written,
            already_in_lake = f.already_in_lake,
            "abandoned window written by the sweep"
        );
    }
    for w in &report.open {
        tracing::info!(window = w.dir, age_seconds = w.age_seconds, "open window");
    }
    let oldest = report.oldest_age();
    tracing::info!(
        shards = report.shards,
        open = report.open.len(),
        oldest_age_seconds = oldest.as_secs(),
        indexed = report.indexed,
        deferred = report.deferred,
        "windows swept"
    );
    if pipeline.emit_metrics {
        let now_ms = chrono::Utc::now().timestamp_millis();
        let doc = metrics::sweep_document(
            report.open.len(),
            oldest.as_millis() as u64,
            report.finished.len(),
            now_ms,
        );
        println!("{doc}");
    }
    if let Some(reason) = unfinished {
        return Err(HandleError::Sweep(format!(
            "an abandoned window was not written: {reason}"
        )));
    }
    Ok(Outcome {
        response: serde_json::to_value(&report).unwrap_or_default(),
        stats: Stats::default(),
        redeliver_from: None,
        is_flush: false,
    })
}

/// Writes the open windows of `report` that Lambda can no longer deliver
/// a record of, oldest first, at most [`SWEEP_FINISHES`] tries. The
/// retention is asked once per stream (its ARN read from a spool object's
/// header). A window that cannot be written does not hold back the ones
/// behind it. Returns what was written, and the first error (that window
/// waits for the next sweep).
pub async fn finish_abandoned<S: Sink>(
    pipeline: &Pipeline<S>,
    reader: &dyn ShardReader,
    report: &SweepReport,
    deadline: Option<std::time::SystemTime>,
) -> (Vec<Finished>, Option<String>) {
    let mut done = Vec::new();
    let mut candidates: Vec<(&str, Duration)> = report
        .open
        .iter()
        .filter_map(|w| Some((w.dir.as_str(), Duration::from_secs(w.age_seconds?))))
        .filter(|(_, age)| past_lambdas_reach(*age, SHORTEST_RETENTION))
        .collect();
    candidates.sort_by(|a, b| b.1.cmp(&a.1).then(a.0.cmp(b.0)));
    // `_spool/<stream>/…`: the retention each stream answered.
    let mut retention: BTreeMap<&str, Option<Duration>> = BTreeMap::new();
    let (mut attempts, mut first_error) = (0, None);
    for (dir, age) in candidates {
        if attempts == SWEEP_FINISHES {
            break;
        }
        let stream = dir.split('/').nth(1).unwrap_or_default();
        let kept = match retention.get(stream) {
            Some(kept) => *kept,
            None => match stream_retention(pipeline, reader, dir).await {
                Ok(kept) => *retention.entry(stream).or_insert(kept),
                Err(e) => {
                    first_error.get_or_insert(e);
                    continue;
                }
            },
        };
        if !kept.is_some_and(|kept| past_lambdas_reach(age, kept)) {
            continue;
        }
        tracing::warn!(
            window = dir,
            age_seconds = age.as_secs(),
            "no record of this window can reach the function any more: written from its spool"
        );
        attempts += 1;
        match finish(pipeline, dir, deadline, "the scheduled sweep").await {
            Ok(finished) => done.push(finished),
            Err(e) => {
                first_error.get_or_insert(format!("{dir}: {e}"));
            }
        }
    }
    (done, first_error)
}

/// The retention of the stream a window's spool names; `None` when the
/// stream cannot tell (deleted, or no `kinesis:DescribeStreamSummary`):
/// then nothing is decided on it. `Err` when the spool cannot be read.
async fn stream_retention<S: Sink>(
    pipeline: &Pipeline<S>,
    reader: &dyn ShardReader,
    dir: &str,
) -> Result<Option<Duration>, String> {
    let arn = window_stream(pipeline, dir).await?;
    match reader.retention(&arn).await {
        Ok(kept) => Ok(Some(kept)),
        Err(e) => {
            tracing::warn!(window = dir, error = %e, "stream retention unknown: the window is left open");
            Ok(None)
        }
    }
}

/// The stream ARN a window's spool objects name in their header.
async fn window_stream<S: Sink>(pipeline: &Pipeline<S>, dir: &str) -> Result<String, String> {
    let base = format!("{}{}", pipeline.config.prefix, dir);
    let keys = pipeline
        .sink
        .list(&base)
        .await
        .map_err(|e| format!("listing {base}: {e}"))?;
    let key = keys
        .iter()
        .find(|k| k.ends_with(".jsonl.sz"))
        .ok_or_else(|| format!("{dir} holds no spool object"))?;
    Ok(read_spool(pipeline, key).await?.header.stream_arn)
}

/// One spool object, read and decoded.
async fn read_spool<S: Sink>(pipeline: &Pipeline<S>, key: &str) -> Result<Spool, String> {
    let bytes = pipeline
        .sink
        .get(key)
        .await
        .map_err(|e| format!("reading {key}: {e}"))?
        .ok_or_else(|| format!("{key} is gone"))?;
    Spool::from_bytes(key, &bytes).map_err(|e| e.to_string())
}

/// What `finish` did (no row values).
#[derive(Debug, Default, Clone, PartialEq, Eq, Serialize)]
pub struct Finished {
    pub dir: String,
    pub spool_objects: usize,
    pub records: usize,
    pub already_in_lake: u64,
    pub rows_written: u64,
    pub files: u64,
    pub quarantined: u64,
}

/// Writes the window whose spool is `dir` (under the prefix) and marks it
/// written; `by` names who did, in `_done.json`.
pub async fn finish<S: Sink>(
    pipeline: &Pipeline<S>,
    dir: &str,
    deadline: Option<std::time::SystemTime>,
    by: &str,
) -> Result<Finished, String> {
    let prefix = &pipeline.config.prefix;
    let dir = format!("{}/", dir.trim_end_matches('/'));
    let base = format!("{prefix}{dir}");
    let keys = pipeline
        .sink
        .list(&base)
        .await
        .map_err(|e| format!("listing {base}: {e}"))?;
    if keys.iter().any(|k| k.ends_with("/_done.json")) {
        return Err(format!("{dir} is already written (it has _done.json)"));
    }
    let mut report = Finished {
        dir: dir.clone(),
        ..Finished::default()
    };
    // Every record once, in sequence order, whichever objects hold it.
    let mut records: BTreeMap<(usize, String), SpooledRecord> = BTreeMap::new();
    let mut header = None;
    for key in keys.iter().filter(|k| k.ends_with(".jsonl.sz")) {
        let spool = read_spool(pipeline, key).await?;
        report.spool_objects += 1;
        for r in spool.records {
            records.insert((r.sequence.len(), r.sequence.clone()), r);
        }
        header.get_or_insert(spool.header);
    }
    let Some(header) = header else {
        return Err(format!("{dir} holds no spool object"));
    };
    let records: Vec<SpooledRecord> = records.into_values().collect();
    report.records = records.len();
    for chunk in records.chunks(CHUNK) {
        let (already, stats) =
            write_chunk(pipeline, &header.stream_arn, &header.shard, chunk, deadline).await?;
        report.already_in_lake += already;
        report.rows_written += stats.rows_written;
        report.files += stats.files;
        report.quarantined += stats.quarantined;
    }
    // The objects it was written from: a final invocation that still comes
    // writes what its state lists beyond them (`windowed::write_late`).
    let objects: Vec<&str> = keys
        .iter()
        .filter(|k| k.ends_with(".jsonl.sz"))
        .map(|k| k.rsplit('/').next().unwrap_or(k))
        .collect();
    let marker = serde_json::json!({
        "window_start": header.window_start,
        "spools": report.spool_objects,
        "objects": objects,
        "written_at": chrono::Utc::now().to_rfc3339(),
        "by": by,
    });
    let body = serde_json::to_vec(&marker).map_err(|e| e.to_string())?;
    pipeline
        .sink
        .put(&format!("{base}_done.json"), body, "application/json")
        .await
        .map_err(|e| format!("window marker not written: {e}"))?;
    let index = format!("{}.done", base.trim_end_matches('/'));
    pipeline
        .sink
        .put(&index, Vec::new(), "text/plain")
        .await
        .map_err(|e| format!("window index marker not written: {e}"))?;
    Ok(report)
}

/// Runs `cdc-batcher windows`; returns the process exit code.
pub async fn run(args: WindowsArgs) -> i32 {
    let lake = match &args.action {
        Action::List { lake } | Action::Finish { lake, .. } => lake,
    };
    let (mut config, sink) = match lake.open().await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    // Every record written before `finish` goes on, whatever FLUSH_MODE says.
    config.flush_mode = domain::batcher::FlushMode::Invocation;
    let pipeline = Pipeline::new(config, sink).without_metrics();
    match args.action {
        Action::List { .. } => {
            let prefix = pipeline.config.prefix.clone();
            match pipeline.sink.list(&format!("{prefix}_spool/")).await {
                Ok(keys) => {
                    for window in open_windows(&prefix, &keys) {
                        println!("{}", serde_json::json!(window));
                    }
                    0
                }
                Err(e) => {
                    eprintln!("listing the spool: {e}");
                    1
                }
            }
        }
        Action::Finish { dir, .. } => {
            match finish(&pipeline, &dir, None, "cdc-batcher windows finish").await {
                Ok(report) => {
                    println!("{}", serde_json::json!(report));
                    0
                }
                Err(e) => {
                    eprintln!("{e}");
                    1
                }
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_window_is_open_while_it_has_spool_objects_and_no_marker() {
        let keys: Vec<String> = [
            "p/_spool/s-1/shardId-0/20260314T010000Z/000000_5.jsonl.sz",
            "p/_spool/s-1/shardId-0/20260314T010000Z/000001_9.jsonl.sz",
            "p/_spool/s-1/shardId-0/20260314T010200Z/000000_12.jsonl.sz",
            "p/_spool/s-1/shardId-0/20260314T010200Z/_done.json",
            "p/_spool/s-1/shardId-1/20260314T010000Z/_done.json",
            "p/sales/client/2026/03/14/01/shardId-0_1_5_ab.parquet",
        ]
        .iter()
        .map(|k| k.to_string())
        .collect();
        assert_eq!(
            open_windows("p/", &keys),
            [OpenWindow {
                dir: "_spool/s-1/shardId-0/20260314T010000Z/".into(),
                spool_objects: 2,
            }]
        );
        assert!(open_windows("other/", &keys).is_empty());
    }

    #[test]
    fn windows_with_an_index_key_are_not_looked_up() {
        let level = Listing {
            dirs: vec![
                "p/_spool/s/sh/20260314T010000Z/".into(),
                "p/_spool/s/sh/20260314T010200Z/".into(),
                "p/_spool/s/sh/20260314T010400Z/".into(),
            ],
            keys: vec![
                "p/_spool/s/sh/20260314T010200Z.done".into(),
                "p/_spool/s/sh/20260314T0104.done".into(),
            ],
        };
        assert_eq!(
            unindexed(&level),
            [
                "p/_spool/s/sh/20260314T010000Z/",
                "p/_spool/s/sh/20260314T010400Z/"
            ]
        );
    }

    #[test]
    fn a_window_is_out_of_reach_once_its_records_expired_and_their_last_invocation_ended() {
        let h = |n: u64| Duration::from_secs(n * 3600);
        let m = |n: u64| Duration::from_secs(n * 60);
        // Window (15 min) + retention + invocation (15 min) + margin (10 min).
        assert!(!past_lambdas_reach(h(24) + m(40), h(24)));
        assert!(past_lambdas_reach(h(24) + m(41), h(24)));
        assert!(!past_lambdas_reach(h(30), h(168)));
        assert!(past_lambdas_reach(h(169), h(168)));
    }

    #[test]
    fn a_window_age_is_read_from_its_directory_name() {
        let now = DateTime::parse_from_rfc3339("2026-03-14T01:10:30Z")
            .unwrap()
            .with_timezone(&Utc);
        let age = |d| window_age(d, now).map(|a| a.as_secs());
        assert_eq!(age("_spool/s/sh/20260314T010000Z/"), Some(630));
        assert_eq!(age("_spool/s/sh/20260314T011000.000Z"), Some(30));
        assert_eq!(age("_spool/s/sh/20260314T011000_0000/"), Some(30));
        // A window that starts after `now` (clocks apart) is 0 old.
        assert_eq!(age("_spool/s/sh/20260314T020000Z/"), Some(0));
        assert_eq!(age("_spool/s/sh/not-a-time/"), None);
    }
}
