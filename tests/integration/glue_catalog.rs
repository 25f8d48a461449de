//! The Glue Data Catalog kept in step by the function, against a real local
//! server (moto serves Glue, Athena and S3 on one port; its Glue `UpdateTable`
//! is given the `VersionId` check AWS documents, `tests/support/moto_glue.py`):
//! create-table, add-column and drop-table records produce the expected
//! tables, columns, types, projection properties and latest-state views, also
//! with two environments racing on one table; and the definitions, read back
//! from Glue and turned into DuckDB SQL, read the lake's files
//! (`tests/support/check_glue.py`).

use std::collections::HashMap;
use std::sync::Arc;

use crate::common::*;
use cdc_batcher::app::config::Config;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::invocation;
use cdc_batcher::app::stats::Stats;
use cdc_batcher::edge::glue::GlueCatalog;
use cdc_batcher::edge::sink::S3Sink;
use domain::catalog::{VERSION_PARAM, VIEW_VERSION_PARAM};
use serde_json::{json, Value};

const DB: &str = "cdc";
const WORKGROUP: &str = "cdc-batcher";

fn config(style: &str) -> Config {
    let vars: HashMap<&str, &str> = [
        ("FLUSH_MODE", "invocation"),
        ("S3_BUCKET_NAME", BUCKET),
        ("PARTITION_STYLE", style),
        ("GLUE_DATABASE", DB),
        ("ATHENA_WORKGROUP", WORKGROUP),
        ("CATALOG_SINCE", "2026-01-01"),
        ("SCHEMA_REFRESH_SECONDS", "3600"),
    ]
    .into_iter()
    .collect();
    Config::from_lookup(|k| vars.get(k).map(|v| v.to_string())).unwrap()
}

fn pipeline(style: &str, endpoint: &str) -> Pipeline<S3Sink> {
    let (glue, athena) = catalog_clients(endpoint);
    let catalog = GlueCatalog::new(glue, athena, Some(WORKGROUP.into()));
    Pipeline::new(
        config(style),
        S3Sink::from_client(s3_client(endpoint), BUCKET),
    )
    .with_catalog(Arc::new(catalog))
    .without_metrics()
}

fn row(table: &str, us: u64, data: Value) -> Value {
    json!({"data": data, "metadata": {
        "timestamp": format!("2026-03-14T01:00:00.{us:06}Z"), "record-type": "data",
        "operation": "insert", "partition-key-type": "schema-table",
        "schema-name": "s", "table-name": table}})
}

fn control(table: &str, operation: &str, columns: Option<Value>) -> Value {
    let mut m = json!({"metadata": {"timestamp": "2026-03-14T02:00:00Z", "record-type": "control",
                        "operation": operation, "partition-key-type": "task-id",
                        "schema-name": "s", "table-name": table}});
    if let Some(columns) = columns {
        m["control"] = json!({"table-def": {"columns": columns, "primary-key": ["id"]}});
    }
    m
}

async fn send(p: &Pipeline<S3Sink>, shard: u32, seq: &mut u64, messages: &[Value]) -> Stats {
    let out = invocation::handle(p, &kinesis_event(shard, seq, messages), None)
        .await
        .unwrap();
    assert_eq!(out.redeliver_from, None, "{:?}", out.response);
    out.stats
}

/// The Glue table: (columns (name, type), partition keys, parameters, location).
struct Table {
    columns: Vec<(String, String)>,
    partitions: Vec<String>,
    params: HashMap<String, String>,
    location: String,
    serde: String,
}

