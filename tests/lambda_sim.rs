//! Deterministic simulation of Lambda's Kinesis event source mapping with
//! tumbling windows, driving several in-process execution environments of the
//! real pipeline against an in-memory S3 that fails, stalls and kills.
//!
//! What it emulates, and where the documentation says so (AWS Lambda
//! Developer Guide):
//! - "Using AWS Lambda with Amazon Kinesis" / "polling and batching streams":
//!   each shard has one batch in flight at a time, records in sequence order;
//!   a batch holds records of one shard; a function can map several streams.
//! - "Implementing stateful Kinesis Data Streams processing in Lambda": each
//!   record belongs to one window by its arrival time; every invocation of a
//!   window gets the state the previous successful one returned; a response
//!   without `state` is a failed invocation; at the window's end a final
//!   invocation (`isFinalInvokeForWindow`) is retried until it succeeds and
//!   holds the shard meanwhile; records are processed at least once, and a
//!   retried record may come out of order.
//! - "Configuring partial batch response" (`ReportBatchItemFailures`): Lambda
//!   checkpoints below the lowest reported sequence number and retries from it.
//! - "Lambda execution environment lifecycle": an invocation goes to any idle
//!   environment; a crash, timeout or out-of-memory kill resets it (no
//!   SIGTERM, memory gone); a scheduled event reaches one environment.
//!
//! Not documented, so modelled conservatively: a window ends (its final
//! invocation comes) only once a record of a later window has arrived in the
//! shard. The function's heartbeats (see `heartbeat`) provide such records on
//! quiet shards; the test proves freshness with them.
//!
//! Faults, drawn from the seed: an S3 call fails, stalls past the invocation
//! deadline, or the environment is killed just before or just after the call
//! takes effect (so also after a PUT and before the response, and during the
//! final invocation); an environment is killed while idle; a response is lost.
//!
//! A deployment's life, in runs of their own:
//! - Deployments mid-window ("Lambda execution environment lifecycle": a new
//!   version's invocations go to new environments): thresholds, memory budget
//!   and `FLUSH_MODE` change, and the upgrade from version 1 states.
//! - Spool objects lost (deleted, expired by the lifecycle rule), with the
//!   stream's copy kept or expired ("Amazon Kinesis Data Streams Developer
//!   Guide", data retention: records are trimmed from a shard's old end;
//!   `GetShardIterator` AT_SEQUENCE_NUMBER of a trimmed record starts at the
//!   first record still there, `SimReader`).
//! - Retries exhausted ("Using Lambda with Kinesis", error handling: past
//!   `MaximumRetryAttempts` Lambda discards the batch, sends its range to
//!   the on-failure destination and goes on): on a window's batches, whose
//!   ranges `redrive` writes, and on final invocations, whose windows the
//!   scheduled sweep writes once the stream's retention has passed.
//! - Resharding ("Using Lambda with Kinesis": a child shard is read after
//!   its parents; "Implementing stateful Kinesis Data Streams processing":
//!   "when a shard ends, Lambda considers the current window to be closed",
//!   simulated as a final invocation at the shard's end, at the window's
//!   end, or none).
//! - The event source mapping deleted and created again from TRIM_HORIZON
//!   ("Using Lambda with Kinesis", `StartingPosition`): every record the
//!   stream holds is delivered again.
//! - Scenarios by hand for what the seeds reach too rarely (`Scenario`).
//!
//! Checked for every seed: every data record of the source is in the lake
//! exactly once (or, with lost spool objects, missing only inside a range the
//! function recorded as lost, and only where the stream dropped it too); the latest state per key equals the source's; every bad record
//! is in the quarantine; every row lands within the window plus one schedule
//! period (plus retry time when faults delay it). `SIM_SEEDS=N` runs more seeds.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use arrow::array::Array as _;
use base64::Engine as _;
use cdc_batcher::app::config::Config;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::invocation;
use cdc_batcher::edge::heartbeat::{self, Heartbeat};
use cdc_batcher::edge::shard_reader::{
    finish_read, take_page, ReadError, ReadFrom, ShardRange, ShardReader,
};
use cdc_batcher::edge::sink::{PutOutcome, Sink, SinkError};
use domain::event::StreamRecord;
use futures_util::future::BoxFuture;
use parquet::arrow::arrow_reader::ParquetRecordBatchReaderBuilder;
use serde_json::{json, Value};

/// Tumbling window and schedule period, in simulated seconds.
const WINDOW: u64 = 120;
const SCHEDULE: u64 = 60;
const BATCH_SIZE: usize = 40;
const SOURCE_SECONDS: u64 = 400;
const T0: i64 = 1_773_446_400; // 2026-03-14T00:00:00Z

/// splitmix64: one seed reproduces a whole run.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }
    fn below(&mut self, n: u64) -> u64 {
        self.next() % n.max(1)
    }
    fn chance(&mut self, p: f64) -> bool {
        ((self.next() >> 11) as f64 / (1u64 << 53) as f64) < p
    }
}

#[derive(Clone, Copy, Debug)]
struct Faults {
    fail: f64,
    slow: f64,
    kill_before: f64,
    kill_after: f64,
    idle_kill: f64,
    response_lost: f64,
    /// At least once: a batch already acknowledged comes again (with the
    /// state its invocation returned).
    redelivered: f64,
}

impl Faults {
    const NONE: Faults = Faults {
        fail: 0.0,
        slow: 0.0,
        kill_before: 0.0,
        kill_after: 0.0,
        idle_kill: 0.0,
        response_lost: 0.0,
        redelivered: 0.0,
    };
    /// A fifth of [`Faults::SOME`]: for runs whose windows are read more
    /// than once (a lost range makes a rebuild read the spool twice), where
    /// the full rates leave a long window's final invocation failing for
    /// longer than the run.
    const LIGHT: Faults = Faults {
        fail: 0.004,
        slow: 0.001,
        kill_before: 0.002,
        kill_after: 0.002,
        idle_kill: 0.002,
        response_lost: 0.004,
        redelivered: 0.006,
    };
    const SOME: Faults = Faults {
        fail: 0.02,
        slow: 0.005,
        kill_before: 0.01,
        kill_after: 0.01,
        idle_kill: 0.01,
        response_lost: 0.02,
        redelivered: 0.03,
    };
}

/// The simulated S3: objects, the simulated time each first landed, faults.
struct World {
    objects: Mutex<BTreeMap<String, (Vec<u8>, u64)>>,
    clock: AtomicU64,
    seed: u64,
    /// Calls so far per operation and key: a call's fate is a function of
    /// the seed, the operation, the key and this count, not of the order in
    /// which calls happen to be made.
    attempts: Mutex<HashMap<(&'static str, String), u64>>,
    faults: Faults,
    /// Set by a kill; the running invocation is abandoned.
    killed: AtomicBool,
    kill: tokio::sync::Notify,
    puts: AtomicU64,
    /// Calls on keys containing one of these fail (scenarios by hand).
    fail_keys: Mutex<Vec<String>>,
}

impl World {
    fn new(seed: u64, faults: Faults) -> World {
        World {
            objects: Mutex::new(BTreeMap::new()),
            clock: AtomicU64::new(0),
            seed,
            attempts: Mutex::new(HashMap::new()),
            faults,
            killed: AtomicBool::new(false),
            kill: tokio::sync::Notify::new(),
            puts: AtomicU64::new(0),
            fail_keys: Mutex::new(Vec::new()),
        }
    }
}

#[derive(Clone)]
struct SimSink(Arc<World>);

enum Fate {
    Ok,
    Fail,
    Slow,
    KillBefore,
    KillAfter,
}

impl SimSink {
    fn fate(&self, op: &'static str, key: &str) -> Fate {
        let f = self.0.faults;
        let attempt = {
            let mut attempts = self.0.attempts.lock().unwrap();
            let n = attempts.entry((op, key.to_string())).or_default();
            *n += 1;
            *n
        };
        let mut h = self.0.seed ^ attempt.wrapping_mul(0x9E37_79B9_7F4A_7C15);
        for b in op.bytes().chain(key.bytes()) {
            h = (h ^ u64::from(b)).wrapping_mul(0x0000_0100_0000_01B3);
        }
        let mut rng = Rng(h);
        if self
            .0
            .fail_keys
            .lock()
            .unwrap()
            .iter()
            .any(|k| key.contains(k.as_str()))
        {
            return Fate::Fail;
        }
        if rng.chance(f.kill_before) {
            Fate::KillBefore
        } else if rng.chance(f.kill_after) {
            Fate::KillAfter
        } else if rng.chance(f.fail) {
            Fate::Fail
        } else if rng.chance(f.slow) {
            Fate::Slow
        } else {
            Fate::Ok
        }
    }

    async fn die(&self) -> ! {
        self.0.killed.store(true, Ordering::SeqCst);
        self.0.kill.notify_one();
        std::future::pending::<()>().await;
        unreachable!()
    }

    fn error(op: &'static str, key: &str) -> SinkError {
        SinkError::S3 {
            operation: op,
            bucket: "sim".into(),
            key: key.into(),
            message: "503 SlowDown (simulated)".into(),
        }
    }

    /// Applies the fate around `op`.
    async fn run<T>(
        &self,
        name: &'static str,
        key: &str,
        op: impl FnOnce() -> T,
    ) -> Result<T, SinkError> {
        match self.fate(name, key) {
            Fate::KillBefore => self.die().await,
            Fate::Fail => Err(Self::error(name, key)),
            Fate::Slow => {
                // Longer than any invocation: the deadline must cut it short.
                tokio::time::sleep(Duration::from_secs(900)).await;
                Ok(op())
            }
            Fate::KillAfter => {
                let _ = op();
                self.die().await
            }
            Fate::Ok => Ok(op()),
        }
    }
}

impl Sink for SimSink {
    async fn put(
        &self,
        key: &str,
        body: Vec<u8>,
        _: &'static str,
    ) -> Result<PutOutcome, SinkError> {
        self.run("PutObject", key, || {
            self.0.puts.fetch_add(1, Ordering::Relaxed);
            let mut objects = self.0.objects.lock().unwrap();
            if objects.contains_key(key) {
                PutOutcome::AlreadyExists
            } else {
                let now = self.0.clock.load(Ordering::SeqCst);
                objects.insert(key.to_string(), (body, now));
                PutOutcome::Written
            }
        })
        .await
    }

    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        self.run("GetObject", key, || {
            self.0
                .objects
                .lock()
                .unwrap()
                .get(key)
                .map(|(b, _)| b.clone())
        })
        .await
    }

    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        self.run("ListObjectsV2", prefix, || {
            self.0
                .objects
                .lock()
                .unwrap()
                .keys()
                .filter(|k| k.starts_with(prefix))
                .cloned()
                .collect()
        })
        .await
    }

    fn location(&self) -> String {
        "sim://".into()
    }
}

