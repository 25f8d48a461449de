//! `cdc-batcher replay`: the Lambda code path over event files, without the
//! Lambda runtime. Each file is one invocation, in the order given, followed
//! by a force flush; one JSON summary line goes to stdout.

use std::io::Read as _;
use std::time::Instant;

use serde::Serialize;

use crate::app::handler::Pipeline;
use crate::app::invocation;
use crate::app::output::Output;
use crate::app::stats::Stats;
use crate::edge::sink::Sink;
use domain::event::{self, Event, KinesisBatch, WindowInfo};

#[derive(Debug, Serialize)]
struct Summary {
    output: String,
    events: usize,
    #[serde(flatten)]
    stats: Stats,
    /// Rows held in memory at the end (not written).
    buffered_rows: usize,
    /// The most row JSON held between two invocations.
    peak_buffered_bytes: usize,
    /// The final force flush: what the SIGTERM hook would have to do.
    final_flush_bytes: usize,
    final_flush_seconds: f64,
    /// Invocations that asked Kinesis to redeliver (a real stream would).
    redelivery_requests: usize,
    /// Window invocations that wrote a window's files (`--window`), and the
    /// longest of them: what decides a window mode deployment's latency.
    final_invocations: usize,
    final_invocation_max_seconds: f64,
    /// The other invocations: how many, and their mean duration.
    batch_invocations: usize,
    batch_invocation_mean_seconds: f64,
    errors: Vec<String>,
    seconds: f64,
}

/// `cdc-batcher replay`: the Lambda code path over event files.
#[derive(Debug, clap::Args)]
#[command(
    about = "Run the function's code path over Kinesis event files, without the Lambda runtime",
    long_about = "Runs the function's code path over Kinesis event files, without the Lambda \
        runtime: each file is one invocation, in the order given, followed by a force flush. \
        Reads the same environment variables as the function (except S3_BUCKET_NAME) and \
        prints one JSON summary line to stdout; on a terminal, progress goes to stderr.\n\n\
        Exit codes: 0 done, 1 a file could not be processed or a row could not be written, \
        2 bad arguments or configuration."
)]
pub struct ReplayArgs {
    /// Where to write: a local directory, or s3://bucket[/prefix/]
    #[arg(short, long, value_name = "DIR | s3://bucket/prefix/", value_parser = Output::parse)]
    output: Output,
    /// Deliver the events as Lambda does with TumblingWindowInSeconds=SECONDS: each shard's
    /// batches go into windows by their first record's arrival time, every invocation gets the
    /// state the previous one returned, and each window ends with a final invocation
    /// (FLUSH_MODE=window)
    #[arg(long, value_name = "SECONDS", value_parser = clap::value_parser!(u64).range(1..=900))]
    window: Option<u64>,
    /// Kinesis event JSON files (one invocation each)
    #[arg(value_name = "EVENT.json", required = true)]
    files: Vec<String>,
}

