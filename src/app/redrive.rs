//! Redrive of failed batches. After `MaximumRetryAttempts` Lambda skips a
//! batch and sends only its shard and sequence range to the on-failure
//! destination (Lambda developer guide, "Retaining discarded batches for a
//! Kinesis event source": `KinesisBatchInfo` with `shardId`,
//! `startSequenceNumber`, `endSequenceNumber`, `streamArn`). The records are
//! still in the stream until its retention ends: this reads each range back
//! (`GetShardIterator` AT_SEQUENCE_NUMBER, `GetRecords`), runs the records
//! through the same pipeline as Kinesis batches of at most 1,000 records
//! (files are written before it goes on, under keys that depend only on the
//! rows, so a second redrive of a range writes nothing new), and deletes a
//! message only once all its records are durable. What has expired from the
//! stream is reported by range, never skipped silently.

use base64::Engine as _;
use serde::{Deserialize, Serialize};

use crate::app::handler::Pipeline;
use crate::app::stats::Stats;
use crate::edge::shard_reader::{KinesisShardReader, ReadFrom, ShardReader};
use crate::edge::sink::Sink;
use domain::event::StreamRecord;
use domain::window::SpooledRecord;

/// Records per invocation of the pipeline: Lambda's largest Kinesis batch
/// that the template configures.
pub(crate) const CHUNK: usize = 1000;

#[derive(Debug, thiserror::Error)]
pub enum RedriveError {
    #[error("not a Lambda Kinesis failure record: {0}")]
    NotAFailureRecord(String),
    #[error("SQS {call}: {message}")]
    Sqs { call: &'static str, message: String },
}

/// The part of Lambda's failure record that says which records failed.
#[derive(Debug, Clone, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct FailedBatch {
    pub shard_id: String,
    pub start_sequence_number: String,
    pub end_sequence_number: String,
    pub stream_arn: String,
}

/// Reads `KinesisBatchInfo` from a failure record's JSON.
pub fn parse_failure(body: &str) -> Result<FailedBatch, RedriveError> {
    #[derive(Deserialize)]
    struct Record {
        #[serde(rename = "KinesisBatchInfo")]
        info: FailedBatch,
    }
    serde_json::from_str::<Record>(body)
        .map(|r| r.info)
        .map_err(|e| RedriveError::NotAFailureRecord(e.to_string()))
}

/// A record read from the stream as the spool keeps it (`kinesis.data` in
/// base64).
fn spooled(r: &StreamRecord) -> SpooledRecord {
    SpooledRecord {
        sequence: r.sequence.clone(),
        partition_key: Some(r.partition_key.clone()),
        arrival_seconds: Some(r.arrival_seconds),
        data: Some(base64::engine::general_purpose::STANDARD.encode(&r.data)),
        data_error: None,
    }
}

/// What a redrive did, for the command's output (no row values).
#[derive(Debug, Default, Serialize)]
pub struct Report {
    pub messages: usize,
    pub redriven: Vec<Redriven>,
    /// Ranges (or their beginnings) no longer in the stream.
    pub expired: Vec<Expired>,
    pub failed: Vec<Failed>,
    pub deleted: usize,
    pub records: u64,
    /// Records whose rows a file of their stream and shard already holds
    /// (the window's final invocation wrote it before it failed): not
    /// written again.
    pub already_in_lake: u64,
    pub rows_written: u64,
    pub files: u64,
}

#[derive(Debug, Serialize)]
pub struct Redriven {
    pub shard: String,
    pub start: String,
    pub end: String,
    pub records: usize,
}

#[derive(Debug, Serialize)]
pub struct Expired {
    pub stream: String,
    pub shard: String,
    pub start: String,
    /// The first record still there (`null`: none of the range is left).
    pub first_available: Option<String>,
}

#[derive(Debug, Serialize)]
pub struct Failed {
    pub message_id: String,
    pub error: String,
}

/// The AWS clients a redrive uses, and the queue it reads by default
/// (`FAILURE_QUEUE_URL`, set by the template).
pub struct Clients {
    pub kinesis: aws_sdk_kinesis::Client,
    pub sqs: aws_sdk_sqs::Client,
    pub default_queue: Option<String>,
}