#[derive(Clone, Debug)]
enum Kind {
    /// A data row (the expected state is kept in the model).
    Row,
    Control,
    Bad,
    Heartbeat,
}

#[derive(Clone, Debug)]
struct Rec {
    seq: u64,
    arrival: u64,
    pk: String,
    data: String,
    kind: Kind,
}

struct ShardSim {
    stream: usize,
    id: String,
    recs: Vec<Rec>,
    next_seq: u64,
    /// Index of the first record not yet checkpointed.
    next: usize,
    /// The open window's start and the last good state.
    window: Option<u64>,
    state: Value,
    /// The batch being retried (indices).
    retry: Option<Vec<usize>>,
    /// Invocations of this shard that failed (each delays it one step).
    failed: u64,
    /// Records below this sequence number have expired from the stream.
    trimmed_below: u64,
    /// Records (indices) a mapping created from LATEST never delivered.
    skipped: Option<(usize, usize)>,
    /// Failed attempts of the open window's final invocation, and of the
    /// batch being retried.
    final_failures: u64,
    batch_failures: u64,
    /// Resharding: the shards this one was split or merged from (read only
    /// once they are done), when it opened, and when it was closed.
    parents: Vec<usize>,
    open_from: u64,
    closed_at: Option<u64>,
}

impl ShardSim {
    fn new(stream: usize, id: String) -> ShardSim {
        ShardSim {
            stream,
            id,
            recs: Vec::new(),
            next_seq: 0,
            next: 0,
            window: None,
            state: json!({}),
            retry: None,
            failed: 0,
            trimmed_below: 0,
            skipped: None,
            final_failures: 0,
            batch_failures: 0,
            parents: Vec::new(),
            open_from: 0,
            closed_at: None,
        }
    }

    /// Lambda is done with the open window (written, or given up on): the
    /// shard's next record starts a new one with a fresh state.
    fn end_window(&mut self) {
        self.window = None;
        self.state = json!({});
        self.retry = None;
        self.final_failures = 0;
    }

    /// Whether `PutRecord` can reach this shard at `t`.
    fn is_open(&self, t: u64) -> bool {
        self.open_from <= t && self.closed_at.is_none_or(|c| t < c)
    }

    /// A closed shard whose every record Lambda has taken and whose last
    /// window is over: its children may be read.
    fn is_done(&self) -> bool {
        self.closed_at.is_some()
            && self.next == self.recs.len()
            && self.window.is_none()
            && self.retry.is_none()
    }
}

struct Streams {
    arns: Vec<String>,
    shards: Vec<ShardSim>,
}

impl Streams {
    fn push(&mut self, shard: usize, arrival: u64, pk: String, data: String, kind: Kind) {
        let s = &mut self.shards[shard];
        s.next_seq += 1;
        s.recs.push(Rec {
            seq: s.next_seq,
            arrival,
            pk,
            data,
            kind,
        });
    }
}

/// Heartbeats land in the simulated shards, as `PutRecord` would put them.
struct SimHeartbeat {
    streams: Arc<Mutex<Streams>>,
    clock: Arc<World>,
}

impl Heartbeat for SimHeartbeat {
    fn beat<'a>(
        &'a self,
        stream_arn: &'a str,
        record: &'a [u8],
    ) -> BoxFuture<'a, Result<usize, String>> {
        Box::pin(async move {
            let mut streams = self.streams.lock().unwrap();
            let Some(stream) = streams.arns.iter().position(|a| a == stream_arn) else {
                return Err(format!("no stream {stream_arn}"));
            };
            let now = self.clock.clock.load(Ordering::SeqCst);
            let data = base64::engine::general_purpose::STANDARD.encode(record);
            let shards: Vec<usize> = (0..streams.shards.len())
                .filter(|&i| streams.shards[i].stream == stream && streams.shards[i].is_open(now))
                .collect();
            for &i in &shards {
                streams.push(
                    i,
                    now,
                    heartbeat::PARTITION_KEY.into(),
                    data.clone(),
                    Kind::Heartbeat,
                );
            }
            Ok(shards.len())
        })
    }
}

/// Reads the simulated shards back, as `GetShardIterator` + `GetRecords`
/// would: records below the trim point are gone, a read at a trimmed
/// sequence number starts at the first record still there.
struct SimReader {
    streams: Arc<Mutex<Streams>>,
    /// What `DescribeStreamSummary` answers (`None`: it cannot be read).
    retention: Option<Duration>,
}

impl ShardReader for SimReader {
    fn read<'a>(
        &'a self,
        stream_arn: &'a str,
        shard: &'a str,
        from: &'a ReadFrom,
        last: &'a str,
    ) -> BoxFuture<'a, Result<ShardRange, ReadError>> {
        Box::pin(async move {
            let st = self.streams.lock().unwrap();
            let Some(s) = st
                .shards
                .iter()
                .find(|s| st.arns[s.stream] == stream_arn && s.id == shard)
            else {
                return Err(ReadError::Gone(format!("{stream_arn} {shard}")));
            };
            let page: Vec<StreamRecord> = s
                .recs
                .iter()
                .filter(|r| r.seq >= s.trimmed_below)
                .filter(|r| match from {
                    ReadFrom::Sequence(q) => r.seq >= q.parse::<u64>().unwrap(),
                    ReadFrom::Time(t) => (T0 as u64 + r.arrival) as f64 >= *t,
                })
                .map(|r| StreamRecord {
                    sequence: r.seq.to_string(),
                    partition_key: r.pk.clone(),
                    data: base64::engine::general_purpose::STANDARD
                        .decode(&r.data)
                        .unwrap_or_else(|_| r.data.clone().into_bytes()),
                    arrival_seconds: (T0 as u64 + r.arrival) as f64,
                })
                .collect();
            let mut range = ShardRange::default();
            if take_page(&mut range, from, last, page) {
                return Ok(range);
            }
            finish_read(range, shard, last)
        })
    }

    fn retention<'a>(&'a self, _stream_arn: &'a str) -> BoxFuture<'a, Result<Duration, ReadError>> {
        Box::pin(async move {
            self.retention
                .ok_or_else(|| ReadError::Unavailable("no retention in this run".into()))
        })
    }
}

const TABLES: usize = 4;

fn dms_row(table: usize, id: u32, op: &str, value: Option<&str>, src: &str, at: u64) -> String {
    let ts = chrono::DateTime::from_timestamp(T0 + at as i64, 0).unwrap();
    let mut data = json!({"id": id, "src": src});
    if let Some(v) = value {
        data["v"] = json!(v);
    }
    let msg = json!({"data": data, "metadata": {
        "timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
        "record-type": "data", "operation": op, "partition-key-type": "schema-table",
        "schema-name": "s", "table-name": format!("t{table}")}});
    base64::engine::general_purpose::STANDARD.encode(msg.to_string())
}

fn dms_create_table(table: usize, at: u64) -> String {
    let ts = chrono::DateTime::from_timestamp(T0 + at as i64, 0).unwrap();
    let msg = json!({"control": {"table-def": {"columns": {
            "id": {"type": "INT32", "nullable": false}, "src": {"type": "STRING", "length": 8},
            "v": {"type": "STRING", "length": 32}}, "primary-key": ["id"]}},
        "metadata": {"timestamp": ts.to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            "record-type": "control", "operation": "create-table",
            "partition-key-type": "task-id", "schema-name": "s", "table-name": format!("t{table}")}});
    base64::engine::general_purpose::STANDARD.encode(msg.to_string())
}

