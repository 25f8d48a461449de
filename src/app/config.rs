//! Every environment variable the function reads, with defaults and validation.
//!
//! Configuration is read once at start-up; a bad value stops the init with a
//! message naming the variable and what it accepts, instead of failing later
//! on the first record.

use std::time::Duration;

use std::collections::BTreeMap;

use domain::layout::PartitionStyle;
use domain::names::column_name;
use domain::names::TableName;
use domain::types::ColumnType;

/// A configuration problem, reported before the first invocation.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum ConfigError {
    #[error("{var} is required: {expected}")]
    Missing {
        var: &'static str,
        expected: &'static str,
    },
    #[error("{var}={value:?} is not valid: expected {expected}")]
    Invalid {
        var: &'static str,
        value: String,
        expected: &'static str,
    },
}

// The values configuration decides, defined where they are used (the pure
// core and the S3 edge), and named here too.
use crate::edge::sink::S3Settings;
use domain::batcher::{FlushMode, Thresholds};
use domain::catalog::CatalogSettings;

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Config {
    pub s3: S3Settings,
    /// Key prefix for every object, normalised to end in `/` (or empty).
    pub prefix: String,
    pub partition_style: PartitionStyle,
    pub flush_mode: FlushMode,
    pub thresholds: Thresholds,
    /// Top-level DMS field holding the before image (a task setting with no default).
    pub before_image_field: String,
    /// How long before the invocation deadline to stop taking records.
    pub time_reserve: Duration,
    /// `COLUMN_TYPES`: column types that win over DMS's and inferred ones.
    pub column_types: BTreeMap<TableName, Vec<(String, ColumnType)>>,
    /// Decimal places every DECIMAL column from a `table-def` has at least.
    pub decimal_min_scale: u8,
    /// How often a container looks for schema versions other containers stored.
    pub schema_refresh: Duration,
    /// `HEARTBEAT_STREAMS`: streams whose open shards get a heartbeat record
    /// on every force flush (window mode), so quiet windows close.
    pub heartbeat_streams: Vec<String>,
    /// `METRICS_PER_TABLE`: also emit files, rows and rescued values per
    /// table (one more metric series per table: off by default).
    pub metrics_per_table: bool,
    /// `GLUE_DATABASE` (with `ATHENA_WORKGROUP`, `CATALOG_SINCE`): the Glue
    /// Data Catalog the function keeps in step; none: catalog upkeep off.
    pub catalog: Option<CatalogSettings>,
}

impl Config {
    /// The configured column types of `table` (lake column names).
    pub fn overrides_for(&self, table: &TableName) -> &[(String, ColumnType)] {
        self.column_types.get(table).map_or(&[], Vec::as_slice)
    }

    /// Each distinct table once, in order, with its `COLUMN_TYPES` overrides:
    /// what `SchemaCache::get_many` takes.
    pub fn with_overrides<'a>(
        &'a self,
        tables: impl Iterator<Item = &'a TableName>,
    ) -> Vec<(&'a TableName, &'a [(String, ColumnType)])> {
        let mut tables: Vec<&TableName> = tables.collect();
        tables.sort();
        tables.dedup();
        tables
            .into_iter()
            .map(|t| (t, self.overrides_for(t)))
            .collect()
    }
}

pub const DEFAULT_PREFIX: &str = "cdc-data/";
const MIB: usize = 1024 * 1024;

impl Config {
    /// Reads the process environment.
    pub fn from_env() -> Result<Self, ConfigError> {
        Self::from_lookup(|name| std::env::var(name).ok())
    }

    /// Reads configuration through `lookup`, so tests need not touch the
    /// process environment.
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |name: &str| lookup(name).filter(|v| !v.trim().is_empty());

        let bucket = get("S3_BUCKET_NAME");
        if let Some(b) = &bucket {
            validate_bucket(b)?;
        }
        let prefix = normalise_prefix(get("S3_PREFIX").as_deref().unwrap_or(DEFAULT_PREFIX))?;
        let force_path_style = parse_bool("S3_FORCE_PATH_STYLE", get("S3_FORCE_PATH_STYLE"))?;
        let max_attempts = parse_num("S3_MAX_ATTEMPTS", get("S3_MAX_ATTEMPTS"), 4, 1, 20)?;

