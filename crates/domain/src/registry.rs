//! The schema registry's decisions (pure); `edge::registry` stores and
//! reads the versions. A container's [`Registry`] holds the schema of
//! each table it met and decides: which stored version replaces or merges
//! into what it holds, when the stored versions are due to be read again,
//! which tables have changes not stored yet (and the control records that
//! made them, not durable until stored), and which tables' catalog entries
//! are behind their schema version.
//!
//! Versions are objects `{prefix}_schemas/{schema}/{table}/vNNNNNNNN.json`
//! ([`version_key`]); two containers that change a table at once race for
//! the same key, and the loser merges the winner's version into its own
//! (`TableSchema::merge`).

use std::collections::{HashMap, HashSet};
use std::fmt::Display;
use std::time::{Duration, Instant};

use crate::layout;
use crate::names::{RecordId, TableName};
use crate::schema::{log_changes, TableOverrides, TableSchema};

/// Where version `version` of `table`'s schema is stored.
pub fn version_key(prefix: &str, table: &TableName, version: u64) -> String {
    format!("{}v{version:08}.json", layout::schema_dir(prefix, table))
}

/// The version a key names (`…/v00000003.json` is 3).
pub fn version_of(key: &str) -> Option<u64> {
    let name = key.rsplit('/').next()?;
    name.strip_prefix('v')?.strip_suffix(".json")?.parse().ok()
}

/// Undoes `layout`'s percent-escaping of `/`, `%`, `=` and control characters.
pub fn decode_segment(segment: &str) -> String {
    let bytes = segment.as_bytes();
    let mut out = Vec::with_capacity(bytes.len());
    let mut i = 0;
    while i < bytes.len() {
        let hex = bytes
            .get(i + 1..i + 3)
            .and_then(|h| std::str::from_utf8(h).ok());
        match (bytes[i], hex.and_then(|h| u8::from_str_radix(h, 16).ok())) {
            (b'%', Some(b)) => {
                out.push(b);
                i += 3;
            }
            (b, _) => {
                out.push(b);
                i += 1;
            }
        }
    }
    String::from_utf8_lossy(&out).into_owned()
}

/// A container's view of the registry: the schema of each table it met,
/// when it last looked at the stored versions, and what is not stored yet.
#[derive(Debug)]
pub struct Registry {
    refresh: Duration,
    tables: HashMap<TableName, TableSchema>,
    /// Tables whose schema changed and is not stored yet, with the control
    /// records that changed it (not durable until it is stored).
    unsaved: HashMap<TableName, Vec<RecordId>>,
    checked: HashMap<TableName, Instant>,
    /// (table, column, DMS type name) already logged as unknown.
    reported: HashSet<(TableName, String, String)>,
    /// The schema version each table's catalog entry was last brought to.
    catalogued: HashMap<TableName, u64>,
}

impl Registry {
    /// `refresh`: how often stored versions are looked at again.
    pub fn new(refresh: Duration) -> Self {
        Registry {
            refresh,
            tables: HashMap::new(),
            unsaved: HashMap::new(),
            checked: HashMap::new(),
            reported: HashSet::new(),
            catalogued: HashMap::new(),
        }
    }

    /// True the first time (table, column, type name) is reported.
    pub fn first_report(&mut self, table: &TableName, column: &str, type_name: &str) -> bool {
        self.reported
            .insert((table.clone(), column.to_string(), type_name.to_string()))
    }

    /// `table`'s schema as this container knows it.
    pub fn cached(&self, table: &TableName) -> Option<&TableSchema> {
        self.tables.get(table)
    }

    /// Mutable [`cached`](Self::cached).
    pub fn cached_mut(&mut self, table: &TableName) -> Option<&mut TableSchema> {
        self.tables.get_mut(table)
    }

    /// `table`'s schema, a new empty one if this container never met it.
    pub fn entry(&mut self, table: &TableName) -> &mut TableSchema {
        self.tables
            .entry(table.clone())
            .or_insert_with(|| TableSchema::new(table))
    }

    /// Whether `table`'s stored versions are to be read (at `now`): never
    /// read, or read `refresh` ago or longer.
    pub fn due(&self, table: &TableName, now: Instant) -> bool {
        self.checked
            .get(table)
            .is_none_or(|t| now.duration_since(*t) >= self.refresh)
    }

