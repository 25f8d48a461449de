//! Column types that hold across environments, odd values and real DMS
//! tasks: pipelines sharing one registry in a real S3 server (moto) with
//! stale caches and conditional-write conflicts, in both orders of a
//! declaration and the first row that uses it; and one fixture per source
//! engine (MySQL, PostgreSQL, Oracle, SQL Server) whose DMS type names and
//! odd values follow the DMS documentation's source data-type chapters.

use std::path::Path;

use crate::common::*;
use cdc_batcher::app::handler::Pipeline;
use cdc_batcher::app::invocation;
use cdc_batcher::app::stats::Stats;
use cdc_batcher::edge::sink::{LocalDirSink, S3Sink, Sink};
use serde_json::{json, Value};

fn row(table: &str, seq: u64, data: Value) -> Value {
    json!({"data": data, "metadata": {
        "timestamp": format!("2026-03-14T01:00:00.{seq:06}Z"), "record-type": "data",
        "operation": "insert", "partition-key-type": "schema-table",
        "schema-name": "s", "table-name": table}})
}

/// An `add-column` control record whose table-def declares `columns`.
fn declare(table: &str, columns: Value) -> Value {
    json!({"control": {"table-def": {"columns": columns, "primary-key": ["id"]}},
           "metadata": {"timestamp": "2026-03-14T01:00:00Z", "record-type": "control",
                        "operation": "add-column", "partition-key-type": "task-id",
                        "schema-name": "s", "table-name": table}})
}

async fn send<S: Sink>(p: &Pipeline<S>, shard: u32, seq: &mut u64, messages: &[Value]) -> Stats {
    let out = invocation::handle(p, &kinesis_event(shard, seq, messages), None)
        .await
        .unwrap();
    assert_eq!(out.redeliver_from, None, "{:?}", out.response);
    assert_eq!(out.stats.quarantined, 0);
    out.stats
}

/// Copies every object of the test bucket into `dir`.
async fn download(client: &aws_sdk_s3::Client, dir: &Path) {
    let listed = client
        .list_objects_v2()
        .bucket(BUCKET)
        .send()
        .await
        .unwrap();
    for object in listed.contents() {
        let key = object.key().unwrap();
        let body = client.get_object().bucket(BUCKET).key(key).send().await;
        let bytes = body.unwrap().body.collect().await.unwrap().into_bytes();
        let path = dir.join(key);
        std::fs::create_dir_all(path.parent().unwrap()).unwrap();
        std::fs::write(path, bytes).unwrap();
    }
}

/// `id` → the Arrow type of `column` in the file holding that row.
fn types_by_id(dir: &Path, table: &str, column: &str) -> Value {
    let out = python_stdout(
        r#"
import sys, glob, json, pyarrow.parquet as pq
rows = {}
for f in glob.glob(f"{sys.argv[1]}/cdc-data/s/{sys.argv[2]}/**/*.parquet", recursive=True):
    t = pq.read_table(f)
    ty = str(t.schema.field(sys.argv[3]).type) if sys.argv[3] in t.schema.names else None
    for i in t.column("id").to_pylist():
        rows[str(i)] = ty
print(json.dumps(rows, sort_keys=True))
"#,
        &[dir.to_str().unwrap(), table, column],
    );
    serde_json::from_str(&out).unwrap()
}

fn newest_registry(dir: &Path, table: &str) -> Value {
    let newest = std::fs::read_dir(dir.join("cdc-data/_schemas/s").join(table))
        .unwrap()
        .map(|e| e.unwrap().path())
        .max()
        .unwrap();
    serde_json::from_slice(&std::fs::read(newest).unwrap()).unwrap()
}

fn registered_type(registry: &Value, column: &str) -> Value {
    registry["columns"]
        .as_array()
        .unwrap()
        .iter()
        .find(|c| c["name"] == column)
        .map(|c| json!([c["type"], c["origin"]]))
        .unwrap_or(Value::Null)
}

