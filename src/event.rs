//! Telling the invocation payloads apart: a Kinesis batch or a force flush.
//!
//! The payload is read as raw JSON and every Kinesis record on its own:
//! `aws_lambda_events`' typed `KinesisEvent` decodes base64 while
//! deserialising, so one bad record would fail the whole batch. No JSON DOM
//! is built: record fields borrow from the payload text.

use std::borrow::Cow;
use std::sync::Arc;

use serde::Deserialize;
use serde_json::value::RawValue;

use crate::json::{self, Fields};
use crate::layout::RecordId;

/// What arrived.
#[derive(Debug)]
pub enum Event<'a> {
    Kinesis(Vec<KinesisRecord<'a>>),
    /// A scheduled or manual request to write every buffer now.
    ForceFlush {
        source: &'static str,
    },
}

/// One Kinesis record, read leniently: anything missing is kept as an error
/// so the record can be quarantined rather than failing the batch.
#[derive(Debug, Clone)]
pub struct KinesisRecord<'a> {
    /// Shard and sequence number; an error when the record lacks them.
    pub id: Result<RecordId, String>,
    /// `kinesis.data` exactly as it arrived (standard base64 of the payload).
    pub data: Result<Cow<'a, str>, String>,
    pub partition_key: Option<Cow<'a, str>>,
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

/// A well-formed Kinesis event, read in one pass (every leaf kept raw, so a
/// value of an unexpected type cannot fail it).
#[derive(Deserialize)]
struct FastEvent<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<FastRecord<'a>>,
}

#[derive(Deserialize)]
struct FastRecord<'a> {
    #[serde(rename = "eventSource", borrow, default)]
    event_source: Option<&'a RawValue>,
    #[serde(rename = "eventID", borrow, default)]
    event_id: Option<&'a RawValue>,
    #[serde(borrow)]
    kinesis: FastKinesis<'a>,
}

#[derive(Deserialize)]
struct FastKinesis<'a> {
    #[serde(borrow, default)]
    data: Option<&'a RawValue>,
    #[serde(rename = "sequenceNumber", borrow, default)]
    sequence_number: Option<&'a RawValue>,
    #[serde(rename = "partitionKey", borrow, default)]
    partition_key: Option<&'a RawValue>,
    #[serde(rename = "approximateArrivalTimestamp", borrow, default)]
    arrival: Option<&'a RawValue>,
}

/// The fields of one record that matter, still raw.
struct RawRecord<'a> {
    event_source: Option<&'a RawValue>,
    event_id: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    sequence_number: Option<&'a RawValue>,
    partition_key: Option<&'a RawValue>,
    arrival: Option<&'a RawValue>,
}

/// Classifies an invocation payload (JSON text).
pub fn classify(payload: &str) -> Result<Event<'_>, EventError> {
    // Fast path: an ordinary Kinesis event in one pass over the text.
    if let Ok(fast) = serde_json::from_str::<FastEvent<'_>>(payload) {
        let raw = fast.records.into_iter().map(|r| RawRecord {
            event_source: r.event_source,
            event_id: r.event_id,
            data: r.kinesis.data,
            sequence_number: r.kinesis.sequence_number,
            partition_key: r.kinesis.partition_key,
            arrival: r.kinesis.arrival,
        });
        return read_records(raw).map(Event::Kinesis);
    }
    let top: Fields<'_> = serde_json::from_str(payload).map_err(|e| {
        EventError::Unrecognised(match e.classify() {
            serde_json::error::Category::Data => format!("a JSON {}", json::kind(payload)),
            _ => format!("not valid JSON: {e}"),
        })
    })?;
    if let Some(records) = top.get("Records") {
        let records: Vec<&RawValue> = serde_json::from_str(records.get())
            .map_err(|_| EventError::Unrecognised("Records is not an array".into()))?;
        // Lenient path: records that are not objects, or whose `kinesis` is not.
        let raw = records.into_iter().map(|r| {
            let record: Fields<'_> = serde_json::from_str(r.get()).unwrap_or(Fields(Vec::new()));
            let kinesis: Fields<'_> = record
                .get("kinesis")
                .and_then(|k| serde_json::from_str(k.get()).ok())
                .unwrap_or(Fields(Vec::new()));
            RawRecord {
                event_source: record.get("eventSource"),
                event_id: record.get("eventID"),
                data: kinesis.get("data"),
                sequence_number: kinesis.get("sequenceNumber"),
                partition_key: kinesis.get("partitionKey"),
                arrival: kinesis.get("approximateArrivalTimestamp"),
            }
        });
        return read_records(raw).map(Event::Kinesis);
    }
    if top.get("force_flush").map(RawValue::get) == Some("true") {
        return Ok(Event::ForceFlush {
            source: "force_flush",
        });
    }
    let text = |name: &str| top.get(name).and_then(json::as_str);
    match (text("source").as_deref(), text("detail-type").as_deref()) {
        (Some("aws.events"), Some("Scheduled Event")) => Ok(Event::ForceFlush {
            source: "aws.events",
        }),
        (Some("aws.scheduler"), _) => Ok(Event::ForceFlush {
            source: "aws.scheduler",
        }),
        _ => {
            let mut keys: Vec<&str> = top.0.iter().map(|(k, _)| k.as_ref()).take(8).collect();
            keys.sort_unstable();
            Err(EventError::Unrecognised(format!(
                "an object with keys [{}]",
                keys.join(", ")
            )))
        }
    }
}

