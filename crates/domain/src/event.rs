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
use crate::names::RecordId;

/// What arrived.
#[derive(Debug)]
pub enum Event<'a> {
    Kinesis(KinesisBatch<'a>),
    /// A scheduled or manual request to write every buffer now.
    ForceFlush {
        source: &'static str,
    },
    /// `{"sweep_windows": true}` (a second schedule): find the windows that
    /// hold spooled records no final invocation has written.
    SweepWindows,
    /// Records read back from a durable copy (the spool, or the stream by
    /// `redrive`), built by this crate, never parsed from a payload. They
    /// are written before the call returns and are not Lambda deliveries:
    /// the caller has left out those already in the lake, so the
    /// environment's delivery log (which takes a record at or below a
    /// lane's highest sequence number for a redelivery) must not drop them.
    /// Windows are recovered in any order.
    Recovered(Vec<KinesisRecord<'a>>),
}

/// A Kinesis invocation: its records and, when the event source mapping
/// has `TumblingWindowInSeconds`, the window they belong to.
#[derive(Debug)]
pub struct KinesisBatch<'a> {
    pub records: Vec<KinesisRecord<'a>>,
    pub window: Option<WindowInfo>,
}

/// The tumbling-window fields of a Kinesis event (Lambda developer guide,
/// "Implementing stateful Kinesis Data Streams processing in Lambda").
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WindowInfo {
    /// `window.start` / `window.end`, RFC 3339 as Lambda sends them.
    pub start: String,
    pub end: String,
    /// `state` as JSON text (`None` when absent or `null`).
    pub state: Option<String>,
    pub shard_id: Option<String>,
    pub stream_arn: Option<String>,
    pub is_final: bool,
    pub terminated_early: bool,
}

/// One record as the Kinesis API returns it (read back from the stream).
#[derive(Debug, Clone, PartialEq)]
pub struct StreamRecord {
    pub sequence: String,
    pub partition_key: String,
    pub data: Vec<u8>,
    pub arrival_seconds: f64,
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
         eventSource aws:kinesis), {{\"force_flush\": true}}, {{\"sweep_windows\": true}}, or an \
         EventBridge scheduled event"
    )]
    Unrecognised(String),
}

/// A well-formed Kinesis event, read in one pass (every leaf kept raw, so a
/// value of an unexpected type cannot fail it).
#[derive(Deserialize)]
struct FastEvent<'a> {
    #[serde(rename = "Records", borrow)]
    records: Vec<FastRecord<'a>>,
    #[serde(borrow, default)]
    window: Option<&'a RawValue>,
    #[serde(borrow, default)]
    state: Option<&'a RawValue>,
    #[serde(rename = "shardId", borrow, default)]
    shard_id: Option<&'a RawValue>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    event_source_arn: Option<&'a RawValue>,
    #[serde(rename = "isFinalInvokeForWindow", borrow, default)]
    is_final: Option<&'a RawValue>,
    #[serde(rename = "isWindowTerminatedEarly", borrow, default)]
    terminated_early: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct FastRecord<'a> {
    #[serde(rename = "eventSource", borrow, default)]
    event_source: Option<&'a RawValue>,
    #[serde(rename = "eventID", borrow, default)]
    event_id: Option<&'a RawValue>,
    #[serde(rename = "eventSourceARN", borrow, default)]
    event_source_arn: Option<&'a RawValue>,
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
    event_source_arn: Option<&'a RawValue>,
    data: Option<&'a RawValue>,
    sequence_number: Option<&'a RawValue>,
    partition_key: Option<&'a RawValue>,
    arrival: Option<&'a RawValue>,
}