impl Clients {
    pub async fn from_env() -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        Clients {
            kinesis: aws_sdk_kinesis::Client::new(&shared),
            sqs: aws_sdk_sqs::Client::new(&shared),
            default_queue: std::env::var("FAILURE_QUEUE_URL")
                .ok()
                .filter(|q| !q.is_empty()),
        }
    }
}

/// A redrive asked for by an invocation: `{"redrive": {"queue_url": "...",
/// "max_messages": 100}}` (both optional).
#[derive(Debug, Default, Deserialize, PartialEq, Eq)]
pub struct Request {
    pub queue_url: Option<String>,
    pub max_messages: Option<usize>,
}

/// The redrive request in an invocation payload, if it is one.
pub fn request_of(payload: &str) -> Option<Request> {
    #[derive(Deserialize)]
    struct Payload {
        redrive: Option<Request>,
    }
    serde_json::from_str::<Payload>(payload).ok()?.redrive
}

/// Time a message needs at least: reading a range and writing its files.
const PER_MESSAGE: std::time::Duration = std::time::Duration::from_secs(20);

/// Redrives up to `max_messages` messages of `queue_url`.
/// Inside Lambda, `deadline` stops it while a message still has time.
pub async fn redrive<S: Sink>(
    pipeline: &Pipeline<S>,
    clients: &Clients,
    queue_url: &str,
    max_messages: usize,
    deadline: Option<std::time::SystemTime>,
) -> Report {
    use std::io::IsTerminal as _;
    let mut report = Report::default();
    let reader = KinesisShardReader::new(clients.kinesis.clone());
    let time_left = || crate::edge::sink::time_left(deadline);
    // Progress for a person at a terminal; nothing in Lambda or a pipe.
    let on_terminal = std::io::stderr().is_terminal();
    let show = |r: &Report| {
        if on_terminal {
            eprint!("\r{}   ", progress_line(r));
        }
    };
    while report.messages < max_messages && time_left() > PER_MESSAGE {
        let want = (max_messages - report.messages).min(10);
        let received = clients
            .sqs
            .receive_message()
            .queue_url(queue_url)
            .max_number_of_messages(i32::try_from(want).unwrap_or(10))
            // Long enough to read a range and write its files.
            .visibility_timeout(300)
            .send()
            .await;
        let messages = match received {
            Ok(r) => r.messages.unwrap_or_default(),
            Err(e) => {
                report.failed.push(Failed {
                    message_id: String::new(),
                    error: RedriveError::Sqs {
                        call: "ReceiveMessage",
                        message: aws_sdk_sqs::error::DisplayErrorContext(&e).to_string(),
                    }
                    .to_string(),
                });
                break;
            }
        };
        if messages.is_empty() {
            break;
        }
        for message in messages {
            if time_left() <= PER_MESSAGE {
                break; // not deleted: visible again after the timeout
            }
            report.messages += 1;
            let id = message.message_id().unwrap_or_default().to_string();
            let body = message.body().unwrap_or("");
            match redrive_message(pipeline, &reader, body, &mut report).await {
                Ok(()) => {
                    let deleted = clients
                        .sqs
                        .delete_message()
                        .queue_url(queue_url)
                        .set_receipt_handle(message.receipt_handle)
                        .send()
                        .await;
                    match deleted {
                        Ok(_) => report.deleted += 1,
                        Err(e) => report.failed.push(Failed {
                            message_id: id,
                            error: format!(
                                "redriven, but DeleteMessage failed (a second redrive writes nothing new): {}",
                                aws_sdk_sqs::error::DisplayErrorContext(&e)
                            ),
                        }),
                    }
                }
                Err(e) => {
                    tracing::error!(message_id = id, error = %e, "failed batch not redriven: the message stays in the queue");
                    report.failed.push(Failed {
                        message_id: id,
                        error: e.to_string(),
                    });
                }
            }
            show(&report);
        }
    }
    if on_terminal && report.messages > 0 {
        eprintln!();
    }
    report
}