        let partition_style = match get("PARTITION_STYLE").as_deref().map(str::trim) {
            None | Some("plain") => PartitionStyle::Plain,
            Some("hive") => PartitionStyle::Hive,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "PARTITION_STYLE",
                    value: other.to_string(),
                    expected:
                        "`plain` (YYYY/MM/DD/HH) or `hive` (year=YYYY/month=MM/day=DD/hour=HH)",
                })
            }
        };
        let flush_mode = match get("FLUSH_MODE").as_deref().map(str::trim) {
            None | Some("window") => FlushMode::Window,
            Some("invocation") => FlushMode::Invocation,
            Some("warm-lossy") => FlushMode::Warm,
            Some(other) => {
                return Err(ConfigError::Invalid {
                    var: "FLUSH_MODE",
                    value: other.to_string(),
                    expected:
                        "`window` (default: spool each batch, write at the tumbling window's \
                     end), `invocation` (write before returning), or `warm-lossy` (buffer in one \
                     container's memory; loses acknowledged rows when it crashes; the former \
                     `warm`)",
                })
            }
        };

        let max_bytes = parse_num(
            "BATCH_SIZE_BYTES_THRESHOLD",
            get("BATCH_SIZE_BYTES_THRESHOLD"),
            5 * MIB,
            1,
            1024 * MIB,
        )?;
        let max_records = parse_num(
            "BATCH_MAX_RECORDS_THRESHOLD",
            get("BATCH_MAX_RECORDS_THRESHOLD"),
            10_000,
            1,
            10_000_000,
        )?;
        let max_age_secs: u64 = parse_num(
            "BATCH_MAX_AGE_SECONDS",
            get("BATCH_MAX_AGE_SECONDS"),
            60,
            0,
            86_400,
        )?;
        let memory_mb: usize = parse_num(
            "AWS_LAMBDA_FUNCTION_MEMORY_SIZE",
            get("AWS_LAMBDA_FUNCTION_MEMORY_SIZE"),
            1024,
            128,
            10_240,
        )?;
        let max_buffered_bytes = parse_num(
            "MAX_BUFFERED_BYTES",
            get("MAX_BUFFERED_BYTES"),
            default_buffer_budget(memory_mb),
            MIB,
            64 * 1024 * MIB,
        )?;
        let time_reserve_ms: u64 =
            parse_num("TIME_RESERVE_MS", get("TIME_RESERVE_MS"), 5_000, 0, 600_000)?;

        let before_image_field = get("BEFORE_IMAGE_FIELD").unwrap_or_else(|| "before-image".into());
        if matches!(before_image_field.as_str(), "data" | "metadata" | "control") {
            return Err(ConfigError::Invalid {
                var: "BEFORE_IMAGE_FIELD",
                value: before_image_field,
                expected: "the DMS BeforeImageSettings FieldName (not data, metadata or control)",
            });
        }

        let column_types = parse_column_types(get("COLUMN_TYPES"))?;
        let decimal_min_scale = parse_num("DECIMAL_MIN_SCALE", get("DECIMAL_MIN_SCALE"), 6, 0, 38)?;
        let schema_refresh_secs: u64 = parse_num(
            "SCHEMA_REFRESH_SECONDS",
            get("SCHEMA_REFRESH_SECONDS"),
            300,
            0,
            86_400,
        )?;

        let heartbeat_streams = parse_stream_arns(get("HEARTBEAT_STREAMS"))?;
        let metrics_per_table = parse_bool("METRICS_PER_TABLE", get("METRICS_PER_TABLE"))?;
        let catalog = parse_catalog(&get)?;

        Ok(Config {
            catalog,
            heartbeat_streams,
            metrics_per_table,
            column_types,
            decimal_min_scale,
            schema_refresh: Duration::from_secs(schema_refresh_secs),
            s3: S3Settings {
                bucket,
                force_path_style,
                max_attempts,
            },
            prefix,
            partition_style,
            flush_mode,
            thresholds: Thresholds {
                max_bytes,
                max_records,
                max_age: Duration::from_secs(max_age_secs),
                max_buffered_bytes,
            },
            before_image_field,
            time_reserve: Duration::from_millis(time_reserve_ms),
        })
    }

    /// The bucket, which the Lambda entry point cannot run without.
    pub fn require_bucket(&self) -> Result<&str, ConfigError> {
        self.s3.bucket.as_deref().ok_or(ConfigError::Missing {
            var: "S3_BUCKET_NAME",
            expected: "the name of the bucket the Parquet files are written to",
        })
    }
}