    /// The stored versions are to be read now, whatever `refresh` says.
    pub fn expire(&mut self, table: &TableName) {
        self.checked.remove(table);
    }

    /// Takes in the stored version read for `table` at `now` (`Ok(None)`:
    /// none stored). The first one replaces the empty schema and has the
    /// overrides applied (a change to store); a newer one later is merged
    /// in (another container's declarations and columns). A failed read
    /// keeps what was read earlier; a failed first read is an error: there
    /// are no types to write with.
    pub fn absorb<E: Display>(
        &mut self,
        table: &TableName,
        overrides: &TableOverrides,
        loaded: Result<Option<TableSchema>, E>,
        now: Instant,
    ) -> Result<(), E> {
        let known = self.tables.contains_key(table);
        let stored = match loaded {
            Ok(stored) => {
                self.checked.insert(table.clone(), now);
                stored
            }
            Err(error) if known => {
                tracing::warn!(%table, %error, "schema refresh failed: using the version read earlier");
                return Ok(());
            }
            Err(error) => return Err(error),
        };
        let schema = self.entry(table);
        match stored {
            Some(stored) if known && stored.version > schema.version => {
                let changes = schema.merge(&stored);
                log_changes(table, &changes, "another container");
            }
            stored if !known => {
                if let Some(stored) = stored {
                    *schema = stored;
                }
                let changes = schema.apply_overrides(overrides);
                log_changes(table, &changes, "COLUMN_TYPES");
                if !changes.is_empty() {
                    self.unsaved.entry(table.clone()).or_default();
                }
            }
            _ => {}
        }
        Ok(())
    }

    /// Stored schemas whose catalog entry this environment has not brought to
    /// their version yet (every table once per environment, then once per
    /// new version), in table order.
    pub fn catalog_due(&self) -> Vec<&TableSchema> {
        let mut due: Vec<&TableSchema> = self
            .tables
            .iter()
            .filter(|(t, s)| {
                s.version > 0
                    && !self.unsaved.contains_key(*t)
                    && self.catalogued.get(*t).is_none_or(|v| *v < s.version)
            })
            .map(|(_, s)| s)
            .collect();
        due.sort_by(|a, b| (&a.schema, &a.table).cmp(&(&b.schema, &b.table)));
        due
    }

    /// `table`'s catalog entry is at `version` (or newer).
    pub fn set_catalogued(&mut self, table: &TableName, version: u64) {
        let v = self.catalogued.entry(table.clone()).or_default();
        *v = (*v).max(version);
    }

    /// `table`'s schema changed (by the record `by`, if a record did it).
    pub fn mark_unsaved(&mut self, table: &TableName, by: Option<&RecordId>) {
        let records = self.unsaved.entry(table.clone()).or_default();
        records.extend(by.cloned());
    }

    /// Records whose schema changes are not stored yet.
    pub fn unsaved_records(&self) -> Vec<RecordId> {
        self.unsaved.values().flatten().cloned().collect()
    }

    /// The tables with a change not stored yet.
    pub fn unsaved_tables(&self) -> Vec<TableName> {
        self.unsaved.keys().cloned().collect()
    }

    /// Of `tables`, those with a change to store; a change noted for a table
    /// this container never loaded has nothing to store and is dropped.
    pub fn to_save(&mut self, tables: &[&TableName]) -> HashSet<TableName> {
        let wanted: Vec<TableName> = tables
            .iter()
            .filter(|t| self.unsaved.contains_key(**t))
            .map(|t| (*t).clone())
            .collect();
        let mut out = HashSet::new();
        for table in wanted {
            if self.tables.contains_key(&table) {
                out.insert(table);
            } else {
                self.unsaved.remove(&table);
            }
        }
        out
    }