/// What a terminal shows while a redrive runs.
fn progress_line(r: &Report) -> String {
    format!(
        "{} messages, {} records, {} rows written, {} files, {} expired, {} failed",
        r.messages,
        r.records,
        r.rows_written,
        r.files,
        r.expired.len(),
        r.failed.len()
    )
}

/// Reads one failure message's range from the stream and writes its
/// records (those the lake does not hold yet). `Ok` when the message may be
/// deleted.
pub async fn redrive_message<S: Sink>(
    pipeline: &Pipeline<S>,
    reader: &dyn ShardReader,
    body: &str,
    report: &mut Report,
) -> Result<(), String> {
    let batch = parse_failure(body).map_err(|e| e.to_string())?;
    // Read to the range's end (or to its expiry), never a part of it.
    let range = reader
        .read(
            &batch.stream_arn,
            &batch.shard_id,
            &ReadFrom::Sequence(batch.start_sequence_number.clone()),
            &batch.end_sequence_number,
        )
        .await
        .map_err(|e| format!("Kinesis on {}: {e}", batch.shard_id))?;
    if range.records.is_empty() || range.first_available.is_some() {
        tracing::warn!(
            shard = batch.shard_id,
            start = batch.start_sequence_number,
            first_available = range.first_available.as_deref(),
            "records of a failed batch have expired from the stream"
        );
        report.expired.push(Expired {
            stream: batch.stream_arn.clone(),
            shard: batch.shard_id.clone(),
            start: batch.start_sequence_number.clone(),
            first_available: range.first_available.clone(),
        });
    }
    for chunk in range.records.chunks(CHUNK) {
        let chunk: Vec<SpooledRecord> = chunk.iter().map(spooled).collect();
        let (already, stats) =
            write_chunk(pipeline, &batch.stream_arn, &batch.shard_id, &chunk, None).await?;
        report.already_in_lake += already;
        report.records += stats.records;
        report.rows_written += stats.rows_written;
        report.files += stats.files;
    }
    report.redriven.push(Redriven {
        shard: batch.shard_id,
        start: batch.start_sequence_number,
        end: batch.end_sequence_number,
        records: range.records.len(),
    });
    Ok(())
}

/// Writes `records` of one shard (at most [`CHUNK`]) through the pipeline,
/// leaving out those whose rows files in the lake already hold
/// ([`already_written`]). Returns how many were left out, and what the
/// pipeline did; an error when a row could not be written (run it again).
pub(crate) async fn write_chunk<S: Sink>(
    pipeline: &Pipeline<S>,
    stream: &str,
    shard: &str,
    records: &[SpooledRecord],
    deadline: Option<std::time::SystemTime>,
) -> Result<(u64, Stats), String> {
    let fresh = not_in_lake(pipeline, stream, shard, records).await?;
    let already = (records.len() - fresh.len()) as u64;
    if fresh.is_empty() {
        return Ok((already, Stats::default()));
    }
    // The batch as Lambda would deliver it, built directly (no JSON).
    let (stream, shard): (std::sync::Arc<str>, std::sync::Arc<str>) = (stream.into(), shard.into());
    let records: Vec<_> = fresh
        .iter()
        .map(|r| r.kinesis_record(&stream, &shard))
        .collect();
    let outcome = pipeline.write_recovered(&records, deadline).await;
    match outcome.redeliver_from {
        Some(from) => Err(format!(
            "records from {from} could not be written (see the log); run it again"
        )),
        None => Ok((already, outcome.stats)),
    }
}

/// The records of `records` (one shard's) whose rows no file in the lake
/// holds ([`already_written`]).
pub(crate) async fn not_in_lake<'r, S: Sink>(
    pipeline: &Pipeline<S>,
    stream: &str,
    shard: &str,
    records: &'r [SpooledRecord],
) -> Result<Vec<&'r SpooledRecord>, String> {
    let readable: Vec<StreamRecord> = records
        .iter()
        .filter_map(|r| {
            let data = base64::engine::general_purpose::STANDARD
                .decode(r.data.as_deref()?)
                .ok()?;
            Some(StreamRecord {
                sequence: r.sequence.clone(),
                partition_key: r.partition_key.clone().unwrap_or_default(),
                data,
                arrival_seconds: r.arrival_seconds.unwrap_or(0.0),
            })
        })
        .collect();
    let written = already_written(pipeline, stream, shard, &readable).await?;
    Ok(records
        .iter()
        .filter(|r| !written.contains(&r.sequence))
        .collect())
}

