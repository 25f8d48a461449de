//! Per-table row buffers kept across invocations, the rules that decide which
//! are due, and the bookkeeping that keeps redelivered records from being
//! buffered twice. Pure: time comes in as an argument, nothing here does I/O.

use std::collections::{HashMap, HashSet};
use std::sync::OnceLock;
use std::time::Duration;

use hashbrown::Equivalent;

use crate::dms::RowChange;
use crate::layout::{self, Hour};
use crate::names::RecordId;
use crate::names::TableName;
use crate::row::{ColumnKinds, DataColumns, MetaColumns};

/// When buffered rows are written.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FlushMode {
    /// Each invocation spools its records to S3 before it returns; a tumbling
    /// window's final invocation writes the window's files (see `windowed`).
    /// Events without window fields are handled as in `Invocation`.
    Window,
    /// Buffers live only in one container's memory across invocations:
    /// acknowledged rows are lost when that container crashes
    /// (`FLUSH_MODE=warm-lossy`).
    Warm,
    /// Every buffer is written before the invocation returns (no row is ever
    /// checkpointed before it is durable).
    Invocation,
}

/// The limits that decide when a table's buffer is written.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Thresholds {
    pub max_bytes: usize,
    pub max_records: usize,
    pub max_age: Duration,
    /// Across all tables; crossing it writes the largest buffers first.
    pub max_buffered_bytes: usize,
}

impl Thresholds {
    /// No threshold is ever reached: rows stay buffered until taken
    /// explicitly (tests, benchmarks, fuzzing).
    pub fn unlimited() -> Self {
        Thresholds {
            max_bytes: usize::MAX,
            max_records: usize::MAX,
            max_age: Duration::MAX,
            max_buffered_bytes: usize::MAX,
        }
    }
}

/// How this build sizes rows, cuts a window into parts, picks a row's hour
/// and names its files (`Batcher::for_window`, `row` sizes,
/// `Batcher::close_largest_open`, `layout::partition_hour`,
/// `layout::schema_segment`). A release that changes any of them must bump
/// this and keep cutting and naming windows recorded with an older value the
/// old way, or refuse them. History: 1 = the first; 2 = schema names kept
/// out of the function's `_` prefixes, long names shortened, out-of-range
/// commit times filed by arrival (see `layout`), empty cells of wide, sparse
/// parts counted (`row::ABSENT_CELL_BYTES`); 3 = a window's memory bound
/// checked every [`BUDGET_CHECK_ROWS`] rows of the window, no longer at the
/// end of each batch (a mapping created again batches the same records
/// differently, and must cut them where the first one did).
pub const CUT_VERSION: u32 = 3;

/// From cut version 3, a window's memory bound is checked after every this
/// many of its rows: often enough to hold memory near the bound, rarely
/// enough that the check (over every open part) costs little.
pub const BUDGET_CHECK_ROWS: u64 = 16;

/// The first cut version that checks a window's memory bound by rows
/// ([`BUDGET_CHECK_ROWS`]); earlier ones checked it at the end of each batch.
pub const BUDGET_BY_ROWS_FROM: u32 = 3;

/// A part that holds this much takes no more rows, whatever the thresholds
/// (they are checked per batch in window mode): keeps each column's tokens
/// addressable with `u32` offsets (`row::DataColumns`). Far above the largest
/// `BATCH_SIZE_BYTES_THRESHOLD` (1 GiB).
pub const MAX_PART_BYTES: usize = 2 << 30;

/// Rows of one table for one partition hour: the content of one file.
#[derive(Debug)]
pub struct Part {
    pub table: TableName,
    pub hour: Hour,
    /// Each row's `data` columns, column by column.
    pub data: DataColumns,
    /// Each row's metadata columns.
    pub meta: MetaColumns,
    /// Who delivered each row, in row order. Rows are added only by
    /// [`Batcher::push`], which clears the cached digest.
    pub ids: Vec<RecordId>,
    /// What the rows hold in memory, counted against the size thresholds.
    pub bytes: usize,
    /// When the first row entered the buffer, µs since the epoch.
    pub oldest_us: i64,
    /// The [`CUT_VERSION`] its hour and key follow.
    pub cut: u32,
    /// [`Part::digest`] once computed; cleared when a row is added.
    digest: OnceLock<String>,
}

impl Part {
    pub fn row_count(&self) -> usize {
        self.ids.len()
    }