fn read_records<'a>(
    records: impl ExactSizeIterator<Item = RawRecord<'a>>,
) -> Result<Vec<KinesisRecord<'a>>, EventError> {
    // One Arc per shard, shared by its records' ids.
    let mut shards: Vec<Arc<str>> = Vec::new();
    let mut out = Vec::with_capacity(records.len());
    for record in records {
        let source = record.event_source.and_then(json::as_str);
        if let Some(other) = source.filter(|s| s != "aws:kinesis") {
            return Err(EventError::Unrecognised(format!(
                "records from {other:?}, not aws:kinesis"
            )));
        }
        let sequence = record.sequence_number.and_then(json::as_str);
        let event_id = record.event_id.and_then(json::as_str);
        let shard = event_id
            .as_deref()
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
                    sequence: seq.into_owned(),
                })
            }
            (_, None) => Err("record has no kinesis.sequenceNumber".to_string()),
            _ => Err("record has no eventID of the form shardId-…:sequence".to_string()),
        };
        let data = match record.data {
            Some(v) => {
                json::as_str(v).ok_or_else(|| format!("kinesis.data is a {}", json::kind(v.get())))
            }
            None => Err("record has no kinesis.data".to_string()),
        };
        out.push(KinesisRecord {
            id,
            data,
            partition_key: record.partition_key.and_then(json::as_str),
            arrival_seconds: record.arrival.and_then(|v| v.get().parse::<f64>().ok()),
        });
    }
    Ok(out)
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
    use serde_json::{json, Value};

    fn classify_value(v: &Value) -> Result<usize, EventError> {
        let text = v.to_string();
        classify(&text).map(|e| match e {
            Event::Kinesis(r) => r.len(),
            Event::ForceFlush { .. } => usize::MAX,
        })
    }

    fn record(seq: &str, data: Value) -> Value {
        json!({"kinesis": {"kinesisSchemaVersion": "1.0", "partitionKey": "sales.client",
            "sequenceNumber": seq, "data": data, "approximateArrivalTimestamp": 1773450000.5},
            "eventSource": "aws:kinesis", "eventID": format!("shardId-000000000002:{seq}")})
    }

    #[test]
    fn kinesis_records_are_read_one_by_one() {
        let ev = json!({"Records": [record("12", json!("aGk=")), record("13", json!("!!not base64")),
            record("14", json!(5)), {"eventSource": "aws:kinesis", "kinesis": {"data": "aGk="}}]});
        let text = ev.to_string();
        let Event::Kinesis(recs) = classify(&text).unwrap() else {
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
    fn odd_records_take_the_lenient_path_and_are_kept() {
        // `kinesis` is not an object in one record: the one-pass parse fails,
        // the record-by-record one keeps both records.
        let ev = json!({"Records": [record("12", json!("aGk=")),
            {"eventSource": "aws:kinesis", "eventID": "shardId-1:13", "kinesis": "oops"}]});
        let text = ev.to_string();
        let Event::Kinesis(recs) = classify(&text).unwrap() else {
            panic!()
        };
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].data.as_deref(), Ok("aGk="));
        assert!(recs[1].data.is_err());
    }

    #[test]
    fn invalid_json_is_named_as_such() {
        let err = classify("{\"Records\": [").unwrap_err().to_string();
        assert!(err.contains("not valid JSON"), "{err}");
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
            assert_eq!(classify_value(&s), Ok(usize::MAX), "{s}");
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
            let err = classify_value(&payload).unwrap_err().to_string();
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
