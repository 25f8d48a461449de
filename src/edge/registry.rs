//! The schema registry's store: reads and writes the versions of a
//! table's [`TableSchema`] under `{prefix}_schemas/` with the sink's
//! no-overwrite put (a writer that loses a race for a version merges the
//! winner's in and takes the next number). What to do with what is read,
//! and what is due or unsaved, is `domain::registry`'s; [`SchemaCache`] is
//! that pure view with the reads and writes around it.

use std::collections::HashMap;

use futures_util::StreamExt as _;
use std::time::{Duration, Instant};

use crate::edge::sink::{PutOutcome, Sink, SinkError};
use domain::layout;
use domain::names::RecordId;
use domain::names::TableName;
use domain::registry::{decode_segment, version_key, version_of, Registry};
use domain::schema::{log_changes, SchemaChange, TableOverrides, TableSchema};

#[derive(Debug, thiserror::Error)]
pub enum RegistryError {
    #[error("schema registry: {0}")]
    Sink(#[from] SinkError),
    /// The first read of the table's schema failed earlier in this invocation.
    #[error("schema registry: {table} could not be read: {reason}")]
    Unavailable { table: TableName, reason: String },
    #[error("schema registry: version {version} of {table} was taken {attempts} times in a row")]
    Contended {
        table: TableName,
        version: u64,
        attempts: u32,
    },
}

const ATTEMPTS: u32 = 5;

/// Tables read or stored at once by [`SchemaCache::get_many`] and
/// [`SchemaCache::save_many`].
const MAX_CONCURRENT: usize = 16;

/// The newest readable version of `table`'s schema. An unreadable version
/// (edited by hand?) is logged and skipped, but its number is not reused.
pub async fn load<S: Sink>(
    sink: &S,
    prefix: &str,
    table: &TableName,
) -> Result<Option<TableSchema>, RegistryError> {
    let keys = sink.list(&layout::schema_dir(prefix, table)).await?;
    let mut versions: Vec<(u64, &String)> = keys
        .iter()
        .filter_map(|k| version_of(k).map(|v| (v, k)))
        .collect();
    versions.sort();
    let newest = versions.last().map_or(0, |(v, _)| *v);
    for (_, key) in versions.iter().rev() {
        let Some(bytes) = sink.get(key).await? else {
            continue;
        };
        match serde_json::from_slice::<TableSchema>(&bytes) {
            Ok(mut schema) => {
                schema.version = schema.version.max(newest);
                return Ok(Some(schema));
            }
            Err(error) => {
                tracing::error!(key = key.as_str(), %error, "unreadable schema version skipped");
            }
        }
    }
    Ok((newest > 0).then(|| TableSchema {
        version: newest,
        ..TableSchema::new(table)
    }))
}

/// Every table with a stored schema (for `cdc-batcher ddl`).
pub async fn load_all<S: Sink>(sink: &S, prefix: &str) -> Result<Vec<TableSchema>, RegistryError> {
    let root = format!("{prefix}_schemas/");
    let keys = sink.list(&root).await?;
    let mut tables: Vec<TableName> = keys
        .iter()
        .filter_map(|k| {
            let mut parts = k[root.len()..].split('/');
            let (schema, table) = (parts.next()?, parts.next()?);
            Some(TableName {
                schema: decode_segment(schema),
                table: decode_segment(table),
            })
        })
        .collect();
    tables.dedup();
    let mut out = Vec::new();
    for table in tables {
        if let Some(schema) = load(sink, prefix, &table).await? {
            out.push(schema);
        }
    }
    Ok(out)
}

/// Stores `schema` as its next version. If another container stored that
/// version first, its content is merged in (the changes are returned) and the
/// next number is tried.
pub async fn save<S: Sink>(
    sink: &S,
    prefix: &str,
    schema: &mut TableSchema,
) -> Result<Vec<SchemaChange>, RegistryError> {
    let table = TableName {
        schema: schema.schema.clone(),
        table: schema.table.clone(),
    };
    let mut merged = Vec::new();
    for _ in 0..ATTEMPTS {
        let next = schema.version + 1;
        let mut stored = schema.clone();
        stored.version = next;
        let body = serde_json::to_vec_pretty(&stored).unwrap_or_default();
        let key = version_key(prefix, &table, next);
        match sink.put(&key, body, "application/json").await? {
            PutOutcome::Written => {
                schema.version = next;
                return Ok(merged);
            }
            PutOutcome::AlreadyExists => {
                if let Some(theirs) = load(sink, prefix, &table).await? {
                    merged.extend(schema.merge(&theirs));
                }
                schema.version = schema.version.max(next);
            }
        }
    }
    Err(RegistryError::Contended {
        version: schema.version + 1,
        table,
        attempts: ATTEMPTS,
    })
}

/// A container's view of the registry ([`Registry`]) and the reads and
/// writes that keep it in step with the store.
#[derive(Debug)]
pub struct SchemaCache {
    prefix: String,
    known: Registry,
}

impl SchemaCache {
    /// `refresh`: how often stored versions are looked at again.
    pub fn new(prefix: &str, refresh: Duration) -> Self {
        SchemaCache {
            prefix: prefix.to_string(),
            known: Registry::new(refresh),
        }
    }

