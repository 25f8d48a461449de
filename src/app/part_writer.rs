//! Writing parts: the registry brought up to date for every table at once,
//! then encoding and uploading as a pipeline — a part is encoded (on a
//! blocking thread) while earlier ones upload, and uploads are in flight
//! together. At 30 ms per S3 request, the number of round trips waited in
//! series is what decides an invocation's time, not the number of tables.

use std::collections::{HashMap, HashSet};

use futures_util::StreamExt as _;

use crate::app::config::Config;
use crate::app::stats::Stats;
use crate::edge::registry::{RegistryError, SchemaCache};
use crate::edge::sink::{PutOutcome, Sink, SinkError};
use domain::batcher::{DueReason, Part};
use domain::encode::{self, EncodeError, Encoded};
use domain::layout;
use domain::names::TableName;
use domain::schema::log_changes;
use domain::types::ColumnType;

/// Uploads in flight at once.
pub const MAX_CONCURRENT_UPLOADS: usize = 16;

/// Parts encoded ahead of the uploads (each on its own blocking thread):
/// two keep both of Lambda's vCPUs busy and bound the encoded bytes held
/// before their upload starts.
const ENCODES_AHEAD: usize = 2;

const PARQUET: &str = "application/vnd.apache.parquet";
const NDJSON: &str = "application/x-ndjson";

/// What writing a list of parts did.
#[derive(Default)]
pub(crate) struct Written {
    /// Keys of the parts that are now stored.
    pub keys: Vec<String>,
    /// Their digests (the last part of their names).
    pub digests: Vec<String>,
    /// Parts that could not be written, unchanged, for the caller to keep.
    pub failed: Vec<Part>,
}

/// A part's columns and the types it is written with.
type Types = Vec<(String, ColumnType)>;

/// One part through the pipeline.
struct Upload {
    part: Part,
    reason: DueReason,
    key: String,
    bytes: u64,
    /// `None` when the part could not be encoded and went to the quarantine.
    encoded: Option<(Vec<encode::Rescued>, u64)>,
    outcome: Result<PutOutcome, SinkError>,
}

/// The part-writing stage: it needs only the configuration (where keys go,
/// the column type overrides); the registry and the sink are handed to it.
pub(crate) struct PartWriter<'a> {
    config: &'a Config,
}

impl<'a> PartWriter<'a> {
    pub(crate) fn new(config: &'a Config) -> Self {
        PartWriter { config }
    }

    /// The key a part is written under.
    pub(crate) fn part_key(&self, part: &Part) -> String {
        layout::data_key(
            &self.config.prefix,
            self.config.partition_style,
            &part.table,
            part.hour,
            &part.ids,
            part.digest(),
            part.cut,
        )
    }

    /// Writes `parts`: types for every table first (registry reads and
    /// writes for all of them at once), then each part encoded and uploaded,
    /// at most [`MAX_CONCURRENT_UPLOADS`] uploads at once. A part that fails
    /// comes back unchanged in `failed`; results are reported in the order of
    /// `parts` (the window state lists them so).
    pub(crate) async fn write<B: Sink>(
        &self,
        schemas: &mut SchemaCache,
        sink: &B,
        parts: Vec<(Part, DueReason)>,
        stats: &mut Stats,
    ) -> Written {
        let mut written = Written::default();
        if parts.is_empty() {
            return written;
        }
        let unavailable = self.register_types(schemas, sink, &parts, stats).await;
        let mut jobs = Vec::with_capacity(parts.len());
        for (part, reason) in parts {
            let types = match unavailable.get(&part.table) {
                None => schemas
                    .cached(&part.table)
                    .map(|s| s.types_for(part.kinds())),
                Some(error) => {
                    tracing::error!(
                        table = %part.table, rows = part.row_count(), %error,
                        "schema registry unavailable: rows stay buffered for the next attempt"
                    );
                    None
                }
            };
            match types {
                Some(types) => jobs.push((part, reason, types)),
                None => {
                    stats.failed_files += 1;
                    stats.failed_rows += part.row_count() as u64;
                    written.failed.push(part);
                }
            }
        }
        let uploads = self.encode_and_upload(sink, jobs).await;
        for upload in uploads {
            account(upload, &mut written, stats);
        }
        written
    }

    /// Registers the columns `parts` bring and stores each table's schema if
    /// that changed it, reading and storing several tables at once. Before
    /// writing a column whose type would only be inferred (new here, or
    /// registered from values), the registry is read again: another
    /// environment may have registered its declared type. Tables whose types
    /// are all declared cost no extra read. Returns the tables whose schema
    /// is not available to write with.
    async fn register_types<B: Sink>(
        &self,
        schemas: &mut SchemaCache,
        sink: &B,
        parts: &[(Part, DueReason)],
        stats: &mut Stats,
    ) -> HashMap<TableName, RegistryError> {
        let with_overrides = self
            .config
            .with_overrides(parts.iter().map(|(p, _)| &p.table));
        let mut unavailable = schemas.get_many(sink, &with_overrides, false).await;
        let provisional: HashSet<&TableName> = parts
            .iter()
            .filter(|(p, _)| {
                schemas
                    .cached(&p.table)
                    .is_some_and(|s| s.has_provisional(p.kinds()))
            })
            .map(|(p, _)| &p.table)
            .collect();
        let fresh: Vec<_> = with_overrides
            .iter()
            .filter(|(t, _)| !unavailable.contains_key(*t) && provisional.contains(t))
            .copied()
            .collect();
        unavailable.extend(schemas.get_many(sink, &fresh, true).await);
        for (part, _) in parts {
            if unavailable.contains_key(&part.table) {
                continue;
            }
            let Some(schema) = schemas.cached_mut(&part.table) else {
                continue;
            };
            let changes = schema.register_inferred(part.kinds());
            log_changes(&part.table, &changes, "values");
            if !changes.is_empty() {
                schemas.mark_unsaved(&part.table, None);
            }
        }
        // Storing may merge a stored version whose declared types win: the
        // types are taken from the cache after this.
        let available: Vec<&TableName> = with_overrides
            .iter()
            .map(|(t, _)| *t)
            .filter(|t| !unavailable.contains_key(*t))
            .collect();
        let (type_changes, not_stored) = schemas.save_many(sink, &available).await;
        stats.column_type_changes += type_changes;
        unavailable.extend(not_stored);
        unavailable
    }

