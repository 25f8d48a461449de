//! `cdc-batcher redrive` end to end against local Kinesis, SQS and S3
//! servers (moto on 127.0.0.1): failure messages of the shape Lambda sends
//! after `MaximumRetryAttempts` (Lambda developer guide, "Retaining discarded
//! batches for a Kinesis event source"), the records read back from the
//! stream and written once, a message delivered twice, and a range whose
//! beginning is no longer in the stream.

use crate::common::*;
use domain::event::event_json;
use domain::event::StreamRecord;
use serde_json::{json, Value};

fn sqs_client(endpoint: &str) -> aws_sdk_sqs::Client {
    let conf = aws_sdk_sqs::config::Builder::new()
        .behavior_version(aws_sdk_sqs::config::BehaviorVersion::latest())
        .region(aws_sdk_sqs::config::Region::new("us-east-1"))
        .credentials_provider(aws_sdk_sqs::config::Credentials::new(
            "test", "test", None, None, "tests",
        ))
        .endpoint_url(endpoint)
        .build();
    aws_sdk_sqs::Client::from_conf(conf)
}

async fn create_queue(sqs: &aws_sdk_sqs::Client, name: &str) -> String {
    sqs.create_queue()
        .queue_name(name)
        .send()
        .await
        .unwrap()
        .queue_url()
        .unwrap()
        .to_string()
}

/// Lambda's failure record for a range of one shard.
fn failure(arn: &str, shard: &str, start: &str, end: &str) -> String {
    json!({
        "requestContext": {"requestId": "c9b8fa9f-5a7f-xmpl-af9c-0c604cde93a5",
            "functionArn": "arn:aws:lambda:us-east-1:123456789012:function:cdc-batcher",
            "condition": "RetryAttemptsExhausted", "approximateInvokeCount": 3},
        "responseContext": {"statusCode": 200, "executedVersion": "$LATEST",
            "functionError": "Unhandled"},
        "version": "1.0", "timestamp": "2026-03-14T01:00:06.021Z",
        "KinesisBatchInfo": {"shardId": shard, "startSequenceNumber": start,
            "endSequenceNumber": end,
            "approximateArrivalOfFirstRecord": "2026-03-14T01:00:04.835Z",
            "approximateArrivalOfLastRecord": "2026-03-14T01:00:05.580Z",
            "batchSize": 3, "streamArn": arn}
    })
    .to_string()
}

fn dms_row(id: u32) -> Vec<u8> {
    json!({"data": {"id": id, "name": format!("n{id}")},
           "metadata": {"timestamp": format!("2026-03-14T01:00:0{id}.000000Z"),
                        "record-type": "data", "operation": "insert",
                        "partition-key-type": "schema-table",
                        "schema-name": "s", "table-name": "t"}})
    .to_string()
    .into_bytes()
}

/// The bucket, a one-shard stream and `n` DMS rows put into it: the
/// stream's ARN and each row's (shard, sequence number, id).
async fn stream_of_rows(
    s3: &aws_sdk_s3::Client,
    kinesis: &aws_sdk_kinesis::Client,
    n: u32,
) -> (String, Vec<(String, String, u32)>) {
    create_bucket(s3).await;
    let arn = create_stream(kinesis, "dms-cdc", 1).await;
    let mut records = Vec::new();
    for id in 1..=n {
        let put = kinesis
            .put_record()
            .stream_arn(&arn)
            .partition_key("s.t")
            .data(aws_sdk_kinesis::primitives::Blob::new(dms_row(id)))
            .send()
            .await
            .unwrap();
        records.push((
            put.shard_id().to_string(),
            put.sequence_number().to_string(),
            id,
        ));
    }
    (arn, records)
}

fn run_redrive(moto: &Moto, queue: &str) -> (Value, i32) {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .args(["redrive", "--queue-url", queue, "--output"])
        .arg(format!("s3://{BUCKET}/lake/"))
        .envs(
            s3_env(&moto.endpoint())
                .iter()
                .map(|(k, v)| (*k, v.as_str())),
        )
        .env("AWS_ENDPOINT_URL_KINESIS", moto.endpoint())
        .env("AWS_ENDPOINT_URL_SQS", moto.endpoint())
        .output()
        .unwrap();
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report = serde_json::from_str(stdout.trim())
        .unwrap_or_else(|e| panic!("{e}: {stdout}\n{}", String::from_utf8_lossy(&out.stderr)));
    (report, out.status.code().unwrap_or(-1))
}