    /// The JSON kinds seen per column, in first-seen order.
    pub fn kinds(&self) -> &ColumnKinds {
        self.data.kinds()
    }

    /// The digest its file name ends in (see `layout::rows_digest`).
    /// Computed once: its key, the window state and the write's report all
    /// need it, and it hashes every row's identity.
    pub fn digest(&self) -> &str {
        self.digest
            .get_or_init(|| crate::layout::rows_digest(&self.ids))
    }

    /// Every row as one JSON line with its metadata members, for rows that
    /// must be kept as text (see `handler`).
    pub fn json_lines(&self) -> Vec<u8> {
        self.meta.json_lines(&self.data.json_lines(), &self.ids)
    }
}

/// A table name borrowed from a decoded message, to look up a buffer
/// without allocating. Hashes like [`TableName`] (same fields, same order).
#[derive(Hash)]
struct TableRef<'a> {
    schema: &'a str,
    table: &'a str,
}

impl Equivalent<TableName> for TableRef<'_> {
    fn equivalent(&self, key: &TableName) -> bool {
        self.schema == key.schema && self.table == key.table
    }
}

impl From<&TableRef<'_>> for TableName {
    fn from(r: &TableRef<'_>) -> Self {
        TableName {
            schema: r.schema.to_string(),
            table: r.table.to_string(),
        }
    }
}

#[derive(Debug, Default)]
struct TableBuffer {
    parts: Vec<Part>,
    /// The part of each hour that still takes rows. A part that was closed by
    /// DDL or that failed to write takes no more: a retry must write exactly
    /// the same rows (same key), and one file never mixes two table shapes.
    open: HashMap<Hour, usize>,
    bytes: usize,
    rows: usize,
    oldest_us: Option<i64>,
    /// A DDL boundary or a failed write is waiting.
    flush_requested: bool,
}

/// Why a table was due, for logs.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum DueReason {
    Size,
    Records,
    Age,
    Requested,
    MemoryBudget,
    Invocation,
    Forced,
    /// A tumbling window's part: closed by a threshold, a DDL record or the
    /// window's end.
    Window,
}

#[derive(Debug)]
pub struct Batcher {
    thresholds: Thresholds,
    mode: FlushMode,
    /// A window's cut: a part closes the moment it reaches a threshold, so
    /// where files are cut depends only on the rows (and, for the memory
    /// bound, on the batches the window's state lists), never on which
    /// environment does the work (see `windowed`).
    cut_per_row: bool,
    /// [`MAX_PART_BYTES`], lower in tests.
    part_ceiling: usize,
    /// The [`CUT_VERSION`] rows are filed and parts named by: a window's
    /// recorded one, else this build's.
    cut: u32,
    tables: hashbrown::HashMap<TableName, TableBuffer>,
    buffered_bytes: usize,
    buffered_rows: usize,
    /// Rows not to take (already in the lake); see [`SkipRows`].
    skip: Option<SkipRows>,
}

/// Rows a window's rebuild leaves out because files already hold them:
/// per table and hour, the sequence ranges (inclusive) of parts written
/// earlier. A part holds consecutive rows of one table and hour, so its
/// first and last sequence numbers (in its key) say exactly which rows it
/// holds. Needed only after a lost range of records moved the cuts.
#[derive(Debug, Default, Clone)]
pub struct SkipRows(hashbrown::HashMap<(TableName, Hour), Vec<(String, String)>>);

impl SkipRows {
    pub fn add(&mut self, table: TableName, hour: Hour, first: String, last: String) {
        self.0.entry((table, hour)).or_default().push((first, last));
    }

    pub fn len(&self) -> usize {
        self.0.values().map(Vec::len).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.0.is_empty()
    }

    fn contains(&self, table: &TableName, hour: Hour, sequence: &str) -> bool {
        self.0.get(&(table.clone(), hour)).is_some_and(|ranges| {
            ranges.iter().any(|(first, last)| {
                crate::event::sequence_cmp(sequence, first).is_ge()
                    && crate::event::sequence_cmp(sequence, last).is_le()
            })
        })
    }
}

impl Batcher {
    pub fn new(thresholds: Thresholds, mode: FlushMode) -> Self {
        Batcher {
            thresholds,
            mode,
            cut_per_row: false,
            part_ceiling: MAX_PART_BYTES,
            cut: CUT_VERSION,
            tables: hashbrown::HashMap::new(),
            buffered_bytes: 0,
            buffered_rows: 0,
            skip: None,
        }
    }

