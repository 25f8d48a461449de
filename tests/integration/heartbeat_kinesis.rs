//! Heartbeats through the real Kinesis API against a local Kinesis server
//! (moto on 127.0.0.1): one record into every open shard, with the shard's
//! starting hash key, that this function reads back as a task-level control
//! record and skips.

use std::collections::HashMap;
use std::sync::Arc;

use crate::common::{create_stream, kinesis_client, Moto};
use aws_sdk_kinesis::types::ShardIteratorType;
use base64::Engine as _;
use cdc_batcher::app::config::Config;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::invocation;
use cdc_batcher::edge::heartbeat::{KinesisHeartbeat, PARTITION_KEY};
use cdc_batcher::edge::sink::LocalDirSink;
use serde_json::json;

#[tokio::test]
async fn a_force_flush_puts_one_heartbeat_into_every_open_shard() {
    let moto = Moto::start();
    let client = kinesis_client(&moto.endpoint());
    let arn = create_stream(&client, "dms-cdc", 3).await;

    let dir = tempfile::tempdir().unwrap();
    let vars: HashMap<&str, String> = HashMap::from([("HEARTBEAT_STREAMS", arn.clone())]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let pipeline = Pipeline::new(config, LocalDirSink::new(dir.path()))
        .without_metrics()
        .with_heartbeat(Arc::new(KinesisHeartbeat::from_client(client.clone())));
    let out = invocation::handle(&pipeline, &json!({"force_flush": true}).to_string(), None)
        .await
        .unwrap();
    assert_eq!(out.response["heartbeats"], 3);
    assert_eq!(out.stats.heartbeat_failures, 0);

    let shards = client
        .list_shards()
        .stream_name("dms-cdc")
        .send()
        .await
        .unwrap();
    let mut payloads = Vec::new();
    for shard in shards.shards() {
        let it = client
            .get_shard_iterator()
            .stream_name("dms-cdc")
            .shard_id(shard.shard_id())
            .shard_iterator_type(ShardIteratorType::TrimHorizon)
            .send()
            .await
            .unwrap();
        let records = client
            .get_records()
            .shard_iterator(it.shard_iterator().unwrap())
            .send()
            .await
            .unwrap();
        assert_eq!(records.records().len(), 1, "{}", shard.shard_id());
        let r = &records.records()[0];
        assert_eq!(r.partition_key(), Some(PARTITION_KEY));
        payloads.push((
            shard.shard_id().to_string(),
            r.sequence_number().to_string(),
            r.data().as_ref().to_vec(),
        ));
    }

    // The heartbeats read back as a window's records: recognised and skipped,
    // nothing spooled, nothing quarantined.
    for (shard, seq, data) in payloads {
        let event = json!({"Records": [{"kinesis": {"partitionKey": PARTITION_KEY,
            "sequenceNumber": seq, "data": base64::engine::general_purpose::STANDARD.encode(&data),
            "approximateArrivalTimestamp": 1_773_450_000.0}, "eventSource": "aws:kinesis",
            "eventID": format!("{shard}:{seq}"), "eventSourceARN": arn}],
            "window": {"start": "2026-03-14T01:00:00Z", "end": "2026-03-14T01:02:00Z"},
            "state": {}, "shardId": shard, "eventSourceARN": arn,
            "isFinalInvokeForWindow": false, "isWindowTerminatedEarly": false});
        let out = invocation::handle(&pipeline, &event.to_string(), None)
            .await
            .unwrap();
        assert_eq!(out.stats.spooled, 0);
        assert_eq!(out.stats.quarantined, 0);
        assert_eq!(out.stats.control_records, 1);
    }
}

#[tokio::test]
async fn a_heartbeat_that_cannot_be_sent_is_reported() {
    let moto = Moto::start();
    let client = kinesis_client(&moto.endpoint());
    let dir = tempfile::tempdir().unwrap();
    let missing = "arn:aws:kinesis:us-east-1:123456789012:stream/missing";
    let vars: HashMap<&str, String> = HashMap::from([("HEARTBEAT_STREAMS", missing.to_string())]);
    let config = Config::from_lookup(|k| vars.get(k).cloned()).unwrap();
    let pipeline = Pipeline::new(config, LocalDirSink::new(dir.path()))
        .without_metrics()
        .with_heartbeat(Arc::new(KinesisHeartbeat::from_client(client)));
    let out = invocation::handle(&pipeline, &json!({"force_flush": true}).to_string(), None)
        .await
        .unwrap();
    assert_eq!(out.stats.heartbeat_failures, 1);
    assert_eq!(out.response["heartbeats"], 0);
}