/// The source: two streams (same shard ids, same sequence numbers), two
/// shards each; a table's changes go to one shard of each stream. Shard 1 of
/// the second stream goes quiet after 30 s.
fn source(
    rng: &mut Rng,
    reshard: Option<Reshard>,
) -> (Streams, Vec<BTreeMap<u32, Option<String>>>) {
    let arns = vec![
        "arn:aws:kinesis:us-east-1:123456789012:stream/dms-a".to_string(),
        "arn:aws:kinesis:eu-west-1:123456789012:stream/dms-b".to_string(),
    ];
    let mut streams = Streams {
        arns,
        shards: (0..4)
            .map(|i| ShardSim::new(i / 2, format!("shardId-00000000000{}", i % 2)))
            .collect(),
    };
    if let Some(r) = reshard {
        let at = 150 + rng.below(100);
        let parents: Vec<usize> = if r.merge { vec![0, 1] } else { vec![0] };
        let children = if r.merge { 1 } else { 2 };
        for &p in &parents {
            streams.shards[p].closed_at = Some(at);
        }
        for c in 0..children {
            let mut child = ShardSim::new(0, format!("shardId-00000000000{}", 2 + c));
            child.parents = parents.clone();
            child.open_from = at;
            child.next_seq = 1_000_000;
            streams.shards.push(child);
        }
    }
    // Where a record of `table` of `stream` goes at `t`: after a reshard,
    // a closed shard's tables go to its children.
    let route = |streams: &Streams, stream: usize, table: usize, t: u64| {
        let shard = stream * 2 + table % 2;
        if streams.shards[shard].closed_at.is_none_or(|c| t < c) {
            return shard;
        }
        let children: Vec<usize> = (4..streams.shards.len()).collect();
        children[(table / 2) % children.len()]
    };
    // Expected latest state per (stream, table): key → value.
    let mut model = vec![BTreeMap::new(); 2 * TABLES];
    for stream in 0..2 {
        for table in 0..TABLES {
            let shard = stream * 2 + table % 2;
            streams.push(
                shard,
                0,
                format!("s.t{table}"),
                dms_create_table(table, 0),
                Kind::Control,
            );
        }
    }
    let mut n = 0u64;
    // Half the seeds give both streams the same pattern of tables and
    // sequence numbers: only the stream then tells their files apart.
    let mirror = rng.chance(0.5);
    for t in 0..SOURCE_SECONDS {
        let mut pattern = Vec::new();
        for stream in 0..2 {
            if stream == 0 || !mirror {
                pattern = (0..rng.below(6))
                    .map(|_| (rng.below(TABLES as u64) as usize, rng.chance(0.01)))
                    .collect();
            }
            for &(table, bad) in &pattern {
                let shard = route(&streams, stream, table, t);
                if stream == 1 && table % 2 == 1 && t > 30 {
                    continue; // the quiet shard
                }
                let src = ["a", "b"][stream];
                if bad {
                    streams.push(
                        shard,
                        t,
                        format!("s.t{table}"),
                        "!!not base64".into(),
                        Kind::Bad,
                    );
                    continue;
                }
                let id = rng.below(20) as u32 + 1;
                let state = &mut model[stream * TABLES + table];
                let present = state.get(&id).is_some_and(|v: &Option<String>| v.is_some());
                n += 1;
                let (op, value) = if !present {
                    ("insert", Some(format!("{src}{n}")))
                } else if rng.chance(0.3) {
                    ("delete", None)
                } else {
                    ("update", Some(format!("{src}{n}")))
                };
                let data = dms_row(table, id, op, value.as_deref(), src, t);
                state.insert(id, value);
                streams.push(shard, t, format!("s.t{table}"), data, Kind::Row);
            }
        }
    }
    (streams, model)
}

fn config(vars: &[(&str, String)]) -> Config {
    let map: HashMap<String, String> = vars
        .iter()
        .map(|(k, v)| (k.to_string(), v.clone()))
        .collect();
    Config::from_lookup(|k| map.get(k).cloned()).expect("config")
}

/// What changes over the deployment's life while the stream flows.
#[derive(Clone, Copy, Debug, Default)]
struct Life {
    /// New deployments mid-window (about one a minute): every environment
    /// replaced by one with other thresholds, memory budget or `FLUSH_MODE`
    /// (`window` ↔ `invocation`), or an upgrade from the release before
    /// window rules were recorded (states as it wrote them, same settings).
    deploys: bool,
    /// Deployments may also switch `FLUSH_MODE` to `invocation` and back.
    /// Only without faults: `invocation` mode is at-least-once across
    /// environments (docs/guarantees.md), so a crash there may duplicate.
    mode_switches: bool,
    /// Chance per second that a spool object is lost (deleted by hand, by
    /// the lifecycle rule during a long stall, or an `S3Prefix` change).
    lose_spools: f64,
    /// With a lost spool object, the stream's retention also passes over
    /// its records (those already checkpointed): they are gone everywhere.
    expire: bool,
    /// `MaximumRetryAttempts` of a window's final invocation: past it Lambda
    /// discards the invocation and goes on with the shard's next window
    /// ("Using Lambda with Kinesis", error handling), abandoning the window
    /// in its spool. After the run, the scheduled sweep comes when the
    /// stream's retention (24 hours) has passed over the windows' records
    /// (the simulation's windows are months older than the clock the sweep
    /// reads), and must write every abandoned window exactly once.
    give_up_after: Option<u64>,
    /// Stream `dms-a` is resharded mid-run.
    reshard: Option<Reshard>,
    /// The event source mapping is deleted mid-run and created again:
    /// windows in flight get no more invocations. With `StartingPosition`
    /// TRIM_HORIZON (the template's) every record the stream still holds
    /// is delivered again; with LATEST only those that arrive after it.
    remap: Option<StartingPosition>,
}

/// Where a mapping created again starts reading ("StartingPosition",
/// Lambda's `CreateEventSourceMapping`).
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum StartingPosition {
    TrimHorizon,
    /// Records that arrive after the mapping is created; those that arrived
    /// before and were not taken are never delivered (never acknowledged).
    Latest,
}

/// A reshard of stream `dms-a` at a time drawn from the seed: its shard 0
/// split in two (its tables go one to each child), or its shards 0 and 1
/// merged into one. Children's sequence numbers are above their parents'
/// (Kinesis sequence numbers grow over a stream's shards in time).
#[derive(Clone, Copy, Debug)]
struct Reshard {
    merge: bool,
    end: ShardEnd,
}

/// How a closed parent shard's last window ends. Lambda's tumbling-window
/// page says only that "when a shard ends, Lambda considers the current
/// window to be closed", so each reading is simulated.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
enum ShardEnd {
    /// A final invocation as soon as the shard's records are taken.
    FinalWhenShardCloses,
    /// A final invocation at the window's end time.
    FinalAtWindowEnd,
    /// No final invocation: the window stays in its spool (the sweep's).
    NoFinal,
}

impl Life {
    const STILL: Life = Life {
        deploys: false,
        mode_switches: false,
        lose_spools: 0.0,
        expire: false,
        give_up_after: None,
        reshard: None,
        remap: None,
    };

    /// Runs that leave windows no final invocation will write: the sweep
    /// comes after them, once the stream's retention has passed.
    fn abandons_windows(&self) -> bool {
        self.give_up_after.is_some()
            || self.remap.is_some()
            || self.reshard.is_some_and(|r| r.end == ShardEnd::NoFinal)
    }
}

struct Run {
    deploys: u64,
    /// Spool objects deleted, and ranges the function recorded as lost.
    lost_spools: u64,
    lost_ranges: u64,
    files: usize,
    invocations: u64,
    kills: u64,
    max_latency: u64,
    /// Parts closed early by a window's memory bound.
    budget_cuts: u64,
    /// Windows whose final invocation Lambda gave up on, and windows the
    /// sweep wrote.
    abandoned: u64,
    swept: u64,
    /// Data records that a reshard's child shards carried.
    child_rows: u64,
    /// Records Lambda had taken when the mapping was created again (all
    /// delivered again).
    remapped_from: u64,
    /// Records a mapping created from LATEST never delivered.
    skipped: u64,
    /// Failure records (discarded batches) redriven.
    redriven: u64,
}