/// The sequence numbers of `chunk`'s rows that files in the lake already
/// hold. A failed batch may be a window's final invocation that wrote some
/// of its files before it gave up, cut by the window's rules: their rows are
/// in the lake under keys a redrive would not give them. A file of this
/// shard, in a table and hour of the chunk's rows, whose range meets the
/// chunk's is read (its `_sequence_number` column); it holds rows of this
/// stream when its name's digest is theirs with this stream's ARN (another
/// stream's file of the same shard id is left alone).
pub(crate) async fn already_written<S: Sink>(
    pipeline: &Pipeline<S>,
    stream: &str,
    shard: &str,
    chunk: &[StreamRecord],
) -> Result<std::collections::HashSet<String>, String> {
    use domain::batcher::CUT_VERSION;
    use domain::dms::Message;
    use domain::event::sequence_cmp;
    use domain::layout;
    use domain::names::RecordId;
    use domain::names::TableName;
    let mut found = std::collections::HashSet::new();
    let (Some(low), Some(high)) = (chunk.first(), chunk.last()) else {
        return Ok(found);
    };
    let config = &pipeline.config;
    // Every directory a row of the chunk may be in, by either cut version.
    let mut dirs = std::collections::BTreeSet::new();
    for r in chunk {
        let Ok(Message::Row(change)) = domain::dms::decode(&r.data, &config.before_image_field)
        else {
            continue;
        };
        let table = TableName {
            schema: change.schema.to_string(),
            table: change.table.to_string(),
        };
        let arrival = Some((r.arrival_seconds * 1e3).round() as i64 * 1_000);
        for cut in [1, CUT_VERSION] {
            let hour = layout::partition_hour(change.partition_time_us(), arrival, cut);
            dirs.insert(layout::partition_dir(
                &config.prefix,
                config.partition_style,
                &table,
                hour,
                cut,
            ));
        }
    }
    let (stream, shard_id): (std::sync::Arc<str>, std::sync::Arc<str>) =
        (stream.into(), shard.into());
    for dir in dirs {
        let keys = pipeline
            .sink
            .list(&layout::shard_files_prefix(&dir, shard))
            .await
            .map_err(|e| format!("listing {dir}: {e}"))?;
        for key in keys {
            let Some((first, last, digest)) = layout::stem_parts(&key) else {
                continue;
            };
            if sequence_cmp(last, &low.sequence).is_lt()
                || sequence_cmp(first, &high.sequence).is_gt()
            {
                continue;
            }
            let Some(bytes) = pipeline
                .sink
                .get(&key)
                .await
                .map_err(|e| format!("reading {key}: {e}"))?
            else {
                continue;
            };
            let sequences = domain::file_types::sequence_numbers(bytes)
                .map_err(|e| format!("reading {key}: {e}"))?;
            let ids: Vec<RecordId> = sequences
                .iter()
                .map(|s| RecordId {
                    stream: stream.clone(),
                    shard: shard_id.clone(),
                    sequence: s.clone(),
                })
                .collect();
            if layout::rows_digest(&ids) == digest {
                found.extend(sequences);
            }
        }
    }
    Ok(found)
}

/// `cdc-batcher redrive`.
#[derive(Debug, clap::Args)]
#[command(
    about = "Read failed batches back from the stream and write them (the failure queue's messages)",
    long_about = "Takes the failure queue's messages (what Lambda sends after MaximumRetryAttempts: \
        a shard and a sequence range), reads each range back from the stream, runs the records \
        through the function's pipeline (the same keys: a second redrive writes nothing new), and \
        deletes a message once its records are durable. Prints one JSON report: what was \
        redriven, what had expired from the stream.\n\n\
        Exit codes: 0 done, 1 a message could not be redriven (it stays in the queue), 2 bad \
        arguments or configuration, 3 records had expired from the stream (reported by range)."
)]
pub struct RedriveArgs {
    /// The failure queue's URL (stack output FailureQueueUrl)
    #[arg(long, value_name = "URL")]
    queue_url: String,
    /// The lake: s3://bucket/prefix/ (or a local directory)
    #[arg(long, value_name = "s3://bucket/prefix/", value_parser = crate::app::output::Output::parse)]
    output: crate::app::output::Output,
    /// Stop after this many messages
    #[arg(long, default_value_t = 1000)]
    max_messages: usize,
}

