//! Catalog upkeep at the end of an invocation: every table whose stored
//! schema version this environment has not brought to the Glue Data Catalog
//! yet gets its table (and view) definition synced, after the rows are
//! written and within the invocation's time. A failure is logged and
//! counted (`CatalogFailures`, alarmed) and never touches what the
//! invocation reports to Kinesis: the table stays due and is tried again at
//! the next invocation.

use std::time::{Duration, SystemTime};

use crate::catalog::{self, Step};
use crate::dms::TableName;
use crate::glue::ViewStep;
use crate::handler::{time_left, Pipeline, State, Stats};
use crate::sink::{Sink, DEADLINE_MARGIN};
use crate::sql::Lake;

/// At most this long per invocation on the catalog: rows come first.
const BUDGET: Duration = Duration::from_secs(20);

impl<S: Sink> Pipeline<S> {
    /// Brings the catalog entries of the tables that are due to their
    /// registered version.
    pub(crate) async fn sync_catalog(
        &self,
        state: &mut State,
        deadline: Option<SystemTime>,
        stats: &mut Stats,
    ) {
        let (Some(upkeep), Some(settings)) = (&self.catalog, &self.config.catalog) else {
            return;
        };
        let due: Vec<_> = state.schemas.catalog_due().into_iter().cloned().collect();
        if due.is_empty() {
            return;
        }
        let lake = Lake {
            root: format!(
                "s3://{}/",
                self.config.s3.bucket.as_deref().unwrap_or_default()
            ),
            prefix: self.config.prefix.clone(),
            style: self.config.partition_style,
            database: settings.database.clone(),
            since: settings.since.clone(),
        };
        let until = std::time::Instant::now()
            + BUDGET.min(time_left(deadline).saturating_sub(DEADLINE_MARGIN));
        for mut schema in due {
            let table = TableName {
                schema: schema.schema.clone(),
                table: schema.table.clone(),
            };
            // A second pass when a newer version turned up: build from it.
            let mut rebuild_view = false;
            for pass in 0..2 {
                let left = until.saturating_duration_since(std::time::Instant::now());
                if left < Duration::from_millis(500) {
                    tracing::info!(%table, "catalog upkeep left for the next invocation: out of time");
                    return;
                }
                let mut def = catalog::definition(&schema, &lake, settings.workgroup.is_some());
                def.rebuild_view = rebuild_view;
                let synced = match tokio::time::timeout(left, upkeep.sync(&def)).await {
                    Ok(Ok(synced)) => synced,
                    Ok(Err(error)) => {
                        tracing::error!(%table, version = def.version, %error, "catalog not updated: retried at the next invocation");
                        stats.catalog_failures += 1;
                        break;
                    }
                    Err(_) => {
                        tracing::error!(%table, version = def.version, "catalog update timed out: retried at the next invocation");
                        stats.catalog_failures += 1;
                        break;
                    }
                };
                let table_changed = matches!(synced.table, Step::Create | Step::Update);
                let view_changed = synced.view == ViewStep::Created;
                stats.catalog_updates += u64::from(table_changed) + u64::from(view_changed);
                if table_changed || view_changed {
                    tracing::info!(%table, version = def.version, table_step = ?synced.table, view_step = ?synced.view, "catalog updated");
                }
                let newer =
                    matches!(synced.table, Step::Newer(_)) || synced.view == ViewStep::Superseded;
                if !newer {
                    state.schemas.set_catalogued(&table, def.version);
                    break;
                }
                // Another environment stored a newer schema: read it and sync that.
                let overrides = self.config.overrides_for(&table);
                match state.schemas.get_fresh(&self.sink, &table, overrides).await {
                    Ok(fresh) if pass == 0 && fresh.version > schema.version => {
                        rebuild_view = synced.view == ViewStep::Superseded;
                        schema = fresh.clone();
                    }
                    _ => {
                        // Its environment brings the catalog to its version.
                        state.schemas.set_catalogued(&table, def.version);
                        break;
                    }
                }
            }
        }
    }
}