/// Runs one seed; panics with the seed on any violation. `budget`: a
/// `MAX_BUFFERED_BYTES` below what the configuration accepts, so that
/// windows of the simulation's size cross it.
async fn simulate(
    seed: u64,
    faults: Faults,
    mode: &str,
    schedule: u64,
    budget: Option<usize>,
    life: Life,
) -> Run {
    let mut rng = Rng(seed);
    let (streams, model) = source(&mut rng, life.reshard);
    let streams = Arc::new(Mutex::new(streams));
    let world = Arc::new(World::new(seed, faults));
    let arns = streams.lock().unwrap().arns.clone();
    let cfg = config(&[
        ("FLUSH_MODE", mode.into()),
        ("S3_PREFIX", "lake/".into()),
        ("BATCH_MAX_RECORDS_THRESHOLD", "25".into()),
        ("BATCH_MAX_AGE_SECONDS", "2".into()),
        ("TIME_RESERVE_MS", "0".into()),
        ("HEARTBEAT_STREAMS", arns.join(",")),
    ]);
    let mut cfg = cfg;
    if let Some(budget) = budget {
        cfg.thresholds.max_buffered_bytes = budget;
    }
    let hb: Arc<dyn Heartbeat> = Arc::new(SimHeartbeat {
        streams: streams.clone(),
        clock: world.clone(),
    });
    let reader: Arc<dyn ShardReader> = Arc::new(SimReader {
        streams: streams.clone(),
        retention: life
            .abandons_windows()
            .then_some(Duration::from_secs(24 * 3600)),
    });
    let new_env = |cfg: &Config| {
        Pipeline::new(cfg.clone(), SimSink(world.clone()))
            .without_metrics()
            .with_heartbeat(hb.clone())
            .with_shard_reader(reader.clone())
    };
    let mut envs: Vec<Option<Pipeline<SimSink>>> = (0..3).map(|_| None).collect();
    let mut run = Run {
        deploys: 0,
        lost_spools: 0,
        lost_ranges: 0,
        files: 0,
        invocations: 0,
        kills: 0,
        max_latency: 0,
        budget_cuts: 0,
        abandoned: 0,
        swept: 0,
        child_rows: 0,
        remapped_from: 0,
        skipped: 0,
        redriven: 0,
    };
    let windowed = mode == "window";
    let horizon = SOURCE_SECONDS + 3 * WINDOW;
    let remap_at = life.remap.map(|_| 100 + rng.below(200));
    // The on-failure destination: a failure record per discarded batch.
    let mut failures: Vec<String> = Vec::new();

    // One invocation in some environment; `None` if it was killed or its
    // response was lost.
    macro_rules! invoke {
        ($payload:expr) => {{
            let i = rng.below(envs.len() as u64) as usize;
            let env = envs[i].get_or_insert_with(|| new_env(&cfg));
            run.invocations += 1;
            world.killed.store(false, Ordering::SeqCst);
            let deadline = SystemTime::now() + Duration::from_secs(60);
            let payload: String = $payload;
            let result = tokio::select! {
                r = invocation::handle(&env, &payload, Some(deadline)) => Some(r),
                _ = world.kill.notified() => None,
            };
            match result {
                None => {
                    envs[i] = None; // reset: memory gone, no SIGTERM
                    run.kills += 1;
                    None
                }
                Some(_) if rng.chance(faults.response_lost) => None,
                Some(Ok(outcome)) => Some(outcome),
                Some(Err(_)) => None,
            }
        }};
    }

    // Past the horizon the run goes on (at most twice as long again) while a
    // shard still holds data: a window whose final invocation keeps failing
    // under the faults' rates is retried, as Lambda would, not cut off.
    for t in 0..3 * horizon {
        if t >= horizon && settled(&streams.lock().unwrap()) {
            break;
        }
        world.clock.store(t, Ordering::SeqCst);
        if rng.chance(faults.idle_kill) {
            let i = rng.below(envs.len() as u64) as usize;
            envs[i] = None;
        }
        if life.deploys && windowed && rng.chance(1.0 / 60.0) {
            // A deployment: Lambda sends new invocations to new environments
            // (the old ones are reset; in these modes nothing acknowledged is
            // in their memory).
            run.deploys += 1;
            envs.iter_mut().for_each(|e| *e = None);
            if run.deploys == 1 && rng.chance(0.5) {
                // The upgrade to this release (the first deployment, so every
                // open window was started with the settings in force): open
                // windows' states are as the release before it wrote them (no
                // rules, no first sequence number), and the settings stay
                // (docs/operating.md "Upgrades and rollbacks").
                let mut st = streams.lock().unwrap();
                for s in &mut st.shards {
                    s.state = as_version_1(&s.state);
                }
            } else if streams
                .lock()
                .unwrap()
                .shards
                .iter()
                .any(|s| is_version_1(&s.state))
            {
                // The documented rule: settings change only once no window
                // the release before this one started is still open (its
                // state records no rules). Same settings, new environments.
            } else {
                let records = ["25", "7", "60"][rng.below(3) as usize];
                let mode = if rng.chance(0.3) && life.mode_switches {
                    "invocation"
                } else {
                    "window"
                };
                cfg = config(&[
                    ("FLUSH_MODE", mode.into()),
                    ("S3_PREFIX", "lake/".into()),
                    ("BATCH_MAX_RECORDS_THRESHOLD", records.into()),
                    ("BATCH_MAX_AGE_SECONDS", "2".into()),
                    ("TIME_RESERVE_MS", "0".into()),
                    ("HEARTBEAT_STREAMS", arns.join(",")),
                ]);
                if let Some(b) = [None, Some(1_500), Some(6_000)][rng.below(3) as usize] {
                    cfg.thresholds.max_buffered_bytes = b;
                }
            }
        }
        if remap_at == Some(t) {
            // The mapping is deleted (its windows get no more invocations) and
            // created again from TRIM_HORIZON: every shard from its oldest
            // record still in the stream, in windows of their own.
            // Half the time by a deployment with other settings (the
            // windows started again are cut by the rules their spool records).
            if rng.chance(0.5) {
                run.deploys += 1;
                envs.iter_mut().for_each(|e| *e = None);
                let records = ["25", "7", "60"][rng.below(3) as usize];
                cfg = config(&[
                    ("FLUSH_MODE", "window".into()),
                    ("S3_PREFIX", "lake/".into()),
                    ("BATCH_MAX_RECORDS_THRESHOLD", records.into()),
                    ("BATCH_MAX_AGE_SECONDS", "2".into()),
                    ("TIME_RESERVE_MS", "0".into()),
                    ("HEARTBEAT_STREAMS", arns.join(",")),
                ]);
                if let Some(b) = [None, Some(1_500), Some(6_000)][rng.below(3) as usize] {
                    cfg.thresholds.max_buffered_bytes = b;
                }
            }
            let mut st = streams.lock().unwrap();
            for s in &mut st.shards {
                if s.window.is_some() {
                    run.abandoned += 1;
                }
                run.remapped_from += s.next as u64;
                s.end_window();
                if life.remap == Some(StartingPosition::Latest) {
                    let from = s
                        .recs
                        .iter()
                        .position(|r| r.arrival > t)
                        .unwrap_or(s.recs.len())
                        .max(s.next);
                    run.skipped += (from - s.next) as u64;
                    s.skipped = Some((s.next, from));
                    s.next = from;
                } else {
                    s.next = s
                        .recs
                        .iter()
                        .position(|r| r.seq >= s.trimmed_below)
                        .unwrap_or(s.recs.len());
                }
            }
        }
        if life.lose_spools > 0.0 && rng.chance(life.lose_spools) {
            lose_a_spool_object(&world, &streams, &mut rng, life.expire);
            run.lost_spools += 1;
        }
        if t % schedule == 0 {
            let _ = invoke!(json!({"force_flush": true}).to_string());
        }
        let shard_count = streams.lock().unwrap().shards.len();
        for si in 0..shard_count {
            // What the event source mapping sends this shard now, if anything.
            let (payload, batch, is_final) = {
                let mut st = streams.lock().unwrap();
                // "Using Lambda with Kinesis": after a reshard Lambda reads a
                // child shard once it has finished its parents.
                if st.shards[si]
                    .parents
                    .iter()
                    .any(|&p| !st.shards[p].is_done())
                {
                    continue;
                }
                let arn = st.arns[st.shards[si].stream].clone();
                let s = &mut st.shards[si];
                if s.window.is_none() && !windowed {
                    s.window = Some(0);
                }
                if s.window.is_none() {
                    if let Some(r) = s.recs.get(s.next).filter(|r| r.arrival <= t) {
                        s.window = Some(r.arrival / WINDOW * WINDOW);
                        s.state = json!({});
                    }
                }
                let Some(ws) = s.window else { continue };
                let we = if windowed { ws + WINDOW } else { u64::MAX };
                let is_retry = s.retry.is_some();
                let batch: Vec<usize> = match s.retry.take() {
                    Some(b) => b,
                    None => (s.next..s.recs.len())
                        .take_while(|&i| s.recs[i].arrival <= t && s.recs[i].arrival < we)
                        .take(BATCH_SIZE)
                        .collect(),
                };
                let later_arrived = s
                    .recs
                    .get(s.next)
                    .is_some_and(|r| r.arrival >= we && r.arrival <= t);
                // A closed shard whose records are all taken has ended.
                let ended = s.closed_at.is_some_and(|c| t >= c) && s.next == s.recs.len();
                let shard_end = life.reshard.map(|r| r.end);
                let ends_here = ended
                    && match shard_end {
                        Some(ShardEnd::FinalWhenShardCloses) => true,
                        Some(ShardEnd::FinalAtWindowEnd) => t >= we,
                        Some(ShardEnd::NoFinal) | None => false,
                    };
                let is_final =
                    batch.is_empty() && windowed && ((t >= we && later_arrived) || ends_here);
                if batch.is_empty() && windowed && ended && shard_end == Some(ShardEnd::NoFinal) {
                    // The shard ended and Lambda sends no final invocation.
                    s.end_window();
                    run.abandoned += 1;
                    continue;
                }
                if batch.is_empty() && !is_final {
                    continue;
                }
                let mut recs: Vec<&Rec> = batch.iter().map(|&i| &s.recs[i]).collect();
                if is_retry && rng.chance(0.3) && recs.len() > 1 {
                    // A retried batch may come out of order.
                    recs.reverse();
                }
                let window = windowed.then_some((ws, &s.state, is_final));
                (event(&arn, &s.id, &recs, window), batch, is_final)
            };
            let outcome = invoke!(payload);
            if let Some(o) = &outcome {
                run.budget_cuts += o.stats.budget_cuts;
            }
            let mut st = streams.lock().unwrap();
            let arn = st.arns[st.shards[si].stream].clone();
            let s = &mut st.shards[si];
            let Some(outcome) = outcome else {
                // Function error, timeout or reset: the same batch again, with
                // the last good state; a final invocation holds the shard.
                s.retry = Some(batch.clone());
                s.failed += 1;
                if !is_final {
                    s.batch_failures += 1;
                    if life.give_up_after.is_some_and(|n| s.batch_failures > n) {
                        // Retries exhausted: Lambda discards the batch, sends
                        // its range to the on-failure destination and goes on
                        // with the window's next batch.
                        let seq = |i: Option<&usize>| i.map_or(0, |&i| s.recs[i].seq).to_string();
                        failures.push(
                            json!({"KinesisBatchInfo": {
                                "shardId": s.id,
                                "startSequenceNumber": seq(batch.iter().min()),
                                "endSequenceNumber": seq(batch.iter().max()),
                                "streamArn": arn,
                            }})
                            .to_string(),
                        );
                        s.next = batch.iter().max().map_or(s.next, |m| m + 1);
                        s.retry = None;
                        s.batch_failures = 0;
                    }
                }
                if is_final {
                    s.final_failures += 1;
                    if life.give_up_after.is_some_and(|n| s.final_failures > n) {
                        // Retries exhausted: Lambda discards the final
                        // invocation (its failure record names no records)
                        // and the shard goes on; the window stays in its spool.
                        s.end_window();
                        run.abandoned += 1;
                    }
                }
                continue;
            };
            s.batch_failures = 0;
            if windowed {
                assert!(
                    outcome.response.get("state").is_some(),
                    "seed {seed}: a window response without state"
                );
            }
            if is_final {
                s.end_window();
                continue;
            }
            if windowed {
                s.state = outcome.response["state"].clone();
            }
            let failures = outcome.response["batchItemFailures"]
                .as_array()
                .cloned()
                .unwrap_or_default();
            match failures.first().and_then(|f| f["itemIdentifier"].as_str()) {
                None if rng.chance(faults.redelivered) => s.retry = Some(batch),
                None => s.next = batch.iter().max().map_or(s.next, |m| m + 1),
                Some(seq) => {
                    let at = batch
                        .iter()
                        .copied()
                        .find(|&i| s.recs[i].seq.to_string() == seq)
                        .unwrap_or_else(|| panic!("seed {seed}: reported {seq}, not in the batch"));
                    // Checkpoint below it; the rest of the batch comes again.
                    s.next = at;
                }
            }
        }
    }
    if !windowed {
        // The other modes keep rows in memory: every environment writes what
        // it holds (a graceful shutdown), so the lake can be compared.
        for env in envs.iter().flatten() {
            env.flush_all(None).await;
        }
    }
    // `cdc-batcher redrive` over the failure queue, as an operator runs it:
    // a message stays in the queue until its range is written. Before or
    // after the sweep (an operator may come late): each leaves out what the
    // other wrote.
    macro_rules! redrive_all {
        () => {
            for body in &failures {
                run.redriven += 1;
                for _ in 0..200 {
                    let env = new_env(&cfg);
                    world.killed.store(false, Ordering::SeqCst);
                    let mut report = cdc_batcher::app::redrive::Report::default();
                    let done = tokio::select! {
                        r = cdc_batcher::app::redrive::redrive_message(&env, reader.as_ref(), body, &mut report) => r.is_ok(),
                        _ = world.kill.notified() => false,
                    };
                    if done {
                        break;
                    }
                }
            }
        };
    }
    let redrive_first = rng.chance(0.5);
    if redrive_first {
        redrive_all!();
    }
    if life.abandons_windows() {
        // The scheduled sweep, every 10 minutes from a day later on, in any
        // environment and under the same faults: each writes at most a few
        // windows, so it runs until one has nothing left to write.
        for _ in 0..200 {
            let Some(outcome) = invoke!(json!({"sweep_windows": true}).to_string()) else {
                continue;
            };
            let written = outcome.response["finished"].as_array().map_or(0, Vec::len);
            run.swept += written as u64;
            if written == 0 && outcome.response["deferred"] == json!(0) {
                break;
            }
        }
    }
    if !redrive_first {
        redrive_all!();
    }

    let shards = {
        let st = streams.lock().unwrap();
        for s in &st.shards {
            assert!(
                s.recs[s.next..]
                    .iter()
                    .all(|r| matches!(r.kind, Kind::Heartbeat)),
                "seed {seed}: shard {} {} did not finish",
                s.stream,
                s.id
            );
            // Heartbeats keep opening windows; the last one may stay open, as
            // long as it holds nothing but heartbeats.
            if let (true, Some(ws)) = (windowed, s.window) {
                assert!(
                    s.recs
                        .iter()
                        .filter(|r| r.arrival >= ws)
                        .all(|r| matches!(r.kind, Kind::Heartbeat)),
                    "seed {seed}: a window with data stayed open"
                );
            }
        }
        // Freshness: the window, one schedule period (the heartbeat that ends it)
        // and the step the final invocation takes; each failed invocation of the
        // shard (retried one step later) adds a step.
        let freshness = (windowed
            && !life.deploys
            && life.lose_spools == 0.0
            && life.give_up_after.is_none()
            && life.reshard.is_none()
            && life.remap.is_none())
        .then_some(WINDOW + schedule + 2);
        check_lake(seed, &st, &model, &world, freshness, &mut run);
        run.child_rows = st
            .shards
            .iter()
            .filter(|s| !s.parents.is_empty())
            .flat_map(|s| &s.recs)
            .filter(|r| matches!(r.kind, Kind::Row))
            .count() as u64;
        st.shards.len()
    };
    if windowed {
        check_sweep(seed, &world, shards, life.abandons_windows()).await;
    }
    run
}

