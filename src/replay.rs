//! `cdc-batcher replay`: the Lambda code path over event files, without the
//! Lambda runtime. Each file is one invocation, in the order given, followed
//! by a force flush; one JSON summary line goes to stdout.

use std::io::Read as _;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::handler::{Pipeline, Stats};
use crate::sink::{AnySink, LocalDirSink, S3Sink, Sink};

const USAGE: &str = "usage: cdc-batcher replay --output <DIR | s3://bucket/prefix/> [--window SECONDS] EVENT.json...

  --window SECONDS  deliver the Kinesis events as Lambda does with TumblingWindowInSeconds:
                    each shard's batches go into windows by their first record's arrival time,
                    every invocation gets the state the previous one returned, and each window
                    ends with a final invocation (FLUSH_MODE=window)";

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
    errors: Vec<String>,
    seconds: f64,
}

/// A lake location given on the command line.
#[derive(Debug, PartialEq, Eq)]
pub(crate) enum Output {
    Dir(String),
    S3 {
        bucket: String,
        prefix: Option<String>,
    },
}

/// What the command line asks for.
#[derive(Debug, PartialEq, Eq)]
struct Args {
    output: Output,
    files: Vec<String>,
    /// `--window`: tumbling windows of this many seconds.
    window: Option<u64>,
}

fn parse_args(args: &[String]) -> Result<Args, String> {
    let mut output = None;
    let mut files = Vec::new();
    let mut window = None;
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--output" | "-o" => output = it.next().cloned(),
            "--window" => {
                let v = it.next().map(String::as_str).unwrap_or("");
                window = match v.parse::<u64>() {
                    Ok(n @ 1..=900) => Some(n),
                    _ => {
                        return Err(format!(
                            "--window {v:?}: expected whole seconds from 1 to 900 (Lambda's TumblingWindowInSeconds)\n{USAGE}"
                        ))
                    }
                };
            }
            s if s.starts_with("--output=") => output = Some(s["--output=".len()..].to_string()),
            "-h" | "--help" => return Err(USAGE.to_string()),
            s if s.starts_with('-') => return Err(format!("unknown option {s}\n{USAGE}")),
            _ => files.push(a.clone()),
        }
    }
    let output = output.ok_or_else(|| format!("--output is required\n{USAGE}"))?;
    if files.is_empty() {
        return Err(format!("no event files given\n{USAGE}"));
    }
    let output = Output::parse(&output).map_err(|e| format!("--output {e}\n{USAGE}"))?;
    Ok(Args {
        output,
        files,
        window,
    })
}

impl Output {
    /// `DIR` or `s3://bucket[/prefix]`.
    pub(crate) fn parse(output: &str) -> Result<Output, String> {
        Ok(match output.strip_prefix("s3://") {
            Some(rest) => {
                let (bucket, prefix) = rest.split_once('/').unwrap_or((rest, ""));
                if bucket.is_empty() {
                    return Err(format!("{output}: no bucket name"));
                }
                Output::S3 {
                    bucket: bucket.to_string(),
                    prefix: Some(prefix.to_string()).filter(|p| !p.is_empty()),
                }
            }
            None => Output::Dir(output.to_string()),
        })
    }

    /// The configuration (from the environment, with an `s3://` URL's
    /// prefix) and the sink for this location.
    pub(crate) async fn open(&self) -> Result<(Config, AnySink), String> {
        let prefix_override = match self {
            Output::S3 { prefix, .. } => prefix.clone(),
            Output::Dir(_) => None,
        };
        let config = Config::from_lookup(|name| match (name, &prefix_override) {
            ("S3_PREFIX", Some(p)) => Some(p.clone()),
            _ => std::env::var(name).ok(),
        })
        .map_err(|e| format!("configuration error: {e}"))?;
        let sink = match self {
            Output::Dir(dir) => AnySink::Local(LocalDirSink::new(dir)),
            Output::S3 { bucket, .. } => AnySink::S3(S3Sink::from_env(bucket, &config.s3).await),
        };
        Ok((config, sink))
    }
}

