//! What a plain batch (not a tumbling window's) may acknowledge (pure).
//!
//! Kinesis checkpoints a shard up to the sequence number a batch reports
//! in `batchItemFailures`: with `ReportBatchItemFailures`, Lambda retries
//! the batch from the lowest reported sequence number, and every record
//! below it counts as processed (Lambda developer guide, "Configuring
//! partial batch response with Kinesis Data Streams and Lambda"). So a
//! batch reports the lowest-numbered record that it took but that is not
//! durable when it returns (a row of a file not written, a schema change not
//! stored, a quarantine entry not written), or the first record it did not
//! look at (out of time), whichever is lower. Everything below that point
//! is in the lake, in the quarantine, or held by `warm-lossy` by design.

use std::collections::HashSet;

use crate::event::sequence_cmp;
use crate::names::RecordId;

/// The records one batch took, and where it stopped looking.
#[derive(Debug, Default)]
pub struct Ledger<'a> {
    taken: Vec<&'a RecordId>,
    deferred_from: Option<&'a RecordId>,
}

impl<'a> Ledger<'a> {
    pub fn new() -> Self {
        Ledger::default()
    }

    /// `id` is now held in memory, written, quarantined, or recognised as
    /// delivered before.
    pub fn take(&mut self, id: &'a RecordId) {
        self.taken.push(id);
    }

    /// The batch stopped before `id` (the invocation ran out of time): it
    /// and everything after it must come again.
    pub fn defer_from(&mut self, id: Option<&'a RecordId>) {
        self.deferred_from = id;
    }

    /// Where Kinesis must send the shard again from, given the records that
    /// are not durable now (any batch's: only this batch's count). `None`:
    /// the whole batch may be acknowledged.
    pub fn redeliver_from<'n>(
        &self,
        not_durable: impl IntoIterator<Item = &'n RecordId>,
    ) -> Option<RecordId> {
        let not_durable: HashSet<&RecordId> = not_durable.into_iter().collect();
        self.taken
            .iter()
            .copied()
            .filter(|id| not_durable.contains(id))
            .chain(self.deferred_from)
            .min_by(|a, b| sequence_cmp(&a.sequence, &b.sequence))
            .cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn id(sequence: &str) -> RecordId {
        RecordId {
            stream: "arn:s".into(),
            shard: "shard-1".into(),
            sequence: sequence.into(),
        }
    }

    #[test]
    fn a_batch_whose_records_are_all_durable_is_acknowledged() {
        let ids = [id("1"), id("2"), id("3")];
        let mut ledger = Ledger::new();
        ids.iter().for_each(|i| ledger.take(i));
        assert_eq!(ledger.redeliver_from([]), None);
        // A record not durable that this batch did not take is not its to
        // report (a warm buffer's row from an earlier batch).
        assert_eq!(ledger.redeliver_from([&id("0")]), None);
    }

    #[test]
    fn the_lowest_record_not_durable_is_reported_by_number_not_by_text() {
        let ids = [id("9"), id("10"), id("11"), id("100")];
        let mut ledger = Ledger::new();
        ids.iter().for_each(|i| ledger.take(i));
        // "10" < "9" as text; Kinesis sequence numbers compare as numbers.
        assert_eq!(ledger.redeliver_from([&ids[3], &ids[1]]), Some(id("10")));
        assert_eq!(ledger.redeliver_from([&ids[3], &ids[0]]), Some(id("9")));
    }

    #[test]
    fn records_not_looked_at_are_sent_again() {
        let ids = [id("1"), id("2"), id("3"), id("4")];
        let mut ledger = Ledger::new();
        ledger.take(&ids[0]);
        ledger.take(&ids[1]);
        ledger.defer_from(Some(&ids[2]));
        assert_eq!(ledger.redeliver_from([]), Some(id("3")));
        // A taken record below the deferred one that failed comes first.
        assert_eq!(ledger.redeliver_from([&ids[1]]), Some(id("2")));
    }
}
