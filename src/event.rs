//! Telling the invocation payloads apart: a Kinesis batch or a force flush.
//!
//! The payload is taken as a `serde_json::Value` and every Kinesis record is
//! read on its own: `aws_lambda_events`' typed `KinesisEvent` decodes base64
//! while deserialising, so one bad record would fail the whole batch.

use std::sync::Arc;

use serde_json::Value;

use crate::layout::RecordId;

/// What arrived.
#[derive(Debug)]
pub enum Event {
    Kinesis(Vec<KinesisRecord>),
    /// A scheduled or manual request to write every buffer now.
    ForceFlush {
        source: &'static str,
    },
}

/// One Kinesis record, read leniently: anything missing is kept as an error
/// so the record can be quarantined rather than failing the batch.
#[derive(Debug, Clone)]
pub struct KinesisRecord {
    /// Shard and sequence number; an error when the record lacks them.
    pub id: Result<RecordId, String>,
    /// `kinesis.data` exactly as it arrived (standard base64 of the payload).
    pub data: Result<String, String>,
    pub partition_key: Option<String>,
    /// `kinesis.approximateArrivalTimestamp`, epoch seconds.
    pub arrival_seconds: Option<f64>,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum EventError {
    #[error(
        "unrecognised invocation payload ({0}): expected a Kinesis event (Records[] with \
         eventSource aws:kinesis), {{\"force_flush\": true}}, or an EventBridge scheduled event"
    )]
    Unrecognised(String),
}

/// Classifies an invocation payload.
pub fn classify(payload: &Value) -> Result<Event, EventError> {
    let Some(obj) = payload.as_object() else {
        return Err(EventError::Unrecognised(format!(
            "a JSON {}",
            json_kind(payload)
        )));
    };
    if let Some(records) = obj.get("Records") {
        let Some(records) = records.as_array() else {
            return Err(EventError::Unrecognised("Records is not an array".into()));
        };
        if let Some(other) = records
            .iter()
            .filter_map(|r| r.get("eventSource").and_then(Value::as_str))
            .find(|s| *s != "aws:kinesis")
        {
            return Err(EventError::Unrecognised(format!(
                "records from {other:?}, not aws:kinesis"
            )));
        }
        return Ok(Event::Kinesis(read_records(records)));
    }
    if obj.get("force_flush").and_then(Value::as_bool) == Some(true) {
        return Ok(Event::ForceFlush {
            source: "force_flush",
        });
    }
    let source = obj.get("source").and_then(Value::as_str);
    let detail_type = obj.get("detail-type").and_then(Value::as_str);
    match (source, detail_type) {
        (Some("aws.events"), Some("Scheduled Event")) => Ok(Event::ForceFlush {
            source: "aws.events",
        }),
        (Some("aws.scheduler"), _) => Ok(Event::ForceFlush {
            source: "aws.scheduler",
        }),
        _ => {
            let mut keys: Vec<&str> = obj.keys().map(String::as_str).take(8).collect();
            keys.sort_unstable();
            Err(EventError::Unrecognised(format!(
                "an object with keys [{}]",
                keys.join(", ")
            )))
        }
    }
}

fn json_kind(v: &Value) -> &'static str {
    match v {
        Value::Null => "null",
        Value::Bool(_) => "boolean",
        Value::Number(_) => "number",
        Value::String(_) => "string",
        Value::Array(_) => "array",
        Value::Object(_) => "object",
    }
}

fn read_records(records: &[Value]) -> Vec<KinesisRecord> {
    // One Arc per shard, shared by its records' ids.
    let mut shards: Vec<Arc<str>> = Vec::new();
    records
        .iter()
        .map(|r| {
            let kinesis = r.get("kinesis");
            let field = |name: &str| kinesis.and_then(|k| k.get(name));
            let sequence = field("sequenceNumber").and_then(Value::as_str);
            let shard = r
                .get("eventID")
                .and_then(Value::as_str)
                .and_then(|e| e.split_once(':'))
                .map(|(shard, _)| shard);
            let id = match (shard, sequence) {
                (Some(shard), Some(seq)) if !shard.is_empty() && !seq.is_empty() => {
                    let shard = match shards.iter().find(|s| s.as_ref() == shard) {
                        Some(s) => s.clone(),
                        None => {
                            let s: Arc<str> = Arc::from(shard);
                            shards.push(s.clone());
                            s
                        }
                    };
                    Ok(RecordId {
                        shard,
                        sequence: seq.to_string(),
                    })
                }
                (_, None) => Err("record has no kinesis.sequenceNumber".to_string()),
                _ => Err("record has no eventID of the form shardId-…:sequence".to_string()),
            };
            let data = match field("data") {
                Some(Value::String(s)) => Ok(s.clone()),
                Some(other) => Err(format!("kinesis.data is a {}", json_kind(other))),
                None => Err("record has no kinesis.data".to_string()),
            };
            KinesisRecord {
                id,
                data,
                partition_key: field("partitionKey")
                    .and_then(Value::as_str)
                    .map(String::from),
                arrival_seconds: field("approximateArrivalTimestamp").and_then(Value::as_f64),
            }
        })
        .collect()
}