/// Runs the replay; returns the process exit code.
pub async fn run(args: &[String]) -> i32 {
    let Args {
        output,
        files,
        window,
    } = match parse_args(args) {
        Ok(x) => x,
        Err(msg) => {
            eprintln!("{msg}");
            return 2;
        }
    };
    let (config, sink) = match output.open().await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let started = Instant::now();
    let pipeline = Pipeline::new(config, sink).without_metrics();
    let mut stats = Stats::default();
    let mut errors = Vec::new();
    let mut redelivery_requests = 0;
    let mut peak_buffered_bytes = 0;
    // One buffer for every file: a fresh one per file page-faulted its way
    // through each payload again.
    let mut bytes = Vec::new();
    let mut windows = window.map(Windows::new);
    for file in &files {
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
        let invocations = match windows.as_mut() {
            Some(w) => match w.wrap(payload) {
                Ok(list) => list,
                Err(e) => {
                    errors.push(format!("{file}: {e}"));
                    continue;
                }
            },
            None => vec![(None, payload.to_string())],
        };
        for (lane, payload) in invocations {
            match pipeline.handle(&payload, None).await {
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
    // The windows still open end as their shards move on.
    for payload in windows.map(Windows::finish).unwrap_or_default() {
        match pipeline.handle(&payload, None).await {
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
        seconds: started.elapsed().as_secs_f64(),
        errors,
    };
    match serde_json::to_string(&summary) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("summary could not be serialised: {e}"),
    }
    i32::from(!summary.errors.is_empty())
}

/// Lambda's tumbling windows over replayed events: per stream and shard, the
/// open window and the state its last invocation returned.
struct Windows {
    seconds: u64,
    open: std::collections::BTreeMap<(String, String), (u64, serde_json::Value)>,
}

/// Which stream and shard a replayed event belongs to.
type Lane = (String, String);

const REPLAY_STREAM: &str = "arn:aws:kinesis:local:000000000000:stream/replay";

impl Windows {
    fn new(seconds: u64) -> Self {
        Windows {
            seconds,
            open: Default::default(),
        }
    }

    fn event(
        &self,
        records: serde_json::Value,
        lane: &Lane,
        start: u64,
        state: serde_json::Value,
        last: bool,
    ) -> String {
        let time = |s: u64| {
            chrono::DateTime::from_timestamp(s as i64, 0)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Secs, true)
        };
        serde_json::json!({
            "Records": records,
            "window": {"start": time(start), "end": time(start + self.seconds)},
            "state": state, "shardId": lane.1, "eventSourceARN": lane.0,
            "isFinalInvokeForWindow": last, "isWindowTerminatedEarly": false,
        })
        .to_string()
    }

    /// The invocations a Kinesis event becomes: the final invocation of the
    /// shard's previous window if this batch starts a new one, then the batch
    /// in its window. Other events pass through.
    fn wrap(&mut self, payload: &str) -> Result<Vec<(Option<Lane>, String)>, String> {
        let mut event: serde_json::Value =
            serde_json::from_str(payload).map_err(|e| format!("not JSON: {e}"))?;
        let Some(first) = event.get("Records").and_then(|r| r.get(0)).cloned() else {
            return Ok(vec![(None, payload.to_string())]);
        };
        let shard = first["eventID"]
            .as_str()
            .and_then(|e| e.split_once(':'))
            .map_or("shardId-000000000000", |(s, _)| s)
            .to_string();
        let arn = first["eventSourceARN"]
            .as_str()
            .unwrap_or(REPLAY_STREAM)
            .to_string();
        let arrival = first["kinesis"]["approximateArrivalTimestamp"]
            .as_f64()
            .unwrap_or(0.0);
        let start = (arrival.max(0.0) as u64) / self.seconds * self.seconds;
        let lane = (arn, shard);
        let mut out = Vec::new();
        if let Some((open, state)) = self.open.get(&lane).cloned() {
            if open != start {
                out.push((
                    None,
                    self.event(serde_json::json!([]), &lane, open, state, true),
                ));
                self.open.remove(&lane);
            }
        }
        let state = self
            .open
            .entry(lane.clone())
            .or_insert((start, serde_json::json!({})))
            .1
            .clone();
        let records = event["Records"].take();
        out.push((
            Some(lane.clone()),
            self.event(records, &lane, start, state, false),
        ));
        Ok(out)
    }

    /// Keeps the state an invocation returned for the next one.
    fn returned(&mut self, lane: Lane, response: &serde_json::Value) {
        if let (Some(open), Some(state)) = (self.open.get_mut(&lane), response.get("state")) {
            open.1 = state.clone();
        }
    }

    /// The final invocations of every window still open.
    fn finish(self) -> Vec<String> {
        self.open
            .iter()
            .map(|(lane, (start, state))| {
                self.event(serde_json::json!([]), lane, *start, state.clone(), true)
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn output_forms() {
        let a = parse_args(&args(&["--output", "out", "a.json", "b.json"])).unwrap();
        assert_eq!(a.output, Output::Dir("out".into()));
        assert_eq!(a.files, ["a.json", "b.json"]);
        assert_eq!(a.window, None);
        let a = parse_args(&args(&[
            "--output=s3://lake/cdc/",
            "--window",
            "120",
            "a.json",
        ]))
        .unwrap();
        assert_eq!(a.window, Some(120));
        assert_eq!(
            a.output,
            Output::S3 {
                bucket: "lake".into(),
                prefix: Some("cdc/".into())
            }
        );
        let a = parse_args(&args(&["a.json", "-o", "s3://lake"])).unwrap();
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
                "kinesis": {"approximateArrivalTimestamp": arrival}}]})
            .to_string()
        };
        let mut w = Windows::new(120);
        let first = w.wrap(&batch("shardId-1", 1_773_450_010.0)).unwrap();
        assert_eq!(first.len(), 1);
        let lane = first[0].0.clone().unwrap();
        w.returned(lane, &serde_json::json!({"state": {"cdc-batcher": "s1"}}));
        let second = w.wrap(&batch("shardId-1", 1_773_450_100.0)).unwrap();
        assert!(
            second[0].1.contains("s1"),
            "the state goes to the next invocation"
        );
        // A batch of the next window ends the previous one first.
        let third = w.wrap(&batch("shardId-1", 1_773_450_130.0)).unwrap();
        assert_eq!(third.len(), 2);
        assert!(third[0].1.contains(r#""isFinalInvokeForWindow":true"#));
        assert!(third[1].1.contains(r#""state":{}"#));
        // Other shards have windows of their own; a force flush passes through.
        assert_eq!(
            w.wrap(&batch("shardId-2", 1_773_450_130.0)).unwrap().len(),
            1
        );
        assert_eq!(w.wrap(r#"{"force_flush": true}"#).unwrap()[0].0, None);
        assert_eq!(w.finish().len(), 2);
    }

    #[test]
    fn bad_arguments_say_how_to_call_it() {
        for bad in [
            vec!["a.json"],
            vec!["--output", "x"],
            vec!["--bogus", "--output", "x", "a"],
            vec!["--window", "0", "--output", "x", "a"],
            vec!["--window", "soon", "--output", "x", "a"],
        ] {
            let err = parse_args(&args(&bad)).unwrap_err();
            assert!(err.contains("usage: cdc-batcher replay"), "{err}");
        }
    }
}
