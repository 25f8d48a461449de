//! Column types of the lake and the exact conversion of DMS values into them
//! (pure). A type is decided once per table column (see `schema`); a value
//! that does not fit its column is never rounded, truncated or dropped: the
//! encoder keeps its text in the row's `_rescued` column.
//!
//! Names are Athena's (plus `timestamp_ntz`, which Athena also calls
//! `timestamp`), so the registry, the overrides and the DDL say the same thing.

use std::fmt;
use std::str::FromStr;
use std::sync::LazyLock;

use chrono::format::{Item, Parsed, StrftimeItems};

use arrow::datatypes::{DataType, TimeUnit};

/// Decimal precision of every DECIMAL column: the widest Athena and Parquet
/// readers accept, so a source `NUMERIC(p,s)` whose precision grows keeps
/// its file type.
pub const DECIMAL_PRECISION: u8 = 38;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum ColumnType {
    Boolean,
    Int64,
    Float64,
    /// DECIMAL(38, scale).
    Decimal {
        scale: u8,
    },
    Date,
    /// An instant: TIMESTAMP(MICROS, isAdjustedToUTC = true).
    Timestamp,
    /// Wall-clock time without a zone (MySQL DATETIME, PostgreSQL `timestamp`,
    /// SQL Server `datetime2`, Oracle `DATE`): TIMESTAMP(MICROS,
    /// isAdjustedToUTC = false). DMS appends a nominal `Z`; the digits are
    /// kept as sent.
    LocalTimestamp,
    Binary,
    String,
}

impl ColumnType {
    pub fn arrow(self) -> DataType {
        match self {
            ColumnType::Boolean => DataType::Boolean,
            ColumnType::Int64 => DataType::Int64,
            ColumnType::Float64 => DataType::Float64,
            ColumnType::Decimal { scale } => {
                DataType::Decimal128(DECIMAL_PRECISION, i8::try_from(scale).unwrap_or(38))
            }
            ColumnType::Date => DataType::Date32,
            ColumnType::Timestamp => timestamp(),
            ColumnType::LocalTimestamp => DataType::Timestamp(TimeUnit::Microsecond, None),
            ColumnType::Binary => DataType::Binary,
            ColumnType::String => DataType::Utf8,
        }
    }

    /// The type Athena declares for it (both timestamps are `timestamp`).
    pub fn athena(self) -> String {
        match self {
            ColumnType::LocalTimestamp => "timestamp".to_string(),
            t => t.to_string(),
        }
    }
}

impl fmt::Display for ColumnType {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            ColumnType::Boolean => f.write_str("boolean"),
            ColumnType::Int64 => f.write_str("bigint"),
            ColumnType::Float64 => f.write_str("double"),
            ColumnType::Decimal { scale } => write!(f, "decimal({DECIMAL_PRECISION},{scale})"),
            ColumnType::Date => f.write_str("date"),
            ColumnType::Timestamp => f.write_str("timestamp"),
            ColumnType::LocalTimestamp => f.write_str("timestamp_ntz"),
            ColumnType::Binary => f.write_str("binary"),
            ColumnType::String => f.write_str("string"),
        }
    }
}

impl FromStr for ColumnType {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        let t = s.trim().to_ascii_lowercase();
        Ok(match t.as_str() {
            "boolean" => ColumnType::Boolean,
            "bigint" => ColumnType::Int64,
            "double" => ColumnType::Float64,
            "date" => ColumnType::Date,
            "timestamp" => ColumnType::Timestamp,
            "timestamp_ntz" => ColumnType::LocalTimestamp,
            "binary" => ColumnType::Binary,
            "string" => ColumnType::String,
            _ => {
                let args = t
                    .strip_prefix("decimal(")
                    .and_then(|r| r.strip_suffix(')'))
                    .ok_or_else(|| format!("unknown type {s:?}"))?;
                let (p, scale) = args
                    .split_once(',')
                    .ok_or_else(|| format!("{s:?}: write decimal(38,S)"))?;
                let scale: u8 = scale
                    .trim()
                    .parse()
                    .map_err(|_| format!("{s:?}: bad scale"))?;
                if p.trim() != "38" || scale > DECIMAL_PRECISION {
                    return Err(format!(
                        "{s:?}: decimals are written as decimal(38,S) with S <= 38"
                    ));
                }
                ColumnType::Decimal { scale }
            }
        })
    }
}