/// Glue database and Athena workgroup names: what Athena accepts unquoted.
fn catalog_name(var: &'static str, value: String) -> Result<String, ConfigError> {
    let workgroup = var == "ATHENA_WORKGROUP";
    let allowed = |b: u8| match b {
        b'a'..=b'z' | b'0'..=b'9' | b'_' => true,
        b'A'..=b'Z' | b'-' | b'.' => workgroup,
        _ => false,
    };
    if !value.is_empty() && value.len() <= 128 && value.bytes().all(allowed) {
        return Ok(value);
    }
    Err(ConfigError::Invalid {
        var,
        value,
        expected: if workgroup {
            "an Athena workgroup name (letters, digits, '_', '-' and '.', at most 128)"
        } else {
            "a Glue database name Athena can use (lower-case letters, digits and '_', at most 128)"
        },
    })
}

fn parse_catalog(
    get: &impl Fn(&str) -> Option<String>,
) -> Result<Option<CatalogSettings>, ConfigError> {
    let workgroup = get("ATHENA_WORKGROUP")
        .map(|w| catalog_name("ATHENA_WORKGROUP", w.trim().to_string()))
        .transpose()?;
    let since = match get("CATALOG_SINCE") {
        None => "2020-01-01".to_string(),
        Some(s) => match chrono::NaiveDate::parse_from_str(s.trim(), "%Y-%m-%d") {
            Ok(_) => s.trim().to_string(),
            Err(_) => {
                return Err(ConfigError::Invalid {
                    var: "CATALOG_SINCE",
                    value: s,
                    expected: "a day, YYYY-MM-DD: the first one partition projection enumerates",
                })
            }
        },
    };
    let Some(database) = get("GLUE_DATABASE") else {
        if workgroup.is_some() {
            return Err(ConfigError::Missing {
                var: "GLUE_DATABASE",
                expected: "the Glue database the tables go in (ATHENA_WORKGROUP is set, so \
                           catalog upkeep is meant to be on)",
            });
        }
        return Ok(None);
    };
    Ok(Some(CatalogSettings {
        database: catalog_name("GLUE_DATABASE", database.trim().to_string())?,
        workgroup,
        since,
    }))
}

/// `arn:aws:kinesis:REGION:ACCOUNT:stream/NAME[,...]`.
fn parse_stream_arns(raw: Option<String>) -> Result<Vec<String>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(Vec::new());
    };
    let arns: Vec<String> = raw
        .split(',')
        .map(str::trim)
        .filter(|a| !a.is_empty())
        .map(String::from)
        .collect();
    let valid = |a: &str| {
        let parts: Vec<&str> = a.splitn(6, ':').collect();
        parts.len() == 6
            && parts[0] == "arn"
            && parts[2] == "kinesis"
            && parts[5]
                .strip_prefix("stream/")
                .is_some_and(|n| !n.is_empty())
    };
    match arns.iter().find(|a| !valid(a)) {
        Some(_) => Err(ConfigError::Invalid {
            var: "HEARTBEAT_STREAMS",
            value: raw,
            expected:
                "comma-separated Kinesis stream ARNs (arn:aws:kinesis:REGION:ACCOUNT:stream/NAME)",
        }),
        None => Ok(arns),
    }
}

