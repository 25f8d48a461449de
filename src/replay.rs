//! `cdc-batcher replay`: the Lambda code path over event files, without the
//! Lambda runtime. Each file is one invocation, in the order given, followed
//! by a force flush; one JSON summary line goes to stdout.

use std::io::Read as _;
use std::time::Instant;

use serde::Serialize;

use crate::config::Config;
use crate::handler::{Pipeline, Stats};
use crate::sink::{AnySink, LocalDirSink, S3Sink, Sink};

const USAGE: &str = "usage: cdc-batcher replay --output <DIR | s3://bucket/prefix/> EVENT.json...";

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

fn parse_args(args: &[String]) -> Result<(Output, Vec<String>), String> {
    let mut output = None;
    let mut files = Vec::new();
    let mut it = args.iter();
    while let Some(a) = it.next() {
        match a.as_str() {
            "--output" | "-o" => output = it.next().cloned(),
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
    Ok((output, files))
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
    let (output, files) = match parse_args(args) {
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
        match pipeline.handle(payload, None).await {
            Ok(outcome) => {
                stats.add(&outcome.stats);
                if let Some(seq) = outcome.redeliver_from {
                    redelivery_requests += 1;
                    errors.push(format!("{file}: Kinesis would redeliver from {seq}"));
                }
            }
            Err(e) => errors.push(format!("{file}: {e}")),
        }
        peak_buffered_bytes = peak_buffered_bytes.max(pipeline.buffered_bytes().await);
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

#[cfg(test)]
mod tests {
    use super::*;

    fn args(a: &[&str]) -> Vec<String> {
        a.iter().map(|s| s.to_string()).collect()
    }

    #[test]
    fn output_forms() {
        let (o, f) = parse_args(&args(&["--output", "out", "a.json", "b.json"])).unwrap();
        assert_eq!(o, Output::Dir("out".into()));
        assert_eq!(f, ["a.json", "b.json"]);
        let (o, _) = parse_args(&args(&["--output=s3://lake/cdc/", "a.json"])).unwrap();
        assert_eq!(
            o,
            Output::S3 {
                bucket: "lake".into(),
                prefix: Some("cdc/".into())
            }
        );
        let (o, _) = parse_args(&args(&["a.json", "-o", "s3://lake"])).unwrap();
        assert_eq!(
            o,
            Output::S3 {
                bucket: "lake".into(),
                prefix: None
            }
        );
    }

    #[test]
    fn bad_arguments_say_how_to_call_it() {
        for bad in [
            vec!["a.json"],
            vec!["--output", "x"],
            vec!["--bogus", "--output", "x", "a"],
        ] {
            let err = parse_args(&args(&bad)).unwrap_err();
            assert!(err.contains("usage: cdc-batcher replay"), "{err}");
        }
    }
}