/// The lake as it is, read without faults (what the scheduled sweep sees).
struct Snapshot(BTreeMap<String, Vec<u8>>);

impl Sink for Snapshot {
    async fn put(&self, _: &str, _: Vec<u8>, _: &'static str) -> Result<PutOutcome, SinkError> {
        Ok(PutOutcome::Written)
    }
    async fn get(&self, key: &str) -> Result<Option<Vec<u8>>, SinkError> {
        Ok(self.0.get(key).cloned())
    }
    async fn list(&self, prefix: &str) -> Result<Vec<String>, SinkError> {
        Ok(self
            .0
            .keys()
            .filter(|k| k.starts_with(prefix))
            .cloned()
            .collect())
    }
    fn location(&self) -> String {
        "snapshot".into()
    }
}

/// After every shard finished, the sweep finds no window left behind: at
/// most each shard's newest window (heartbeats only) is open, and none once
/// the sweep has written what was out of Lambda's reach (`swept`).
async fn check_sweep(seed: u64, world: &World, shards: usize, swept: bool) {
    let objects: BTreeMap<String, Vec<u8>> = world
        .objects
        .lock()
        .unwrap()
        .iter()
        .map(|(k, (b, _))| (k.clone(), b.clone()))
        .collect();
    let snapshot = Snapshot(objects);
    let report = cdc_batcher::app::windows::sweep(&snapshot, "lake/", chrono::Utc::now())
        .await
        .unwrap();
    assert!(report.open.len() <= shards, "seed {seed}: {report:?}");
    assert!(
        !swept || report.open.is_empty(),
        "seed {seed}: open after the sweeps: {report:?}"
    );
    for open in &report.open {
        let (shard_dir, _) = open.dir.trim_end_matches('/').rsplit_once('/').unwrap();
        let newest = snapshot
            .0
            .keys()
            .filter_map(|k| k.strip_prefix(&format!("lake/{shard_dir}/")))
            .filter_map(|rest| rest.split_once('/').map(|(w, _)| w))
            .max()
            .unwrap();
        assert!(
            open.dir.ends_with(&format!("/{newest}/")),
            "seed {seed}: {} is open, and not its shard's newest window",
            open.dir
        );
    }
}

/// Deletes one spool object (the lowest-keyed of a random open window's);
/// with `expire`, the stream also drops its records that are checkpointed.
fn lose_a_spool_object(world: &World, streams: &Mutex<Streams>, rng: &mut Rng, expire: bool) {
    let mut objects = world.objects.lock().unwrap();
    let spools: Vec<String> = objects
        .keys()
        .filter(|k| k.contains("/_spool/") && k.ends_with(".jsonl.sz"))
        .cloned()
        .collect();
    if spools.is_empty() {
        return;
    }
    let key = spools[rng.below(spools.len() as u64) as usize].clone();
    objects.remove(&key);
    if !expire {
        return;
    }
    // lake/_spool/<stream>-<digest>/<shard>/<window>/<index>_<last>.jsonl.sz
    let parts: Vec<&str> = key.split('/').collect();
    let stream = usize::from(parts[2].starts_with("dms-b"));
    let last: u64 = parts[5].split(['_', '.']).nth(1).unwrap().parse().unwrap();
    let mut st = streams.lock().unwrap();
    let s = st
        .shards
        .iter_mut()
        .find(|s| s.stream == stream && s.id == parts[3])
        .unwrap();
    // Only what the event source has checkpointed can have expired.
    let checkpointed = s.next.checked_sub(1).map_or(0, |i| s.recs[i].seq);
    s.trimmed_below = s.trimmed_below.max(last.min(checkpointed) + 1);
}

/// The event Lambda sends for `recs` of one shard; with `window`
/// (start, state, final), a tumbling window's invocation.
fn event(arn: &str, shard: &str, recs: &[&Rec], window: Option<(u64, &Value, bool)>) -> String {
    let records: Vec<Value> = recs
        .iter()
        .map(|r| {
            json!({"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": r.pk,
                "sequenceNumber": r.seq.to_string(), "data": r.data,
                "approximateArrivalTimestamp": (T0 as u64 + r.arrival) as f64},
                "eventSource": "aws:kinesis", "eventVersion": "1.0",
                "eventID": format!("{shard}:{}", r.seq), "eventName": "aws:kinesis:record",
                "eventSourceARN": arn, "awsRegion": "us-east-1"})
        })
        .collect();
    let mut payload = json!({"Records": records});
    if let Some((ws, state, is_final)) = window {
        let start = chrono::DateTime::from_timestamp(T0 + ws as i64, 0).unwrap();
        let end = chrono::DateTime::from_timestamp(T0 + (ws + WINDOW) as i64, 0).unwrap();
        payload["window"] = json!({"start": start.to_rfc3339(), "end": end.to_rfc3339()});
        payload["state"] = state.clone();
        payload["shardId"] = json!(shard);
        payload["eventSourceARN"] = json!(arn);
        payload["isFinalInvokeForWindow"] = json!(is_final);
        payload["isWindowTerminatedEarly"] = json!(false);
    }
    payload.to_string()
}

/// Nothing but heartbeats is left to take or to write in any shard.
fn settled(st: &Streams) -> bool {
    let beat = |r: &Rec| matches!(r.kind, Kind::Heartbeat);
    st.shards.iter().all(|s| {
        s.retry.is_none()
            && s.recs[s.next..].iter().all(beat)
            && s.window
                .is_none_or(|ws| s.recs.iter().filter(|r| r.arrival >= ws).all(beat))
    })
}

fn is_version_1(state: &Value) -> bool {
    state["cdc-batcher"]
        .as_str()
        .is_some_and(|inner| !inner.contains("\"rules\""))
}

/// A window state as the release before window rules wrote it (version 1).
fn as_version_1(state: &Value) -> Value {
    let Some(inner) = state["cdc-batcher"].as_str() else {
        return state.clone();
    };
    let mut ours: Value = serde_json::from_str(inner).unwrap();
    let obj = ours.as_object_mut().unwrap();
    obj.remove("rules");
    obj.remove("from");
    obj.insert("v".into(), json!(1));
    json!({"cdc-batcher": ours.to_string()})
}

