//! Reading a shard's records back from the stream: for a redrive of a
//! failed batch, and for a window whose spool object is lost (deleted,
//! expired by the lifecycle rule during a long stall, or damaged).
//!
//! `GetShardIterator` (AT_SEQUENCE_NUMBER or AT_TIMESTAMP) then `GetRecords`
//! pages until a record past the range's end. Kinesis removes records only
//! from a shard's old end, once they pass the stream's retention period, so
//! a range whose first record is no longer returned has lost its beginning
//! and nothing else.

use std::time::Duration;

use futures_util::future::BoxFuture;

use domain::event::StreamRecord;

/// Where a read starts.
#[derive(Debug, Clone, PartialEq)]
pub enum ReadFrom {
    /// At this record (which existed when it was noted).
    Sequence(String),
    /// At the first record that arrived at or after this time (epoch
    /// seconds): for a window whose first sequence number was not recorded.
    Time(f64),
}

/// What reading a range found.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct ShardRange {
    /// The records from the start to the range's last, in sequence order.
    pub records: Vec<StreamRecord>,
    /// The record the read began with, when it is not the one asked for
    /// (`ReadFrom::Sequence`): the records before it have expired.
    pub first_available: Option<String>,
}

#[derive(Debug, Clone, PartialEq, thiserror::Error)]
pub enum ReadError {
    /// The stream or shard no longer exists: nothing of it can be read.
    #[error("stream or shard gone: {0}")]
    Gone(String),
    /// An outage, throttling, or the range not read to its end in time:
    /// try again later.
    #[error("stream not read: {0}")]
    Unavailable(String),
}

/// Reads a range of one shard.
pub trait ShardReader: Send + Sync {
    /// The records of `shard` from `from` to `last` (inclusive).
    fn read<'a>(
        &'a self,
        stream_arn: &'a str,
        shard: &'a str,
        from: &'a ReadFrom,
        last: &'a str,
    ) -> BoxFuture<'a, Result<ShardRange, ReadError>>;

    /// How long the stream keeps a record (its retention period, as it is
    /// now): past it, no record can be read or delivered again. A reader
    /// that cannot tell answers an error, and nothing is decided on it.
    fn retention<'a>(&'a self, stream_arn: &'a str) -> BoxFuture<'a, Result<Duration, ReadError>> {
        Box::pin(async move {
            Err(ReadError::Unavailable(format!(
                "{stream_arn}: this reader does not know the retention"
            )))
        })
    }
}

/// Pages a read may take before it counts as not finished (each page is
/// at most 10,000 records or 10 MB; Kinesis allows five reads a second).
const MAX_PAGES: usize = 200;

/// The Kinesis API.
pub struct KinesisShardReader {
    client: aws_sdk_kinesis::Client,
}

impl KinesisShardReader {
    pub fn new(client: aws_sdk_kinesis::Client) -> Self {
        KinesisShardReader { client }
    }

    pub async fn from_env() -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        KinesisShardReader::new(aws_sdk_kinesis::Client::new(&shared))
    }

    async fn read_range(
        &self,
        stream_arn: &str,
        shard: &str,
        from: &ReadFrom,
        last: &str,
    ) -> Result<ShardRange, ReadError> {
        use aws_sdk_kinesis::types::ShardIteratorType;
        let request = self
            .client
            .get_shard_iterator()
            .stream_arn(stream_arn)
            .shard_id(shard);
        let request = match from {
            ReadFrom::Sequence(seq) => request
                .shard_iterator_type(ShardIteratorType::AtSequenceNumber)
                .starting_sequence_number(seq),
            ReadFrom::Time(secs) => request
                .shard_iterator_type(ShardIteratorType::AtTimestamp)
                .timestamp(aws_sdk_kinesis::primitives::DateTime::from_secs_f64(*secs)),
        };
        let iterator = request
            .send()
            .await
            .map_err(|e| read_error("GetShardIterator", &e))?;
        let mut next = iterator.shard_iterator().map(str::to_string);
        let mut range = ShardRange::default();
        for _ in 0..MAX_PAGES {
            let Some(it) = next.take() else {
                // A closed shard read to its end.
                break;
            };
            let page = self
                .client
                .get_records()
                .stream_arn(stream_arn)
                .shard_iterator(it)
                .limit(10_000)
                .send()
                .await
                .map_err(|e| read_error("GetRecords", &e))?;
            let records: Vec<StreamRecord> = page
                .records()
                .iter()
                .map(|r| StreamRecord {
                    sequence: r.sequence_number().to_string(),
                    partition_key: r.partition_key().unwrap_or_default().to_string(),
                    data: r.data().as_ref().to_vec(),
                    arrival_seconds: r
                        .approximate_arrival_timestamp()
                        .map_or(0.0, |t| t.as_secs_f64()),
                })
                .collect();
            let at_tip = page.millis_behind_latest() == Some(0);
            if take_page(&mut range, from, last, records) {
                return Ok(range);
            }
            if at_tip && page.records().is_empty() {
                break;
            }
            next = page.next_shard_iterator().map(str::to_string);
        }
        finish_read(range, shard, last)
    }
}