    /// From now on, rows `skip` lists are not taken.
    pub fn skip_rows(&mut self, skip: SkipRows) {
        self.skip = Some(skip);
    }

    /// The row ids this batcher holds of one table and hour with sequence
    /// numbers in `first..=last`, in sequence order.
    pub fn ids_between(
        &self,
        table: &TableName,
        hour: Hour,
        first: &str,
        last: &str,
    ) -> Vec<RecordId> {
        use crate::event::sequence_cmp;
        let mut ids: Vec<RecordId> = self
            .tables
            .get(table)
            .into_iter()
            .flat_map(|b| b.parts.iter().filter(|p| p.hour == hour))
            .flat_map(|p| p.ids.iter())
            .filter(|id| {
                sequence_cmp(&id.sequence, first).is_ge()
                    && sequence_cmp(&id.sequence, last).is_le()
            })
            .cloned()
            .collect();
        ids.sort_by(|a, b| sequence_cmp(&a.sequence, &b.sequence));
        ids
    }

    /// Every table and hour that holds or held rows.
    pub fn table_hours(&self) -> Vec<(TableName, Hour)> {
        let mut out: Vec<(TableName, Hour)> = self
            .tables
            .iter()
            .flat_map(|(name, b)| b.parts.iter().map(move |p| (name.clone(), p.hour)))
            .collect();
        out.sort();
        out.dedup();
        out
    }

    /// The rows of one shard's window: parts close at `max_records` rows or
    /// `max_bytes`, at a DDL record, at the window's end, and where
    /// [`close_largest_open`](Self::close_largest_open) keeps the window
    /// under its own memory bound; age and the environment's memory budget
    /// play no part (they depend on the clock and on other shards, and would
    /// make the cut differ between environments).
    pub fn for_window(thresholds: Thresholds, cut: u32) -> Self {
        Batcher {
            cut_per_row: true,
            cut,
            ..Batcher::new(thresholds, FlushMode::Window)
        }
    }

    pub fn buffered_bytes(&self) -> usize {
        self.buffered_bytes
    }

    pub fn buffered_rows(&self) -> usize {
        self.buffered_rows
    }

    /// Age of the oldest buffered row in µs, if any row is buffered.
    pub fn oldest_age_us(&self, now_us: i64) -> Option<i64> {
        self.tables
            .values()
            .filter_map(|t| t.oldest_us)
            .min()
            .map(|o| now_us.saturating_sub(o))
    }

    /// The [`CUT_VERSION`] this batcher files rows and names parts by.
    pub fn cut(&self) -> u32 {
        self.cut
    }

    /// Buffers one row. `arrival_us`: when its record reached Kinesis.
    pub fn push(
        &mut self,
        id: RecordId,
        change: &RowChange<'_>,
        now_us: i64,
        arrival_us: Option<i64>,
    ) {
        let hour = layout::partition_hour(change.partition_time_us(), arrival_us, self.cut);
        let name = TableRef {
            schema: &change.schema,
            table: &change.table,
        };
        if let Some(skip) = &self.skip {
            if skip.contains(&TableName::from(&name), hour, &id.sequence) {
                return;
            }
        }
        // Looked up by reference: a table's name is allocated once, not per row.
        let buffer = match self.tables.entry_ref(&name) {
            hashbrown::hash_map::EntryRef::Occupied(e) => e.into_mut(),
            hashbrown::hash_map::EntryRef::Vacant(e) => {
                e.insert_with_key(TableName::from(&name), TableBuffer::default())
            }
        };
        let index = match buffer.open.get(&hour) {
            Some(&i) if buffer.parts[i].bytes < self.part_ceiling => i,
            _ => {
                buffer.parts.push(Part {
                    table: TableName::from(&name),
                    hour,
                    data: DataColumns::default(),
                    meta: MetaColumns::default(),
                    ids: Vec::new(),
                    bytes: 0,
                    oldest_us: now_us,
                    cut: self.cut,
                    digest: OnceLock::new(),
                });
                let i = buffer.parts.len() - 1;
                buffer.open.insert(hour, i);
                i
            }
        };
        let part = &mut buffer.parts[index];
        let absent_cell_bytes = if self.cut >= 2 {
            crate::row::ABSENT_CELL_BYTES
        } else {
            0
        };
        let added = part.data.push(change, absent_cell_bytes) + part.meta.push(change, &id, now_us);
        part.bytes += added;
        part.ids.push(id);
        part.digest.take();
        if self.cut_per_row
            && (part.ids.len() >= self.thresholds.max_records
                || part.bytes >= self.thresholds.max_bytes)
        {
            buffer.open.remove(&hour);
        }
        buffer.bytes += added;
        buffer.rows += 1;
        buffer.oldest_us.get_or_insert(now_us);
        self.buffered_bytes += added;
        self.buffered_rows += 1;
    }

