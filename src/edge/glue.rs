//! The Glue Data Catalog edge: puts a [`TableDefinition`] into Glue and its
//! latest-state view through Athena.
//!
//! **Tables** are written with the Glue API, conditionally: `UpdateTable`
//! carries the `VersionId` read just before (Glue's optimistic lock, which
//! Apache Iceberg's Glue catalog also relies on), and a definition made from
//! an older schema version never replaces a newer one (`catalog::plan`).
//!
//! **Views** are created by Athena itself (`StartQueryExecution` of
//! `CREATE OR REPLACE VIEW`): Athena stores a view in Glue in an encoding it
//! does not document (a base64 "Presto View" blob whose column types must
//! match what Athena derives, or the view is "stale"), so writing that blob
//! through the Glue API is not reliable; Athena's own statement is. The view
//! is made only by an environment whose schema version is the table's
//! current one, and its version is then recorded on the table
//! ([`VIEW_VERSION_PARAM`]) under the same lock. An environment whose view
//! statement finished after the table moved on reports
//! [`ViewStep::Superseded`] so the caller can build it again from the newer
//! schema.

use std::collections::HashMap;
use std::time::Duration;

use aws_sdk_athena::types::{QueryExecutionContext, QueryExecutionState};
use aws_sdk_glue::error::ProvideErrorMetadata;
use aws_sdk_glue::types::{Column as GlueColumn, SerDeInfo, StorageDescriptor, TableInput};
use futures_util::future::BoxFuture;

use domain::catalog::{
    self, Step, TableDefinition, INPUT_FORMAT, OUTPUT_FORMAT, SERDE, VERSION_PARAM,
    VIEW_VERSION_PARAM,
};
use domain::schema::TableSchema;
use domain::sql::{self, Lake};

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("glue {operation}: {message}")]
    Glue {
        operation: &'static str,
        message: String,
    },
    #[error("athena: {0}")]
    Athena(String),
    #[error("the latest-state view statement ended {state}: {reason}")]
    ViewFailed { state: String, reason: String },
    #[error("the catalog table changed under us {0} times in a row")]
    Contended(u32),
    #[error("a table definition could not be built: {0}")]
    Build(String),
    /// The name is another source table's (see `catalog::SOURCE_PARAM`).
    #[error("the catalog table {name} holds another source table ({owner})")]
    NameTaken { name: String, owner: String },
}

/// What happened to the latest-state view.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ViewStep {
    /// No view: the table has no known primary key, or views are off.
    None,
    Created,
    Current,
    /// A newer schema version owns the table; its environment makes the view.
    Skipped,
    /// This statement finished after the table moved to a newer version:
    /// the view may be this older version's; build it again from the newer.
    Superseded,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Synced {
    pub table: Step,
    pub view: ViewStep,
}

/// Keeps a table's catalog entries in step with its definition.
pub trait Catalog: Send + Sync {
    fn sync<'a>(&'a self, def: &'a TableDefinition) -> BoxFuture<'a, Result<Synced, CatalogError>>;
}

const ATTEMPTS: u32 = 6;
const POLL: Duration = Duration::from_millis(250);

/// Glue for tables, Athena (in `workgroup`) for views.
pub struct GlueCatalog {
    glue: aws_sdk_glue::Client,
    athena: aws_sdk_athena::Client,
    workgroup: Option<String>,
}

/// What the catalog holds for a table.
struct Stored {
    version: u64,
    view_version: u64,
    version_id: Option<String>,
    /// `catalog::SOURCE_PARAM`; absent in tables of earlier releases or made
    /// by hand (taken over).
    source: Option<String>,
}

impl GlueCatalog {
    pub fn new(
        glue: aws_sdk_glue::Client,
        athena: aws_sdk_athena::Client,
        workgroup: Option<String>,
    ) -> Self {
        GlueCatalog {
            glue,
            athena,
            workgroup,
        }
    }

    /// Clients from the environment's AWS configuration (`AWS_ENDPOINT_URL`
    /// and friends apply, as for S3).
    pub async fn from_env(workgroup: Option<String>) -> Self {
        let shared = aws_config::defaults(aws_config::BehaviorVersion::latest())
            .load()
            .await;
        GlueCatalog::new(
            aws_sdk_glue::Client::new(&shared),
            aws_sdk_athena::Client::new(&shared),
            workgroup,
        )
    }