const COLUMN_TYPES_EXPECTED: &str = concat!(
    "a JSON object mapping \"schema.table.column\" to a type, e.g. ",
    "{\"sales.client.is_key_account\": \"boolean\"}; types: boolean, bigint, double, ",
    "decimal(38,S) with S in 0..=38, date, timestamp, timestamp_ntz, binary or string"
);

/// `{"schema.table.column": "type", ...}`.
fn parse_column_types(
    raw: Option<String>,
) -> Result<BTreeMap<TableName, Vec<(String, ColumnType)>>, ConfigError> {
    let Some(raw) = raw else {
        return Ok(BTreeMap::new());
    };
    let invalid = || ConfigError::Invalid {
        var: "COLUMN_TYPES",
        value: raw.clone(),
        expected: COLUMN_TYPES_EXPECTED,
    };
    let map: BTreeMap<String, String> = serde_json::from_str(&raw).map_err(|_| invalid())?;
    let mut out: BTreeMap<TableName, Vec<(String, ColumnType)>> = BTreeMap::new();
    for (path, ty) in map {
        let mut parts = path.splitn(3, '.');
        let (Some(schema), Some(table), Some(column)) = (parts.next(), parts.next(), parts.next())
        else {
            return Err(invalid());
        };
        if schema.is_empty() || table.is_empty() || column.is_empty() {
            return Err(invalid());
        }
        let ty: ColumnType = ty.parse().map_err(|_| invalid())?;
        out.entry(TableName {
            schema: schema.to_string(),
            table: table.to_string(),
        })
        .or_default()
        .push((column_name(column).into_owned(), ty));
    }
    Ok(out)
}

/// A third of the function's memory: encoding a buffer briefly needs about as
/// much again for Arrow arrays and the Parquet bytes, and the runtime needs the rest.
fn default_buffer_budget(memory_mb: usize) -> usize {
    (memory_mb * MIB / 3).max(16 * MIB)
}

fn normalise_prefix(raw: &str) -> Result<String, ConfigError> {
    let p = raw.trim();
    let p = if p.is_empty() || p.ends_with('/') {
        p.to_string()
    } else {
        format!("{p}/")
    };
    // Bounded so that every key stays within S3's 1,024 bytes (`layout`).
    if p.starts_with('/')
        || p.contains("//")
        || p.chars().any(char::is_control)
        || p.len() > domain::layout::MAX_PREFIX_BYTES
    {
        return Err(ConfigError::Invalid {
            var: "S3_PREFIX",
            value: raw.to_string(),
            expected: "a key prefix such as `cdc-data/` (no leading `/`, no `//`, no control \
                 characters, at most 256 bytes with its trailing `/`)",
        });
    }
    Ok(p)
}

fn validate_bucket(b: &str) -> Result<(), ConfigError> {
    let ok_chars = b
        .chars()
        .all(|c| c.is_ascii_lowercase() || c.is_ascii_digit() || c == '-' || c == '.');
    if (3..=63).contains(&b.len()) && ok_chars {
        Ok(())
    } else {
        Err(ConfigError::Invalid {
            var: "S3_BUCKET_NAME",
            value: b.to_string(),
            expected: "an S3 bucket name: 3-63 characters of a-z, 0-9, `-` and `.`",
        })
    }
}

fn parse_bool(var: &'static str, value: Option<String>) -> Result<bool, ConfigError> {
    match value
        .as_deref()
        .map(|v| v.trim().to_ascii_lowercase())
        .as_deref()
    {
        None | Some("false" | "0" | "no") => Ok(false),
        Some("true" | "1" | "yes") => Ok(true),
        Some(_) => Err(ConfigError::Invalid {
            var,
            value: value.unwrap_or_default(),
            expected: "true or false (also 1/0, yes/no)",
        }),
    }
}

fn parse_num<T>(
    var: &'static str,
    value: Option<String>,
    default: T,
    min: T,
    max: T,
) -> Result<T, ConfigError>
where
    T: std::str::FromStr + PartialOrd + Copy,
{
    let Some(raw) = value else {
        return Ok(default);
    };
    match raw.trim().parse::<T>() {
        Ok(v) if v >= min && v <= max => Ok(v),
        _ => Err(ConfigError::Invalid {
            var,
            value: raw,
            expected: range_text(var),
        }),
    }
}