    /// A DDL record for `table`: rows after it go to new parts, and the table
    /// is written at the end of the invocation.
    pub fn close_table(&mut self, table: &TableName) {
        if let Some(buffer) = self.tables.get_mut(table) {
            buffer.open.clear();
            buffer.flush_requested = !buffer.parts.is_empty();
        }
    }

    /// Takes the parts of every table that is due now.
    pub fn take_due(&mut self, now_us: i64) -> Vec<(Part, DueReason)> {
        let max_age_us = i64::try_from(self.thresholds.max_age.as_micros()).unwrap_or(i64::MAX);
        let mut due: Vec<(TableName, DueReason)> = Vec::new();
        let mut names: Vec<&TableName> = self.tables.keys().collect();
        names.sort();
        for name in names {
            let Some(t) = self.tables.get(name) else {
                continue;
            };
            let reason = if t.parts.is_empty() {
                None
            } else if self.mode == FlushMode::Invocation {
                Some(DueReason::Invocation)
            } else if t.flush_requested {
                Some(DueReason::Requested)
            } else if t.bytes >= self.thresholds.max_bytes {
                Some(DueReason::Size)
            } else if t.rows >= self.thresholds.max_records {
                Some(DueReason::Records)
            } else if t
                .oldest_us
                .is_some_and(|o| now_us.saturating_sub(o) >= max_age_us)
            {
                Some(DueReason::Age)
            } else {
                None
            };
            if let Some(r) = reason {
                due.push((name.clone(), r));
            }
        }
        let mut remaining = self.buffered_bytes
            - due
                .iter()
                .map(|(n, _)| self.tables.get(n).map_or(0, |t| t.bytes))
                .sum::<usize>();
        if remaining > self.thresholds.max_buffered_bytes {
            let taken: HashSet<&TableName> = due.iter().map(|(n, _)| n).collect();
            let mut rest: Vec<(&TableName, usize)> = self
                .tables
                .iter()
                .filter(|(n, t)| !taken.contains(n) && !t.parts.is_empty())
                .map(|(n, t)| (n, t.bytes))
                .collect();
            rest.sort_by(|a, b| b.1.cmp(&a.1).then_with(|| a.0.cmp(b.0)));
            let mut extra = Vec::new();
            for (name, bytes) in rest {
                if remaining <= self.thresholds.max_buffered_bytes {
                    break;
                }
                remaining -= bytes;
                extra.push((name.clone(), DueReason::MemoryBudget));
            }
            due.extend(extra);
        }
        due.into_iter()
            .flat_map(|(name, reason)| self.take_table(&name).into_iter().map(move |p| (p, reason)))
            .collect()
    }

    /// A window's memory bound: while its open parts hold more than
    /// `budget` bytes, the largest is closed (ties: table, then hour) until
    /// they hold at most half of it. Called at points fixed by the window's
    /// rows (see `window::Builder::row_fed`), it depends only on the rows fed
    /// so far, never on which parts were written or failed, so every
    /// environment that feeds a window cuts at the same rows. Returns how
    /// many parts it closed (`take_closed` takes them).
    pub fn close_largest_open(&mut self, budget: usize) -> usize {
        let mut open: Vec<(usize, TableName, Hour)> = self
            .tables
            .iter()
            .flat_map(|(name, b)| {
                b.open
                    .iter()
                    .map(|(hour, &i)| (b.parts[i].bytes, name.clone(), *hour))
            })
            .collect();
        let mut held: usize = open.iter().map(|(bytes, _, _)| bytes).sum();
        if held <= budget {
            return 0;
        }
        open.sort_by(|a, b| b.0.cmp(&a.0).then_with(|| (&a.1, a.2).cmp(&(&b.1, b.2))));
        let mut closed = 0;
        for (bytes, name, hour) in open {
            if held <= budget / 2 {
                break;
            }
            if let Some(buffer) = self.tables.get_mut(&name) {
                buffer.open.remove(&hour);
            }
            held -= bytes;
            closed += 1;
        }
        closed
    }

