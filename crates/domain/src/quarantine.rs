//! Records that cannot become rows, kept as they arrived with the reason.
//!
//! A poison record reported as a batch failure would block its shard until it
//! expires; one that is only logged is lost. Instead each invocation writes
//! its undecodable records as one JSON Lines object under `_errors/`, and the
//! shard moves on.

use serde::Serialize;

use crate::event::KinesisRecord;
use crate::names::RecordId;

/// One quarantined record, as written (one JSON object per line).
#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct QuarantineEntry {
    pub error: String,
    /// The stream's ARN, when the event named it.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub stream_arn: Option<String>,
    pub shard_id: Option<String>,
    pub sequence_number: Option<String>,
    pub partition_key: Option<String>,
    pub approximate_arrival_timestamp: Option<f64>,
    /// RFC 3339, when this function gave up on the record.
    pub quarantined_at: String,
    /// `kinesis.data` exactly as delivered: base64 of the raw payload (or,
    /// when that was not valid base64, the text that arrived).
    pub data: Option<String>,
}

impl QuarantineEntry {
    pub fn new(record: &KinesisRecord<'_>, error: String, now_us: i64) -> Self {
        let (stream_arn, shard_id, sequence_number) = match &record.id {
            Ok(id) => (
                Some(id.stream.to_string()).filter(|s| !s.is_empty()),
                Some(id.shard.to_string()),
                Some(id.sequence.clone()),
            ),
            Err(_) => (None, None, None),
        };
        QuarantineEntry {
            error,
            stream_arn,
            shard_id,
            sequence_number,
            partition_key: record.partition_key.as_deref().map(String::from),
            approximate_arrival_timestamp: record.arrival_seconds,
            quarantined_at: chrono::DateTime::from_timestamp_micros(now_us)
                .unwrap_or_default()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true),
            data: record.data.as_deref().ok().map(String::from),
        }
    }

    /// About what the entry holds in memory (its texts and a fixed part).
    pub fn held_bytes(&self) -> usize {
        let text = |s: &Option<String>| s.as_ref().map_or(0, String::len);
        128 + self.error.len()
            + self.quarantined_at.len()
            + text(&self.data)
            + text(&self.stream_arn)
            + text(&self.shard_id)
            + text(&self.sequence_number)
            + text(&self.partition_key)
    }

    pub fn record_id(&self) -> Option<RecordId> {
        Some(RecordId {
            stream: self.stream_arn.as_deref().unwrap_or("").into(),
            shard: self.shard_id.as_deref()?.into(),
            sequence: self.sequence_number.clone()?,
        })
    }
}

/// The entries as JSON Lines.
pub fn to_jsonl(entries: &[QuarantineEntry]) -> Vec<u8> {
    let mut out = Vec::new();
    for e in entries {
        // Serialising plain strings and numbers into a Vec cannot fail.
        let _ = serde_json::to_writer(&mut out, e);
        out.push(b'\n');
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::Arc;

    #[test]
    fn entries_keep_the_data_as_delivered() {
        let rec = KinesisRecord {
            id: Ok(RecordId {
                stream: std::sync::Arc::from(""),
                shard: Arc::from("shardId-1"),
                sequence: "77".into(),
            }),
            data: Ok("bm90IGpzb24=".into()),
            partition_key: Some("pk".into()),
            arrival_seconds: Some(1.5),
        };
        let e = QuarantineEntry::new(&rec, "payload is not JSON".into(), 0);
        assert_eq!(e.record_id(), rec.id.clone().ok());
        let text = String::from_utf8(to_jsonl(&[e.clone(), e])).unwrap();
        let lines: Vec<serde_json::Value> = text
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        assert_eq!(lines.len(), 2);
        assert_eq!(lines[0]["data"], "bm90IGpzb24=");
        assert_eq!(lines[0]["sequence_number"], "77");
        assert_eq!(lines[0]["quarantined_at"], "1970-01-01T00:00:00.000000Z");
        assert_eq!(lines[0]["error"], "payload is not JSON");
    }
}