/// The accepted range of each numeric variable, for error messages.
fn range_text(var: &str) -> &'static str {
    match var {
        "BATCH_SIZE_BYTES_THRESHOLD" => "a whole number of bytes from 1 to 1073741824",
        "BATCH_MAX_RECORDS_THRESHOLD" => "a whole number of rows from 1 to 10000000",
        "BATCH_MAX_AGE_SECONDS" => "a whole number of seconds from 0 to 86400",
        "AWS_LAMBDA_FUNCTION_MEMORY_SIZE" => "a whole number of MB from 128 to 10240",
        "MAX_BUFFERED_BYTES" => "a whole number of bytes from 1048576 to 68719476736",
        "S3_MAX_ATTEMPTS" => "a whole number of attempts from 1 to 20",
        "TIME_RESERVE_MS" => "a whole number of milliseconds from 0 to 600000",
        "DECIMAL_MIN_SCALE" => "a whole number of decimal places from 0 to 38",
        "SCHEMA_REFRESH_SECONDS" => "a whole number of seconds from 0 to 86400",
        _ => "a whole number",
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::HashMap;

    fn cfg(vars: &[(&str, &str)]) -> Result<Config, ConfigError> {
        let map: HashMap<String, String> = vars
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Config::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn defaults_match_the_python_version() {
        let c = cfg(&[("S3_BUCKET_NAME", "my-lake")]).unwrap();
        assert_eq!(c.require_bucket().unwrap(), "my-lake");
        assert_eq!(c.prefix, "cdc-data/");
        assert_eq!(c.thresholds.max_bytes, 5 * MIB);
        assert_eq!(c.thresholds.max_records, 10_000);
        assert_eq!(c.thresholds.max_age, Duration::from_secs(60));
        assert_eq!(c.partition_style, PartitionStyle::Plain);
        assert_eq!(c.flush_mode, FlushMode::Window);
        assert_eq!(c.before_image_field, "before-image");
        assert!(!c.s3.force_path_style);
    }

    #[test]
    fn missing_bucket_is_reported_by_name() {
        let c = cfg(&[]).unwrap();
        let err = c.require_bucket().unwrap_err().to_string();
        assert!(err.contains("S3_BUCKET_NAME"), "{err}");
    }

    #[test]
    fn bad_values_name_the_variable_and_the_accepted_values() {
        let cases = [
            ("BATCH_SIZE_BYTES_THRESHOLD", "5MB", "whole number of bytes"),
            ("BATCH_MAX_RECORDS_THRESHOLD", "0", "from 1"),
            ("BATCH_MAX_AGE_SECONDS", "-1", "seconds"),
            ("PARTITION_STYLE", "daily", "`hive`"),
            ("FLUSH_MODE", "eager", "`invocation`"),
            // The old default is gone: its new name says what it loses.
            ("FLUSH_MODE", "warm", "`warm-lossy`"),
            ("S3_FORCE_PATH_STYLE", "maybe", "true or false"),
            ("METRICS_PER_TABLE", "sometimes", "true or false"),
            ("S3_PREFIX", "/abs", "no leading"),
            ("S3_PREFIX", &"p".repeat(256), "at most 256 bytes"),
            ("S3_BUCKET_NAME", "Bad_Bucket", "bucket name"),
            ("MAX_BUFFERED_BYTES", "12", "1048576"),
            ("BEFORE_IMAGE_FIELD", "data", "FieldName"),
            ("COLUMN_TYPES", r#"{"s.t.c":"int"}"#, "decimal(38,S)"),
            ("COLUMN_TYPES", r#"{"s.t":"bigint"}"#, "schema.table.column"),
            ("COLUMN_TYPES", "s.t.c=bigint", "JSON object"),
            ("DECIMAL_MIN_SCALE", "39", "0 to 38"),
            ("SCHEMA_REFRESH_SECONDS", "soon", "seconds"),
            ("HEARTBEAT_STREAMS", "my-stream", "stream ARNs"),
            ("GLUE_DATABASE", "Sales-DB", "lower-case letters"),
            ("ATHENA_WORKGROUP", "my group", "workgroup name"),
            ("CATALOG_SINCE", "yesterday", "YYYY-MM-DD"),
            (
                "HEARTBEAT_STREAMS",
                "arn:aws:sqs:us-east-1:1:q",
                "stream ARNs",
            ),
        ];
        for (var, value, accepted) in cases {
            let err = cfg(&[(var, value)]).unwrap_err().to_string();
            assert!(err.contains(var), "{var}: {err}");
            assert!(
                err.contains(value) || err.contains(&format!("{value:?}")),
                "{var}: {err}"
            );
            assert!(err.contains(accepted), "{var}: {err}");
        }
    }

    #[test]
    fn prefix_gets_a_trailing_slash_and_may_be_empty() {
        assert_eq!(cfg(&[("S3_PREFIX", "lake")]).unwrap().prefix, "lake/");
        assert_eq!(cfg(&[("S3_PREFIX", "a/b/")]).unwrap().prefix, "a/b/");
        let longest = "p".repeat(255);
        assert_eq!(cfg(&[("S3_PREFIX", &longest)]).unwrap().prefix.len(), 256);
        // An explicitly empty value means the default, as for every variable.
        assert_eq!(cfg(&[("S3_PREFIX", "")]).unwrap().prefix, "cdc-data/");
    }

    #[test]
    fn buffer_budget_follows_function_memory() {
        let small = cfg(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "128")]).unwrap();
        let big = cfg(&[("AWS_LAMBDA_FUNCTION_MEMORY_SIZE", "3008")]).unwrap();
        assert!(small.thresholds.max_buffered_bytes < 128 * MIB / 2);
        assert!(big.thresholds.max_buffered_bytes > 900 * MIB);
        let explicit = cfg(&[("MAX_BUFFERED_BYTES", "2097152")]).unwrap();
        assert_eq!(explicit.thresholds.max_buffered_bytes, 2 * MIB);
    }

    #[test]
    fn catalog_upkeep_is_on_with_a_database() {
        assert_eq!(cfg(&[]).unwrap().catalog, None);
        let c = cfg(&[
            ("GLUE_DATABASE", "cdc_lake"),
            ("ATHENA_WORKGROUP", "cdc-Batcher.1"),
        ])
        .unwrap()
        .catalog
        .unwrap();
        assert_eq!(c.database, "cdc_lake");
        assert_eq!(c.workgroup.as_deref(), Some("cdc-Batcher.1"));
        assert_eq!(c.since, "2020-01-01");
        // A workgroup without a database is a half-made configuration.
        let err = cfg(&[("ATHENA_WORKGROUP", "wg")]).unwrap_err().to_string();
        assert!(err.contains("GLUE_DATABASE"), "{err}");
    }

    #[test]
    fn booleans_and_modes_parse() {
        let c = cfg(&[
            ("S3_FORCE_PATH_STYLE", "TRUE"),
            ("PARTITION_STYLE", "hive"),
            ("FLUSH_MODE", "invocation"),
        ])
        .unwrap();
        assert!(c.s3.force_path_style);
        assert_eq!(c.partition_style, PartitionStyle::Hive);
        assert_eq!(c.flush_mode, FlushMode::Invocation);
    }

    #[test]
    fn column_types_per_table() {
        let c = cfg(&[(
            "COLUMN_TYPES",
            r#"{"sales.client.is_key_account":"boolean","sales.client.Amount":"decimal(38,2)"}"#,
        )])
        .unwrap();
        let t = TableName {
            schema: "sales".into(),
            table: "client".into(),
        };
        assert_eq!(
            c.overrides_for(&t),
            [
                ("amount".to_string(), ColumnType::Decimal { scale: 2 }),
                ("is_key_account".to_string(), ColumnType::Boolean),
            ]
        );
        assert_eq!(c.decimal_min_scale, 6);
    }
}