impl serde::Serialize for ColumnType {
    fn serialize<S: serde::Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        s.collect_str(self)
    }
}

impl<'de> serde::Deserialize<'de> for ColumnType {
    fn deserialize<D: serde::Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        let s = <std::borrow::Cow<'de, str>>::deserialize(d)?;
        s.parse().map_err(serde::de::Error::custom)
    }
}

pub fn timestamp() -> DataType {
    DataType::Timestamp(TimeUnit::Microsecond, Some("+00:00".into()))
}

/// The lake type of a DMS `table-def` column type; `None` for a name not
/// known here (the caller logs it and leaves the column to inference).
///
/// DMS spells types two ways: its data types (`INT1`..`INT8` in bytes,
/// `REAL8`, `DATETIME`, ...; the tables each source's DMS chapter maps into)
/// and, in Kinesis/Kafka `table-def`s, names like `INT32`, `DATE32`, `BOOL`,
/// `TEXT`, `DOUBLE`. Both are accepted, case-insensitively, with any
/// `(length)` suffix ignored. `min_scale` reserves decimal places so that a
/// later `NUMERIC(13,2)` → `NUMERIC(16,4)` change keeps the file type.
pub fn from_table_def(
    type_name: &str,
    precision: Option<u32>,
    scale: Option<u32>,
    min_scale: u8,
) -> Option<ColumnType> {
    let name = type_name.trim().to_ascii_uppercase();
    let base = name.split('(').next().unwrap_or("").trim();
    Some(match base {
        // Widths in bytes (INT1..INT8) or bits (INT8..INT64): every signed
        // width fits INT64; UINT8 may be 8 bytes, so it gets a decimal.
        "INT1" | "INT2" | "INT4" | "INT8" | "INT16" | "INT32" | "INT64" | "UINT1" | "UINT2"
        | "UINT4" | "UINT16" | "UINT32" | "TINYINT" | "SMALLINT" | "MEDIUMINT" | "INT"
        | "INTEGER" | "BIGINT" => ColumnType::Int64,
        "UINT8" | "UINT64" => ColumnType::Decimal { scale: 0 },
        "NUMERIC" | "DECIMAL" | "NUMBER" => match (precision, scale) {
            (Some(p), s) if (1..=u32::from(DECIMAL_PRECISION)).contains(&p) => {
                let s = s.unwrap_or(0).min(p);
                let integer_digits = p - s;
                let room = u32::from(DECIMAL_PRECISION) - integer_digits;
                let scale = s.max(u32::from(min_scale)).min(room);
                ColumnType::Decimal {
                    scale: u8::try_from(scale).unwrap_or(0),
                }
            }
            // Unbounded or wider than 38 digits: DMS itself sends these as strings.
            _ => ColumnType::String,
        },
        "REAL4" | "REAL8" | "FLOAT" | "FLOAT4" | "FLOAT8" | "FLOAT32" | "FLOAT64" | "DOUBLE"
        | "REAL" => ColumnType::Float64,
        "BOOLEAN" | "BOOL" | "BIT" => ColumnType::Boolean,
        "DATE" | "DATE32" | "DATE64" => ColumnType::Date,
        // DMS sends both MySQL DATETIME (wall clock) and TIMESTAMP (UTC) as
        // DATETIME with a nominal `Z`: the digits are kept, no zone is claimed.
        "DATETIME" | "DATETIME2" | "SMALLDATETIME" | "TIMESTAMP" | "TIMESTAMP64" => {
            ColumnType::LocalTimestamp
        }
        "TIMESTAMPTZ" | "DATETIMEOFFSET" => ColumnType::Timestamp,
        "BYTES" | "BLOB" | "BINARY" | "VARBINARY" | "RAW" => ColumnType::Binary,
        // TIME and INTERVAL have no Athena type; JSON, XML, UUID stay text.
        "TIME" | "TIME32" | "TIME64" | "INTERVAL" | "STRING" | "WSTRING" | "CLOB" | "NCLOB"
        | "TEXT" | "UTF8" | "VARCHAR" | "NVARCHAR" | "CHAR" | "NCHAR" | "JSON" | "XML" | "UUID" => {
            ColumnType::String
        }
        _ => return None,
    })
}