/// Runs the replay; returns the process exit code.
pub async fn run(args: ReplayArgs) -> i32 {
    let ReplayArgs {
        output,
        files,
        window,
    } = args;
    let (config, sink) = match output.open().await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let started = Instant::now();
    let workgroup = config.catalog.as_ref().map(|c| c.workgroup.clone());
    let mut pipeline = Pipeline::new(config, sink).without_metrics();
    if let Some(workgroup) = workgroup {
        // As the function does: the catalog follows the registry.
        let glue = crate::edge::glue::GlueCatalog::from_env(workgroup).await;
        pipeline = pipeline.with_catalog(std::sync::Arc::new(glue));
    }
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    let mut redelivery_requests = 0;
    let mut peak_buffered_bytes = 0;
    let mut timing = Timing::default();
    // One buffer for every file: a fresh one per file page-faulted its way
    // through each payload again.
    let mut bytes = Vec::new();
    let mut windows = window.map(Windows::new);
    let mut progress = Progress::new(files.len());
    for file in &files {
        progress.show(&stats);
        bytes.clear();
        if let Err(e) = std::fs::File::open(file).and_then(|mut f| f.read_to_end(&mut bytes)) {
            errors.push(format!("{file}: {e}"));
            continue;
        }
        // simdutf8: std's validation was 2 % of a replay.
        let Ok(payload) = simdutf8::basic::from_utf8(&bytes) else {
            errors.push(format!("{file}: not UTF-8"));
            continue;
        };
        let event = match event::classify(payload) {
            Ok(event) => event,
            Err(e) => {
                errors.push(format!("{file}: {e}"));
                continue;
            }
        };
        let invocations = match windows.as_mut() {
            Some(w) => w.wrap(event),
            None => vec![(None, event)],
        };
        for (lane, event) in invocations {
            let invoked = Instant::now();
            let result = invocation::invoke(&pipeline, event, None).await;
            timing.add(&result, invoked.elapsed().as_secs_f64());
            match result {
                Ok(outcome) => {
                    if let (Some(w), Some(lane)) = (windows.as_mut(), lane) {
                        w.returned(lane, &outcome.response);
                    }
                    stats.add(&outcome.stats);
                    if let Some(seq) = outcome.redeliver_from {
                        redelivery_requests += 1;
                        errors.push(format!("{file}: Kinesis would redeliver from {seq}"));
                    }
                }
                Err(e) => errors.push(format!("{file}: {e}")),
            }
        }
        peak_buffered_bytes = peak_buffered_bytes.max(pipeline.buffered_bytes().await);
    }
    progress.done(&stats);
    // The windows still open end as their shards move on.
    for event in windows.map(Windows::finish).unwrap_or_default() {
        let invoked = Instant::now();
        let result = invocation::invoke(&pipeline, event, None).await;
        timing.add(&result, invoked.elapsed().as_secs_f64());
        match result {
            Ok(outcome) => stats.add(&outcome.stats),
            Err(e) => errors.push(format!("final invocation: {e}")),
        }
    }
    let final_flush_bytes = pipeline.buffered_bytes().await;
    let flush_started = Instant::now();
    let flush = pipeline.flush_all(None).await;
    let final_flush_seconds = flush_started.elapsed().as_secs_f64();
    stats.add(&flush.stats);
    if flush.stats.failed_files > 0 {
        errors.push(format!(
            "final flush: {} file(s) not written",
            flush.stats.failed_files
        ));
    }
    let summary = Summary {
        output: pipeline.sink().location(),
        events: files.len(),
        stats,
        buffered_rows: pipeline.buffered_rows().await,
        peak_buffered_bytes,
        final_flush_bytes,
        final_flush_seconds,
        redelivery_requests,
        final_invocations: timing.finals,
        final_invocation_max_seconds: timing.final_max,
        batch_invocations: timing.batches,
        batch_invocation_mean_seconds: timing.batch_total / timing.batches.max(1) as f64,
        seconds: started.elapsed().as_secs_f64(),
        errors,
    };
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("summary could not be serialised: {e}"),
    }
    i32::from(!summary.errors.is_empty())
}

/// How long invocations took: final window invocations apart.
#[derive(Default)]
struct Timing {
    finals: usize,
    final_max: f64,
    batches: usize,
    batch_total: f64,
}

impl Timing {
    fn add(
        &mut self,
        result: &Result<crate::app::handler::Outcome, crate::app::handler::HandleError>,
        seconds: f64,
    ) {
        if result.as_ref().is_ok_and(|o| o.stats.windows_written > 0) {
            self.finals += 1;
            self.final_max = self.final_max.max(seconds);
        } else {
            self.batches += 1;
            self.batch_total += seconds;
        }
    }
}

/// Lambda's tumbling windows over replayed events: per stream and shard, the
/// open window and the state its last invocation returned. The events are
/// built typed (a [`KinesisBatch`] with its [`WindowInfo`]), as Lambda would
/// send them, not as JSON.
struct Windows {
    seconds: u64,
    open: std::collections::BTreeMap<Lane, (u64, String)>,
}

/// Which stream and shard a replayed event belongs to.
type Lane = (String, String);

const REPLAY_STREAM: &str = "arn:aws:kinesis:local:000000000000:stream/replay";
const REPLAY_SHARD: &str = "shardId-000000000000";

impl Windows {
    fn new(seconds: u64) -> Self {
        Windows {
            seconds,
            open: Default::default(),
        }
    }