    /// The schemas of `tables`, to store them (several at once).
    pub fn schemas_mut<'a>(
        &'a mut self,
        tables: &'a HashSet<TableName>,
    ) -> impl Iterator<Item = (&'a TableName, &'a mut TableSchema)> + 'a {
        self.tables
            .iter_mut()
            .filter(move |(t, _)| tables.contains(*t))
    }

    /// `table`'s change is stored.
    pub fn saved(&mut self, table: &TableName) {
        self.unsaved.remove(table);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn table(t: &str) -> TableName {
        TableName {
            schema: "s".into(),
            table: t.into(),
        }
    }

    #[test]
    fn keys_name_their_version_and_segments_decode() {
        let key = version_key("p/", &table("t"), 3);
        assert!(key.ends_with("/v00000003.json"), "{key}");
        assert_eq!(version_of(&key), Some(3));
        assert_eq!(version_of("p/_schemas/s/t/readme.txt"), None);
        assert_eq!(decode_segment("a%2Fb%25c"), "a/b%c");
        assert_eq!(decode_segment("100%"), "100%");
    }

    #[test]
    fn stored_versions_are_due_again_after_the_refresh() {
        let mut reg = Registry::new(Duration::from_secs(60));
        let t = table("t");
        let now = Instant::now();
        assert!(reg.due(&t, now));
        reg.absorb::<String>(&t, &[], Ok(None), now).unwrap();
        assert!(!reg.due(&t, now + Duration::from_secs(59)));
        assert!(reg.due(&t, now + Duration::from_secs(60)));
        reg.expire(&t);
        assert!(reg.due(&t, now));
    }

    #[test]
    fn a_failed_first_read_is_an_error_a_failed_refresh_is_not() {
        let mut reg = Registry::new(Duration::ZERO);
        let t = table("t");
        let now = Instant::now();
        let first = reg.absorb(&t, &[], Err("503"), now);
        assert_eq!(first, Err("503"));
        assert!(reg.cached(&t).is_none());
        reg.absorb::<&str>(&t, &[], Ok(None), now).unwrap();
        let refresh = reg.absorb(&t, &[], Err("503"), now);
        assert_eq!(refresh, Ok(()));
        assert!(reg.cached(&t).is_some());
    }

    #[test]
    fn a_newer_stored_version_is_merged_an_older_one_ignored() {
        let mut reg = Registry::new(Duration::ZERO);
        let t = table("t");
        let now = Instant::now();
        let mut v2 = TableSchema::new(&t);
        v2.version = 2;
        reg.absorb::<&str>(&t, &[], Ok(Some(v2.clone())), now)
            .unwrap();
        assert_eq!(reg.cached(&t).map(|s| s.version), Some(2));
        let mut v1 = v2.clone();
        v1.version = 1;
        reg.absorb::<&str>(&t, &[], Ok(Some(v1)), now).unwrap();
        assert_eq!(reg.cached(&t).map(|s| s.version), Some(2));
        let mut v5 = v2;
        v5.version = 5;
        reg.absorb::<&str>(&t, &[], Ok(Some(v5)), now).unwrap();
        assert_eq!(reg.cached(&t).map(|s| s.version), Some(5));
    }

    #[test]
    fn unsaved_changes_hold_their_records_and_the_catalog_waits_for_them() {
        let mut reg = Registry::new(Duration::ZERO);
        let (a, b) = (table("a"), table("b"));
        let now = Instant::now();
        for t in [&a, &b] {
            let mut stored = TableSchema::new(t);
            stored.version = 1;
            reg.absorb::<&str>(t, &[], Ok(Some(stored)), now).unwrap();
        }
        let id = RecordId {
            stream: "arn".into(),
            shard: "shard-1".into(),
            sequence: "7".into(),
        };
        reg.mark_unsaved(&a, Some(&id));
        // A change noted for a table never loaded has nothing to store.
        reg.mark_unsaved(&table("ghost"), None);
        assert_eq!(reg.unsaved_records(), vec![id]);
        let due: Vec<&str> = reg.catalog_due().iter().map(|s| s.table.as_str()).collect();
        assert_eq!(
            due,
            ["b"],
            "a table with an unsaved change is not catalogued"
        );
        let ghost = table("ghost");
        let todo = reg.to_save(&[&a, &b, &ghost]);
        assert_eq!(todo, HashSet::from([a.clone()]));
        assert_eq!(reg.unsaved_tables(), vec![a.clone()]);
        reg.saved(&a);
        assert!(reg.unsaved_records().is_empty());
        reg.set_catalogued(&b, 1);
        let due: Vec<&str> = reg.catalog_due().iter().map(|s| s.table.as_str()).collect();
        assert_eq!(due, ["a"]);
    }
}