/// A decimal number's text as digits × 10^exp, exactly.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct DecimalText {
    pub negative: bool,
    /// Significant digits without leading or trailing zeros ("" for zero).
    pub digits: String,
    pub exp: i64,
    /// Written with an exponent (`2.71828182845905E+17`).
    pub scientific: bool,
}

impl DecimalText {
    /// Parses `[-+]digits[.digits][(e|E)[-+]digits]`; `None` for anything else.
    pub fn parse(text: &str) -> Option<DecimalText> {
        let (negative, rest) = match text.as_bytes().first()? {
            b'-' => (true, &text[1..]),
            b'+' => (false, &text[1..]),
            _ => (false, text),
        };
        let (mantissa, exp_text) = match rest.find(['e', 'E']) {
            Some(i) => (&rest[..i], Some(&rest[i + 1..])),
            None => (rest, None),
        };
        let (int, frac) = mantissa.split_once('.').unwrap_or((mantissa, ""));
        if int.is_empty() && frac.is_empty() {
            return None;
        }
        if !int.bytes().chain(frac.bytes()).all(|b| b.is_ascii_digit()) {
            return None;
        }
        let mut exp: i64 = match exp_text {
            Some(e) => {
                let digits = e.strip_prefix(['+', '-']).unwrap_or(e);
                if digits.is_empty()
                    || digits.len() > 6
                    || !digits.bytes().all(|b| b.is_ascii_digit())
                {
                    return None;
                }
                e.parse().ok()?
            }
            None => 0,
        };
        let all = format!("{int}{frac}");
        exp -= frac.len() as i64;
        let trimmed_end = all.trim_end_matches('0');
        exp += (all.len() - trimmed_end.len()) as i64;
        let digits = trimmed_end.trim_start_matches('0').to_string();
        if digits.is_empty() {
            exp = 0;
        }
        Some(DecimalText {
            negative: negative && !digits.is_empty(),
            digits,
            exp,
            scientific: exp_text.is_some(),
        })
    }

    pub fn is_integer(&self) -> bool {
        self.exp >= 0
    }

    /// Decimal places the value needs.
    fn scale(&self) -> i64 {
        (-self.exp).max(0)
    }

    /// Digits left of the point.
    fn integer_digits(&self) -> i64 {
        (self.digits.len() as i64 + self.exp).max(0)
    }

    /// The unscaled value at `scale`, if it has no more decimal places and at
    /// most 38 digits.
    pub fn unscaled(&self, scale: u8) -> Option<i128> {
        if self.scale() > i64::from(scale)
            || self.integer_digits() + i64::from(scale) > i64::from(DECIMAL_PRECISION)
        {
            return None;
        }
        let mut v: i128 = if self.digits.is_empty() {
            0
        } else {
            self.digits.parse().ok()?
        };
        for _ in 0..(self.exp + i64::from(scale)) {
            v = v.checked_mul(10)?;
        }
        Some(if self.negative { -v } else { v })
    }

    /// The integer value, if it is one and fits i64.
    pub fn to_i64(&self) -> Option<i64> {
        if !self.is_integer() {
            return None;
        }
        i64::try_from(self.unscaled(0)?).ok()
    }
}