    fn window(&self, lane: &Lane, start: u64, state: String, last: bool) -> WindowInfo {
        let time = |s: u64| {
            chrono::DateTime::from_timestamp(s as i64, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        WindowInfo {
            start: time(start),
            end: time(start + self.seconds),
            state: Some(state),
            shard_id: Some(lane.1.clone()),
            stream_arn: Some(lane.0.clone()),
            is_final: last,
            terminated_early: false,
        }
    }

    /// The final invocation of `lane`'s window that started at `start`.
    fn final_invocation(&self, lane: &Lane, start: u64, state: String) -> Event<'static> {
        Event::Kinesis(KinesisBatch {
            records: Vec::new(),
            window: Some(self.window(lane, start, state, true)),
        })
    }

    /// The invocations an event becomes: for a Kinesis batch, the final
    /// invocation of the shard's previous window if this batch starts a new
    /// one, then the batch in its window (by its first record's arrival
    /// time). Other events pass through.
    fn wrap<'a>(&mut self, event: Event<'a>) -> Vec<(Option<Lane>, Event<'a>)> {
        let Event::Kinesis(mut batch) = event else {
            return vec![(None, event)];
        };
        let Some(first) = batch.records.first() else {
            return vec![(None, Event::Kinesis(batch))];
        };
        let id = batch.records.iter().find_map(|r| r.id.as_ref().ok());
        let stream = id
            .map(|id| &*id.stream)
            .filter(|s| !s.is_empty())
            .unwrap_or(REPLAY_STREAM);
        let shard = id.map_or(REPLAY_SHARD, |id| &*id.shard);
        let lane = (stream.to_string(), shard.to_string());
        let arrival = first.arrival_seconds.unwrap_or(0.0);
        // Lambda names the window's stream; records that do not name one
        // are the window's (what the event's top-level ARN gives them).
        let window_stream: std::sync::Arc<str> = stream.into();
        for id in batch.records.iter_mut().filter_map(|r| r.id.as_mut().ok()) {
            if id.stream.is_empty() {
                id.stream = window_stream.clone();
            }
        }
        let start = (arrival.max(0.0) as u64) / self.seconds * self.seconds;
        let mut out = Vec::new();
        if let Some((open, state)) = self.open.get(&lane).cloned() {
            if open != start {
                out.push((None, self.final_invocation(&lane, open, state)));
                self.open.remove(&lane);
            }
        }
        let state = self
            .open
            .entry(lane.clone())
            .or_insert((start, "{}".to_string()))
            .1
            .clone();
        batch.window = Some(self.window(&lane, start, state, false));
        out.push((Some(lane), Event::Kinesis(batch)));
        out
    }

    /// Keeps the state an invocation returned for the next one.
    fn returned(&mut self, lane: Lane, response: &serde_json::Value) {
        if let (Some(open), Some(state)) = (self.open.get_mut(&lane), response.get("state")) {
            open.1 = state.to_string();
        }
    }

    /// The final invocations of every window still open.
    fn finish(self) -> Vec<Event<'static>> {
        self.open
            .iter()
            .map(|(lane, (start, state))| self.final_invocation(lane, *start, state.clone()))
            .collect()
    }
}

/// Progress on a terminal (stderr), nothing otherwise: files, records,
/// rows, files written, the rate and the time left, redrawn at most twice a
/// second.
struct Progress {
    total: usize,
    done: usize,
    started: Instant,
    last: Option<Instant>,
    on_terminal: bool,
}

impl Progress {
    fn new(total: usize) -> Self {
        use std::io::IsTerminal as _;
        Progress {
            total,
            done: 0,
            started: Instant::now(),
            last: None,
            on_terminal: std::io::stderr().is_terminal(),
        }
    }

    /// Called before each file.
    fn show(&mut self, stats: &Stats) {
        let now = Instant::now();
        let due = self
            .last
            .is_none_or(|t| now.duration_since(t).as_millis() >= 500);
        if self.on_terminal && due {
            self.last = Some(now);
            eprint!("\r{}", self.line(stats, now));
        }
        self.done += 1;
    }

    fn done(&mut self, stats: &Stats) {
        if self.on_terminal {
            self.done = self.total;
            eprintln!("\r{}", self.line(stats, Instant::now()));
        }
    }