/// Classifies an invocation payload (JSON text).
pub fn classify(payload: &str) -> Result<Event<'_>, EventError> {
    // Fast path: an ordinary Kinesis event in one pass over the text.
    if let Ok(fast) = serde_json::from_str::<FastEvent<'_>>(payload) {
        let window = read_window(WindowFields {
            window: fast.window,
            state: fast.state,
            shard_id: fast.shard_id,
            event_source_arn: fast.event_source_arn,
            is_final: fast.is_final,
            terminated_early: fast.terminated_early,
        })?;
        let raw = fast.records.into_iter().map(|r| RawRecord {
            event_source: r.event_source,
            event_id: r.event_id,
            event_source_arn: r.event_source_arn,
            data: r.kinesis.data,
            sequence_number: r.kinesis.sequence_number,
            partition_key: r.kinesis.partition_key,
            arrival: r.kinesis.arrival,
        });
        let records = read_records(raw, window.as_ref())?;
        return Ok(Event::Kinesis(KinesisBatch { records, window }));
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
                event_source_arn: record.get("eventSourceARN"),
                data: kinesis.get("data"),
                sequence_number: kinesis.get("sequenceNumber"),
                partition_key: kinesis.get("partitionKey"),
                arrival: kinesis.get("approximateArrivalTimestamp"),
            }
        });
        let window = read_window(WindowFields {
            window: top.get("window"),
            state: top.get("state"),
            shard_id: top.get("shardId"),
            event_source_arn: top.get("eventSourceARN"),
            is_final: top.get("isFinalInvokeForWindow"),
            terminated_early: top.get("isWindowTerminatedEarly"),
        })?;
        let records = read_records(raw, window.as_ref())?;
        return Ok(Event::Kinesis(KinesisBatch { records, window }));
    }
    if top.get("force_flush").map(RawValue::get) == Some("true") {
        return Ok(Event::ForceFlush {
            source: "force_flush",
        });
    }
    if top.get("sweep_windows").map(RawValue::get) == Some("true") {
        return Ok(Event::SweepWindows);
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

/// The top-level tumbling-window members, still raw.
struct WindowFields<'a> {
    window: Option<&'a RawValue>,
    state: Option<&'a RawValue>,
    shard_id: Option<&'a RawValue>,
    event_source_arn: Option<&'a RawValue>,
    is_final: Option<&'a RawValue>,
    terminated_early: Option<&'a RawValue>,
}

#[derive(Deserialize)]
struct WindowSpan {
    start: String,
    end: String,
}

/// `Some` when the event carries a `window` (a tumbling-window invocation).
fn read_window(f: WindowFields<'_>) -> Result<Option<WindowInfo>, EventError> {
    let Some(window) = f.window.filter(|w| w.get() != "null") else {
        return Ok(None);
    };
    let span: WindowSpan = serde_json::from_str(window.get())
        .map_err(|_| EventError::Unrecognised("a window without start and end strings".into()))?;
    let flag = |v: Option<&RawValue>| v.is_some_and(|v| v.get() == "true");
    Ok(Some(WindowInfo {
        start: span.start,
        end: span.end,
        state: f
            .state
            .filter(|s| s.get() != "null")
            .map(|s| s.get().to_string()),
        shard_id: f.shard_id.and_then(json::as_str).map(|s| s.into_owned()),
        stream_arn: f
            .event_source_arn
            .and_then(json::as_str)
            .map(|s| s.into_owned()),
        is_final: flag(f.is_final),
        terminated_early: flag(f.terminated_early),
    }))
}