/// Two environments (A gets the control records on shard 1, B the rows on
/// shard 0), both warm with caches that never refresh on their own. Whether
/// the declaration or the first row with the new column comes first, the
/// registered type is the declared one; in the data-first order the one file
/// written before the declaration is the only one listed by `ddl --check`.
#[test]
fn declared_types_win_in_both_orders_across_environments() {
    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(&moto.endpoint());
    rt.block_on(create_bucket(&client));
    let vars = [
        ("FLUSH_MODE", "invocation"),
        ("SCHEMA_REFRESH_SECONDS", "3600"),
    ];
    let amount = json!({"id": {"type": "INT32"},
                        "amount": {"type": "NUMERIC", "precision": 10, "scale": 2}});
    for (table, declaration_first) in [("decl_first", true), ("data_first", false)] {
        let a = Pipeline::new(config(&vars), S3Sink::from_client(client.clone(), BUCKET))
            .without_metrics();
        let b = Pipeline::new(config(&vars), S3Sink::from_client(client.clone(), BUCKET))
            .without_metrics();
        let mut seq = 0;
        rt.block_on(async {
            // Both environments cache the table before `amount` exists.
            send(
                &a,
                1,
                &mut seq,
                &[declare(table, json!({"id": {"type": "INT32"}}))],
            )
            .await;
            send(&b, 0, &mut seq, &[row(table, 1, json!({"id": 1}))]).await;
            send(&a, 1, &mut seq, &[row(table, 2, json!({"id": 2}))]).await;
            let data = row(table, 3, json!({"id": 3, "amount": "12.50"}));
            if declaration_first {
                send(&a, 1, &mut seq, &[declare(table, amount.clone())]).await;
                // B's cached copy is stale: it reads the registry before inferring.
                send(&b, 0, &mut seq, &[data]).await;
            } else {
                // B infers STRING and stores it; A's stale save then conflicts
                // with B's version, merges it, and its declaration wins.
                send(&b, 0, &mut seq, &[data]).await;
                let s = send(&a, 1, &mut seq, &[declare(table, amount.clone())]).await;
                assert_eq!(s.column_type_changes, 1, "{s:?}");
            }
            send(
                &b,
                0,
                &mut seq,
                &[row(table, 4, json!({"id": 4, "amount": "7.25"}))],
            )
            .await;
            send(
                &a,
                1,
                &mut seq,
                &[row(table, 5, json!({"id": 5, "amount": "1.10"}))],
            )
            .await;
        });
        let dir = tempfile::tempdir().unwrap();
        rt.block_on(download(&client, dir.path()));
        let registry = newest_registry(dir.path(), table);
        assert_eq!(
            registered_type(&registry, "amount"),
            json!(["decimal(38,6)", "table-def"]),
            "{table}: {registry}"
        );
        let decimal = "decimal128(38, 6)";
        let types = types_by_id(dir.path(), table, "amount");
        let (sql, ok) = ddl(
            &s3_env(&moto.endpoint()),
            &[
                "--lake",
                &format!("s3://{BUCKET}/cdc-data/"),
                "--check",
                "--table",
                &format!("s.{table}"),
            ],
        );
        if declaration_first {
            assert_eq!(
                types,
                json!({"1": null, "2": null, "3": decimal, "4": decimal, "5": decimal})
            );
            assert!(ok && sql.is_empty(), "{sql}");
        } else {
            assert_eq!(
                types,
                json!({"1": null, "2": null, "3": "string", "4": decimal, "5": decimal})
            );
            let lines: Vec<&str> = sql.lines().collect();
            assert!(!ok);
            assert_eq!(lines.len(), 1, "{sql}");
            assert!(
                lines[0].contains("\tamount\tUtf8\tdecimal(38,6)\t")
                    && lines[0].contains("replaced string by decimal(38,6) (a DMS table-def)"),
                "{sql}"
            );
            assert_eq!(registry["retyped"][0]["from"], "string");
        }
    }
}