/// Orders Kinesis sequence numbers (decimal strings of up to 129 digits)
/// numerically without parsing them.
pub fn sequence_cmp(a: &str, b: &str) -> std::cmp::Ordering {
    let a = a.trim_start_matches('0');
    let b = b.trim_start_matches('0');
    a.len().cmp(&b.len()).then_with(|| a.cmp(b))
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn record(seq: &str, data: Value) -> Value {
        json!({"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "sales.client",
            "sequenceNumber": seq, "data": data, "approximateArrivalTimestamp": 1773450000.5},
            "eventSource": "aws:kinesis", "eventID": format!("shardId-000000000002:{seq}")})
    }

    #[test]
    fn kinesis_records_are_read_one_by_one() {
        let ev = json!({"Records": [record("12", json!("aGk=")), record("13", json!("!!not base64")),
            record("14", json!(5)), {"eventSource": "aws:kinesis", "kinesis": {"data": "aGk="}}]});
        let Event::Kinesis(recs) = classify(&ev).unwrap() else {
            panic!()
        };
        assert_eq!(recs.len(), 4);
        let id = recs[0].id.as_ref().unwrap();
        assert_eq!(
            (&*id.shard, id.sequence.as_str()),
            ("shardId-000000000002", "12")
        );
        assert_eq!(recs[0].data.as_deref(), Ok("aGk="));
        assert_eq!(recs[1].data.as_deref(), Ok("!!not base64"));
        assert!(recs[2].data.is_err());
        assert!(recs[3].id.is_err());
        assert_eq!(recs[0].arrival_seconds, Some(1_773_450_000.5));
        assert_eq!(recs[0].partition_key.as_deref(), Some("sales.client"));
        // Records of one shard share one allocation.
        assert!(Arc::ptr_eq(
            &recs[0].id.as_ref().unwrap().shard,
            &recs[1].id.as_ref().unwrap().shard
        ));
    }

    #[test]
    fn the_three_scheduled_shapes_are_force_flushes() {
        let shapes = [
            json!({"force_flush": true}),
            json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.events",
                   "time": "2026-03-14T01:00:00Z", "resources": [], "detail": {}}),
            json!({"version": "0", "detail-type": "Scheduled Event", "source": "aws.scheduler",
                   "detail": "{}"}),
        ];
        for s in shapes {
            assert!(matches!(classify(&s), Ok(Event::ForceFlush { .. })), "{s}");
        }
    }

    #[test]
    fn anything_else_is_a_clear_error() {
        for (payload, says) in [
            (json!([1]), "a JSON array"),
            (json!({"force_flush": false}), "force_flush"),
            (json!({"Records": [{"eventSource": "aws:sqs"}]}), "aws:sqs"),
            (json!({"Records": 3}), "not an array"),
            (
                json!({"source": "aws.events", "detail-type": "EC2 Instance State"}),
                "detail-type",
            ),
        ] {
            let err = classify(&payload).unwrap_err().to_string();
            assert!(err.contains(says), "{err}");
            assert!(err.contains("force_flush"), "{err}");
        }
    }

    #[test]
    fn sequence_numbers_compare_numerically() {
        use std::cmp::Ordering::*;
        assert_eq!(sequence_cmp("9", "10"), Less);
        assert_eq!(sequence_cmp("0010", "10"), Equal);
        let a = "49568167373333333333333333333333333333333333333333333333";
        let b = "49568167373333333333333333333333333333333333333333333334";
        assert_eq!(sequence_cmp(a, b), Less);
    }
}