fn check_lake(
    seed: u64,
    st: &Streams,
    model: &[BTreeMap<u32, Option<String>>],
    world: &World,
    freshness: Option<u64>,
    run: &mut Run,
) {
    let objects = world.objects.lock().unwrap();
    // (src, shard, seq) → times seen, with the latest row per (src, table, id).
    let mut seen: HashMap<(String, String, u64), usize> = HashMap::new();
    let mut latest: HashMap<(String, usize, u32), (u64, Option<String>)> = HashMap::new();
    let mut landed_at: HashMap<(String, String, u64), u64> = HashMap::new();
    // Where each row is (file, simulated second it landed): for a failure's message.
    let mut files_of: HashMap<(String, String, u64), Vec<(String, u64)>> = HashMap::new();
    for (key, (bytes, at)) in objects.iter() {
        if !key.ends_with(".parquet") || key.contains("/_") {
            continue;
        }
        run.files += 1;
        let table: usize = key.split('/').nth(2).unwrap()[1..].parse().unwrap();
        let reader = ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
            .unwrap()
            .build()
            .unwrap();
        for batch in reader {
            let batch = batch.unwrap();
            let col = |name: &str| {
                batch
                    .column_by_name(name)
                    .unwrap_or_else(|| panic!("{key}: no {name}"))
                    .clone()
            };
            let strings = |name: &str| {
                let c =
                    arrow::compute::cast(&col(name), &arrow::datatypes::DataType::Utf8).unwrap();
                let a = c
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap()
                    .clone();
                (0..a.len())
                    .map(|i| a.is_valid(i).then(|| a.value(i).to_string()))
                    .collect::<Vec<_>>()
            };
            let (src, shard, seqs, ids, ops) = (
                strings("src"),
                strings("_shard_id"),
                strings("_sequence_number"),
                strings("id"),
                strings("_op"),
            );
            let values = if batch.column_by_name("v").is_some() {
                strings("v")
            } else {
                vec![None; batch.num_rows()]
            };
            for i in 0..batch.num_rows() {
                let src = src[i].clone().unwrap();
                let seq: u64 = seqs[i].as_deref().unwrap().parse().unwrap();
                let id: u32 = ids[i].as_deref().unwrap().parse().unwrap();
                let ident = (src.clone(), shard[i].clone().unwrap(), seq);
                *seen.entry(ident.clone()).or_default() += 1;
                files_of
                    .entry(ident.clone())
                    .or_default()
                    .push((key.clone(), *at));
                landed_at.insert(ident, *at);
                let value = if ops[i].as_deref() == Some("delete") {
                    None
                } else {
                    values[i].clone()
                };
                let slot = latest.entry((src, table, id)).or_insert((0, None));
                if seq > slot.0 {
                    *slot = (seq, value);
                }
            }
        }
    }
    // Ranges the function recorded as lost: (stream ARN, shard) → (lowest
    // lost sequence number, highest), inclusive.
    let mut lost: Vec<(String, String, u64, u64)> = Vec::new();
    for (key, (bytes, _)) in objects.iter() {
        if key.contains("/_errors/lost/") {
            let v: Value = serde_json::from_slice(bytes).unwrap();
            let num = |f: &str| v[f].as_str().map(|x| x.parse::<u64>().unwrap());
            let lo = match (num("after_sequence_number"), num("first_sequence_number")) {
                (Some(a), _) => a + 1,
                (None, Some(f)) => f,
                (None, None) => 0,
            };
            let hi = num("first_available")
                .map_or_else(|| num("last_sequence_number").unwrap(), |f| f - 1);
            lost.push((
                v["stream_arn"].as_str().unwrap().to_string(),
                v["shard_id"].as_str().unwrap().to_string(),
                lo,
                hi,
            ));
        }
    }
    run.lost_ranges = lost.len() as u64;
    let is_lost = |arn: &str, shard: &str, seq: u64| {
        lost.iter()
            .any(|(a, s, lo, hi)| a == arn && s == shard && (*lo..=*hi).contains(&seq))
    };
    // Tables (stream, table) with a lost row: their latest state is not the
    // source's, by as much as was lost.
    let mut damaged: HashSet<(usize, String)> = HashSet::new();
    let mut quarantined: HashSet<(String, String, u64)> = HashSet::new();
    for (key, (bytes, _)) in objects.iter() {
        if key.contains("/_errors/") && !key.contains("/_errors/lost/") {
            for line in std::str::from_utf8(bytes).unwrap().lines() {
                let v: Value = serde_json::from_str(line).unwrap();
                let stream = v["stream_arn"].as_str().unwrap_or("").to_string();
                quarantined.insert((
                    stream,
                    v["shard_id"].as_str().unwrap().to_string(),
                    v["sequence_number"].as_str().unwrap().parse().unwrap(),
                ));
            }
        }
    }
    let mut expected = 0;
    for s in &st.shards {
        let src = ["a", "b"][s.stream].to_string();
        for (i, r) in s.recs.iter().enumerate() {
            match &r.kind {
                Kind::Row if s.skipped.is_some_and(|(lo, hi)| (lo..hi).contains(&i)) => {
                    // Never acknowledged: in the lake once (a spool object
                    // of a failed attempt held it) or not at all.
                    let ident = (src.clone(), s.id.clone(), r.seq);
                    let n = seen.get(&ident).copied().unwrap_or(0);
                    assert!(
                        n <= 1,
                        "seed {seed}: skipped record {ident:?} is in the lake {n} times"
                    );
                    expected += n;
                    damaged.insert((s.stream, r.pk.clone()));
                }
                Kind::Row if is_lost(&st.arns[s.stream], &s.id, r.seq) => {
                    // A recorded loss only where the record is gone from the
                    // stream too (its spool object was deleted by the run).
                    assert!(
                        r.seq < s.trimmed_below,
                        "seed {seed}: record {} of {} recorded as lost, but the stream still has it",
                        r.seq,
                        s.id
                    );
                    let ident = (src.clone(), s.id.clone(), r.seq);
                    let n = seen.get(&ident).copied().unwrap_or(0);
                    assert!(
                        n <= 1,
                        "seed {seed}: lost record {ident:?} is in the lake {n} times"
                    );
                    expected += n;
                    damaged.insert((s.stream, r.pk.clone()));
                }
                Kind::Row => {
                    expected += 1;
                    let ident = (src.clone(), s.id.clone(), r.seq);
                    let n = seen.get(&ident).copied().unwrap_or(0);
                    assert_eq!(
                        n,
                        1,
                        "seed {seed}: record {ident:?} is in the lake {n} times: {:?}",
                        files_of.get(&ident)
                    );
                    let latency = landed_at[&ident] - r.arrival;
                    run.max_latency = run.max_latency.max(latency);
                    if let Some(bound) = freshness.map(|b| b + s.failed) {
                        assert!(
                            latency <= bound,
                            "seed {seed}: {ident:?} arrived at {} and landed at {} (bound {bound})",
                            r.arrival,
                            landed_at[&ident]
                        );
                    }
                }
                Kind::Bad if is_lost(&st.arns[s.stream], &s.id, r.seq) => {}
                // Never delivered (a mapping created from LATEST): not owed.
                Kind::Bad if s.skipped.is_some_and(|(lo, hi)| (lo..hi).contains(&i)) => {}
                Kind::Bad => {
                    let ident = (st.arns[s.stream].clone(), s.id.clone(), r.seq);
                    assert!(
                        quarantined.contains(&ident),
                        "seed {seed}: bad record {ident:?} not quarantined"
                    );
                }
                Kind::Control | Kind::Heartbeat => {}
            }
        }
    }
    assert_eq!(
        seen.len(),
        expected,
        "seed {seed}: rows in the lake that the source never sent"
    );
    for (i, table_model) in model.iter().enumerate() {
        let (src, table) = (["a", "b"][i / TABLES].to_string(), i % TABLES);
        if damaged.contains(&(i / TABLES, format!("s.t{table}"))) {
            continue;
        }
        for (id, value) in table_model {
            let got = latest
                .get(&(src.clone(), table, *id))
                .map(|(_, v)| v.clone());
            assert_eq!(
                got,
                Some(value.clone()),
                "seed {seed}: latest state of {src} t{table} id {id}"
            );
        }
    }
}

