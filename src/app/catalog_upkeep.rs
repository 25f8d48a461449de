//! Catalog upkeep at the end of an invocation: every table whose stored
//! schema version this environment has not brought to the Glue Data Catalog
//! yet gets its table (and view) definition synced, after the rows are
//! written and within the invocation's time, several tables at once. A
//! failure is logged and counted (`CatalogFailures`, alarmed) and never
//! touches what the invocation reports to Kinesis: the table stays due and
//! is tried again at the next invocation.
//!
//! A stage of its own: it owns the catalog client and the lake it
//! describes, and reads only the registry the pipeline hands it.

use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime};

use futures_util::StreamExt as _;

use crate::app::config::Config;
use crate::app::stats::Stats;
use crate::edge::glue::{self, Catalog, CatalogError, Synced, ViewStep};
use crate::edge::registry::SchemaCache;
use crate::edge::sink::{time_left, Sink, DEADLINE_MARGIN};
use domain::catalog::{self, Step, TableDefinition};
use domain::names::TableName;
use domain::schema::TableSchema;
use domain::sql::Lake;

/// At most this long per invocation on the catalog: rows come first.
const BUDGET: Duration = Duration::from_secs(20);
/// Tables synced at once (a cold environment meets every table of a window).
const CONCURRENT: usize = 8;

enum Outcome {
    Synced(Synced),
    Failed(CatalogError),
    TimedOut,
}

/// The catalog stage: the Glue Data Catalog (`GLUE_DATABASE`) and the lake
/// its tables point at.
pub struct CatalogUpkeep {
    catalog: Arc<dyn Catalog>,
    lake: Lake,
    /// Latest-state views too (`ATHENA_WORKGROUP`).
    with_view: bool,
}

impl CatalogUpkeep {
    /// `None` when `config` names no catalog.
    pub fn new(catalog: Arc<dyn Catalog>, config: &Config) -> Option<Self> {
        let settings = config.catalog.as_ref()?;
        Some(CatalogUpkeep {
            catalog,
            lake: Lake {
                root: format!("s3://{}/", config.s3.bucket.as_deref().unwrap_or_default()),
                prefix: config.prefix.clone(),
                style: config.partition_style,
                database: settings.database.clone(),
                since: settings.since.clone(),
            },
            with_view: settings.workgroup.is_some(),
        })
    }

    /// Brings the catalog entries of the tables that are due to their
    /// registered version (`schemas` read through `sink` when another
    /// environment stored a newer one).
    pub(crate) async fn sync<S: Sink>(
        &self,
        schemas: &mut SchemaCache,
        sink: &S,
        config: &Config,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) {
        let due: Vec<TableSchema> = schemas.catalog_due().into_iter().cloned().collect();
        if due.is_empty() {
            return;
        }
        let until =
            Instant::now() + BUDGET.min(time_left(deadline).saturating_sub(DEADLINE_MARGIN));
        let due: Vec<(TableSchema, bool)> = due.into_iter().map(|s| (s, false)).collect();
        let mut again = Vec::new();
        for (def, result) in self.sync_all(due, until).await {
            if let Some(rebuild_view) = note(schemas, &def, result, stats) {
                again.push((def, rebuild_view));
            }
        }
        // Another environment stored a newer schema: read it and sync that
        // (rare; one table at a time).
        for (old, rebuild_view) in again {
            let table = table_of(&old);
            let overrides = config.overrides_for(&table);
            // Bounded like the syncs: rows come first.
            let left = until.saturating_duration_since(Instant::now());
            let read = schemas.get_fresh(sink, &table, overrides);
            let fresh = match tokio::time::timeout(left, read).await {
                Err(_) => {
                    tracing::error!(
                        table = old.source.as_str(),
                        "catalog update out of time reading the registry: retried at the next invocation"
                    );
                    stats.catalog_failures += 1;
                    continue;
                }
                Ok(read) => read,
            };
            let fresh = match fresh {
                Ok(fresh) if fresh.version > old.version => fresh.clone(),
                // Its environment brings the catalog to its version.
                _ => {
                    schemas.set_catalogued(&table, old.version);
                    continue;
                }
            };
            let fresh = vec![(fresh, rebuild_view)];
            for (def, result) in self.sync_all(fresh, until).await {
                if note(schemas, &def, result, stats).is_some() {
                    schemas.set_catalogued(&table, def.version);
                }
            }
        }
    }

    /// Syncs the tables of `schemas` (each with whether its view is to be
    /// made again), at most [`CONCURRENT`] at once, each bounded by `until`.
    async fn sync_all(
        &self,
        schemas: Vec<(TableSchema, bool)>,
        until: Instant,
    ) -> Vec<(TableDefinition, Outcome)> {
        let (upkeep, lake, with_view) = (&self.catalog, &self.lake, self.with_view);
        futures_util::stream::iter(schemas)
            .map(|(schema, rebuild_view)| async move {
                let left = until.saturating_duration_since(Instant::now());
                let sync =
                    glue::sync_schema(upkeep.as_ref(), &schema, lake, with_view, rebuild_view);
                match tokio::time::timeout(left, sync).await {
                    Ok((def, Ok(synced))) => (def, Outcome::Synced(synced)),
                    Ok((def, Err(error))) => (def, Outcome::Failed(error)),
                    Err(_) => (
                        catalog::definition(&schema, lake, with_view),
                        Outcome::TimedOut,
                    ),
                }
            })
            .buffer_unordered(CONCURRENT)
            .collect()
            .await
    }
}

/// Counts and logs one table's outcome and records it as catalogued.
/// Returns `Some(rebuild_view)` when a newer schema version turned up.
fn note(
    schemas: &mut SchemaCache,
    def: &TableDefinition,
    result: Outcome,
    stats: &mut Stats,
) -> Option<bool> {
    let table = def.source.as_str();
    let synced = match result {
        Outcome::Synced(s) => s,
        Outcome::Failed(error) => {
            tracing::error!(table, version = def.version, %error, "catalog not updated: retried at the next invocation");
            stats.catalog_failures += 1;
            return None;
        }
        Outcome::TimedOut => {
            tracing::error!(
                table,
                version = def.version,
                "catalog update out of time: retried at the next invocation"
            );
            stats.catalog_failures += 1;
            return None;
        }
    };
    let table_changed = matches!(synced.table, Step::Create | Step::Update);
    let view_changed = synced.view == ViewStep::Created;
    stats.catalog_updates += u64::from(table_changed) + u64::from(view_changed);
    if table_changed || view_changed {
        tracing::info!(table, version = def.version, table_step = ?synced.table, view_step = ?synced.view, "catalog updated");
    }
    let superseded = synced.view == ViewStep::Superseded;
    if matches!(synced.table, Step::Newer(_)) || superseded {
        return Some(superseded);
    }
    schemas.set_catalogued(&table_of(def), def.version);
    None
}

fn table_of(def: &TableDefinition) -> TableName {
    TableName {
        schema: def.schema.clone(),
        table: def.table.clone(),
    }
}