#[test]
fn failed_batches_are_read_back_written_once_and_expiry_is_named() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kinesis = kinesis_client(&moto.endpoint());
    let sqs = sqs_client(&moto.endpoint());
    let s3 = s3_client(&moto.endpoint());
    let (arn, shard, sequences, queue) = rt.block_on(async {
        let (arn, put) = stream_of_rows(&s3, &kinesis, 3).await;
        let sequences = put.iter().map(|(_, s, _)| s.clone()).collect::<Vec<_>>();
        let queue = create_queue(&sqs, "failures").await;
        (arn, put[0].0.clone(), sequences, queue)
    });
    let send = |body: String| {
        rt.block_on(
            sqs.send_message()
                .queue_url(&queue)
                .message_body(body)
                .send(),
        )
        .unwrap();
    };
    let whole = failure(&arn, &shard, &sequences[0], &sequences[2]);
    send(whole.clone());
    // Lambda's destination is at-least-once: the same message twice.
    send(whole.clone());
    // A range the stream no longer holds (it ends before the oldest record).
    send(failure(&arn, &shard, "0", "0"));
    // Not a failure record: reported, kept in the queue.
    send(r#"{"hello": "world"}"#.to_string());

    let (report, code) = run_redrive(&moto, &queue);
    assert_eq!(report["messages"], 4, "{report}");
    assert_eq!(report["deleted"], 3, "{report}");
    assert_eq!(report["failed"].as_array().unwrap().len(), 1, "{report}");
    assert!(report["failed"][0]["error"]
        .as_str()
        .unwrap()
        .contains("not a Lambda Kinesis failure record"));
    assert_eq!(
        report["expired"],
        json!([{"stream": arn, "shard": shard, "start": "0", "first_available": null}]),
        "{report}"
    );
    assert_eq!(code, 1, "a message failed");
    let redriven: Vec<u64> = report["redriven"]
        .as_array()
        .unwrap()
        .iter()
        .map(|r| r["records"].as_u64().unwrap())
        .collect();
    assert_eq!(redriven, [3, 3, 0], "{report}");

    // Every record is in the lake exactly once (the independent checker).
    let dir = tempfile::tempdir().unwrap();
    let records: Vec<StreamRecord> = sequences
        .iter()
        .zip(1..)
        .map(|(s, id)| StreamRecord {
            sequence: s.clone(),
            partition_key: "s.t".into(),
            data: dms_row(id),
            arrival_seconds: 1_773_450_000.0,
        })
        .collect();
    let events = dir.path().join("event.json");
    std::fs::write(&events, event_json(&arn, &shard, &records, None)).unwrap();
    let check = check_lake(
        &s3_location(&moto.endpoint()),
        &["--prefix", "lake/", "--expect-rows", "3"],
        &[events],
    );
    assert!(check.ok, "{}", check.summary);
    let objects = || {
        rt.block_on(s3.list_objects_v2().bucket(BUCKET).prefix("lake/").send())
            .unwrap()
            .key_count()
    };
    let before = objects();

    // Redriving the same range again writes nothing new.
    send(whole);
    let (report, code) = run_redrive(&moto, &queue);
    // (The message that is not a failure record is still invisible.)
    assert_eq!((report["deleted"].as_u64(), code), (Some(1), 0), "{report}");
    assert_eq!(objects(), before);
}