/// The registry's conditional write against a real S3 server: two stale
/// views race for one version number, in both orders; the declared type is
/// what is stored either way.
#[test]
fn a_registry_conflict_keeps_the_declared_type_in_either_order() {
    use cdc_batcher::edge::registry;
    use domain::dms::{ColumnDef, TableDef};
    use domain::names::TableName;
    use domain::row::Kinds;
    use domain::schema::TableSchema;
    use domain::types::ColumnType;

    let moto = Moto::start();
    let rt = tokio::runtime::Runtime::new().unwrap();
    let client = s3_client(&moto.endpoint());
    rt.block_on(create_bucket(&client));
    let sink = S3Sink::from_client(client, BUCKET);
    for (n, declared_saves_first) in [(0, true), (1, false)] {
        let table = TableName {
            schema: "s".into(),
            table: format!("race{n}"),
        };
        let mut declared = TableSchema::new(&table);
        declared.apply_table_def(
            &TableDef {
                columns: vec![ColumnDef {
                    name: "amount".into(),
                    type_name: "NUMERIC".into(),
                    precision: Some(12),
                    scale: Some(2),
                }],
                primary_key: vec![],
            },
            &[],
            2,
        );
        let mut inferred = TableSchema::new(&table);
        let kinds = [("amount".to_string(), Kinds::STRING)]
            .into_iter()
            .collect();
        inferred.resolve(&kinds);
        let (first, second) = if declared_saves_first {
            (&mut declared, &mut inferred)
        } else {
            (&mut inferred, &mut declared)
        };
        rt.block_on(async {
            registry::save(&sink, "p/", first).await.unwrap();
            // Same version number: the conditional write fails, the loser merges.
            registry::save(&sink, "p/", second).await.unwrap();
        });
        let stored = rt
            .block_on(registry::load(&sink, "p/", &table))
            .unwrap()
            .unwrap();
        assert_eq!(stored.version, 2);
        assert_eq!(
            stored.type_of("amount"),
            Some(ColumnType::Decimal { scale: 2 }),
            "declared saves first: {declared_saves_first}"
        );
        assert_eq!(stored.retyped.len(), usize::from(!declared_saves_first));
    }
}

/// What each fixture row's `_rescued` must hold: (table dir, key column, key) → object.
fn expected_rescues() -> Value {
    json!({
        "mysql": {"shop/items": {"2": {"price": "0.0000001", "born": "0000-00-00",
                                       "seen_at": "0000-00-00T00:00:00Z", "blob": "0xABC"}}},
        "postgresql": {"public/orders": {"2": {"amount": "NaN", "day": "infinity",
                                               "at": "infinity", "data": "0xZZ",
                                               "cash": "1.23456"}}},
        "oracle": {"HR/EMP": {"7370.000000": {"qty": "0.00000000001", "bf": "1e400",
                                              "created": "-4712-01-01T00:00:00Z",
                                              "precise": "2026-03-14T01:02:03.123456789Z",
                                              "r": "0x1"}}},
        "sqlserver": {"dbo/Orders": {"2": {"placed2": "2026-03-14T01:02:03.1234567Z",
                                           "bin": "0xCAF"}}},
    })
}