fn is_json_number(text: &str) -> bool {
    matches!(text.as_bytes().first(), Some(b'-' | b'0'..=b'9'))
}

/// An integer as sent: `42`, or a BIGINT DMS rendered in scientific notation
/// (`UseLargeIntegerValue=false`), whose lost digits cannot come back.
/// Returns the value and whether it was scientific.
pub fn parse_int64(text: &str) -> Option<(i64, bool)> {
    if let Ok(v) = text.parse::<i64>() {
        return Some((v, false));
    }
    let d = DecimalText::parse(text)?;
    Some((d.to_i64()?, d.scientific))
}

/// A double; integers beyond ±2^53 do not fit (f64 would change them).
pub fn parse_float64(text: &str) -> Option<f64> {
    match text {
        "NaN" => return Some(f64::NAN),
        "Infinity" => return Some(f64::INFINITY),
        "-Infinity" => return Some(f64::NEG_INFINITY),
        _ if !is_json_number(text) => return None,
        _ => {}
    }
    if !text.contains(['.', 'e', 'E']) {
        let v: i128 = text.parse().ok()?;
        return (v.unsigned_abs() <= 1u128 << 53).then_some(v as f64);
    }
    let v: f64 = text.parse().ok()?;
    // `1e400` parses as infinity: that is not the value sent.
    v.is_finite().then_some(v)
}

pub fn parse_bool(text: &str) -> Option<bool> {
    match text {
        "true" | "t" | "TRUE" | "T" | "True" | "1" | "y" | "yes" => Some(true),
        "false" | "f" | "FALSE" | "F" | "False" | "0" | "n" | "no" => Some(false),
        _ => None,
    }
}

/// `YYYY-MM-DD` as days since 1970-01-01.
pub fn parse_date(text: &str) -> Option<i32> {
    let d = parse_with(text, &FORMATS.date)?.to_naive_date().ok()?;
    let epoch = chrono::NaiveDate::from_ymd_opt(1970, 1, 1)?;
    i32::try_from(d.signed_duration_since(epoch).num_days()).ok()
}