/// Runs the command; returns the process exit code.
pub async fn run(args: RedriveArgs) -> i32 {
    let (config, sink) = match args.output.open().await {
        Ok(x) => x,
        Err(e) => {
            eprintln!("{e}");
            return 2;
        }
    };
    let pipeline = Pipeline::new(config, sink).without_metrics();
    let clients = Clients::from_env().await;
    let report = redrive(
        &pipeline,
        &clients,
        &args.queue_url,
        args.max_messages,
        None,
    )
    .await;
    match serde_json::to_string(&report) {
        Ok(line) => println!("{line}"),
        Err(e) => eprintln!("report could not be serialised: {e}"),
    }
    exit_code(&report)
}

/// 1 when a message failed, 3 when only expiry was found, else 0.
pub fn exit_code(report: &Report) -> i32 {
    if !report.failed.is_empty() {
        1
    } else if !report.expired.is_empty() {
        3
    } else {
        0
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The example failure record of the Lambda developer guide.
    const FAILURE: &str = r#"{
        "requestContext": {"requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:us-east-2:123456789012:function:myfunction",
            "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 1},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
            "functionError": "Unhandled"},
        "version": "1.0", "timestamp": "2019-11-14T00:38:06.021Z",
        "KinesisBatchInfo": {"shardId": "shardId-000000000001",
            "startSequenceNumber": "49601189658422359378836298521827638475320189012309704722",
            "endSequenceNumber": "49601189658422359378836298522902373528957594348623495186",
            "approximateArrivalOfFirstRecord": "2019-11-14T00:38:04.835Z",
            "approximateArrivalOfLastRecord": "2019-11-14T00:38:05.580Z",
            "batchSize": 500, "streamArn": "arn:aws:kinesis:us-east-2:123456789012:stream/mystream"}
    }"#;

    #[test]
    fn lambdas_failure_record_is_read() {
        let b = parse_failure(FAILURE).unwrap();
        assert_eq!(b.shard_id, "shardId-000000000001");
        assert!(b
            .start_sequence_number
            .starts_with("4960118965842235937883629852182"));
        assert!(b.stream_arn.ends_with(":stream/mystream"));
        assert!(parse_failure(r#"{"Records": []}"#).is_err());
    }

    #[test]
    fn a_redrive_invocation_is_recognised() {
        assert_eq!(request_of(r#"{"redrive": {}}"#), Some(Request::default()));
        let r = request_of(r#"{"redrive": {"queue_url": "q", "max_messages": 5}}"#).unwrap();
        assert_eq!(
            (r.queue_url.as_deref(), r.max_messages),
            (Some("q"), Some(5))
        );
        assert_eq!(request_of(r#"{"force_flush": true}"#), None);
        assert_eq!(request_of(r#"{"Records": []}"#), None);
    }

    #[test]
    fn the_event_is_what_lambda_sends() {
        let records = vec![StreamRecord {
            sequence: "42".into(),
            partition_key: "k".into(),
            data: b"{}".to_vec(),
            arrival_seconds: 1.5,
        }];
        let arn = "arn:aws:kinesis:us-east-2:123456789012:stream/s";
        let event: serde_json::Value = serde_json::from_str(&domain::event::event_json(
            arn,
            "shardId-000000000001",
            &records,
            None,
        ))
        .unwrap();
        let r = &event["Records"][0];
        assert_eq!(r["eventID"], "shardId-000000000001:42");
        assert_eq!(r["kinesis"]["data"], "e30=");
        assert_eq!(r["eventSourceARN"], arn);
        assert_eq!(r["awsRegion"], "us-east-2");
    }
}
