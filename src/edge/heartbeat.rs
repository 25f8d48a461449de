//! Heartbeats that close quiet shards' tumbling windows.
//!
//! Lambda's windows follow the records' arrival times, and its documentation
//! describes the final invocation only as the end of a window of records; it
//! does not say that a shard with no new records gets one. So that a window
//! on a quiet shard never stays open past its end, each scheduled
//! `force_flush` puts one small record into every open shard of the
//! configured streams: the next window's first record, whose arrival ends the
//! previous window.
//!
//! The record is shaped like a DMS task-level control record (empty schema
//! and table names, `record-type: control`), so this function and any other
//! consumer that follows DMS's format skip it; its partition key and
//! operation are [`PARTITION_KEY`].

use std::time::Duration;

use futures_util::future::BoxFuture;

/// Partition key and `metadata.operation` of every heartbeat record.
pub const PARTITION_KEY: &str = "cdc-batcher-heartbeat";

/// Puts a heartbeat into every open shard of a stream.
pub trait Heartbeat: Send + Sync {
    /// Returns how many shards got one.
    fn beat<'a>(
        &'a self,
        stream_arn: &'a str,
        record: &'a [u8],
    ) -> BoxFuture<'a, Result<usize, String>>;
}

/// The heartbeat record's payload (JSON, before Kinesis' base64).
pub fn record(now: chrono::DateTime<chrono::Utc>) -> Vec<u8> {
    let ts = now.to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
    serde_json::json!({
        "metadata": {
            "timestamp": ts,
            "record-type": "control",
            "operation": PARTITION_KEY,
            "partition-key-type": "task-id",
            "schema-name": "",
            "table-name": "",
        }
    })
    .to_string()
    .into_bytes()
}

/// Whether a decoded operation is a heartbeat's.
pub fn is_heartbeat(operation: &str) -> bool {
    operation == PARTITION_KEY
}

/// Heartbeats through the Kinesis API: `ListShards`, then `PutRecord` with
/// each open shard's starting hash key as `ExplicitHashKey`.
pub struct KinesisHeartbeat {
    client: aws_sdk_kinesis::Client,
}

impl KinesisHeartbeat {
    pub async fn from_env() -> Self {
        let timeouts = aws_config::timeout::TimeoutConfig::builder()
            .connect_timeout(Duration::from_secs(3))
            .operation_attempt_timeout(Duration::from_secs(5))
            .build();
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .timeout_config(timeouts)
            .load()
            .await;
        KinesisHeartbeat {
            client: aws_sdk_kinesis::Client::new(&shared),
        }
    }

    pub fn from_client(client: aws_sdk_kinesis::Client) -> Self {
        KinesisHeartbeat { client }
    }

    async fn open_shards(&self, stream_arn: &str) -> Result<Vec<(String, String)>, String> {
        let mut shards = Vec::new();
        let mut token: Option<String> = None;
        loop {
            let request = match &token {
                // With a token the stream must not be named again.
                Some(t) => self.client.list_shards().next_token(t),
                None => self.client.list_shards().stream_arn(stream_arn),
            };
            let page = request.send().await.map_err(|e| {
                format!(
                    "ListShards {stream_arn}: {}",
                    aws_sdk_kinesis::error::DisplayErrorContext(&e)
                )
            })?;
            for shard in page.shards() {
                let open = shard
                    .sequence_number_range()
                    .is_some_and(|r| r.ending_sequence_number().is_none());
                if let (true, Some(range)) = (open, shard.hash_key_range()) {
                    shards.push((
                        shard.shard_id().to_string(),
                        range.starting_hash_key().to_string(),
                    ));
                }
            }
            token = page.next_token().map(str::to_string);
            if token.is_none() {
                return Ok(shards);
            }
        }
    }
}

impl Heartbeat for KinesisHeartbeat {
    fn beat<'a>(
        &'a self,
        stream_arn: &'a str,
        record: &'a [u8],
    ) -> BoxFuture<'a, Result<usize, String>> {
        Box::pin(async move {
            let shards = self.open_shards(stream_arn).await?;
            for (shard, hash_key) in &shards {
                self.client
                    .put_record()
                    .stream_arn(stream_arn)
                    .partition_key(PARTITION_KEY)
                    .explicit_hash_key(hash_key)
                    .data(aws_sdk_kinesis::primitives::Blob::new(record.to_vec()))
                    .send()
                    .await
                    .map_err(|e| {
                        format!(
                            "PutRecord {stream_arn} {shard}: {}",
                            aws_sdk_kinesis::error::DisplayErrorContext(&e)
                        )
                    })?;
            }
            Ok(shards.len())
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use domain::dms::{decode, Message};

    #[test]
    fn a_heartbeat_is_a_task_level_control_record() {
        let now = chrono::DateTime::from_timestamp(1_773_450_000, 0).unwrap();
        let bytes = record(now);
        match decode(&bytes, "before-image").unwrap() {
            Message::TaskControl { operation } => assert!(is_heartbeat(&operation)),
            other => panic!("{other:?}"),
        }
        assert!(!is_heartbeat("drop-table"));
    }
}