    /// Encodes each part on a blocking thread, [`ENCODES_AHEAD`] at a time,
    /// and uploads it as soon as it is encoded; a part that cannot be encoded
    /// would fail the same way forever and block its table, so its rows go
    /// to the quarantine as JSON lines instead.
    async fn encode_and_upload<B: Sink>(
        &self,
        sink: &B,
        jobs: Vec<(Part, DueReason, Types)>,
    ) -> Vec<Upload> {
        let prefix = self.config.prefix.as_str();
        // Futures made up front: a closure inside the stream trips the
        // compiler's Send check for the runtime's handler future.
        let encodes: Vec<_> = jobs
            .into_iter()
            .map(|(part, reason, types)| {
                let key = self.part_key(&part);
                async move {
                    let (part, encoded) = encode_blocking(part, types).await;
                    (part, reason, key, encoded)
                }
            })
            .collect();
        let puts = futures_util::stream::iter(encodes)
            .buffered(ENCODES_AHEAD)
            .map(move |(part, reason, key, encoded)| {
                upload(sink, prefix, part, reason, key, encoded)
            });
        puts.buffered(MAX_CONCURRENT_UPLOADS).collect().await
    }
}

/// Logs and counts one part's outcome.
fn account(upload: Upload, written: &mut Written, stats: &mut Stats) {
    let Upload {
        part,
        reason,
        key,
        bytes,
        encoded,
        outcome,
    } = upload;
    let rows = part.row_count() as u64;
    match outcome {
        Ok(outcome) => {
            tracing::info!(
                table = %part.table, key, rows, bytes, reason = ?reason,
                already_existed = outcome == PutOutcome::AlreadyExists,
                "file written"
            );
            match encoded {
                Some((rescued, inexact)) => {
                    log_rescued(&part.table, &rescued, inexact, stats);
                    stats.files += 1;
                    stats.rows_written += rows;
                    let table = stats.tables.entry(part.table.to_string()).or_default();
                    table.files += 1;
                    table.rows_written += rows;
                }
                None => stats.quarantined += rows,
            }
            stats.bytes_written += bytes;
            written.digests.push(part.digest().to_string());
            written.keys.push(key);
        }
        Err(error) => {
            tracing::error!(
                table = %part.table, key, rows, %error,
                "file not written: rows stay buffered for the next attempt"
            );
            stats.failed_files += 1;
            stats.failed_rows += rows;
            written.failed.push(part);
        }
    }
}

/// Encodes `part` off the async threads, so uploads already in flight make
/// progress meanwhile. A panic in the encoder is resumed here, as if it had
/// happened inline.
async fn encode_blocking(part: Part, types: Types) -> (Part, Result<Encoded, EncodeError>) {
    let joined = tokio::task::spawn_blocking(move || {
        let encoded = encode::to_parquet(&part, &types);
        (part, encoded)
    })
    .await;
    match joined {
        Ok(done) => done,
        // Only a panic (or a runtime shutting down, which ends the process)
        // gets here.
        Err(error) => std::panic::resume_unwind(
            error
                .try_into_panic()
                .unwrap_or_else(|e| Box::new(e.to_string())),
        ),
    }
}

async fn upload<B: Sink>(
    sink: &B,
    prefix: &str,
    part: Part,
    reason: DueReason,
    key: String,
    encoded: Result<Encoded, EncodeError>,
) -> Upload {
    let (key, body, content_type, encoded) = match encoded {
        Ok(e) => (key, e.bytes, PARQUET, Some((e.rescued, e.inexact_integers))),
        Err(error) => {
            let key = layout::unencodable_key(
                prefix,
                &part.table,
                part.hour,
                &part.ids,
                part.digest(),
                part.cut,
            );
            tracing::error!(
                table = %part.table, key, rows = part.row_count(), error = error.kind(),
                "rows could not be encoded as Parquet: writing them to the quarantine"
            );
            (key, part.json_lines(), NDJSON, None)
        }
    };
    let bytes = body.len() as u64;
    let outcome = sink.put(&key, body, content_type).await;
    Upload {
        part,
        reason,
        key,
        bytes,
        encoded,
        outcome,
    }
}

/// Values kept as text in `_rescued`, and BIGINTs that lost digits upstream:
/// counted and logged without the value.
fn log_rescued(table: &TableName, rescued: &[encode::Rescued], inexact: u64, stats: &mut Stats) {
    if inexact > 0 {
        tracing::warn!(
            %table, values = inexact,
            "BIGINT values arrived in scientific notation: digits were lost before \
             DMS sent them (set UseLargeIntegerValue=true on the DMS endpoint)"
        );
    }
    for r in rescued {
        tracing::warn!(
            %table, column = r.column, r#type = %r.ty, values = r.values,
            "values that do not fit their column's type were kept as text in _rescued \
             (the column is NULL in those rows)"
        );
        stats.rescued_values += r.values;
        stats
            .tables
            .entry(table.to_string())
            .or_default()
            .rescued_values += r.values;
    }
    stats.inexact_integers += inexact;
}