/// chrono's format strings, parsed once: `parse_from_str` re-parsed them for
/// every value, a visible share of typed encoding.
struct Formats {
    date: Vec<Item<'static>>,
    timestamps: [Vec<Item<'static>>; 2],
}

static FORMATS: LazyLock<Formats> = LazyLock::new(|| {
    let items = |f: &'static str| StrftimeItems::new(f).parse_to_owned().unwrap_or_default();
    Formats {
        date: items("%Y-%m-%d"),
        timestamps: [items("%Y-%m-%dT%H:%M:%S%.f"), items("%Y-%m-%d %H:%M:%S%.f")],
    }
});

fn parse_with(text: &str, items: &[Item<'static>]) -> Option<Parsed> {
    let mut parsed = Parsed::new();
    chrono::format::parse(&mut parsed, text, items.iter()).ok()?;
    Some(parsed)
}

/// An ISO 8601 timestamp as µs since the epoch. DMS ends every value in `Z`
/// (even when the source value was local time); a value without an offset
/// is read as UTC too. Sub-microsecond digits do not fit.
pub fn parse_timestamp(text: &str) -> Option<i64> {
    let t = match chrono::DateTime::parse_from_rfc3339(text) {
        Ok(t) => t.naive_utc(),
        Err(_) => FORMATS
            .timestamps
            .iter()
            .find_map(|f| parse_with(text, f)?.to_naive_datetime_with_offset(0).ok())?,
    };
    let nanos = chrono::Timelike::nanosecond(&t);
    if nanos % 1000 != 0 || nanos >= 1_000_000_000 {
        return None;
    }
    Some(t.and_utc().timestamp_micros())
}

/// `0x`-prefixed (or bare, with `NoHexPrefix`) hexadecimal.
pub fn parse_hex(text: &str) -> Option<Vec<u8>> {
    let digits = text
        .strip_prefix("0x")
        .or_else(|| text.strip_prefix("0X"))
        .unwrap_or(text);
    hex::decode(digits).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_round_trip() {
        for t in [
            ColumnType::Boolean,
            ColumnType::Int64,
            ColumnType::Float64,
            ColumnType::Decimal { scale: 6 },
            ColumnType::Date,
            ColumnType::Timestamp,
            ColumnType::LocalTimestamp,
            ColumnType::Binary,
            ColumnType::String,
        ] {
            assert_eq!(t.to_string().parse::<ColumnType>(), Ok(t));
        }
        assert!("decimal(10,2)".parse::<ColumnType>().is_err());
        assert!("int".parse::<ColumnType>().is_err());
        assert_eq!(
            " Decimal(38, 4) ".parse::<ColumnType>(),
            Ok(ColumnType::Decimal { scale: 4 })
        );
    }

    #[test]
    fn table_def_types() {
        let t = |n, p, s| from_table_def(n, p, s, 6);
        assert_eq!(t("INT32", None, None), Some(ColumnType::Int64));
        assert_eq!(t("INT2", None, None), Some(ColumnType::Int64));
        assert_eq!(
            t("UINT8", None, None),
            Some(ColumnType::Decimal { scale: 0 })
        );
        assert_eq!(
            t("NUMERIC", Some(13), Some(2)),
            Some(ColumnType::Decimal { scale: 6 })
        );
        // A scale change 2 → 4 keeps the file type.
        assert_eq!(
            t("NUMERIC", Some(16), Some(4)),
            t("NUMERIC", Some(13), Some(2))
        );
        assert_eq!(
            t("NUMERIC", Some(38), Some(10)),
            Some(ColumnType::Decimal { scale: 10 })
        );
        // No room for the reserved places: integer digits win.
        assert_eq!(
            t("NUMERIC", Some(36), Some(0)),
            Some(ColumnType::Decimal { scale: 2 })
        );
        assert_eq!(t("NUMERIC", None, None), Some(ColumnType::String));
        assert_eq!(t("NUMERIC", Some(40), Some(2)), Some(ColumnType::String));
        assert_eq!(t("TIMESTAMP", None, None), Some(ColumnType::LocalTimestamp));
        assert_eq!(t("DATETIME", None, None), Some(ColumnType::LocalTimestamp));
        assert_eq!(t("TIME", None, None), Some(ColumnType::String));
        assert_eq!(t("BYTES", None, None), Some(ColumnType::Binary));
        assert_eq!(t("NCLOB", None, None), Some(ColumnType::String));
        assert_eq!(t("GEOMETRY", None, None), None);
    }

    #[test]
    fn decimal_text_is_exact() {
        let d = DecimalText::parse("12345678901234.56").unwrap();
        assert_eq!(d.unscaled(2), Some(1_234_567_890_123_456));
        assert_eq!(d.unscaled(6), Some(12_345_678_901_234_560_000));
        assert_eq!(d.unscaled(1), None, "a digit would be lost");
        assert_eq!(
            DecimalText::parse("1733.9150").unwrap().unscaled(3),
            Some(1_733_915)
        );
        assert_eq!(DecimalText::parse("-0.0001").unwrap().unscaled(4), Some(-1));
        assert_eq!(DecimalText::parse("-0").unwrap().unscaled(0), Some(0));
        let big = "9".repeat(38);
        assert!(DecimalText::parse(&big).unwrap().unscaled(0).is_some());
        assert_eq!(DecimalText::parse(&big).unwrap().unscaled(1), None);
        for bad in [
            "",
            "-",
            ".",
            "1.2.3",
            "1e",
            "0x12",
            "1,5",
            "abc",
            "1e9999999",
        ] {
            assert_eq!(DecimalText::parse(bad), None, "{bad:?}");
        }
    }

    #[test]
    fn scientific_bigints_keep_what_is_exact() {
        assert_eq!(
            parse_int64("2.71828182845905E+17"),
            Some((271_828_182_845_905_000, true))
        );
        assert_eq!(parse_int64("-9223372036854775808"), Some((i64::MIN, false)));
        assert_eq!(parse_int64("9223372036854775808"), None);
        assert_eq!(parse_int64("1.5"), None);
    }

    #[test]
    fn floats_refuse_integers_they_would_change() {
        assert_eq!(
            parse_float64("9007199254740992"),
            Some(9_007_199_254_740_992.0)
        );
        assert_eq!(parse_float64("9007199254740993"), None);
        assert_eq!(parse_float64("1e-05"), Some(1e-5));
        assert_eq!(parse_float64("\"x\""), None);
        assert_eq!(parse_float64("1e400"), None);
        assert_eq!(parse_float64("-Infinity"), Some(f64::NEG_INFINITY));
    }

    #[test]
    fn dates_times_binary_booleans() {
        assert_eq!(parse_date("1970-01-02"), Some(1));
        assert_eq!(parse_date("1899-12-30"), Some(-25_569));
        assert_eq!(parse_date("9999-12-31"), Some(2_932_896));
        assert_eq!(parse_date("0000-00-00"), None);
        assert_eq!(parse_timestamp("1970-01-01T00:00:01Z"), Some(1_000_000));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.123Z"), Some(123_000));
        assert_eq!(parse_timestamp("1970-01-01 00:00:00.000001"), Some(1));
        assert_eq!(parse_timestamp("1970-01-01T00:00:00.000000001Z"), None);
        assert_eq!(parse_timestamp("yesterday"), None);
        assert_eq!(parse_hex("0x80057D94"), Some(vec![0x80, 0x05, 0x7D, 0x94]));
        assert_eq!(parse_hex("ff"), Some(vec![0xff]));
        assert_eq!(parse_hex("0xF"), None);
        assert_eq!(parse_bool("t"), Some(true));
        assert_eq!(parse_bool("f"), Some(false));
        assert_eq!(parse_bool("maybe"), None);
    }

    /// Every type name of DMS's data-type table and of the Kinesis/Kafka
    /// `table-def`s maps to a lake type; DMS's S3 target maps the same names
    /// the same way (BYTES→BINARY, DATE→DATE32, DATETIME→TIMESTAMP, REAL8→DOUBLE...).
    #[test]
    fn every_dms_type_name_is_known() {
        use ColumnType::*;
        let cases: &[(&str, ColumnType)] = &[
            ("BOOLEAN", Boolean),
            ("BOOL", Boolean),
            ("BYTES", Binary),
            ("BLOB", Binary),
            ("DATE", Date),
            ("DATE32", Date),
            ("TIME", String),
            ("DATETIME", LocalTimestamp),
            ("TIMESTAMP", LocalTimestamp),
            ("INT1", Int64),
            ("INT2", Int64),
            ("INT4", Int64),
            ("INT8", Int64),
            ("INT16", Int64),
            ("INT32", Int64),
            ("INT64", Int64),
            ("UINT1", Int64),
            ("UINT2", Int64),
            ("UINT4", Int64),
            ("UINT8", Decimal { scale: 0 }),
            ("REAL4", Float64),
            ("REAL8", Float64),
            ("FLOAT", Float64),
            ("DOUBLE", Float64),
            ("STRING", String),
            ("WSTRING", String),
            ("wstring(255)", String),
            ("TEXT", String),
            ("CLOB", String),
            ("NCLOB", String),
        ];
        for (name, ty) in cases {
            assert_eq!(from_table_def(name, None, None, 0), Some(*ty), "{name}");
        }
        assert_eq!(
            from_table_def("numeric", Some(10), Some(2), 0),
            Some(Decimal { scale: 2 })
        );
    }
}