/// A stream or shard that is not there is gone; anything else may pass.
fn read_error<E>(call: &str, e: &aws_sdk_kinesis::error::SdkError<E>) -> ReadError
where
    E: aws_sdk_kinesis::error::ProvideErrorMetadata + std::error::Error + 'static,
{
    use aws_sdk_kinesis::error::{DisplayErrorContext, ProvideErrorMetadata as _};
    let message = format!("{call}: {}", DisplayErrorContext(e));
    match e.code() {
        Some("ResourceNotFoundException") => ReadError::Gone(message),
        _ => ReadError::Unavailable(message),
    }
}

/// Adds a page's records of the range to `range`; true once a record past
/// `last` (or `last` itself) was seen. Pure: shared by every reader.
pub fn take_page(
    range: &mut ShardRange,
    from: &ReadFrom,
    last: &str,
    page: Vec<StreamRecord>,
) -> bool {
    use domain::event::sequence_cmp;
    for r in page {
        if sequence_cmp(&r.sequence, last).is_gt() {
            return true;
        }
        if range.records.is_empty() {
            if let ReadFrom::Sequence(start) = from {
                if r.sequence != *start {
                    range.first_available = Some(r.sequence.clone());
                }
            }
        }
        let done = r.sequence == last;
        range.records.push(r);
        if done {
            return true;
        }
    }
    false
}

/// A read that stopped (the shard's tip or end, or the page limit) before
/// it saw the range's last record: with nothing read, the whole range has
/// expired; with records read, it did not get to the end (retry), since
/// records expire only from a shard's old end.
pub fn finish_read(range: ShardRange, shard: &str, last: &str) -> Result<ShardRange, ReadError> {
    if range.records.is_empty() {
        return Ok(range);
    }
    Err(ReadError::Unavailable(format!(
        "{shard}: not read to {last} (stopped at {})",
        range.records.last().map_or("", |r| r.sequence.as_str())
    )))
}

impl ShardReader for KinesisShardReader {
    fn read<'a>(
        &'a self,
        stream_arn: &'a str,
        shard: &'a str,
        from: &'a ReadFrom,
        last: &'a str,
    ) -> BoxFuture<'a, Result<ShardRange, ReadError>> {
        Box::pin(self.read_range(stream_arn, shard, from, last))
    }

    fn retention<'a>(&'a self, stream_arn: &'a str) -> BoxFuture<'a, Result<Duration, ReadError>> {
        Box::pin(async move {
            let summary = self
                .client
                .describe_stream_summary()
                .stream_arn(stream_arn)
                .send()
                .await
                .map_err(|e| read_error("DescribeStreamSummary", &e))?;
            let hours = summary
                .stream_description_summary()
                .map(|d| d.retention_period_hours())
                .ok_or_else(|| {
                    ReadError::Unavailable(format!("{stream_arn}: no stream description"))
                })?;
            // Kinesis accepts 24 to 8,760 hours; anything else is not trusted.
            if !(24..=8760).contains(&hours) {
                return Err(ReadError::Unavailable(format!(
                    "{stream_arn}: retention of {hours} hours"
                )));
            }
            Ok(Duration::from_secs(hours as u64 * 3600))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn rec(seq: &str) -> StreamRecord {
        StreamRecord {
            sequence: seq.into(),
            partition_key: "k".into(),
            data: vec![],
            arrival_seconds: 0.0,
        }
    }

    #[test]
    fn a_range_ends_at_its_last_record_and_notes_an_expired_start() {
        let from = ReadFrom::Sequence("10".into());
        let mut range = ShardRange::default();
        assert!(!take_page(
            &mut range,
            &from,
            "30",
            vec![rec("10"), rec("20")]
        ));
        assert!(take_page(
            &mut range,
            &from,
            "30",
            vec![rec("30"), rec("40")]
        ));
        let seqs: Vec<&str> = range.records.iter().map(|r| r.sequence.as_str()).collect();
        assert_eq!(seqs, ["10", "20", "30"]);
        assert_eq!(range.first_available, None);

        let mut trimmed = ShardRange::default();
        assert!(take_page(
            &mut trimmed,
            &from,
            "30",
            vec![rec("25"), rec("31")]
        ));
        assert_eq!(trimmed.first_available.as_deref(), Some("25"));
        assert_eq!(trimmed.records.len(), 1);
    }

    #[test]
    fn a_read_that_stops_short_of_its_end_is_not_a_whole_range() {
        let part = ShardRange {
            records: vec![rec("10"), rec("20")],
            first_available: None,
        };
        assert!(matches!(
            finish_read(part, "shardId-0", "30"),
            Err(ReadError::Unavailable(_))
        ));
        // Nothing read at all: the range has expired as a whole.
        assert_eq!(
            finish_read(ShardRange::default(), "shardId-0", "30"),
            Ok(ShardRange::default())
        );
    }
}