    async fn get(&self, def: &TableDefinition) -> Result<Option<Stored>, CatalogError> {
        let out = self
            .glue
            .get_table()
            .database_name(&def.database)
            .name(&def.name)
            .send()
            .await;
        match out {
            Ok(out) => Ok(out.table().map(|t| {
                let params = t.parameters();
                let param = |k: &str| params.and_then(|p| p.get(k)).map(String::as_str);
                Stored {
                    version: catalog::version_in(param(VERSION_PARAM)),
                    view_version: catalog::version_in(param(VIEW_VERSION_PARAM)),
                    version_id: t.version_id().map(String::from),
                    source: param(catalog::SOURCE_PARAM).map(String::from),
                }
            })),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_entity_not_found_exception()) =>
            {
                Ok(None)
            }
            Err(e) => Err(glue_error("GetTable", e)),
        }
    }

    /// Creates the table; `false` when another environment created it first.
    async fn create(&self, def: &TableDefinition) -> Result<bool, CatalogError> {
        let input = table_input(def, None)?;
        match self
            .glue
            .create_table()
            .database_name(&def.database)
            .table_input(input)
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_already_exists_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(glue_error("CreateTable", e)),
        }
    }

    /// Replaces the table if it is still at `version_id`; `false` when it
    /// changed in between.
    async fn update(
        &self,
        def: &TableDefinition,
        view_version: Option<u64>,
        version_id: Option<&str>,
    ) -> Result<bool, CatalogError> {
        let input = table_input(def, view_version)?;
        match self
            .glue
            .update_table()
            .database_name(&def.database)
            .table_input(input)
            .set_version_id(version_id.map(String::from))
            .send()
            .await
        {
            Ok(_) => Ok(true),
            Err(e)
                if e.as_service_error()
                    .is_some_and(|s| s.is_concurrent_modification_exception()) =>
            {
                Ok(false)
            }
            Err(e) => Err(glue_error("UpdateTable", e)),
        }
    }

    /// Brings the table to `def`'s version; returns what it did and what the
    /// catalog holds now.
    async fn sync_table(&self, def: &TableDefinition) -> Result<(Step, Stored), CatalogError> {
        let mut done: Option<Step> = None;
        for _ in 0..ATTEMPTS {
            let stored = self.get(def).await?;
            let owner = stored.as_ref().and_then(|s| s.source.as_deref());
            if let Some(owner) = owner.filter(|&o| Some(o) != def.source_param()) {
                return Err(CatalogError::NameTaken {
                    name: def.name.clone(),
                    owner: owner.to_string(),
                });
            }
            let step = catalog::plan(stored.as_ref().map(|s| s.version), def.version);
            match (step, stored) {
                (Step::Create, _) => {
                    if self.create(def).await? {
                        done = Some(Step::Create);
                    }
                }
                (Step::Update, Some(s)) => {
                    if self.update(def, None, s.version_id.as_deref()).await? {
                        done = Some(Step::Update);
                    }
                }
                (Step::Current, Some(s)) => return Ok((done.unwrap_or(Step::Current), s)),
                (Step::Newer(v), Some(s)) => return Ok((Step::Newer(v), s)),
                (_, None) => {}
            }
        }
        Err(CatalogError::Contended(ATTEMPTS))
    }

    async fn sync_view(
        &self,
        def: &TableDefinition,
        stored: Stored,
        workgroup: &str,
    ) -> Result<ViewStep, CatalogError> {
        let Some(view) = &def.view else {
            return Ok(ViewStep::None);
        };
        if stored.view_version == def.version && !def.rebuild_view {
            return Ok(ViewStep::Current);
        }
        self.run(&view.sql, &def.database, workgroup).await?;
        for _ in 0..ATTEMPTS {
            let Some(now) = self.get(def).await? else {
                return Ok(ViewStep::Superseded);
            };
            if now.version != def.version {
                return Ok(ViewStep::Superseded);
            }
            if self
                .update(def, Some(def.version), now.version_id.as_deref())
                .await?
            {
                return Ok(ViewStep::Created);
            }
        }
        Err(CatalogError::Contended(ATTEMPTS))
    }

    /// Runs one Athena statement to its end (the caller bounds the time).
    async fn run(&self, sql: &str, database: &str, workgroup: &str) -> Result<(), CatalogError> {
        let context = QueryExecutionContext::builder()
            .catalog("AwsDataCatalog")
            .database(database)
            .build();
        let started = self
            .athena
            .start_query_execution()
            .query_string(sql)
            .query_execution_context(context)
            .work_group(workgroup)
            .send()
            .await
            .map_err(|e| CatalogError::Athena(describe(e)))?;
        let id = started.query_execution_id().unwrap_or_default().to_string();
        loop {
            let out = self
                .athena
                .get_query_execution()
                .query_execution_id(&id)
                .send()
                .await
                .map_err(|e| CatalogError::Athena(describe(e)))?;
            let status = out.query_execution().and_then(|q| q.status());
            match status.and_then(|s| s.state()) {
                Some(QueryExecutionState::Succeeded) => return Ok(()),
                Some(state @ (QueryExecutionState::Failed | QueryExecutionState::Cancelled)) => {
                    return Err(CatalogError::ViewFailed {
                        state: state.as_str().to_string(),
                        reason: status
                            .and_then(|s| s.state_change_reason())
                            .unwrap_or("no reason given")
                            .to_string(),
                    })
                }
                _ => tokio::time::sleep(POLL).await,
            }
        }
    }
}