    /// True the first time (table, column, type name) is reported.
    pub fn first_report(&mut self, table: &TableName, column: &str, type_name: &str) -> bool {
        self.known.first_report(table, column, type_name)
    }

    /// Like [`get`](Self::get), but reads the stored versions now, whatever
    /// `refresh` says (before inferring a column: another environment may
    /// have declared it).
    pub async fn get_fresh<S: Sink>(
        &mut self,
        sink: &S,
        table: &TableName,
        overrides: &TableOverrides,
    ) -> Result<&mut TableSchema, RegistryError> {
        self.known.expire(table);
        self.get(sink, table, overrides).await
    }

    /// The schema of `table`: loaded the first time (with `overrides`
    /// applied), merged with newer stored versions (another container's
    /// declarations and new columns) once `refresh` has passed.
    pub async fn get<S: Sink>(
        &mut self,
        sink: &S,
        table: &TableName,
        overrides: &TableOverrides,
    ) -> Result<&mut TableSchema, RegistryError> {
        let now = Instant::now();
        if self.known.due(table, now) {
            let loaded = load(sink, &self.prefix, table).await;
            self.known.absorb(table, overrides, loaded, now)?;
        }
        Ok(self.known.entry(table))
    }

    /// Brings each of `tables` up to date as [`get`](Self::get) would (or
    /// [`get_fresh`](Self::get_fresh), if `fresh`), reading the stored
    /// versions of several tables at once: an invocation that writes 200
    /// tables waits a few round trips, not 200. Returns the tables that have
    /// no schema to write with (their first load failed); every other one
    /// is then in [`cached`](Self::cached).
    pub async fn get_many<S: Sink>(
        &mut self,
        sink: &S,
        tables: &[(&TableName, &TableOverrides)],
        fresh: bool,
    ) -> HashMap<TableName, RegistryError> {
        let now = Instant::now();
        let prefix = self.prefix.as_str();
        let todo: Vec<_> = tables
            .iter()
            .filter(|(t, _)| fresh || self.known.due(t, now))
            .map(|&(t, o)| async move { (t, o, load(sink, prefix, t).await) })
            .collect();
        let loaded: Vec<_> = futures_util::stream::iter(todo)
            .buffer_unordered(MAX_CONCURRENT)
            .collect()
            .await;
        let mut failed = HashMap::new();
        for (table, overrides, got) in loaded {
            if let Err(error) = self.known.absorb(table, overrides, got, now) {
                failed.insert(table.clone(), error);
            }
        }
        failed
    }

    /// `table`'s schema as this container knows it, without reading.
    pub fn cached(&self, table: &TableName) -> Option<&TableSchema> {
        self.known.cached(table)
    }

    /// Mutable [`cached`](Self::cached).
    pub fn cached_mut(&mut self, table: &TableName) -> Option<&mut TableSchema> {
        self.known.cached_mut(table)
    }

    /// See [`Registry::catalog_due`].
    pub fn catalog_due(&self) -> Vec<&TableSchema> {
        self.known.catalog_due()
    }

    /// `table`'s catalog entry is at `version` (or newer).
    pub fn set_catalogued(&mut self, table: &TableName, version: u64) {
        self.known.set_catalogued(table, version);
    }