    /// Takes the parts that take no more rows (a threshold or a DDL record
    /// closed them), in table order and, within a table, in the order they
    /// were opened. The parts still open stay.
    pub fn take_closed(&mut self) -> Vec<Part> {
        let mut names: Vec<TableName> = self.tables.keys().cloned().collect();
        names.sort();
        let mut out = Vec::new();
        for name in names {
            let Some(buffer) = self.tables.get_mut(&name) else {
                continue;
            };
            if buffer.open.len() == buffer.parts.len() {
                continue;
            }
            let open: HashSet<usize> = buffer.open.values().copied().collect();
            buffer.open.clear();
            for (i, part) in std::mem::take(&mut buffer.parts).into_iter().enumerate() {
                if open.contains(&i) {
                    buffer.open.insert(part.hour, buffer.parts.len());
                    buffer.parts.push(part);
                } else {
                    buffer.bytes -= part.bytes;
                    buffer.rows -= part.row_count();
                    self.buffered_bytes -= part.bytes;
                    self.buffered_rows -= part.row_count();
                    out.push(part);
                }
            }
            buffer.flush_requested = false;
            if buffer.parts.is_empty() {
                self.tables.remove(&name);
            }
        }
        out
    }

    /// Takes every buffered part (force flush, shutdown).
    pub fn take_all(&mut self) -> Vec<Part> {
        let mut names: Vec<TableName> = self.tables.keys().cloned().collect();
        names.sort();
        names.iter().flat_map(|n| self.take_table(n)).collect()
    }

    fn take_table(&mut self, name: &TableName) -> Vec<Part> {
        let Some(buffer) = self.tables.remove(name) else {
            return Vec::new();
        };
        self.buffered_bytes -= buffer.bytes;
        self.buffered_rows -= buffer.rows;
        buffer.parts
    }