    fn line(&self, stats: &Stats, now: Instant) -> String {
        let elapsed = now.duration_since(self.started).as_secs_f64();
        let rate = stats.records as f64 / elapsed.max(1e-3);
        let left = match self.done {
            0 => String::from("?"),
            d => format!(
                "{:.0}s",
                elapsed / d as f64 * self.total.saturating_sub(d) as f64
            ),
        };
        format!(
            "{}/{} event files, {} records, {} rows, {} files written, {rate:.0} records/s, {left} left   ",
            self.done, self.total, stats.records, stats.rows, stats.files
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    use clap::Parser as _;

    #[derive(clap::Parser)]
    struct Cli {
        #[command(flatten)]
        args: ReplayArgs,
    }

    fn parse(a: &[&str]) -> Result<ReplayArgs, clap::Error> {
        Cli::try_parse_from(std::iter::once("replay").chain(a.iter().copied())).map(|c| c.args)
    }

    #[test]
    fn output_forms() {
        let a = parse(&["--output", "out", "a.json", "b.json"]).unwrap();
        assert_eq!(a.output, Output::Dir("out".into()));
        assert_eq!(a.files, ["a.json", "b.json"]);
        assert_eq!(a.window, None);
        let a = parse(&["--output=s3://lake/cdc/", "--window", "120", "a.json"]).unwrap();
        assert_eq!(a.window, Some(120));
        assert_eq!(
            a.output,
            Output::S3 {
                bucket: "lake".into(),
                prefix: Some("cdc/".into())
            }
        );
        let a = parse(&["a.json", "-o", "s3://lake"]).unwrap();
        assert_eq!(
            a.output,
            Output::S3 {
                bucket: "lake".into(),
                prefix: None
            }
        );
    }

    #[test]
    fn windows_follow_arrival_times_and_carry_the_state() {
        let batch = |shard: &str, arrival: f64| {
            serde_json::json!({"Records": [{"eventID": format!("{shard}:1"),
                "eventSource": "aws:kinesis",
                "kinesis": {"approximateArrivalTimestamp": arrival, "sequenceNumber": "1",
                            "data": ""}}]})
            .to_string()
        };
        let window = |invocation: &(Option<Lane>, Event<'_>)| match &invocation.1 {
            Event::Kinesis(KinesisBatch {
                window: Some(w), ..
            }) => w.clone(),
            other => panic!("not a window invocation: {other:?}"),
        };
        let mut w = Windows::new(120);
        let text = batch("shardId-1", 1_773_450_010.0);
        let first = w.wrap(event::classify(&text).unwrap());
        assert_eq!(first.len(), 1);
        let lane = first[0].0.clone().unwrap();
        assert_eq!(lane, (REPLAY_STREAM.to_string(), "shardId-1".to_string()));
        assert_eq!(window(&first[0]).start, "2026-03-14T01:00:00Z");
        assert_eq!(window(&first[0]).end, "2026-03-14T01:02:00Z");
        w.returned(lane, &serde_json::json!({"state": {"cdc-batcher": "s1"}}));
        let text = batch("shardId-1", 1_773_450_100.0);
        let second = w.wrap(event::classify(&text).unwrap());
        assert_eq!(
            window(&second[0]).state.as_deref(),
            Some(r#"{"cdc-batcher":"s1"}"#),
            "the state goes to the next invocation"
        );
        // A batch of the next window ends the previous one first.
        let text = batch("shardId-1", 1_773_450_130.0);
        let third = w.wrap(event::classify(&text).unwrap());
        assert_eq!(third.len(), 2);
        assert!(window(&third[0]).is_final);
        assert_eq!(window(&third[0]).start, "2026-03-14T01:00:00Z");
        assert!(!window(&third[1]).is_final);
        assert_eq!(window(&third[1]).state.as_deref(), Some("{}"));
        // Other shards have windows of their own; a force flush passes through.
        let text = batch("shardId-2", 1_773_450_130.0);
        assert_eq!(w.wrap(event::classify(&text).unwrap()).len(), 1);
        let flush = event::classify(r#"{"force_flush": true}"#).unwrap();
        assert_eq!(w.wrap(flush)[0].0, None);
        assert_eq!(w.finish().len(), 2);
    }

    #[test]
    fn progress_says_how_far_and_how_long() {
        let mut p = Progress::new(4);
        p.on_terminal = false;
        let stats = Stats {
            records: 100,
            rows: 90,
            files: 3,
            ..Stats::default()
        };
        p.show(&stats);
        p.show(&stats);
        let line = p.line(&stats, p.started + std::time::Duration::from_secs(10));
        assert!(
            line.starts_with(
                "2/4 event files, 100 records, 90 rows, 3 files written, 10 records/s, 10s left"
            ),
            "{line}"
        );
    }

    #[test]
    fn bad_arguments_name_the_argument() {
        for (bad, names) in [
            (vec!["a.json"], "--output"),
            (vec!["--output", "x"], "EVENT.json"),
            (vec!["--bogus", "--output", "x", "a"], "--bogus"),
            (vec!["--window", "0", "--output", "x", "a"], "--window"),
            (vec!["--window", "soon", "--output", "x", "a"], "--window"),
            (vec!["--output", "s3://", "a"], "--output"),
        ] {
            let err = parse(&bad).unwrap_err().to_string();
            assert!(err.contains(names), "{bad:?}: {err}");
        }
    }
}