/// The same redrive as a Lambda invocation (`{"redrive": {}}`), with the
/// queue from `FAILURE_QUEUE_URL` as the template sets it.
#[tokio::test]
async fn a_redrive_event_runs_inside_lambda() {
    use cdc_batcher::app::config::Config;
    use cdc_batcher::app::handler::Pipeline;
    use cdc_batcher::app::redrive::Clients;
    use cdc_batcher::edge::sink::LocalDirSink;

    let moto = Moto::start();
    let kinesis = kinesis_client(&moto.endpoint());
    let sqs = sqs_client(&moto.endpoint());
    let arn = &create_stream(&kinesis, "s", 1).await;
    let put = kinesis
        .put_record()
        .stream_arn(arn)
        .partition_key("k")
        .data(aws_sdk_kinesis::primitives::Blob::new(dms_row(1)))
        .send()
        .await
        .unwrap();
    let (shard, seq) = (put.shard_id(), put.sequence_number());
    let queue = create_queue(&sqs, "f").await;
    sqs.send_message()
        .queue_url(&queue)
        .message_body(failure(arn, shard, seq, seq))
        .send()
        .await
        .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let config = Config::from_lookup(|_| None).unwrap();
    let pipeline = Pipeline::new(config, LocalDirSink::new(dir.path())).without_metrics();
    let clients = Clients {
        kinesis,
        sqs,
        default_queue: Some(queue),
    };
    let event = lambda_runtime::LambdaEvent::new(
        serde_json::value::RawValue::from_string(r#"{"redrive": {}}"#.into()).unwrap(),
        lambda_runtime::Context::default(),
    );
    let report = cdc_batcher::app::lambda::invoke(&pipeline, &clients, event)
        .await
        .unwrap();
    assert_eq!(report["deleted"], 1, "{report}");
    assert_eq!(report["rows_written"], 1, "{report}");
}

/// A window's final invocation wrote some of its files before it failed for
/// good: the failed batch's range holds rows already in the lake, under keys
/// of the window's cut. The redrive writes only the others.
#[test]
fn a_redrive_leaves_out_rows_already_in_the_lake() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let kinesis = kinesis_client(&moto.endpoint());
    let sqs = sqs_client(&moto.endpoint());
    let s3 = s3_client(&moto.endpoint());
    let (arn, records, queue) = rt.block_on(async {
        let (arn, records) = stream_of_rows(&s3, &kinesis, 6).await;
        (arn, records, create_queue(&sqs, "failures").await)
    });
    let shard = records[0].0.clone();
    let as_stream = |rs: &[(String, String, u32)]| -> Vec<StreamRecord> {
        rs.iter()
            .map(|(_, s, id)| StreamRecord {
                sequence: s.clone(),
                partition_key: "s.t".into(),
                data: dms_row(*id),
                arrival_seconds: 1_773_450_000.0,
            })
            .collect()
    };
    // Rows 1-2 and 3-4 as two files (the window's cut), written before the
    // failure; rows 5-6 never were.
    let dir = tempfile::tempdir().unwrap();
    let mut early = Vec::new();
    for (i, rs) in [&records[0..2], &records[2..4]].into_iter().enumerate() {
        let path = dir.path().join(format!("early-{i}.json"));
        std::fs::write(&path, event_json(&arn, &shard, &as_stream(rs), None)).unwrap();
        early.push(path);
    }
    let mut env = s3_env(&moto.endpoint());
    env.push(("FLUSH_MODE", "invocation".into()));
    let (summary, ok) = replay(&env, &format!("s3://{BUCKET}/lake/"), &early);
    assert!(ok && summary["rows_written"] == 4, "{summary}");

    let body = failure(&arn, &shard, &records[0].1, &records[5].1);
    rt.block_on(
        sqs.send_message()
            .queue_url(&queue)
            .message_body(body)
            .send(),
    )
    .unwrap();
    let (report, code) = run_redrive(&moto, &queue);
    assert_eq!(code, 0, "{report}");
    assert_eq!(report["already_in_lake"], 4, "{report}");
    assert_eq!(report["rows_written"], 2, "{report}");

    // Every row once (the independent checker).
    let all = dir.path().join("all.json");
    std::fs::write(&all, event_json(&arn, &shard, &as_stream(&records), None)).unwrap();
    let check = check_lake(
        &s3_location(&moto.endpoint()),
        &["--prefix", "lake/", "--expect-rows", "6"],
        &[all],
    );
    assert!(check.ok, "{}", check.summary);
}

/// What the sweep asks before it writes an abandoned window: the stream's
/// retention (`DescribeStreamSummary`), from a Kinesis server; a stream
/// that is not there is told apart from an outage.
#[tokio::test]
async fn a_stream_answers_its_retention() {
    use cdc_batcher::edge::shard_reader::{KinesisShardReader, ReadError, ShardReader as _};
    let moto = Moto::start();
    let kinesis = kinesis_client(&moto.endpoint());
    let arn = create_stream(&kinesis, "kept", 1).await;
    let reader = KinesisShardReader::new(kinesis.clone());
    assert_eq!(
        reader.retention(&arn).await,
        Ok(std::time::Duration::from_secs(24 * 3600))
    );
    kinesis
        .increase_stream_retention_period()
        .stream_arn(&arn)
        .retention_period_hours(168)
        .send()
        .await
        .unwrap();
    assert_eq!(
        reader.retention(&arn).await,
        Ok(std::time::Duration::from_secs(168 * 3600))
    );
    let gone = arn.replace("/kept", "/never-made");
    assert!(
        matches!(reader.retention(&gone).await, Err(ReadError::Gone(_))),
        "{:?}",
        reader.retention(&gone).await
    );
}