    /// Puts back a part that could not be written. It keeps its rows exactly
    /// (so the retry writes the same key) and is retried at the next chance.
    pub fn restore(&mut self, part: Part) {
        let buffer = self.tables.entry(part.table.clone()).or_default();
        buffer.bytes += part.bytes;
        buffer.rows += part.row_count();
        buffer.oldest_us = Some(
            buffer
                .oldest_us
                .map_or(part.oldest_us, |o| o.min(part.oldest_us)),
        );
        buffer.flush_requested = true;
        self.buffered_bytes += part.bytes;
        self.buffered_rows += part.row_count();
        buffer.parts.push(part);
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::dms::{decode, Message};
    use std::sync::Arc;
    use std::time::Duration;

    fn thresholds(max_bytes: usize, max_records: usize) -> Thresholds {
        Thresholds {
            max_bytes,
            max_records,
            max_age: Duration::from_secs(60),
            max_buffered_bytes: usize::MAX,
        }
    }

    fn msg(table: &str, id: u32, ts: &str) -> String {
        format!(
            r#"{{"data":{{"id":{id},"v":"x"}},"metadata":{{"timestamp":"{ts}","record-type":"data",
            "operation":"insert","schema-name":"s","table-name":"{table}"}}}}"#
        )
    }

    fn rid(seq: u32) -> RecordId {
        RecordId {
            stream: std::sync::Arc::from(""),
            shard: Arc::from("shardId-0"),
            sequence: format!("{seq:05}"),
        }
    }

    fn push(b: &mut Batcher, table: &str, seq: u32, now_us: i64) {
        push_at(b, table, seq, "2026-03-14T01:00:00Z", now_us);
    }

    fn push_at(b: &mut Batcher, table: &str, seq: u32, ts: &str, now_us: i64) {
        let text = msg(table, seq, ts);
        let Message::Row(change) = decode(text.as_bytes(), "before-image").unwrap() else {
            panic!()
        };
        b.push(rid(seq), &change, now_us, None);
    }

    fn tables_of(parts: &[(Part, DueReason)]) -> Vec<String> {
        parts.iter().map(|(p, _)| p.table.table.clone()).collect()
    }

    #[test]
    fn a_parts_digest_follows_its_rows() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Warm);
        push(&mut b, "a", 0, 0);
        let first = b.tables.values().next().unwrap().parts[0]
            .digest()
            .to_string();
        assert_eq!(first, crate::layout::rows_digest(&[rid(0)]));
        push(&mut b, "a", 1, 0);
        let part = b.take_all().remove(0);
        assert_eq!(part.digest(), crate::layout::rows_digest(&[rid(0), rid(1)]));
    }

    #[test]
    fn a_part_at_the_ceiling_takes_no_more_rows() {
        // Thresholds out of reach, as between two batches in warm mode.
        let mut b = Batcher::new(thresholds(usize::MAX, usize::MAX), FlushMode::Warm);
        push(&mut b, "a", 0, 0);
        b.part_ceiling = b.buffered_bytes() * 2;
        push(&mut b, "a", 1, 0);
        push(&mut b, "a", 2, 0);
        let parts = b.take_all();
        let ids: Vec<Vec<RecordId>> = parts.into_iter().map(|p| p.ids).collect();
        assert_eq!(ids, [vec![rid(0), rid(1)], vec![rid(2)]]);
    }

    #[test]
    fn nothing_is_due_below_every_threshold() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Warm);
        push(&mut b, "a", 1, 0);
        assert!(b.take_due(1_000_000).is_empty());
        assert_eq!(b.buffered_rows(), 1);
        assert!(b.buffered_bytes() > 0);
    }

    #[test]
    fn record_count_threshold_flushes_only_that_table() {
        let mut b = Batcher::new(thresholds(1 << 20, 3), FlushMode::Warm);
        for seq in 0..3 {
            push(&mut b, "a", seq, 0);
        }
        push(&mut b, "b", 10, 0);
        let due = b.take_due(0);
        assert_eq!(tables_of(&due), ["a"]);
        assert_eq!(due[0].1, DueReason::Records);
        assert_eq!(due[0].0.row_count(), 3);
        assert_eq!(b.buffered_rows(), 1);
    }

    #[test]
    fn size_threshold_counts_row_json_bytes() {
        let mut b = Batcher::new(thresholds(400, 1000), FlushMode::Warm);
        push(&mut b, "a", 0, 0);
        assert!(b.take_due(0).is_empty());
        let per_row = b.buffered_bytes();
        let needed = 400 / per_row + 1;
        for seq in 1..needed as u32 {
            push(&mut b, "a", seq, 0);
        }
        let due = b.take_due(0);
        assert_eq!(due.len(), 1);
        assert_eq!(due[0].1, DueReason::Size);
        assert_eq!(b.buffered_bytes(), 0);
    }

    #[test]
    fn age_is_measured_from_when_the_oldest_row_was_buffered() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Warm);
        push(&mut b, "a", 0, 0);
        push(&mut b, "a", 1, 50_000_000);
        assert!(b.take_due(59_999_999).is_empty());
        assert_eq!(b.oldest_age_us(59_999_999), Some(59_999_999));
        let due = b.take_due(60_000_000);
        assert_eq!(due[0].1, DueReason::Age);
        assert_eq!(due[0].0.row_count(), 2);
        assert_eq!(b.oldest_age_us(60_000_000), None);
    }

    #[test]
    fn invocation_mode_flushes_everything() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Invocation);
        push(&mut b, "a", 0, 0);
        push(&mut b, "b", 1, 0);
        assert_eq!(tables_of(&b.take_due(0)), ["a", "b"]);
    }

    #[test]
    fn rows_split_by_partition_hour() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Warm);
        push_at(&mut b, "a", 0, "2026-03-14T01:59:59Z", 0);
        push_at(&mut b, "a", 1, "2026-03-14T02:00:00Z", 0);
        push_at(&mut b, "a", 2, "2026-03-14T01:10:00Z", 0);
        let parts = b.take_all();
        assert_eq!(parts.len(), 2);
        assert_eq!(parts[0].row_count(), 2);
        assert_eq!(parts[1].row_count(), 1);
        assert_eq!(parts[1].hour.0 - parts[0].hour.0, 1);
    }

    #[test]
    fn ddl_closes_the_part_and_requests_a_flush() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Warm);
        push(&mut b, "a", 0, 0);
        b.close_table(&TableName {
            schema: "s".into(),
            table: "a".into(),
        });
        push(&mut b, "a", 1, 0);
        let due = b.take_due(0);
        assert_eq!(
            due.len(),
            2,
            "rows before and after the DDL are separate files"
        );
        assert!(due.iter().all(|(_, r)| *r == DueReason::Requested));
        assert_eq!(due[0].0.ids, [rid(0)]);
        assert_eq!(due[1].0.ids, [rid(1)]);
    }

    #[test]
    fn ddl_on_an_empty_table_requests_nothing() {
        let mut b = Batcher::new(thresholds(1 << 20, 100), FlushMode::Warm);
        b.close_table(&TableName {
            schema: "s".into(),
            table: "a".into(),
        });
        assert!(b.take_due(0).is_empty());
    }

    #[test]
    fn a_restored_part_is_retried_unchanged_and_new_rows_go_elsewhere() {
        let mut b = Batcher::new(thresholds(1 << 20, 2), FlushMode::Warm);
        push(&mut b, "a", 0, 0);
        push(&mut b, "a", 1, 0);
        let held = b.buffered_bytes();
        let (part, _) = b.take_due(0).pop().unwrap();
        let rows_before = part.data.json_lines();
        b.restore(part);
        assert_eq!(b.buffered_rows(), 2);
        // The part counts again exactly what it counted before: JSON,
        // metadata and ids, not only its row JSON.
        assert_eq!(b.buffered_bytes(), held);
        push(&mut b, "a", 2, 0);
        let due = b.take_due(0);
        assert_eq!(due.len(), 2);
        assert_eq!(due[0].0.data.json_lines(), rows_before);
        assert_eq!(due[1].0.ids, [rid(2)]);
        assert_eq!(b.buffered_rows(), 0);
        assert_eq!(b.buffered_bytes(), 0);
    }

    #[test]
    fn memory_budget_takes_the_largest_tables_first() {
        let mut t = thresholds(1 << 20, 1000);
        let mut b = Batcher::new(t.clone(), FlushMode::Warm);
        push(&mut b, "small", 0, 0);
        let row = b.buffered_bytes();
        // Rows of "mid" are a byte longer (two-digit ids): leave room for that.
        t.max_buffered_bytes = row * 3 + 10;
        let mut b = Batcher::new(t, FlushMode::Warm);
        push(&mut b, "small", 0, 0);
        for seq in 1..4 {
            push(&mut b, "big", seq, 0);
        }
        push(&mut b, "mid", 10, 0);
        push(&mut b, "mid", 11, 0);
        // 6 rows held, budget 3: "big" (3 rows) goes first, then "mid".
        let due = b.take_due(0);
        assert_eq!(tables_of(&due), ["big"]);
        assert_eq!(due[0].1, DueReason::MemoryBudget);
        assert!(b.buffered_bytes() <= row * 3 + 10);
    }

    #[test]
    fn a_thousand_tables_stay_within_the_memory_budget() {
        let mut t = thresholds(usize::MAX, usize::MAX);
        t.max_age = Duration::from_secs(3600);
        let mut probe = Batcher::new(t.clone(), FlushMode::Warm);
        push(&mut probe, "t0000", 0, 0);
        let row = probe.buffered_bytes();
        t.max_buffered_bytes = row * 300;
        let mut b = Batcher::new(t, FlushMode::Warm);
        let mut written = 0;
        for round in 0..5u32 {
            for table in 0..1000u32 {
                push(&mut b, &format!("t{table:04}"), round * 1000 + table, 0);
            }
            written += b
                .take_due(0)
                .iter()
                .map(|(p, _)| p.row_count())
                .sum::<usize>();
            assert!(b.buffered_bytes() <= row * 300 + 1000, "round {round}");
        }
        assert_eq!(written + b.buffered_rows(), 5000, "no row lost or doubled");
    }

    fn ids_of(parts: &[Part]) -> Vec<Vec<RecordId>> {
        parts.iter().map(|p| p.ids.clone()).collect()
    }

    #[test]
    fn a_window_cuts_at_the_row_that_reaches_a_threshold() {
        let mut b = Batcher::for_window(thresholds(1 << 20, 3), CUT_VERSION);
        for seq in 0..5 {
            push(&mut b, "a", seq, 0);
        }
        push(&mut b, "b", 9, 0);
        let closed = b.take_closed();
        assert_eq!(ids_of(&closed), [vec![rid(0), rid(1), rid(2)]]);
        assert_eq!(b.buffered_rows(), 3, "rows 3, 4 and table b stay open");
        push(&mut b, "a", 5, 0);
        assert_eq!(ids_of(&b.take_closed()), [vec![rid(3), rid(4), rid(5)]]);
        assert!(b.take_closed().is_empty());
        let rest = b.take_all();
        assert_eq!(ids_of(&rest), [vec![rid(9)]]);
    }

    #[test]
    fn a_windows_cut_does_not_depend_on_when_parts_are_taken() {
        // The same rows, taken after every row or only at the end: the same parts.
        let rows: Vec<(String, u32)> = (0..40u32)
            .map(|i| (["a", "b", "c"][(i * 7 % 3) as usize].to_string(), i))
            .collect();
        let mut eager = Batcher::for_window(thresholds(300, 4), CUT_VERSION);
        let mut parts_eager = Vec::new();
        for (table, seq) in &rows {
            push(&mut eager, table, *seq, 0);
            parts_eager.extend(eager.take_closed());
        }
        parts_eager.extend(eager.take_all());
        let mut lazy = Batcher::for_window(thresholds(300, 4), CUT_VERSION);
        for (table, seq) in &rows {
            push(&mut lazy, table, *seq, 1_000);
        }
        let mut parts_lazy = lazy.take_closed();
        parts_lazy.extend(lazy.take_all());
        let mut a = ids_of(&parts_eager);
        let mut b = ids_of(&parts_lazy);
        a.sort();
        b.sort();
        assert_eq!(a, b);
        assert_eq!(a.iter().map(Vec::len).sum::<usize>(), 40);
    }

    #[test]
    fn ddl_closes_a_windows_parts() {
        let mut b = Batcher::for_window(thresholds(1 << 20, 100), CUT_VERSION);
        push(&mut b, "a", 0, 0);
        b.close_table(&TableName {
            schema: "s".into(),
            table: "a".into(),
        });
        push(&mut b, "a", 1, 0);
        assert_eq!(ids_of(&b.take_closed()), [vec![rid(0)]]);
        assert_eq!(ids_of(&b.take_all()), [vec![rid(1)]]);
    }

    /// Over its bound, a window closes its largest open parts until it holds
    /// half; the same rows fed in other batches cut at the same rows; a part
    /// that failed to write and came back does not count.
    #[test]
    fn a_window_over_its_bound_closes_its_largest_parts() {
        let feed = |b: &mut Batcher, rows: std::ops::Range<u32>| {
            for seq in rows {
                let table = ["a", "b", "b", "c", "c", "c"][seq as usize % 6];
                push(b, table, seq, 0);
            }
        };
        let mut b = Batcher::for_window(thresholds(1 << 20, 1000), CUT_VERSION);
        feed(&mut b, 0..60);
        let held = b.buffered_bytes();
        assert_eq!(
            b.close_largest_open(held),
            0,
            "at its bound: nothing closes"
        );
        // Just over: c (half the rows) closes first; then a and b hold a
        // half, which is at most half the bound.
        assert_eq!(b.close_largest_open(held - 1), 1);
        let closed = b.take_closed();
        assert_eq!(closed.len(), 1);
        assert_eq!(closed[0].table.table, "c");
        assert_eq!(closed[0].row_count(), 30);
        // A part that failed to write comes back closed: it is not open bytes.
        b.restore(closed.into_iter().next().unwrap());
        assert_eq!(b.close_largest_open(held / 2), 0);

        // Whether the parts cut so far were written (taken) or failed and
        // came back, the next cuts fall at the same rows.
        let cuts = |writes_fail: bool| {
            let mut b = Batcher::for_window(thresholds(1 << 20, 1000), CUT_VERSION);
            let mut cut = Vec::new();
            for r in [0..20, 20..40, 40..60, 60..80] {
                feed(&mut b, r);
                b.close_largest_open(held / 3);
                let closed = b.take_closed();
                cut.extend(
                    closed
                        .iter()
                        .map(|p| (p.table.table.clone(), p.ids.clone())),
                );
                if writes_fail {
                    closed.into_iter().for_each(|p| b.restore(p));
                }
            }
            cut
        };
        let written = cuts(false);
        assert!(written.len() >= 2, "{written:?}");
        let mut failed = cuts(true);
        failed.sort();
        failed.dedup();
        let mut expected = written.clone();
        expected.sort();
        assert_eq!(failed, expected);
    }
}