/// One fixture per source engine: every column's Parquet type is the one
/// its DMS type name maps to, in every file (the schema checker's checks 1,
/// 4 and 5); odd values are in `_rescued` exactly; DuckDB's `union_by_name`
/// and Spark's `mergeSchema` read each table's files together with the
/// registered types; DMS's own status table is skipped and counted.
#[test]
fn every_engine_is_typed_as_declared_and_odd_values_are_rescued_exactly() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let expected = expected_rescues();
    let (mut lakes, mut kept) = (Vec::new(), Vec::new());
    for engine in ["mysql", "postgresql", "oracle", "sqlserver"] {
        let fixture = repo().join(format!("tests/fixtures/engines/{engine}.jsonl"));
        let messages: Vec<Value> = std::fs::read_to_string(&fixture)
            .unwrap()
            .lines()
            .map(|l| serde_json::from_str(l).unwrap())
            .collect();
        let dir = tempfile::tempdir().unwrap();
        let p = Pipeline::new(
            config(&[("FLUSH_MODE", "invocation")]),
            LocalDirSink::new(dir.path()),
        )
        .without_metrics();
        let mut total = Stats::default();
        let mut seq = 0;
        rt.block_on(async {
            // One record per invocation: each row its own file.
            for m in &messages {
                total.add(&send(&p, 0, &mut seq, std::slice::from_ref(m)).await);
            }
        });
        assert_eq!(total.quarantined, 0, "{engine}");
        assert_eq!(
            total.dms_table_records,
            u64::from(engine == "mysql"),
            "{engine}"
        );
        let want = &expected[engine];
        let rescued_total: usize = want
            .as_object()
            .unwrap()
            .values()
            .flat_map(|t| t.as_object().unwrap().values())
            .map(|r| r.as_object().unwrap().len())
            .sum();
        assert_eq!(total.rescued_values as usize, rescued_total, "{engine}");
        assert_eq!(total.column_type_changes, 0, "{engine}");

        let check = check_schema(dir.path(), &["--messages", fixture.to_str().unwrap()]);
        assert!(check.ok, "{engine}: {}", check.summary);
        let got = python_stdout(
            r#"
import sys, os, glob, json, duckdb, pyarrow.parquet as pq
root = os.path.join(sys.argv[1], "cdc-data")
want = json.loads(sys.argv[2])
duck = {"bigint": "BIGINT", "double": "DOUBLE", "boolean": "BOOLEAN", "date": "DATE",
        "timestamp": "TIMESTAMP WITH TIME ZONE", "timestamp_ntz": "TIMESTAMP",
        "binary": "BLOB", "string": "VARCHAR"}
out = {"rescued": {}, "duckdb": {}}
for table in want:
    key = "orderid" if table == "dbo/Orders" else "id"
    rescued = {}
    for f in glob.glob(f"{root}/{table}/**/*.parquet", recursive=True):
        t = pq.read_table(f)
        for k, r in zip(t.column(key).to_pylist(), t.column("_rescued").to_pylist()):
            if r is not None:
                rescued[str(k)] = json.loads(r)
    out["rescued"][table] = rescued
    # Every file of the table read together, by name.
    cols = duckdb.sql(f"DESCRIBE SELECT * FROM read_parquet('{root}/{table}/**/*.parquet', "
                      "union_by_name = true)").fetchall()
    versions = sorted(glob.glob(f"{root}/_schemas/{table}/v*.json"))
    reg = {c["name"]: c["type"] for c in json.load(open(versions[-1]))["columns"]}
    wrong = {}
    for name, ty, *_ in cols:
        if name in reg:
            exp = duck.get(reg[name]) or reg[name].upper().replace(" ", "")
            if ty.replace(" ", "") != exp.replace(" ", ""):
                wrong[name] = [ty, reg[name]]
    missing = sorted(set(reg) - {c[0] for c in cols})
    out["duckdb"][table] = {"wrong": wrong, "missing": missing}
print(json.dumps(out, sort_keys=True))
"#,
            &[dir.path().to_str().unwrap(), &want.to_string()],
        );
        let got: Value = serde_json::from_str(&got).unwrap();
        assert_eq!(&got["rescued"], want, "{engine}");
        for (table, d) in got["duckdb"].as_object().unwrap() {
            assert_eq!(d["wrong"], json!({}), "{engine} {table}: {d}");
            lakes.push(format!("{}/cdc-data/{table}", dir.path().display()));
        }
        kept.push(dir); // read by Spark below
    }
    // Spark reads each table's files together too (`mergeSchema`), with the
    // registered types (wall-clock timestamps as TIMESTAMP_NTZ).
    let spark = python_stdout(
        r#"
import sys, os, glob, json
from pyspark.sql import SparkSession
spark = (SparkSession.builder.master("local[1]").config("spark.ui.enabled", "false")
         .config("spark.sql.session.timeZone", "UTC").getOrCreate())
spark.sparkContext.setLogLevel("ERROR")
out = {}
for table in sys.argv[1:]:
    df = (spark.read.option("mergeSchema", "true").option("recursiveFileLookup", "true")
          .parquet(table))
    schema_dir = table.replace("/cdc-data/", "/cdc-data/_schemas/")
    reg = json.load(open(sorted(glob.glob(schema_dir + "/v*.json"))[-1]))["columns"]
    # Spark's type names are the registry's (decimal(38,6), timestamp_ntz, ...).
    reg = {c["name"]: c["type"] for c in reg}
    files = len(glob.glob(table + "/**/*.parquet", recursive=True))
    wrong = {f.name: [f.dataType.simpleString(), reg[f.name]] for f in df.schema.fields
             if f.name in reg and f.dataType.simpleString() != reg[f.name]}
    out[table.split("/cdc-data/")[1]] = {"wrong": wrong, "rows": df.count(), "files": files}
spark.stop()
print(json.dumps(out, sort_keys=True))
"#,
        &lakes.iter().map(String::as_str).collect::<Vec<_>>(),
    );
    let spark: Value = serde_json::from_str(spark.lines().last().unwrap()).unwrap();
    let rows = |t: &str| spark[t]["rows"].as_u64().unwrap();
    assert_eq!(
        (
            rows("shop/items"),
            rows("public/orders"),
            rows("HR/EMP"),
            rows("dbo/Orders")
        ),
        (3, 3, 2, 2),
        "{spark}"
    );
    for (table, t) in spark.as_object().unwrap() {
        assert_eq!(t["wrong"], json!({}), "Spark, {table}: {t}");
        assert!(t["files"].as_u64().unwrap() >= 2, "{table}: {t}");
    }
}