/// `SIM_SEEDS=N` runs seeds 0..N (40 by default; `scripts/test.sh`, which
/// CI runs, sets 200); `SIM_SEED=K` runs only seed K.
fn seeds() -> std::ops::Range<u64> {
    if let Some(k) = std::env::var("SIM_SEED").ok().and_then(|s| s.parse().ok()) {
        return k..k + 1;
    }
    0..std::env::var("SIM_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(40)
}

#[tokio::test(start_paused = true)]
async fn window_mode_loses_and_duplicates_nothing_under_faults() {
    let (mut kills, mut invocations, mut files, mut cuts) = (0, 0, 0, 0);
    for seed in seeds() {
        let faults = if seed % 4 == 0 {
            Faults::NONE
        } else {
            Faults::SOME
        };
        // A third of the seeds bound each window's memory tightly: parts
        // are cut early, in every environment at the same rows.
        let budget = (seed % 3 == 2).then_some(1_500);
        let run = simulate(seed, faults, "window", SCHEDULE, budget, Life::STILL).await;
        kills += run.kills;
        invocations += run.invocations;
        files += run.files;
        cuts += run.budget_cuts;
    }
    eprintln!("window mode: {} seeds, {invocations} invocations, {kills} environments killed mid-invocation, {files} files, {cuts} parts cut by the memory bound", seeds().count());
    assert!(
        kills > 0,
        "the faults never killed an environment: the test proves nothing"
    );
    assert!(
        cuts > 0 || seeds().count() < 3,
        "no window crossed its memory bound: the bound is not tested"
    );
}

#[tokio::test(start_paused = true)]
async fn without_faults_rows_land_within_the_window_and_one_schedule_period() {
    for seed in 1000..1020 {
        let run = simulate(seed, Faults::NONE, "window", SCHEDULE, None, Life::STILL).await;
        assert!(
            run.max_latency <= WINDOW + SCHEDULE + 2,
            "seed {seed}: {}",
            run.max_latency
        );
    }
}

#[tokio::test(start_paused = true)]
async fn windows_write_no_more_files_than_warm_buffering() {
    let (mut window_files, mut warm_files) = (0, 0);
    for seed in 2000..2010 {
        window_files += simulate(seed, Faults::NONE, "window", SCHEDULE, None, Life::STILL)
            .await
            .files;
        // As the issue measured warm buffering: a force flush every second.
        warm_files += simulate(seed, Faults::NONE, "warm-lossy", 1, None, Life::STILL)
            .await
            .files;
    }
    eprintln!("files: window {window_files}, warm-lossy {warm_files}");
    assert!(
        window_files <= warm_files,
        "window {window_files} > warm {warm_files}"
    );
}

/// Deployments mid-window: thresholds, memory budget and `FLUSH_MODE` change
/// while windows are open (modes only in the seeds without faults), and the
/// upgrade from version 1 states. Every
/// acknowledged row lands exactly once: a window is finished by the rules it
/// was started under, in whatever mode the finishing environment runs.
#[tokio::test(start_paused = true)]
async fn deployments_mid_window_lose_and_duplicate_nothing() {
    let (mut deploys, mut kills) = (0, 0);
    let n = seeds().count() as u64;
    for seed in seeds().map(|s| s + 5000) {
        let faults = if seed % 2 == 0 {
            Faults::NONE
        } else {
            Faults::SOME
        };
        let life = Life {
            deploys: true,
            mode_switches: seed % 2 == 0,
            ..Life::STILL
        };
        // No freshness bound here: a deployment may hand a window to
        // invocation mode (which writes at once) or back.
        let run = simulate(seed, faults, "window", SCHEDULE, None, life).await;
        deploys += run.deploys;
        kills += run.kills;
    }
    eprintln!("deployments: {n} seeds, {deploys} deployments, {kills} kills");
    assert!(
        deploys >= n,
        "too few deployments to prove anything: {deploys}"
    );
}

/// Spool objects lost while their windows are open (a manual clean-up, the
/// lifecycle rule during a long stall, an `S3Prefix` change): their records
/// are read again from the stream, and every row lands exactly once. Where
/// the stream's retention has also passed over them, the function records
/// the range under `_errors/lost/` and finishes the window; the check
/// accepts a missing row only inside a recorded range, and a recorded range
/// only where the stream no longer has its records. Never a stalled shard.
#[tokio::test(start_paused = true)]
async fn lost_spool_objects_are_read_again_or_recorded_as_lost() {
    let (mut deleted, mut recorded) = (0, 0);
    let (mut deleted_everywhere, mut recorded_everywhere) = (0, 0);
    for seed in seeds().map(|s| s + 7000) {
        let faults = if seed % 3 == 0 {
            Faults::LIGHT
        } else {
            Faults::NONE
        };
        let expire = seed % 2 == 1;
        let life = Life {
            lose_spools: 0.02,
            expire,
            ..Life::STILL
        };
        let run = simulate(seed, faults, "window", SCHEDULE, None, life).await;
        if expire {
            deleted_everywhere += run.lost_spools;
            recorded_everywhere += run.lost_ranges;
        } else {
            deleted += run.lost_spools;
            recorded += run.lost_ranges;
            assert_eq!(
                run.lost_ranges, 0,
                "seed {seed}: a loss recorded while the stream had the records"
            );
        }
    }
    eprintln!(
        "lost spool objects: {deleted} deleted with the stream intact ({recorded} losses recorded); \
         {deleted_everywhere} deleted and expired from the stream ({recorded_everywhere} losses recorded)"
    );
    assert!(
        deleted > 0 && deleted_everywhere > 0,
        "no spool object was lost: the test proves nothing"
    );
    assert!(
        recorded_everywhere > 0 || seeds().count() < 4,
        "no loss was ever recorded: the expiry path is not tested"
    );
}

/// Retries exhausted (`MaximumRetryAttempts` 0–2, under light faults: a
/// sweep reads a whole window's spool in one invocation, which at the
/// heavier rates' 2 % of failed calls, left after the SDK's own retries,
/// would rarely succeed). A discarded batch's range goes to the failure
/// queue and `redrive` writes it; a discarded final invocation abandons its
/// window, which the scheduled sweep writes from its spool once the stream's
/// retention has passed. Redrive runs before or after the sweep. Every row
/// lands exactly once, files a failed final invocation wrote before giving
/// up included, and the sweep then finds no window open (`check_sweep`).
#[tokio::test(start_paused = true)]
async fn windows_lambda_gives_up_on_are_written_by_the_sweep() {
    let (mut abandoned, mut swept, mut redriven) = (0, 0, 0);
    for seed in seeds().map(|s| s + 9000) {
        let life = Life {
            give_up_after: Some(seed % 3),
            ..Life::STILL
        };
        let budget = (seed % 2 == 1).then_some(1_500);
        let run = simulate(seed, Faults::LIGHT, "window", SCHEDULE, budget, life).await;
        abandoned += run.abandoned;
        swept += run.swept;
        redriven += run.redriven;
    }
    eprintln!(
        "retries exhausted: {abandoned} windows abandoned by Lambda, {swept} written by the sweep, {redriven} discarded batches redriven"
    );
    assert!(
        redriven > 0,
        "Lambda never discarded a batch: redrive is not tested"
    );
    assert!(
        abandoned > 0,
        "Lambda never gave up on a window: the test proves nothing"
    );
    assert!(swept > 0, "the sweep wrote no window");
}

/// Resharding (stream `dms-a` split or merged mid-run, under light faults
/// in three seeds of four): Lambda finishes the parents before reading the
/// children, and the parent's last window ends each way the documentation
/// allows (a final invocation at the shard's end or at the window's end,
/// or none: then the sweep writes it once the stream's retention has
/// passed). Every row lands exactly once, and no window stays open.
#[tokio::test(start_paused = true)]
async fn resharding_loses_and_duplicates_nothing() {
    let (mut splits, mut merges, mut abandoned, mut child_rows) = (0, 0, 0, 0);
    for seed in seeds().map(|s| s + 11_000) {
        let end = [
            ShardEnd::FinalWhenShardCloses,
            ShardEnd::FinalAtWindowEnd,
            ShardEnd::NoFinal,
        ][(seed % 3) as usize];
        let merge = seed % 2 == 1;
        let life = Life {
            reshard: Some(Reshard { merge, end }),
            ..Life::STILL
        };
        let faults = if seed % 4 == 0 {
            Faults::NONE
        } else {
            Faults::LIGHT
        };
        let run = simulate(seed, faults, "window", SCHEDULE, None, life).await;
        abandoned += run.abandoned;
        child_rows += run.child_rows;
        if merge {
            merges += 1;
        } else {
            splits += 1;
        }
    }
    eprintln!("resharding: {splits} splits, {merges} merges, {child_rows} rows through child shards, {abandoned} parent windows without a final invocation");
    assert!(child_rows > 0, "no row went through a child shard");
    assert!(
        abandoned > 0 || seeds().count() < 3,
        "no parent window was left without a final invocation: that case is not tested"
    );
}

/// The event source mapping deleted and created again from TRIM_HORIZON
/// (the template's `StartingPosition`; CloudFormation replaces a mapping
/// whose starting position changes): the windows in flight get no more
/// invocations, and the stream delivers every record it holds again. Windows
/// are aligned to `TumblingWindowInSeconds`, so a record comes again in the
/// window it was in: a written window (`_done.json`) writes nothing again,
/// a window in flight is written once from the new mapping's spool, and the
/// sweep finds nothing left. Every row exactly once.
#[tokio::test(start_paused = true)]
async fn a_mapping_created_again_writes_nothing_twice() {
    let (again, abandoned, redeployed) = remap_runs(StartingPosition::TrimHorizon, 13_000, |run| {
        (run.remapped_from, run.abandoned, run.deploys)
    })
    .await;
    eprintln!("mapping created again: {again} records delivered a second time, {abandoned} windows in flight abandoned, {redeployed} times by a deployment with other settings");
    assert!(again > 0, "no record was delivered again");
    assert!(
        redeployed > 0,
        "no mapping was created again with other settings"
    );
}

/// The runs of a mapping created again from `from`, seeds from `base`
/// (faults in three of four, a tight memory bound in a third: the new
/// mapping's batches differ, its cuts must not); `count` is summed.
async fn remap_runs(
    from: StartingPosition,
    base: u64,
    count: impl Fn(&Run) -> (u64, u64, u64),
) -> (u64, u64, u64) {
    let mut sum = (0, 0, 0);
    for seed in seeds().map(|s| s + base) {
        let life = Life {
            remap: Some(from),
            ..Life::STILL
        };
        let faults = if seed % 4 == 0 {
            Faults::NONE
        } else {
            Faults::LIGHT
        };
        let budget = (seed % 3 == 2).then_some(1_500);
        let run = simulate(seed, faults, "window", SCHEDULE, budget, life).await;
        let (a, b, c) = count(&run);
        sum = (sum.0 + a, sum.1 + b, sum.2 + c);
    }
    sum
}

/// The event source mapping deleted and created again from LATEST: the
/// records that arrived in between are never delivered (never
/// acknowledged, so not owed to the lake), and the windows in flight get no
/// more invocations. Every record the first mapping acknowledged is in its
/// window's spool and reaches the lake exactly once, though the new mapping
/// may start the same window again with records of its own; half the
/// re-creations come with a deployment of other settings.
#[tokio::test(start_paused = true)]
async fn a_mapping_created_again_from_latest_writes_what_it_acknowledged() {
    let (skipped, abandoned, swept) = remap_runs(StartingPosition::Latest, 14_000, |run| {
        (run.skipped, run.abandoned, run.swept)
    })
    .await;
    eprintln!("mapping created again from LATEST: {skipped} records never delivered, {abandoned} windows in flight abandoned, {swept} written by the sweep");
    assert!(abandoned > 0, "no window was in flight");
}

/// One shard's window driven by hand: the cases the seeds reach too rarely.
/// Four rows of one table; a part closes at two rows. The first batch is
/// rows 1–3 (a part {1, 2} closes and is written early), the second row 4
/// (closing {3, 4}, written early): both noted in the state by environment A.
struct Scenario {
    world: Arc<World>,
    streams: Arc<Mutex<Streams>>,
    cfg: Config,
    arn: String,
}

impl Scenario {
    fn new() -> Scenario {
        Scenario::new_with_threshold(2)
    }

    fn new_with_threshold(records: usize) -> Scenario {
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/dms-a".to_string();
        let mut streams = Streams {
            arns: vec![arn.clone()],
            shards: vec![ShardSim::new(0, "shardId-000000000000".into())],
        };
        for id in 1..=4u32 {
            let data = dms_row(0, id, "insert", Some(&format!("v{id}")), "a", u64::from(id));
            streams.push(0, u64::from(id), "s.t0".into(), data, Kind::Row);
        }
        let cfg = config(&[
            ("S3_PREFIX", "lake/".into()),
            ("BATCH_MAX_RECORDS_THRESHOLD", records.to_string()),
        ]);
        Scenario {
            world: Arc::new(World::new(0, Faults::NONE)),
            streams: Arc::new(Mutex::new(streams)),
            cfg,
            arn,
        }
    }

    fn env(&self) -> Pipeline<SimSink> {
        self.env_with(self.cfg.clone())
    }

    fn env_with(&self, cfg: Config) -> Pipeline<SimSink> {
        Pipeline::new(cfg, SimSink(self.world.clone()))
            .without_metrics()
            .with_shard_reader(Arc::new(SimReader {
                streams: self.streams.clone(),
                retention: None,
            }))
    }

    /// An invocation of the window with records `seqs`; the response.
    async fn invoke(
        &self,
        env: &Pipeline<SimSink>,
        seqs: &[u64],
        state: &Value,
        last: bool,
    ) -> Value {
        let payload = {
            let st = self.streams.lock().unwrap();
            let recs: Vec<&Rec> = st.shards[0]
                .recs
                .iter()
                .filter(|r| seqs.contains(&r.seq))
                .collect();
            event(&self.arn, &st.shards[0].id, &recs, Some((0, state, last)))
        };
        invocation::handle(env, &payload, None)
            .await
            .expect("invocation")
            .response
    }

    /// A and its cache take both batches: the state of the window after them.
    async fn started(&self, a: &Pipeline<SimSink>) -> Value {
        let state = self.invoke(a, &[1, 2, 3], &json!({}), false).await["state"].clone();
        self.invoke(a, &[4], &state, false).await["state"].clone()
    }

    /// The first spool object is deleted and rows 1–3 pass the stream's
    /// retention: gone from every durable place (row 1 and 2 are in a file).
    fn lose_first_batch(&self) {
        self.world
            .objects
            .lock()
            .unwrap()
            .retain(|k, _| !(k.contains("/_spool/") && k.contains("/000000_")));
        self.streams.lock().unwrap().shards[0].trimmed_below = 4;
    }

    /// How often each row (sequence number) is in the lake, and the
    /// lost ranges recorded.
    fn lake(&self) -> (BTreeMap<u64, usize>, usize) {
        let objects = self.world.objects.lock().unwrap();
        let mut rows = BTreeMap::new();
        for (key, (bytes, _)) in objects.iter().filter(|(k, _)| k.ends_with(".parquet")) {
            let reader =
                ParquetRecordBatchReaderBuilder::try_new(bytes::Bytes::from(bytes.clone()))
                    .unwrap()
                    .build()
                    .unwrap();
            for batch in reader {
                let batch = batch.unwrap();
                let col = batch
                    .column_by_name("_sequence_number")
                    .unwrap_or_else(|| panic!("{key}"));
                let col = arrow::compute::cast(col, &arrow::datatypes::DataType::Utf8).unwrap();
                let seqs = col
                    .as_any()
                    .downcast_ref::<arrow::array::StringArray>()
                    .unwrap();
                for i in 0..seqs.len() {
                    *rows.entry(seqs.value(i).parse().unwrap()).or_insert(0) += 1;
                }
            }
        }
        let lost = objects
            .keys()
            .filter(|k| k.contains("/_errors/lost/"))
            .count();
        (rows, lost)
    }
}

fn assert_once(rows: &BTreeMap<u64, usize>) {
    assert!(
        rows.values().all(|&n| n == 1),
        "a row written twice: {rows:?}"
    );
}

/// A lost range moves the cuts after it: row 4 alone is a part of its own
/// when the window is rebuilt, though {3, 4} is already written. The
/// rebuild leaves out the rows of files already written.
#[tokio::test(start_paused = true)]
async fn after_a_lost_range_rows_already_in_files_are_not_written_again() {
    let sc = Scenario::new();
    let state = sc.started(&sc.env()).await;
    let (rows, _) = sc.lake();
    assert_eq!(
        rows.keys().copied().collect::<Vec<_>>(),
        [1, 2, 3, 4],
        "written early by A"
    );
    sc.lose_first_batch();
    sc.invoke(&sc.env(), &[], &state, true).await;
    let (rows, lost) = sc.lake();
    assert_eq!(lost, 1, "the lost range is recorded");
    assert_once(&rows);
}

/// The event source mapping is deleted mid-window and created again from
/// TRIM_HORIZON by a deployment with another threshold: the stream delivers
/// the window's records again with an empty state. The new window is cut
/// by the rules its spool already records (the first mapping's), so the
/// parts it writes early are the ones A wrote, under the same keys.
#[tokio::test(start_paused = true)]
async fn a_mapping_created_again_by_another_deployment_cuts_as_the_first() {
    let sc = Scenario::new();
    sc.started(&sc.env()).await;
    let (rows, _) = sc.lake();
    assert_eq!(rows.len(), 4, "written early by A (parts of two rows)");
    let mut deployed = sc.cfg.clone();
    deployed.thresholds.max_records = 3;
    let c = sc.env_with(deployed);
    let state = sc.invoke(&c, &[1, 2, 3], &json!({}), false).await["state"].clone();
    let state = sc.invoke(&c, &[4], &state, false).await["state"].clone();
    sc.invoke(&c, &[], &state, true).await;
    let (rows, _) = sc.lake();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_once(&rows);
}

/// A final invocation retried after one that succeeded (its response
/// lost), when a spool object has been lost since: nothing to do.
#[tokio::test(start_paused = true)]
async fn a_final_invocation_retried_after_success_writes_nothing() {
    let sc = Scenario::new();
    let a = sc.env();
    let state = sc.started(&a).await;
    sc.invoke(&sc.env(), &[], &state, true).await;
    let before = sc.world.objects.lock().unwrap().len();
    sc.lose_first_batch();
    sc.invoke(&sc.env(), &[], &state, true).await;
    let (rows, lost) = sc.lake();
    assert_once(&rows);
    assert_eq!(lost, 0, "nothing was lost: the window was written");
    assert_eq!(
        sc.world.objects.lock().unwrap().len(),
        before - 1,
        "nothing new"
    );
}

/// A's write of the part {1, 2, 3} fails (A keeps it, closed); the first
/// spool object (rows 1, 2) is then lost with the stream's copy. Another
/// environment's attempt cuts what is left as {3, 4}, records the loss and
/// fails before its end (no window marker); the retry reaches A, whose
/// cache would write {1, 2, 3} and {4}: rows 3 and 4 twice. Once a loss is
/// recorded, A rebuilds as the other attempt did.
#[tokio::test(start_paused = true)]
async fn after_a_recorded_loss_a_cached_environment_rebuilds_too() {
    let sc = Scenario::new_with_threshold(3);
    let a = sc.env();
    sc.world.fail_keys.lock().unwrap().push("_1_3_".into());
    let state = sc.invoke(&a, &[1, 2], &json!({}), false).await["state"].clone();
    let state = sc.invoke(&a, &[3, 4], &state, false).await["state"].clone();
    sc.world.fail_keys.lock().unwrap().clear();
    assert!(sc.lake().0.is_empty(), "nothing written yet");
    sc.world
        .objects
        .lock()
        .unwrap()
        .retain(|k, _| !(k.contains("/_spool/") && k.contains("/000000_")));
    sc.streams.lock().unwrap().shards[0].trimmed_below = 3;
    sc.invoke(&sc.env(), &[], &state, true).await;
    sc.world
        .objects
        .lock()
        .unwrap()
        .retain(|k, _| !k.ends_with("/_done.json"));
    sc.invoke(&a, &[], &state, true).await;
    let (rows, lost) = sc.lake();
    assert_eq!(lost, 1);
    assert_once(&rows);
}

/// `OpenWindowAge`: an invocation of a window that holds spooled records
/// reports how long ago the window started; one with nothing spooled, none.
#[tokio::test(start_paused = true)]
async fn an_open_window_reports_its_age() {
    let sc = Scenario::new();
    let env = sc.env();
    let payload = |seqs: &[u64], state: &Value| {
        let st = sc.streams.lock().unwrap();
        let recs: Vec<&Rec> = st.shards[0]
            .recs
            .iter()
            .filter(|r| seqs.contains(&r.seq))
            .collect();
        event(&sc.arn, &st.shards[0].id, &recs, Some((0, state, false)))
    };
    let empty = invocation::handle(&env, &payload(&[], &json!({})), None)
        .await
        .unwrap();
    assert_eq!(empty.stats.open_window_age_ms, 0);
    let open = invocation::handle(&env, &payload(&[1], &json!({})), None)
        .await
        .unwrap();
    let started_ms = (T0 * 1000) as u64;
    let now_ms = chrono::Utc::now().timestamp_millis() as u64;
    let age = open.stats.open_window_age_ms;
    assert!(
        age > 0 && age <= now_ms - started_ms && age + 60_000 >= now_ms - started_ms,
        "{age}"
    );
}

/// A window's first invocation settles its rules, but they are durable only
/// once its response is: here the response is lost, a deployment comes, and
/// the retry settles others (a part closes at 3 rows, not 2). Had the first
/// attempt written its part {1, 2} early, the window cut at 3 would write
/// rows 1 and 2 again.
#[tokio::test(start_paused = true)]
async fn a_first_invocation_writes_nothing_early_under_rules_not_yet_durable() {
    let sc = Scenario::new();
    let lost_response = sc.env();
    sc.invoke(&lost_response, &[1, 2, 3], &json!({}), false)
        .await;
    let deployed = config(&[
        ("S3_PREFIX", "lake/".into()),
        ("BATCH_MAX_RECORDS_THRESHOLD", "3".into()),
    ]);
    let b = sc.env_with(deployed.clone());
    let state = sc.invoke(&b, &[1, 2, 3], &json!({}), false).await["state"].clone();
    let state = sc.invoke(&b, &[4], &state, false).await["state"].clone();
    sc.invoke(&sc.env_with(deployed), &[], &state, true).await;
    let (rows, _) = sc.lake();
    assert_eq!(rows.keys().copied().collect::<Vec<_>>(), [1, 2, 3, 4]);
    assert_once(&rows);
}
