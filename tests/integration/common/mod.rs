//! Shared by the integration tests: a real S3-compatible server (moto) on
//! 127.0.0.1, an S3 client for it, and the independent Python/pyarrow checker.
#![allow(dead_code)]

pub mod fault_proxy;

use std::net::{TcpListener, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

pub const BUCKET: &str = "cdc-lake-test";

pub fn repo() -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
}

pub fn corpus() -> PathBuf {
    repo().join("tests/fixtures/corpus")
}

/// A tool from the project's venv (made by `scripts/setup.sh`), else PATH.
fn tool(name: &str, env_override: &str) -> PathBuf {
    if let Ok(p) = std::env::var(env_override) {
        return PathBuf::from(p);
    }
    let venv = repo().join(".venv/bin").join(name);
    if venv.exists() {
        venv
    } else {
        PathBuf::from(name)
    }
}

pub fn python() -> PathBuf {
    tool("python", "CDC_TEST_PYTHON")
}

/// A moto S3 server on a free loopback port, stopped on drop.
pub struct Moto {
    child: Child,
    pub port: u16,
}

impl Moto {
    pub fn start() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        Moto::start_on(port)
    }

    pub fn start_on(port: u16) -> Moto {
        Moto::spawn(Command::new(tool("moto_server", "MOTO_SERVER")), port)
    }

    /// moto with Glue's `UpdateTable` `VersionId` check (moto lacks it):
    /// `tests/support/moto_glue.py`.
    pub fn start_with_glue_versions() -> Moto {
        let port = TcpListener::bind("127.0.0.1:0")
            .and_then(|l| l.local_addr())
            .expect("free port")
            .port();
        let mut command = Command::new(python());
        command.arg(repo().join("tests/support/moto_glue.py"));
        Moto::spawn(command, port)
    }

    fn spawn(mut command: Command, port: u16) -> Moto {
        let bin = command.get_program().to_owned();
        let child = command
            .args(["-H", "127.0.0.1", "-p", &port.to_string()])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .unwrap_or_else(|e| {
                panic!(
                    "cannot start {} ({e}): run scripts/setup.sh, or set MOTO_SERVER",
                    bin.to_string_lossy()
                )
            });
        let deadline = Instant::now() + Duration::from_secs(60);
        while TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(
                Instant::now() < deadline,
                "moto_server did not listen on {port}"
            );
            std::thread::sleep(Duration::from_millis(100));
        }
        Moto { child, port }
    }

    pub fn endpoint(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// Stops the server (an S3 outage); its in-memory objects are gone.
    pub fn stop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

impl Drop for Moto {
    fn drop(&mut self) {
        self.stop();
    }
}

/// An S3 client for `endpoint` with test credentials and few retries.
pub fn s3_client(endpoint: &str) -> aws_sdk_s3::Client {
    s3_client_with(endpoint, 2, Duration::from_secs(5))
}

/// An S3 client making at most `attempts` tries of at most `attempt_timeout` each.
pub fn s3_client_with(
    endpoint: &str,
    attempts: u32,
    attempt_timeout: Duration,
) -> aws_sdk_s3::Client {
    let conf = aws_sdk_s3::config::Builder::new()
        .behavior_version(aws_sdk_s3::config::BehaviorVersion::latest())
        .region(aws_sdk_s3::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_s3::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .force_path_style(true)
        .retry_config(
            aws_sdk_s3::config::retry::RetryConfig::standard()
                .with_max_attempts(attempts)
                .with_initial_backoff(Duration::from_millis(10)),
        )
        .timeout_config(
            aws_sdk_s3::config::timeout::TimeoutConfig::builder()
                .operation_attempt_timeout(attempt_timeout)
                .build(),
        )
        .build();
    aws_sdk_s3::Client::from_conf(conf)
}

/// A Kinesis client for the moto server at `endpoint`.
pub fn kinesis_client(endpoint: &str) -> aws_sdk_kinesis::Client {
    let conf = aws_sdk_kinesis::config::Builder::new()
        .behavior_version(aws_sdk_kinesis::config::BehaviorVersion::latest())
        .region(aws_sdk_kinesis::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_kinesis::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_kinesis::Client::from_conf(conf)
}

/// Creates a Kinesis stream with `shards` shards; returns its ARN.
pub async fn create_stream(client: &aws_sdk_kinesis::Client, name: &str, shards: i32) -> String {
    client
        .create_stream()
        .stream_name(name)
        .shard_count(shards)
        .send()
        .await
        .expect("create stream");
    client
        .describe_stream_summary()
        .stream_name(name)
        .send()
        .await
        .expect("describe stream")
        .stream_description_summary()
        .expect("a stream summary")
        .stream_arn()
        .to_string()
}

pub async fn create_bucket(client: &aws_sdk_s3::Client) {
    client
        .create_bucket()
        .bucket(BUCKET)
        .send()
        .await
        .expect("create bucket");
}

/// Glue and Athena clients for the moto server at `endpoint`.
pub fn catalog_clients(endpoint: &str) -> (aws_sdk_glue::Client, aws_sdk_athena::Client) {
    let creds = aws_sdk_glue::config::Credentials::new("test", "test", None, None, "tests");
    let glue = aws_sdk_glue::config::Builder::new()
        .behavior_version(aws_sdk_glue::config::BehaviorVersion::latest())
        .region(aws_sdk_glue::config::Region::new("us-east-1"))
        .credentials_provider(creds.clone())
        .endpoint_url(endpoint)
        .build();
    let athena = aws_sdk_athena::config::Builder::new()
        .behavior_version(aws_sdk_athena::config::BehaviorVersion::latest())
        .region(aws_sdk_athena::config::Region::new("us-east-1"))
        .credentials_provider(creds)
        .endpoint_url(endpoint)
        .build();
    (
        aws_sdk_glue::Client::from_conf(glue),
        aws_sdk_athena::Client::from_conf(athena),
    )
}

/// Creates the Glue database `name` (the template does this in AWS).
pub async fn create_database(glue: &aws_sdk_glue::Client, name: &str) {
    let input = aws_sdk_glue::types::DatabaseInput::builder()
        .name(name)
        .build()
        .expect("database input");
    glue.create_database()
        .database_input(input)
        .send()
        .await
        .expect("create database");
}

/// Creates the Athena workgroup `name` (the template does this in AWS).
pub async fn create_workgroup(athena: &aws_sdk_athena::Client, name: &str) {
    athena
        .create_work_group()
        .name(name)
        .send()
        .await
        .expect("create workgroup");
}

/// Environment for running the binary against `endpoint`.
pub fn s3_env(endpoint: &str) -> Vec<(&'static str, String)> {
    vec![
        ("AWS_ENDPOINT_URL_S3", endpoint.to_string()),
        ("AWS_ACCESS_KEY_ID", "test".into()),
        ("AWS_SECRET_ACCESS_KEY", "test".into()),
        ("AWS_REGION", "us-east-1".into()),
        ("S3_FORCE_PATH_STYLE", "true".into()),
        ("S3_MAX_ATTEMPTS", "2".into()),
    ]
}

/// The sorted `shard*.json` event files of a directory.
pub fn event_files(dir: &Path) -> Vec<PathBuf> {
    let mut files: Vec<PathBuf> = std::fs::read_dir(dir)
        .unwrap_or_else(|e| panic!("{}: {e}", dir.display()))
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|x| x == "json") && !p.ends_with("manifest.json"))
        .collect();
    files.sort();
    files
}

/// Result of the independent checker (`tests/support/check_lake.py`).
#[derive(Debug)]
pub struct LakeCheck {
    pub ok: bool,
    pub summary: serde_json::Value,
}

/// Runs the pyarrow checker over the lake at `location` (`--dir D` or
/// `--s3-endpoint U --bucket B`) for the rows of `events`.
pub fn check_lake(location: &[String], extra: &[&str], events: &[PathBuf]) -> LakeCheck {
    let out = Command::new(python())
        .arg(repo().join("tests/support/check_lake.py"))
        .args(location)
        .args(extra)
        .args(events)
        .output()
        .expect("run the Python checker (pyarrow): run scripts/setup.sh");
    LakeCheck {
        ok: out.status.success(),
        summary: summary_of("the checker", &out),
    }
}

/// The one JSON line a tool printed on stdout; its stderr in the panic otherwise.
fn summary_of(what: &str, out: &std::process::Output) -> serde_json::Value {
    let stdout = String::from_utf8_lossy(&out.stdout);
    serde_json::from_str(stdout.trim()).unwrap_or_else(|_| {
        panic!(
            "{what} printed no summary: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        )
    })
}

pub fn s3_location(endpoint: &str) -> Vec<String> {
    vec![
        "--s3-endpoint".into(),
        endpoint.into(),
        "--bucket".into(),
        BUCKET.into(),
    ]
}

/// Runs `cdc-batcher replay` and returns its JSON summary and exit status.
pub fn replay(
    env: &[(&str, String)],
    output: &str,
    events: &[PathBuf],
) -> (serde_json::Value, bool) {
    replay_with(env, &[], output, events)
}

/// `replay` with more options (e.g. `--window 60`).
pub fn replay_with(
    env: &[(&str, String)],
    options: &[&str],
    output: &str,
    events: &[PathBuf],
) -> (serde_json::Value, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .arg("replay")
        .arg("--output")
        .arg(output)
        .args(options)
        .args(events)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("run cdc-batcher");
    (summary_of("replay", &out), out.status.success())
}

/// Runs `cdc-batcher ddl` with `args`; returns its stdout (the SQL) and success.
pub fn ddl(env: &[(&str, String)], args: &[&str]) -> (String, bool) {
    let out = Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .arg("ddl")
        .args(args)
        .envs(env.iter().map(|(k, v)| (*k, v.as_str())))
        .env("LOG_LEVEL", "warn")
        .output()
        .expect("run cdc-batcher ddl");
    if !out.status.success() {
        eprintln!("ddl failed: {}", String::from_utf8_lossy(&out.stderr));
    }
    (
        String::from_utf8_lossy(&out.stdout).into_owned(),
        out.status.success(),
    )
}

/// Runs the schema checker (`tests/support/check_schema.py`: same Parquet
/// types per column in every file; with `--sql`, the latest-state views
/// against `expected_final_state.json`).
pub fn check_schema(dir: &Path, extra: &[&str]) -> LakeCheck {
    let out = Command::new(python())
        .arg(repo().join("tests/support/check_schema.py"))
        .arg("--dir")
        .arg(dir)
        .arg("--expected")
        .arg(corpus().join("expected_final_state.json"))
        .args(extra)
        .output()
        .expect("run the schema checker (pyarrow, duckdb): run scripts/setup.sh");
    LakeCheck {
        ok: out.status.success(),
        summary: summary_of("the schema checker", &out),
    }
}

/// Runs a Python snippet with the venv's interpreter; returns its stdout.
pub fn python_stdout(code: &str, args: &[&str]) -> String {
    let out = Command::new(python())
        .arg("-c")
        .arg(code)
        .args(args)
        .output()
        .expect("run python");
    assert!(
        out.status.success(),
        "python failed: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8_lossy(&out.stdout).trim().to_string()
}

/// The test stream every built event names.
pub const STREAM_ARN: &str = "arn:aws:kinesis:us-east-1:123456789012:stream/dms-cdc";

/// A Kinesis event for shard `shard` with one record per DMS message,
/// numbered on from `seq`.
pub fn kinesis_event(shard: u32, seq: &mut u64, messages: &[serde_json::Value]) -> String {
    let records: Vec<domain::event::StreamRecord> = messages
        .iter()
        .map(|m| {
            *seq += 1;
            domain::event::StreamRecord {
                sequence: format!("49590000000000000000000000000000000000000000000000{seq:06}"),
                partition_key: "k".into(),
                data: m.to_string().into_bytes(),
                arrival_seconds: 1773450000.5,
            }
        })
        .collect();
    domain::event::event_json(STREAM_ARN, &format!("shardId-{shard:012}"), &records, None)
}

/// A configuration from `vars` alone (nothing from the environment).
pub fn config(vars: &[(&str, &str)]) -> cdc_batcher::app::config::Config {
    let map: std::collections::HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    cdc_batcher::app::config::Config::from_lookup(|k| map.get(k).cloned()).expect("test config")
}