async fn glue_table(glue: &aws_sdk_glue::Client, name: &str) -> Table {
    let out = glue
        .get_table()
        .database_name(DB)
        .name(name)
        .send()
        .await
        .unwrap_or_else(|e| panic!("{name}: {}", aws_sdk_glue::error::DisplayErrorContext(e)));
    let t = out.table().unwrap();
    let sd = t.storage_descriptor().unwrap();
    Table {
        columns: sd
            .columns()
            .iter()
            .map(|c| (c.name().to_string(), c.r#type().unwrap_or("").to_string()))
            .collect(),
        partitions: t
            .partition_keys()
            .iter()
            .map(|c| format!("{} {}", c.name(), c.r#type().unwrap_or("")))
            .collect(),
        params: t.parameters().cloned().unwrap_or_default(),
        location: sd.location().unwrap_or("").to_string(),
        serde: sd
            .serde_info()
            .and_then(|s| s.serialization_library())
            .unwrap_or("")
            .to_string(),
    }
}

/// Every statement Athena was given, in order.
async fn athena_statements(athena: &aws_sdk_athena::Client) -> Vec<String> {
    let ids = athena.list_query_executions().send().await.unwrap();
    let mut out = Vec::new();
    for id in ids.query_execution_ids() {
        let q = athena
            .get_query_execution()
            .query_execution_id(id)
            .send()
            .await
            .unwrap();
        let q = q.query_execution().unwrap();
        out.push(q.query().unwrap_or("").to_string());
    }
    out
}

fn newest_registry_version(
    client: &aws_sdk_s3::Client,
    rt: &tokio::runtime::Runtime,
    table: &str,
) -> u64 {
    let listed = rt
        .block_on(
            client
                .list_objects_v2()
                .bucket(BUCKET)
                .prefix(format!("cdc-data/_schemas/s/{table}/"))
                .send(),
        )
        .unwrap();
    listed
        .contents()
        .iter()
        .filter_map(|o| {
            o.key()?
                .rsplit('/')
                .next()?
                .strip_prefix('v')?
                .strip_suffix(".json")?
                .parse()
                .ok()
        })
        .max()
        .unwrap_or(0)
}

fn types(t: &Table) -> Vec<(&str, &str)> {
    t.columns
        .iter()
        .map(|(n, ty)| (n.as_str(), ty.as_str()))
        .filter(|(n, _)| !n.starts_with('_'))
        .collect()
}

/// One environment, both key layouts: create-table, rows, add-column, rows,
/// drop-table. After each step the Glue table has the registry's newest
/// version, its columns and types, the metadata columns and projection
/// matching the layout; Athena got the latest-state view for that version.
#[test]
fn ddl_records_keep_the_catalog_in_step() {
    for style in ["plain", "hive"] {
        let moto = Moto::start_with_glue_versions();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s3 = s3_client(&moto.endpoint());
        let (glue, athena) = catalog_clients(&moto.endpoint());
        rt.block_on(create_bucket(&s3));
        rt.block_on(create_database(&glue, DB));
        rt.block_on(create_workgroup(&athena, WORKGROUP));
        let p = pipeline(style, &moto.endpoint());
        let mut seq = 0;
        let t = "orders";

        let def = json!({"id": {"type": "INT32"}, "name": {"type": "STRING", "length": 20}});
        let s = rt.block_on(send(
            &p,
            0,
            &mut seq,
            &[control(t, "create-table", Some(def))],
        ));
        assert_eq!(s.catalog_failures, 0);
        assert_eq!(s.catalog_updates, 2, "table and view: {s:?}");
        let g = rt.block_on(glue_table(&glue, "s__orders"));
        assert_eq!(types(&g), [("id", "bigint"), ("name", "string")]);
        let meta: Vec<&str> = g
            .columns
            .iter()
            .map(|c| c.0.as_str())
            .filter(|n| n.starts_with('_'))
            .collect();
        assert_eq!(
            meta,
            [
                "_op",
                "_dms_timestamp",
                "_commit_timestamp",
                "_transaction_id",
                "_shard_id",
                "_sequence_number",
                "_ingested_at",
                "_before_image",
                "_rescued"
            ]
        );
        assert_eq!(g.location, format!("s3://{BUCKET}/cdc-data/s/orders/"));
        assert_eq!(g.serde, domain::catalog::SERDE);
        assert_eq!(g.params["projection.enabled"], "true");
        match style {
            "plain" => {
                assert_eq!(g.partitions, ["dt string"]);
                assert_eq!(g.params["projection.dt.format"], "yyyy/MM/dd/HH");
                assert_eq!(g.params["projection.dt.range"], "2026/01/01/00,NOW");
                assert_eq!(
                    g.params["storage.location.template"],
                    format!("s3://{BUCKET}/cdc-data/s/orders/${{dt}}/")
                );
            }
            _ => {
                assert_eq!(
                    g.partitions,
                    ["year int", "month int", "day int", "hour int"]
                );
                assert_eq!(g.params["projection.year.range"], "2026,2099");
                assert!(!g.params.contains_key("storage.location.template"));
            }
        }
        let v1 = newest_registry_version(&s3, &rt, t);
        assert_eq!(g.params[VERSION_PARAM], v1.to_string());
        assert_eq!(g.params[VIEW_VERSION_PARAM], v1.to_string());
        let views = rt.block_on(athena_statements(&athena));
        assert_eq!(views.len(), 1, "{views:?}");
        assert!(
            views[0].starts_with("CREATE OR REPLACE VIEW \"cdc\".\"s__orders__latest\""),
            "{}",
            views[0]
        );

        // Rows alone change nothing: no catalog call is repeated.
        let s = rt.block_on(send(
            &p,
            0,
            &mut seq,
            &[row(t, 1, json!({"id": 1, "name": "a"}))],
        ));
        assert_eq!((s.files, s.catalog_updates), (1, 0), "{s:?}");

        let def = json!({"id": {"type": "INT32"}, "name": {"type": "STRING"},
                         "amount": {"type": "NUMERIC", "precision": 10, "scale": 2}});
        rt.block_on(send(
            &p,
            0,
            &mut seq,
            &[control(t, "add-column", Some(def))],
        ));
        rt.block_on(send(
            &p,
            0,
            &mut seq,
            &[row(t, 2, json!({"id": 2, "name": "b", "amount": "1.50"}))],
        ));
        let g = rt.block_on(glue_table(&glue, "s__orders"));
        assert_eq!(
            types(&g),
            [
                ("id", "bigint"),
                ("name", "string"),
                ("amount", "decimal(38,6)")
            ]
        );
        let v2 = newest_registry_version(&s3, &rt, t);
        assert!(v2 > v1);
        assert_eq!(g.params[VERSION_PARAM], v2.to_string());
        let views = rt.block_on(athena_statements(&athena));
        assert_eq!(views.len(), 2, "one view per version: {views:?}");
        assert!(views[1].contains("\"amount\""), "{}", views[1]);

        rt.block_on(send(&p, 0, &mut seq, &[control(t, "drop-table", None)]));
        let g = rt.block_on(glue_table(&glue, "s__orders"));
        assert_eq!(
            g.params["cdc_batcher.dropped_at"],
            "2026-03-14T02:00:00.000000Z"
        );
        assert_eq!(
            g.params[VERSION_PARAM],
            newest_registry_version(&s3, &rt, t).to_string()
        );
        let views = rt.block_on(athena_statements(&athena));
        assert!(
            views.last().unwrap().contains(
                "\"_dms_timestamp\" > from_iso8601_timestamp('2026-03-14T02:00:00.000000Z')"
            ),
            "{views:?}"
        );
    }
}

/// A catalog outage never holds rows back: the files are written, the
/// failure is counted, and the next invocation brings the catalog up to date.
#[test]
fn a_catalog_failure_is_counted_and_retried() {
    let moto = Moto::start_with_glue_versions();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = s3_client(&moto.endpoint());
    let (glue, athena) = catalog_clients(&moto.endpoint());
    rt.block_on(create_bucket(&s3));
    rt.block_on(create_workgroup(&athena, WORKGROUP));
    // No database yet: every Glue call fails.
    let p = pipeline("plain", &moto.endpoint());
    let mut seq = 0;
    let s = rt.block_on(send(&p, 0, &mut seq, &[row("t", 1, json!({"id": 1}))]));
    assert_eq!(
        (s.files, s.catalog_failures, s.catalog_updates),
        (1, 1, 0),
        "{s:?}"
    );
    rt.block_on(create_database(&glue, DB));
    let s = rt.block_on(send(&p, 0, &mut seq, &[row("t", 2, json!({"id": 2}))]));
    assert_eq!(
        (s.files, s.catalog_failures, s.catalog_updates),
        (1, 0, 1),
        "{s:?}"
    );
    let g = rt.block_on(glue_table(&glue, "s__t"));
    assert_eq!(types(&g), [("id", "bigint")]);
    // No primary key known: no view, and none is claimed.
    assert!(!g.params.contains_key(VIEW_VERSION_PARAM));
}

/// Two environments change one table at once (each adds a column, in both
/// orders of who saves first, and with both finishing their catalog upkeep
/// concurrently): the catalog ends at the registry's newest version with
/// both columns, and never goes back to an older one.
#[test]
fn two_environments_racing_on_one_table() {
    for round in 0..4u32 {
        let moto = Moto::start_with_glue_versions();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s3 = s3_client(&moto.endpoint());
        let (glue, athena) = catalog_clients(&moto.endpoint());
        rt.block_on(create_bucket(&s3));
        rt.block_on(create_database(&glue, DB));
        rt.block_on(create_workgroup(&athena, WORKGROUP));
        let a = pipeline("plain", &moto.endpoint());
        let b = pipeline("plain", &moto.endpoint());
        let (mut sa, mut sb) = (0, 1000);
        let base = json!({"id": {"type": "INT32"}});
        rt.block_on(send(
            &a,
            0,
            &mut sa,
            &[control("r", "create-table", Some(base))],
        ));
        rt.block_on(send(&b, 1, &mut sb, &[row("r", 1, json!({"id": 1}))]));
        let with_x = json!({"id": {"type": "INT32"}, "x": {"type": "INT64"}});
        let with_y = json!({"id": {"type": "INT32"}, "y": {"type": "BOOLEAN"}});
        let ea = kinesis_event(0, &mut sa, &[control("r", "add-column", Some(with_x))]);
        let eb = kinesis_event(1, &mut sb, &[control("r", "add-column", Some(with_y))]);
        rt.block_on(async {
            let (ra, rb) = if round % 2 == 0 {
                tokio::join!(
                    invocation::handle(&a, &ea, None),
                    invocation::handle(&b, &eb, None)
                )
            } else {
                let (rb, ra) = tokio::join!(
                    invocation::handle(&b, &eb, None),
                    invocation::handle(&a, &ea, None)
                );
                (ra, rb)
            };
            assert_eq!(ra.unwrap().redeliver_from, None);
            assert_eq!(rb.unwrap().redeliver_from, None);
        });
        // Whoever lost the registry race merged the winner's column; a row
        // through each environment then carries both.
        rt.block_on(send(
            &a,
            0,
            &mut sa,
            &[row("r", 2, json!({"id": 2, "x": 5, "y": true}))],
        ));
        rt.block_on(send(
            &b,
            1,
            &mut sb,
            &[row("r", 3, json!({"id": 3, "x": 6, "y": false}))],
        ));
        let g = rt.block_on(glue_table(&glue, "s__r"));
        let newest = newest_registry_version(&s3, &rt, "r");
        assert_eq!(g.params[VERSION_PARAM], newest.to_string(), "round {round}");
        let mut cols: Vec<(&str, &str)> = types(&g);
        cols.sort();
        assert_eq!(
            cols,
            [("id", "bigint"), ("x", "bigint"), ("y", "boolean")],
            "round {round}"
        );
        // The view Athena ran last is the newest version's, and says so.
        assert_eq!(
            g.params.get(VIEW_VERSION_PARAM),
            Some(&newest.to_string()),
            "round {round}"
        );
        let views = rt.block_on(athena_statements(&athena));
        let last = views.last().unwrap();
        assert!(
            last.contains("\"x\"") && last.contains("\"y\""),
            "round {round}: {last}"
        );
    }
}

/// `ddl --apply` on a lake the function wrote without catalog upkeep (the
/// realistic corpus through `replay`): it creates every table, a second run
/// changes nothing, and the definitions read back from Glue, turned into
/// DuckDB SQL, read every file with the files' own columns and types.
#[test]
fn ddl_apply_backfills_and_the_definitions_read_the_files() {
    for style in ["plain", "hive"] {
        let moto = Moto::start_with_glue_versions();
        let rt = tokio::runtime::Runtime::new().unwrap();
        let s3 = s3_client(&moto.endpoint());
        let (glue, athena) = catalog_clients(&moto.endpoint());
        rt.block_on(create_bucket(&s3));
        rt.block_on(create_database(&glue, DB));
        rt.block_on(create_workgroup(&athena, WORKGROUP));
        let mut env = s3_env(&moto.endpoint());
        env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
        env.push(("PARTITION_STYLE", style.into()));
        let lake = format!("s3://{BUCKET}/cdc-data/");
        let events = event_files(&corpus().join("events/basic"));
        let (summary, ok) = replay(&env, &lake, &events);
        assert!(ok, "{summary}");
        let args = [
            "--lake",
            &lake,
            "--apply",
            "--database",
            DB,
            "--workgroup",
            WORKGROUP,
        ];
        let (first, ok) = ddl(&env, &args);
        assert!(ok, "{first}");
        assert!(first.lines().count() >= 5, "{first}");
        assert!(first.lines().all(|l| l.contains("table Create")), "{first}");
        let (second, ok) = ddl(&env, &args);
        assert!(ok);
        assert!(
            second
                .lines()
                .all(|l| l.contains("table Current") && !l.contains("view Created")),
            "idempotent: {second}"
        );
        let out = std::process::Command::new(python())
            .arg(repo().join("tests/support/check_glue.py"))
            .args([
                "--endpoint",
                &moto.endpoint(),
                "--bucket",
                BUCKET,
                "--database",
                DB,
                "--style",
                style,
            ])
            .output()
            .unwrap();
        let stdout = String::from_utf8_lossy(&out.stdout);
        assert!(
            out.status.success(),
            "{style}: {stdout}\n{}",
            String::from_utf8_lossy(&out.stderr)
        );
        let summary: Value = serde_json::from_str(stdout.trim()).unwrap();
        assert!(summary["tables"].as_u64().unwrap() >= 5, "{summary}");
        assert_eq!(summary["rows"], summary["rows_in_files"], "{summary}");
    }
}

/// Definitions of one table at versions 1..=6 synced by six catalogs at
/// once, in shuffled orders: Glue ends at version 6 every time (an older
/// definition never replaces a newer one, a lost race is retried), and
/// syncing an older one afterwards reports `Newer` and changes nothing.
#[test]
fn an_older_definition_never_replaces_a_newer_one() {
    use cdc_batcher::edge::glue::Catalog as _;
    use domain::catalog::{definition, Step};
    let moto = Moto::start_with_glue_versions();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (glue, athena) = catalog_clients(&moto.endpoint());
    rt.block_on(create_database(&glue, DB));
    let lake = domain::sql::Lake {
        root: format!("s3://{BUCKET}/"),
        prefix: "cdc-data/".into(),
        style: domain::layout::PartitionStyle::Plain,
        database: DB.into(),
        since: "2026-01-01".into(),
    };
    let mut seed = 7u64;
    for round in 0..8 {
        let name = format!("race{round}");
        let schema = domain::schema::TableSchema::new(&domain::names::TableName {
            schema: "s".into(),
            table: name.clone(),
        });
        let mut defs: Vec<_> = (1..=6u64)
            .map(|v| {
                let mut d = definition(&schema, &lake, false);
                d.version = v;
                d.parameters
                    .insert(domain::catalog::VERSION_PARAM.into(), v.to_string());
                d.description = format!("v{v}");
                d
            })
            .collect();
        // A deterministic shuffle per round (SplitMix64 steps).
        for i in (1..defs.len()).rev() {
            seed = seed.wrapping_add(0x9E37_79B9_7F4A_7C15);
            let j = (seed >> 33) as usize % (i + 1);
            defs.swap(i, j);
        }
        let catalogs: Vec<GlueCatalog> = (0..defs.len())
            .map(|_| GlueCatalog::new(glue.clone(), athena.clone(), None))
            .collect();
        let results = rt.block_on(futures_util::future::join_all(
            catalogs.iter().zip(&defs).map(|(c, d)| c.sync(d)),
        ));
        for r in &results {
            assert!(r.is_ok(), "round {round}: {r:?}");
        }
        let g = rt.block_on(glue_table(&glue, &format!("s__{name}")));
        assert_eq!(g.params[VERSION_PARAM], "6", "round {round}");
        let older = defs.iter().find(|d| d.version == 2).unwrap();
        let again = rt.block_on(catalogs[0].sync(older)).unwrap();
        assert_eq!(again.table, Step::Newer(6));
        assert_eq!(
            rt.block_on(glue_table(&glue, &format!("s__{name}"))).params[VERSION_PARAM],
            "6"
        );
    }
}

/// The interleaving the conditional update exists for, made certain with a
/// proxy that delays every request of environment A by 300 ms: A reads the
/// table at version 1, B replaces it with version 3 before A's update of
/// version 2 arrives. A's update carries the `VersionId` it read, so it
/// fails, A reads again and finds the newer version: Glue stays at 3.
#[test]
fn a_stale_update_loses_to_a_newer_one() {
    use crate::common::fault_proxy::{Fault, FaultProxy};
    use cdc_batcher::edge::glue::Catalog as _;
    use domain::catalog::{definition, Step};
    let moto = Moto::start_with_glue_versions();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let (glue, athena) = catalog_clients(&moto.endpoint());
    rt.block_on(create_database(&glue, DB));
    let lake = domain::sql::Lake {
        root: format!("s3://{BUCKET}/"),
        prefix: "cdc-data/".into(),
        style: domain::layout::PartitionStyle::Plain,
        database: DB.into(),
        since: "2026-01-01".into(),
    };
    let schema = domain::schema::TableSchema::new(&domain::names::TableName {
        schema: "s".into(),
        table: "stale".into(),
    });
    let at = |v: u64| {
        let mut d = definition(&schema, &lake, false);
        d.version = v;
        d.parameters.insert(VERSION_PARAM.into(), v.to_string());
        d
    };
    let b = GlueCatalog::new(glue.clone(), athena.clone(), None);
    let (outcome_a, outcome_b) = rt.block_on(async {
        b.sync(&at(1)).await.unwrap();
        let proxy = FaultProxy::start(moto.port).await;
        proxy.set(Some(Fault::Slow(std::time::Duration::from_millis(300))));
        let (slow_glue, slow_athena) = catalog_clients(&proxy.endpoint());
        let a = GlueCatalog::new(slow_glue, slow_athena, None);
        let (d2, d3) = (at(2), at(3));
        tokio::join!(a.sync(&d2), async {
            tokio::time::sleep(std::time::Duration::from_millis(400)).await;
            b.sync(&d3).await
        })
    });
    assert_eq!(outcome_b.unwrap().table, Step::Update);
    assert_eq!(outcome_a.unwrap().table, Step::Newer(3));
    let g = rt.block_on(glue_table(&glue, "s__stale"));
    assert_eq!(g.params[VERSION_PARAM], "3");
}

/// Window mode, through `replay --window` with `GLUE_DATABASE` set (the
/// function's own write path: spools, final invocations): once the replay is
/// done, every registered table is in Glue at its newest version with its
/// view, so `ddl --apply` finds nothing to do.
#[test]
fn window_mode_keeps_the_catalog_as_it_goes() {
    let moto = Moto::start_with_glue_versions();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = s3_client(&moto.endpoint());
    let (glue, athena) = catalog_clients(&moto.endpoint());
    rt.block_on(create_bucket(&s3));
    rt.block_on(create_database(&glue, DB));
    rt.block_on(create_workgroup(&athena, WORKGROUP));
    let mut env = s3_env(&moto.endpoint());
    env.push(("AWS_ENDPOINT_URL", moto.endpoint()));
    env.push(("GLUE_DATABASE", DB.into()));
    env.push(("ATHENA_WORKGROUP", WORKGROUP.into()));
    let lake = format!("s3://{BUCKET}/cdc-data/");
    let events = event_files(&corpus().join("events/three-shards"));
    let (summary, ok) = replay_with(&env, &["--window", "60"], &lake, &events);
    assert!(ok, "{summary}");
    assert_eq!(summary["catalog_failures"], 0, "{summary}");
    assert!(
        summary["catalog_updates"].as_u64().unwrap() >= 5,
        "{summary}"
    );
    let args = [
        "--lake",
        &lake,
        "--apply",
        "--database",
        DB,
        "--workgroup",
        WORKGROUP,
    ];
    let (out, ok) = ddl(&env, &args);
    assert!(ok, "{out}");
    assert!(out.lines().count() >= 5, "{out}");
    for line in out.lines() {
        assert!(
            line.contains("table Current")
                && (line.contains("view Current") || line.contains("view None")),
            "the replay left the catalog behind: {line}"
        );
    }
}

/// A message for `schema.table` (the helpers above use schema `s`).
fn in_schema(mut message: Value, schema: &str) -> Value {
    message["metadata"]["schema-name"] = json!(schema);
    message
}

/// Glue table names of the database, sorted.
async fn glue_tables(glue: &aws_sdk_glue::Client) -> Vec<String> {
    let out = glue.get_tables().database_name(DB).send().await.unwrap();
    let mut names: Vec<String> = out
        .table_list()
        .iter()
        .map(|t| t.name().to_string())
        .collect();
    names.sort();
    names
}

/// `Sales.Orders` and `sales.orders` (MySQL on Linux keeps them apart), or
/// `a_.b` and `a._b`, share one SQL name: each gets a catalog table of its
/// own, pointing at its own files, and keeps it as its schema evolves.
#[test]
fn source_tables_that_share_a_sql_name_get_a_catalog_table_each() {
    use domain::catalog::SOURCE_PARAM;
    let moto = Moto::start_with_glue_versions();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let s3 = s3_client(&moto.endpoint());
    let (glue, athena) = catalog_clients(&moto.endpoint());
    rt.block_on(create_bucket(&s3));
    rt.block_on(create_database(&glue, DB));
    rt.block_on(create_workgroup(&athena, WORKGROUP));
    let p = pipeline("plain", &moto.endpoint());
    let id = json!({"id": {"type": "INT32"}});
    let pairs = [
        (("Sales", "Orders"), ("sales", "orders")),
        (("a_", "b"), ("a", "_b")),
    ];
    let mut seq = 0;
    let mut messages = Vec::new();
    for ((s1, t1), (s2, t2)) in pairs {
        messages.push(in_schema(control(t1, "create-table", Some(id.clone())), s1));
        messages.push(in_schema(control(t2, "create-table", Some(id.clone())), s2));
        messages.push(in_schema(row(t1, 1, json!({"id": 1})), s1));
        messages.push(in_schema(row(t2, 2, json!({"id": 2})), s2));
    }
    let stats = rt.block_on(send(&p, 0, &mut seq, &messages));
    assert_eq!(stats.catalog_failures, 0);
    let names = rt.block_on(glue_tables(&glue));
    assert_eq!(names.len(), 4, "{names:?}");
    for base in ["sales__orders", "a___b"] {
        let own: Vec<&String> = names
            .iter()
            .filter(|n| {
                n.strip_prefix(&format!("{base}__h"))
                    .is_some_and(|h| h.len() == 8)
            })
            .collect();
        assert!(
            names.contains(&base.to_string()) && own.len() == 1,
            "{names:?}"
        );
        let (a, b) = (
            rt.block_on(glue_table(&glue, base)),
            rt.block_on(glue_table(&glue, own[0])),
        );
        assert_ne!(a.params[SOURCE_PARAM], b.params[SOURCE_PARAM]);
        // Each points at the files of the source table it names.
        for t in [&a, &b] {
            let source: Vec<String> = serde_json::from_str(&t.params[SOURCE_PARAM]).unwrap();
            let dir = format!(
                "/{}/{}/",
                source[0].replacen('_', "%5F", usize::from(source[0].starts_with('_'))),
                source[1]
            );
            assert!(t.location.ends_with(&dir), "{} for {source:?}", t.location);
        }
    }
    // Each view reads its own table.
    let views = rt.block_on(athena_statements(&athena));
    for name in &names {
        let view = format!("\"{DB}\".\"{name}__latest\"");
        let made = views
            .iter()
            .find(|v| v.contains(&view))
            .unwrap_or_else(|| panic!("{view}"));
        assert!(
            made.contains(&format!("FROM \"{DB}\".\"{name}\"")),
            "{made}"
        );
    }
    // A column added to the table holding the longer name: it stays there.
    let second: Vec<String> = names
        .iter()
        .filter(|n| n.starts_with("sales__orders__h"))
        .cloned()
        .collect();
    let owner: Vec<String> =
        serde_json::from_str(&rt.block_on(glue_table(&glue, &second[0])).params[SOURCE_PARAM])
            .unwrap();
    let with_x = json!({"id": {"type": "INT32"}, "x": {"type": "INT64"}});
    let add = in_schema(control(&owner[1], "add-column", Some(with_x)), &owner[0]);
    rt.block_on(send(&p, 0, &mut seq, &[add]));
    assert_eq!(rt.block_on(glue_tables(&glue)), names);
    let moved = rt.block_on(glue_table(&glue, &second[0]));
    assert!(
        moved.columns.iter().any(|(c, _)| c == "x"),
        "{:?}",
        moved.columns
    );
    let kept = rt.block_on(glue_table(&glue, "sales__orders"));
    assert!(
        !kept.columns.iter().any(|(c, _)| c == "x"),
        "{:?}",
        kept.columns
    );
}