    /// `table`'s schema changed (by the record `by`, if a record did it).
    pub fn mark_unsaved(&mut self, table: &TableName, by: Option<&RecordId>) {
        self.known.mark_unsaved(table, by);
    }

    /// Records whose schema changes are not stored yet.
    pub fn unsaved_records(&self) -> Vec<RecordId> {
        self.known.unsaved_records()
    }

    /// Stores the changed schemas among `tables`, several at once. Returns
    /// how many column types changed by merging other containers' versions,
    /// and the tables that could not be stored (they stay unsaved).
    pub async fn save_many<S: Sink>(
        &mut self,
        sink: &S,
        tables: &[&TableName],
    ) -> (u64, HashMap<TableName, RegistryError>) {
        let wanted = self.known.to_save(tables);
        let prefix = self.prefix.as_str();
        let saves: Vec<_> = self
            .known
            .schemas_mut(&wanted)
            .map(|(t, schema)| async move { (t.clone(), save(sink, prefix, schema).await) })
            .collect();
        let results: Vec<_> = futures_util::stream::iter(saves)
            .buffer_unordered(MAX_CONCURRENT)
            .collect()
            .await;
        let mut type_changes = 0;
        let mut failed = HashMap::new();
        for (table, result) in results {
            match result {
                Ok(merged) => {
                    self.known.saved(&table);
                    type_changes += log_changes(&table, &merged, "another container");
                }
                Err(error) => {
                    failed.insert(table, error);
                }
            }
        }
        (type_changes, failed)
    }

    /// Stores every changed schema; what fails stays unsaved (and is logged).
    pub async fn save_all<S: Sink>(&mut self, sink: &S) -> u64 {
        let tables = self.known.unsaved_tables();
        let refs: Vec<&TableName> = tables.iter().collect();
        let (type_changes, failed) = self.save_many(sink, &refs).await;
        for (table, error) in failed {
            tracing::error!(%table, %error, "schema not stored: will retry");
        }
        type_changes
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::edge::sink::LocalDirSink;
    use domain::row::{ColumnKinds, Kinds};
    use domain::types::ColumnType;

    fn table() -> TableName {
        TableName {
            schema: "sales".into(),
            table: "a/b".into(),
        }
    }

    fn kinds(cols: &[(&str, Kinds)]) -> ColumnKinds {
        cols.iter().map(|(n, k)| (n.to_string(), *k)).collect()
    }

    #[tokio::test]
    async fn versions_round_trip_and_the_newest_wins() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        assert_eq!(load(&sink, "p/", &table()).await.unwrap(), None);
        let mut s = TableSchema::new(&table());
        s.resolve(&kinds(&[("id", Kinds::INT)]));
        save(&sink, "p/", &mut s).await.unwrap();
        s.resolve(&kinds(&[("name", Kinds::STRING)]));
        save(&sink, "p/", &mut s).await.unwrap();
        assert_eq!(s.version, 2);
        let loaded = load(&sink, "p/", &table()).await.unwrap().unwrap();
        assert_eq!(loaded, s);
        let all = load_all(&sink, "p/").await.unwrap();
        assert_eq!(all.len(), 1);
        assert_eq!(all[0].table, "a/b");
    }

    #[tokio::test]
    async fn a_concurrent_writer_is_merged_not_overwritten() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        let mut a = TableSchema::new(&table());
        let mut b = TableSchema::new(&table());
        a.resolve(&kinds(&[("x", Kinds::INT)]));
        b.resolve(&kinds(&[("x", Kinds::FLOAT), ("y", Kinds::BOOL)]));
        save(&sink, "p/", &mut a).await.unwrap();
        // b lost the race for version 1: a's stored x (as inferred as b's) wins.
        let merged = save(&sink, "p/", &mut b).await.unwrap();
        assert_eq!(merged.len(), 1, "{merged:?}");
        assert_eq!(b.version, 2);
        let stored = load(&sink, "p/", &table()).await.unwrap().unwrap();
        assert_eq!(stored.type_of("x"), Some(ColumnType::Int64));
        assert_eq!(stored.type_of("y"), Some(ColumnType::Boolean));
        // a learns b's view when it next saves.
        a.resolve(&kinds(&[("z", Kinds::STRING)]));
        let merged = save(&sink, "p/", &mut a).await.unwrap();
        assert_eq!(merged.len(), 1, "y: {merged:?}");
        assert_eq!(a.version, 3);
        assert_eq!(a.type_of("y"), Some(ColumnType::Boolean));
    }