/// Syncs `schema`'s table under [`sql::table_name`], or, when a table of
/// that name holds another source table, under [`sql::disambiguated_name`]
/// (every sync tries the first name again: the second stays its own).
/// Returns the definition synced and what happened.
pub async fn sync_schema(
    catalog: &dyn Catalog,
    schema: &TableSchema,
    lake: &Lake,
    with_view: bool,
    rebuild_view: bool,
) -> (TableDefinition, Result<Synced, CatalogError>) {
    let mut def = catalog::definition(schema, lake, with_view);
    def.rebuild_view = rebuild_view;
    match catalog.sync(&def).await {
        Err(CatalogError::NameTaken { name, owner }) => {
            let own = sql::disambiguated_name(schema);
            let mut own = catalog::definition_as(schema, lake, with_view, own);
            own.rebuild_view = rebuild_view;
            tracing::warn!(
                table = def.source, name, owner, own_name = own.name,
                "the catalog table of this name holds another source table: this one has a name of its own"
            );
            let result = catalog.sync(&own).await;
            (own, result)
        }
        other => (def, other),
    }
}

impl Catalog for GlueCatalog {
    fn sync<'a>(&'a self, def: &'a TableDefinition) -> BoxFuture<'a, Result<Synced, CatalogError>> {
        Box::pin(async move {
            let (table, stored) = self.sync_table(def).await?;
            let view = match (table, self.workgroup.as_deref()) {
                (Step::Newer(_), _) => ViewStep::Skipped,
                (_, None) => ViewStep::None,
                (_, Some(wg)) => self.sync_view(def, stored, wg).await?,
            };
            Ok(Synced { table, view })
        })
    }
}

fn glue_error<E, R>(operation: &'static str, e: aws_sdk_glue::error::SdkError<E, R>) -> CatalogError
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    CatalogError::Glue {
        operation,
        message: describe(e),
    }
}

/// `Code: message` for a service's answer (not the raw response), else the
/// whole chain (a timeout, a connection failure).
fn describe<E, R>(e: aws_sdk_glue::error::SdkError<E, R>) -> String
where
    E: std::error::Error + ProvideErrorMetadata + Send + Sync + 'static,
    R: std::fmt::Debug + Send + Sync + 'static,
{
    match e.as_service_error() {
        Some(s) => format!(
            "{}: {}",
            s.code().unwrap_or("unknown error"),
            s.message().unwrap_or("no message")
        ),
        None => aws_sdk_glue::error::DisplayErrorContext(e).to_string(),
    }
}

fn column(c: &catalog::Column) -> Result<GlueColumn, CatalogError> {
    GlueColumn::builder()
        .name(&c.name)
        .r#type(&c.ty)
        .comment(&c.comment)
        .build()
        .map_err(|e| CatalogError::Build(e.to_string()))
}

/// The Glue `TableInput` for `def`; `view_version` recorded when given.
fn table_input(
    def: &TableDefinition,
    view_version: Option<u64>,
) -> Result<TableInput, CatalogError> {
    let columns = def
        .columns
        .iter()
        .map(column)
        .collect::<Result<Vec<_>, _>>()?;
    let partitions = def
        .partition_keys
        .iter()
        .map(column)
        .collect::<Result<Vec<_>, _>>()?;
    let serde = SerDeInfo::builder()
        .serialization_library(SERDE)
        .parameters("serialization.format", "1")
        .build();
    let storage = StorageDescriptor::builder()
        .set_columns(Some(columns))
        .location(&def.location)
        .input_format(INPUT_FORMAT)
        .output_format(OUTPUT_FORMAT)
        .compressed(true)
        .serde_info(serde)
        .build();
    let mut parameters: HashMap<String, String> = def
        .parameters
        .iter()
        .map(|(k, v)| (k.clone(), v.clone()))
        .collect();
    if let Some(v) = view_version {
        parameters.insert(VIEW_VERSION_PARAM.into(), v.to_string());
    }
    TableInput::builder()
        .name(&def.name)
        .description(&def.description)
        .table_type("EXTERNAL_TABLE")
        .storage_descriptor(storage)
        .set_partition_keys(Some(partitions))
        .set_parameters(Some(parameters))
        .build()
        .map_err(|e| CatalogError::Build(e.to_string()))
}
