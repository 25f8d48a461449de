//! What each Kinesis lane has already delivered to this container, so that a
//! record Kinesis sends again is not buffered (or written) twice.
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

/// Lanes remembered at most (full loads use the primary key as partition key).
const MAX_LANES: usize = 50_000;

#[derive(Debug, Default)]
pub struct DeliveryLog {
    lanes: HashMap<LaneKey, Lane>,
    tick: u64,
}

#[derive(Debug, Hash, PartialEq, Eq)]
struct LaneKey {
    shard: Arc<str>,
    partition_key: String,
}

/// A lane looked up without allocating; hashes like [`LaneKey`].
#[derive(Hash)]
struct LaneRef<'a> {
    shard: &'a str,
    partition_key: &'a str,
}

impl Equivalent<LaneKey> for LaneRef<'_> {
    fn equivalent(&self, key: &LaneKey) -> bool {
        *self.shard == *key.shard && self.partition_key == key.partition_key
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
    pub fn is_duplicate(&self, shard: &Arc<str>, partition_key: &str, sequence: &str) -> bool {
        self.lanes
            .get(&LaneRef {
                shard,
                partition_key,
            })
            .is_some_and(|lane| sequence_cmp(sequence, &lane.highest).is_le())
    }

    /// Records that `sequence` is now durable or held.
    pub fn record(&mut self, shard: &Arc<str>, partition_key: &str, sequence: &str) {
        self.tick += 1;
        let tick = self.tick;
        let lane_ref = LaneRef {
            shard,
            partition_key,
        };
        let lane = match self.lanes.entry_ref(&lane_ref) {
            EntryRef::Occupied(e) => e.into_mut(),
            EntryRef::Vacant(e) => e.insert_with_key(
                LaneKey {
                    shard: shard.clone(),
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

    #[test]
    fn at_or_below_the_highest_sequence_is_a_duplicate() {
        let shard: Arc<str> = Arc::from("shardId-0");
        let mut log = DeliveryLog::new();
        assert!(!log.is_duplicate(&shard, "k", "100"));
        log.record(&shard, "k", "100");
        log.record(&shard, "k", "99");
        assert!(log.is_duplicate(&shard, "k", "99"));
        assert!(log.is_duplicate(&shard, "k", "100"));
        assert!(!log.is_duplicate(&shard, "k", "101"));
        // Sequence numbers compare as numbers, not text.
        assert!(!log.is_duplicate(&shard, "k", "1000"));
    }

    #[test]
    fn lanes_are_independent() {
        let (a, b): (Arc<str>, Arc<str>) = (Arc::from("shardId-0"), Arc::from("shardId-1"));
        let mut log = DeliveryLog::new();
        log.record(&a, "k", "100");
        assert!(!log.is_duplicate(&b, "k", "50"), "another shard");
        assert!(!log.is_duplicate(&a, "j", "50"), "another partition key");
    }

    #[test]
    fn the_number_of_lanes_is_bounded_and_recent_lanes_survive() {
        let shard: Arc<str> = Arc::from("s");
        let mut log = DeliveryLog::new();
        for i in 0..(MAX_LANES + 10) {
            log.record(&shard, &format!("pk{i}"), "5");
        }
        assert!(log.lanes() <= MAX_LANES);
        let last = format!("pk{}", MAX_LANES + 9);
        assert!(log.is_duplicate(&shard, &last, "5"));
        assert!(
            !log.is_duplicate(&shard, "pk0", "5"),
            "oldest lane forgotten"
        );
    }
}