fn read_records<'a>(
    records: impl ExactSizeIterator<Item = RawRecord<'a>>,
    window: Option<&WindowInfo>,
) -> Result<Vec<KinesisRecord<'a>>, EventError> {
    // One Arc per shard and stream, shared by the records' ids.
    let mut shards: Vec<Arc<str>> = Vec::new();
    let mut streams: Vec<Arc<str>> = Vec::new();
    let window_stream = window.and_then(|w| w.stream_arn.as_deref());
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
                let arn = record.event_source_arn.and_then(json::as_str);
                let stream = arn.as_deref().or(window_stream).unwrap_or("");
                Ok(RecordId {
                    stream: interned(&mut streams, stream),
                    shard: interned(&mut shards, shard),
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

fn interned(pool: &mut Vec<Arc<str>>, s: &str) -> Arc<str> {
    match pool.iter().find(|p| p.as_ref() == s) {
        Some(p) => p.clone(),
        None => {
            let p: Arc<str> = Arc::from(s);
            pool.push(p.clone());
            p
        }
    }
}

/// The Kinesis event Lambda sends for `records` of one shard, with the
/// tumbling-window fields when `window` is given: the inverse of
/// [`classify`], the one place such JSON is written (`replay` input files,
/// tests, benches).
pub fn event_json(
    stream_arn: &str,
    shard: &str,
    records: &[StreamRecord],
    window: Option<&WindowInfo>,
) -> String {
    use base64::Engine as _;
    let region = stream_arn.split(':').nth(3).unwrap_or("");
    let records: Vec<serde_json::Value> = records
        .iter()
        .map(|r| {
            serde_json::json!({
                "kinesis": {
                    "kinesisSchemaVersion": "1.0",
                    "partitionKey": r.partition_key,
                    "sequenceNumber": r.sequence,
                    "data": base64::engine::general_purpose::STANDARD.encode(&r.data),
                    "approximateArrivalTimestamp": r.arrival_seconds,
                },
                "eventSource": "aws:kinesis",
                "eventVersion": "1.0",
                "eventID": format!("{shard}:{}", r.sequence),
                "eventName": "aws:kinesis:record",
                "eventSourceARN": stream_arn,
                "awsRegion": region,
            })
        })
        .collect();
    let mut event = serde_json::json!({ "Records": records });
    if let Some(w) = window {
        let state = w
            .state
            .as_deref()
            .and_then(|s| serde_json::from_str::<serde_json::Value>(s).ok());
        event["window"] = serde_json::json!({"start": w.start, "end": w.end});
        event["state"] = state.unwrap_or(serde_json::Value::Null);
        event["shardId"] = serde_json::json!(w.shard_id.as_deref().unwrap_or(shard));
        event["eventSourceARN"] = serde_json::json!(w.stream_arn.as_deref().unwrap_or(stream_arn));
        event["isFinalInvokeForWindow"] = w.is_final.into();
        event["isWindowTerminatedEarly"] = w.terminated_early.into();
    }
    event.to_string()
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

    #[test]
    fn event_json_is_what_classify_reads() {
        let arn = "arn:aws:kinesis:eu-west-1:123456789012:stream/dms";
        let records = [
            StreamRecord {
                sequence: "49590000000000000000000000000000000000000000000000000001".into(),
                partition_key: "pk\"1".into(),
                data: b"{\"data\": {\"id\": 1}}".to_vec(),
                arrival_seconds: 1_773_450_000.5,
            },
            StreamRecord {
                sequence: "49590000000000000000000000000000000000000000000000000002".into(),
                partition_key: "pk".into(),
                data: vec![0xff, 0x00],
                arrival_seconds: 1_773_450_001.0,
            },
        ];
        let text = event_json(arn, "shardId-000000000001", &records, None);
        let Ok(Event::Kinesis(batch)) = classify(&text) else {
            panic!("not a Kinesis event: {text}");
        };
        assert!(batch.window.is_none());
        assert_eq!(batch.records.len(), 2);
        for (got, want) in batch.records.iter().zip(&records) {
            let id = got.id.as_ref().unwrap();
            assert_eq!((&*id.stream, &*id.shard), (arn, "shardId-000000000001"));
            assert_eq!(id.sequence, want.sequence);
            assert_eq!(
                got.partition_key.as_deref(),
                Some(want.partition_key.as_str())
            );
            assert_eq!(got.arrival_seconds, Some(want.arrival_seconds));
            use base64::Engine as _;
            let data = base64::engine::general_purpose::STANDARD
                .decode(got.data.as_deref().unwrap())
                .unwrap();
            assert_eq!(data, want.data);
        }
        let window = WindowInfo {
            start: "2026-03-14T01:00:00Z".into(),
            end: "2026-03-14T01:02:00Z".into(),
            state: Some(r#"{"cdc-batcher":"x"}"#.into()),
            shard_id: Some("shardId-000000000001".into()),
            stream_arn: Some(arn.into()),
            is_final: true,
            terminated_early: false,
        };
        let text = event_json(arn, "shardId-000000000001", &[], Some(&window));
        let Ok(Event::Kinesis(batch)) = classify(&text) else {
            panic!("not a Kinesis event: {text}");
        };
        assert_eq!(batch.window, Some(window));
    }

    fn classify_value(v: &Value) -> Result<usize, EventError> {
        let text = v.to_string();
        classify(&text).map(|e| match e {
            Event::Kinesis(b) => b.records.len(),
            Event::ForceFlush { .. } => usize::MAX,
            Event::SweepWindows => usize::MAX - 1,
            Event::Recovered(_) => unreachable!("never parsed from a payload"),
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
        let Event::Kinesis(KinesisBatch { records: recs, .. }) = classify(&text).unwrap() else {
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
        let Event::Kinesis(KinesisBatch { records: recs, .. }) = classify(&text).unwrap() else {
            panic!()
        };
        assert_eq!(recs.len(), 2);
        assert_eq!(recs[0].data.as_deref(), Ok("aGk="));
        assert!(recs[1].data.is_err());
    }

    #[test]
    fn tumbling_window_fields_are_read() {
        let arn = "arn:aws:kinesis:us-east-1:123456789012:stream/dms";
        let mut rec = record("12", json!("aGk="));
        rec["eventSourceARN"] = json!(arn);
        let ev = json!({"Records": [rec], "window": {"start": "2026-03-14T01:00:00Z",
            "end": "2026-03-14T01:02:00Z"}, "state": {"cdc-batcher": "x"},
            "shardId": "shardId-000000000002", "eventSourceARN": arn,
            "isFinalInvokeForWindow": false, "isWindowTerminatedEarly": false});
        let text = ev.to_string();
        let Event::Kinesis(batch) = classify(&text).unwrap() else {
            panic!()
        };
        let w = batch.window.unwrap();
        assert_eq!(w.start, "2026-03-14T01:00:00Z");
        assert_eq!(w.end, "2026-03-14T01:02:00Z");
        assert_eq!(w.state.as_deref(), Some(r#"{"cdc-batcher":"x"}"#));
        assert_eq!(w.shard_id.as_deref(), Some("shardId-000000000002"));
        assert_eq!(w.stream_arn.as_deref(), Some(arn));
        assert!(!w.is_final && !w.terminated_early);
        assert_eq!(&*batch.records[0].id.as_ref().unwrap().stream, arn);

        // The final invocation: no records, the flags set, no state.
        let fin = json!({"Records": [], "window": {"start": "a", "end": "b"},
            "shardId": "s", "isFinalInvokeForWindow": true, "isWindowTerminatedEarly": true});
        let text = fin.to_string();
        let Event::Kinesis(batch) = classify(&text).unwrap() else {
            panic!()
        };
        let w = batch.window.unwrap();
        assert!(w.is_final && w.terminated_early && w.state.is_none());
        // Without `window` it is a plain batch.
        let text = json!({"Records": [record("1", json!("aGk="))]}).to_string();
        let Event::Kinesis(batch) = classify(&text).unwrap() else {
            panic!()
        };
        assert!(batch.window.is_none());
        assert_eq!(&*batch.records[0].id.as_ref().unwrap().stream, "");
        // A window that is not one is an error, not a plain batch.
        let text = json!({"Records": [], "window": 5}).to_string();
        assert!(classify(&text).is_err());
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
    fn a_sweep_is_asked_for_by_name() {
        assert_eq!(
            classify_value(&json!({"sweep_windows": true})),
            Ok(usize::MAX - 1)
        );
        let err = classify_value(&json!({"sweep_windows": 1})).unwrap_err();
        assert!(err.to_string().contains("sweep_windows"), "{err}");
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
