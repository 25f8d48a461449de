//! What each Kinesis lane has already delivered to this container, so that a
//! record Kinesis sends again is not buffered (or written) twice. A lane is a
//! stream, a shard and a partition key: one function can read several streams,
//! whose shard ids repeat.
//!
//! Kinesis delivers a shard's records in sequence order per partition key
//! (also with a `ParallelizationFactor` above 1), so for each lane — shard
//! and partition key — a record at or below the highest sequence number seen
//! is a redelivery. Only records that are durable or held in memory are
//! recorded, so skipping them never loses a row. The number of lanes is
//! bounded; forgetting a lane only means its next redelivery is processed
//! again (at-least-once), never that a row is dropped.

use std::sync::Arc;

use hashbrown::hash_map::EntryRef;
use hashbrown::{Equivalent, HashMap};

use crate::event::sequence_cmp;
use crate::names::RecordId;

/// Lanes remembered at most (full loads use the primary key as partition key).
const MAX_LANES: usize = 50_000;

#[derive(Debug, Default)]
pub struct DeliveryLog {
    lanes: HashMap<LaneKey, Lane>,
    tick: u64,
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct LaneKey {
    stream: Arc<str>,
    shard: Arc<str>,
    partition_key: String,
}

/// A lane looked up without allocating; hashes like [`LaneKey`].
#[derive(Hash)]
struct LaneRef<'a> {
    stream: &'a str,
    shard: &'a str,
    partition_key: &'a str,
}

impl Equivalent<LaneKey> for LaneRef<'_> {
    fn equivalent(&self, key: &LaneKey) -> bool {
        *self.stream == *key.stream
            && *self.shard == *key.shard
            && self.partition_key == key.partition_key
    }
}

#[derive(Debug)]
struct Lane {
    highest: String,
    used: u64,
}

impl DeliveryLog {
    pub fn new() -> Self {
        Self::default()
    }

    /// Whether `sequence` was already delivered on this lane.
    pub fn is_duplicate(&self, id: &RecordId, partition_key: &str) -> bool {
        self.lanes
            .get(&LaneRef {
                stream: &id.stream,
                shard: &id.shard,
                partition_key,
            })
            .is_some_and(|lane| sequence_cmp(&id.sequence, &lane.highest).is_le())
    }

    /// Records that the record `id` is now durable or held.
    pub fn record(&mut self, id: &RecordId, partition_key: &str) {
        self.tick += 1;
        let tick = self.tick;
        let sequence = id.sequence.as_str();
        let lane_ref = LaneRef {
            stream: &id.stream,
            shard: &id.shard,
            partition_key,
        };
        let lane = match self.lanes.entry_ref(&lane_ref) {
            EntryRef::Occupied(e) => e.into_mut(),
            EntryRef::Vacant(e) => e.insert_with_key(
                LaneKey {
                    stream: id.stream.clone(),
                    shard: id.shard.clone(),
                    partition_key: partition_key.to_string(),
                },
                Lane {
                    highest: String::new(),
                    used: tick,
                },
            ),
        };
        if sequence_cmp(sequence, &lane.highest).is_gt() {
            lane.highest.clear();
            lane.highest.push_str(sequence);
        }
        lane.used = tick;
        if self.lanes.len() > MAX_LANES {
            // Forget the least recently used half.
            let mut ticks: Vec<u64> = self.lanes.values().map(|l| l.used).collect();
            let (_, median, _) = ticks.select_nth_unstable(MAX_LANES / 2);
            let cutoff = *median;
            self.lanes.retain(|_, l| l.used > cutoff);
        }
    }

    pub fn lanes(&self) -> usize {
        self.lanes.len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(stream: &str, shard: &str, seq: &str) -> RecordId {
        RecordId {
            stream: Arc::from(stream),
            shard: Arc::from(shard),
            sequence: seq.to_string(),
        }
    }

    #[test]
    fn at_or_below_the_highest_sequence_is_a_duplicate() {
        let at = |seq| id("arn:s", "shardId-0", seq);
        let mut log = DeliveryLog::new();
        assert!(!log.is_duplicate(&at("100"), "k"));
        log.record(&at("100"), "k");
        log.record(&at("99"), "k");
        assert!(log.is_duplicate(&at("99"), "k"));
        assert!(log.is_duplicate(&at("100"), "k"));
        assert!(!log.is_duplicate(&at("101"), "k"));
        // Sequence numbers compare as numbers, not text.
        assert!(!log.is_duplicate(&at("1000"), "k"));
    }

    #[test]
    fn lanes_are_independent() {
        let mut log = DeliveryLog::new();
        log.record(&id("arn:a", "shardId-0", "100"), "k");
        assert!(
            !log.is_duplicate(&id("arn:a", "shardId-1", "50"), "k"),
            "another shard"
        );
        assert!(
            !log.is_duplicate(&id("arn:a", "shardId-0", "50"), "j"),
            "another partition key"
        );
        // Two streams share shard ids and partition keys, not records.
        assert!(
            !log.is_duplicate(&id("arn:b", "shardId-0", "50"), "k"),
            "another stream"
        );
        assert!(log.is_duplicate(&id("arn:a", "shardId-0", "50"), "k"));
    }

    #[test]
    fn the_number_of_lanes_is_bounded_and_recent_lanes_survive() {
        let five = id("arn:a", "s", "5");
        let mut log = DeliveryLog::new();
        for i in 0..(MAX_LANES + 10) {
            log.record(&five, &format!("pk{i}"));
        }
        assert!(log.lanes() <= MAX_LANES);
        let last = format!("pk{}", MAX_LANES + 9);
        assert!(log.is_duplicate(&five, &last));
        assert!(!log.is_duplicate(&five, "pk0"), "oldest lane forgotten");
    }
}