/// A table DMS announced (create-table) but that has no row yet: both
/// dialects' DDL cover it, and DuckDB runs the statements (an empty table
/// with the registered columns and the latest-state view over it).
#[test]
fn ddl_covers_registered_tables_without_files() {
    let rt = tokio::runtime::Runtime::new().unwrap();
    let dir = tempfile::tempdir().unwrap();
    let p = Pipeline::new(
        config(&[("FLUSH_MODE", "invocation")]),
        LocalDirSink::new(dir.path()),
    )
    .without_metrics();
    let mut seq = 0;
    let columns = json!({"id": {"type": "INT32"}, "at": {"type": "DATETIME"},
                         "amount": {"type": "NUMERIC", "precision": 10, "scale": 2}});
    rt.block_on(async {
        send(&p, 0, &mut seq, &[declare("empty", columns)]).await;
        send(&p, 0, &mut seq, &[row("full", 1, json!({"id": 1}))]).await;
    });
    let lake = dir.path().to_str().unwrap();
    let (athena, ok) = ddl(&[], &["--lake", lake]);
    assert!(ok);
    assert!(athena.contains("CREATE EXTERNAL TABLE IF NOT EXISTS `cdc`.`s__empty`"));
    assert!(athena.contains("`at` timestamp,"), "{athena}");
    assert!(athena.contains("`_rescued` string"), "{athena}");
    let (duck, ok) = ddl(&[], &["--lake", lake, "--dialect", "duckdb"]);
    assert!(ok);
    assert!(
        duck.contains("CREATE OR REPLACE TABLE \"s__empty\""),
        "{duck}"
    );
    // `full` has a file but no key: the comment says what DMS sent.
    assert!(duck.contains("s__full: no primary key known (DMS sent no table-def for it"));
    let sql = dir.path().join("ddl.sql");
    std::fs::write(&sql, duck).unwrap();
    let out = python_stdout(
        r#"
import sys, duckdb
con = duckdb.connect()
con.execute(open(sys.argv[1]).read())
print(con.sql('DESCRIBE "s__empty__latest"').fetchall()[:3])
print(con.sql('SELECT count(*) FROM "s__full"').fetchall())
"#,
        &[sql.to_str().unwrap()],
    );
    assert!(out.contains("('id', 'BIGINT'"), "{out}");
    assert!(out.contains("('at', 'TIMESTAMP'"), "{out}");
    assert!(out.ends_with("[(1,)]"), "{out}");
}

/// A `table-def` type name not known here is logged, once per table and
/// column, with the name (never silently typed); the column is inferred.
#[test]
fn an_unknown_dms_type_name_is_logged_once_with_its_name() {
    let fixture = repo().join("tests/fixtures/engines/mysql.jsonl");
    let create: Value = serde_json::from_str(
        std::fs::read_to_string(fixture)
            .unwrap()
            .lines()
            .next()
            .unwrap(),
    )
    .unwrap();
    let dir = tempfile::tempdir().unwrap();
    let mut seq = 0;
    let files: Vec<std::path::PathBuf> = (0..3)
        .map(|i| {
            let path = dir.path().join(format!("e{i}.json"));
            std::fs::write(
                &path,
                kinesis_event(0, &mut seq, std::slice::from_ref(&create)),
            )
            .unwrap();
            path
        })
        .collect();
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_cdc-batcher"))
        .arg("replay")
        .arg("--output")
        .arg(dir.path().join("lake"))
        .args(&files)
        .env("LOG_LEVEL", "warn")
        .output()
        .unwrap();
    assert!(out.status.success());
    let log = String::from_utf8_lossy(&out.stderr);
    let lines: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("table-def type name not known"))
        .collect();
    assert_eq!(lines.len(), 1, "{log}");
    assert!(
        lines[0].contains("GEOMETRY") && lines[0].contains("shape"),
        "{}",
        lines[0]
    );
}