    #[tokio::test]
    async fn an_unreadable_version_is_skipped_but_not_reused() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        let mut s = TableSchema::new(&table());
        s.resolve(&kinds(&[("id", Kinds::INT)]));
        save(&sink, "p/", &mut s).await.unwrap();
        sink.put(&version_key("p/", &table(), 2), b"{oops".to_vec(), "x")
            .await
            .unwrap();
        let loaded = load(&sink, "p/", &table()).await.unwrap().unwrap();
        assert_eq!(loaded.version, 2);
        assert_eq!(loaded.type_of("id"), Some(ColumnType::Int64));
    }

    fn named(t: &str) -> TableName {
        TableName {
            schema: "sales".into(),
            table: t.into(),
        }
    }

    /// `get_many` leaves each table as one `get` at a time would, and
    /// `save_many` stores each changed one (merging a concurrent writer's
    /// version) and leaves the others alone.
    #[tokio::test]
    async fn many_at_once_match_one_at_a_time() {
        let dir = tempfile::tempdir().unwrap();
        let sink = LocalDirSink::new(dir.path());
        let names: Vec<TableName> = (0..20).map(|i| named(&format!("t{i:02}"))).collect();
        // Half the tables have a stored version.
        for t in names.iter().step_by(2) {
            let mut s = TableSchema::new(t);
            s.resolve(&kinds(&[("id", Kinds::INT)]));
            save(&sink, "p/", &mut s).await.unwrap();
        }
        let none: Vec<(String, ColumnType)> = Vec::new();
        let mut one = SchemaCache::new("p/", Duration::from_secs(60));
        for t in &names {
            one.get(&sink, t, &none).await.unwrap();
        }
        let mut many = SchemaCache::new("p/", Duration::from_secs(60));
        let wanted: Vec<(&TableName, &TableOverrides)> =
            names.iter().map(|t| (t, none.as_slice())).collect();
        assert!(many.get_many(&sink, &wanted, false).await.is_empty());
        for t in &names {
            assert_eq!(many.cached(t), one.cached(t), "{t}");
        }

        // Every table gains a column; another writer stored t00's next
        // version first.
        for t in &names {
            let s = many.cached_mut(t).unwrap();
            assert!(!s
                .register_inferred(&kinds(&[("n", Kinds::STRING)]))
                .is_empty());
            many.mark_unsaved(t, None);
        }
        let mut theirs = load(&sink, "p/", &names[0]).await.unwrap().unwrap();
        theirs.resolve(&kinds(&[("other", Kinds::BOOL)]));
        save(&sink, "p/", &mut theirs).await.unwrap();
        let refs: Vec<&TableName> = names.iter().collect();
        let (merged, failed) = many.save_many(&sink, &refs[..10]).await;
        assert!(failed.is_empty());
        // A column another writer added is merged, not counted as a type change.
        assert_eq!(merged, 0);
        assert_eq!(
            many.cached(&names[0]).unwrap().type_of("other"),
            Some(ColumnType::Boolean),
            "t00 merged the other writer's column"
        );
        for (i, t) in names.iter().enumerate() {
            let stored = load(&sink, "p/", t).await.unwrap();
            let has_n = stored.as_ref().is_some_and(|s| s.type_of("n").is_some());
            assert_eq!(has_n, i < 10, "{t}: only the tables asked for are stored");
        }
        let t00 = load(&sink, "p/", &names[0]).await.unwrap().unwrap();
        assert_eq!(t00.type_of("other"), Some(ColumnType::Boolean));
        assert_eq!(t00.version, 3);
        // The rest is stored by save_all.
        many.save_all(&sink).await;
        for t in &names {
            let stored = load(&sink, "p/", t).await.unwrap().unwrap();
            assert!(stored.type_of("n").is_some(), "{t}");
        }
    }
}
