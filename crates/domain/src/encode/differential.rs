//! Differential test of the write path: Parquet made from the buffered
//! tokens (`token_arrays`) must be byte for byte what the path it replaced
//! makes, arrow-json reading each buffered row as a JSON line, for random
//! rows (every JSON kind, escapes, absent columns, shuffled column order,
//! rows across Arrow batches) and random column types.

use super::tests::part_of;
use super::*;
use crate::names::TableName;
use crate::schema::TableSchema;
use arrow::json::ReaderBuilder;

/// The replaced path: arrow-json's decoder over the rows as JSON lines,
/// `BATCH_ROWS` per batch.
fn json_arrays(part: &Part, fields: &[Field]) -> Result<Vec<Vec<ArrayRef>>, EncodeError> {
    let mut decoder = ReaderBuilder::new(Arc::new(Schema::new(fields.to_vec())))
        .with_coerce_primitive(true)
        .with_batch_size(BATCH_ROWS)
        .build_decoder()?;
    let lines = part.data.json_lines();
    let mut batches = Vec::new();
    let mut rest = lines.as_slice();
    while !rest.is_empty() {
        let read = decoder.decode(rest)?;
        rest = &rest[read..];
        match decoder.flush()? {
            Some(batch) => batches.push(batch.columns().to_vec()),
            None if read == 0 => break,
            None => {}
        }
    }
    if let Some(batch) = decoder.flush()? {
        batches.push(batch.columns().to_vec());
    }
    Ok(batches)
}

/// SplitMix64: small, seeded, the same on every machine.
struct Rng(u64);

impl Rng {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }

    fn pick<'a>(&mut self, items: &[&'a str]) -> &'a str {
        items[self.below(items.len())]
    }
}

#[derive(Clone, Copy)]
enum Kind {
    Int,
    Float,
    Text,
    Bool,
    Structure,
}

const KINDS: [Kind; 5] = [
    Kind::Int,
    Kind::Float,
    Kind::Text,
    Kind::Bool,
    Kind::Structure,
];

fn int(rng: &mut Rng) -> String {
    const SPECIAL: &[&str] = &[
        "0",
        "-0",
        "1",
        "-1",
        "9223372036854775807",
        "-9223372036854775808",
        "9007199254740992",
        "9007199254740993",
        "-9007199254740993",
        "9223372036854775808",
        "-123456789012345678901234567890",
    ];
    match rng.below(3) {
        0 => rng.pick(SPECIAL).to_string(),
        1 => ((rng.next() as i64) >> rng.below(64)).to_string(),
        _ => (rng.below(1000) as i64 - 500).to_string(),
    }
}

fn float(rng: &mut Rng) -> String {
    const SPECIAL: &[&str] = &[
        "1.5",
        "-0.0",
        "0.0",
        "1e400",
        "-1e400",
        "1e-400",
        "1E+2",
        "2.71828182845905E+17",
        "1.0",
        "5e-324",
        "1.7976931348623157e308",
        "0.1",
        "123.456000",
    ];
    let v = f64::from_bits(rng.next());
    match rng.below(4) {
        0 => rng.pick(SPECIAL).to_string(),
        1 if v.is_finite() => format!("{v:e}"),
        2 if v.is_finite() => format!("{v}"),
        _ => format!("{}.{}", rng.below(100_000) as i64 - 50_000, rng.below(1000)),
    }
}

fn text(rng: &mut Rng) -> String {
    // Tokens spelled as DMS could spell them: escapes included.
    const RAW: &[&str] = &[
        r#""\u00e9t\u00E9""#,
        r#""\ud83d\ude00 smile""#,
        r#""a\/b""#,
        r#""tab\there""#,
        r#""\"quoted\" \\ back""#,
    ];
    const PLAIN: &[&str] = &[
        "",
        "abc",
        "é€😀",
        "line\nbreak\r\u{1}",
        "2026-03-14",
        "2026-02-30",
        "2026-03-14 01:02:03",
        "2026-03-14T01:02:03.123456Z",
        "2026-03-14 01:02:03.1234567",
        "12.50",
        "-0.001",
        "1.5E+3",
        "1e400",
        "123",
        "-9223372036854775809",
        "9223372036854775807",
        "t",
        "f",
        "true",
        "yes",
        "DEADBEEF",
        "0x1F",
        "abc1",
        "NaN",
        "Infinity",
        "-Infinity",
        " 42",
    ];
    match rng.below(4) {
        0 => rng.pick(RAW).to_string(),
        1 => serde_json::to_string(&rng.below(1_000_000_000).to_string()).unwrap(),
        _ => serde_json::to_string(rng.pick(PLAIN)).unwrap(),
    }
}

fn token(rng: &mut Rng, kind: Kind) -> String {
    match kind {
        Kind::Int => int(rng),
        Kind::Float => float(rng),
        Kind::Text => text(rng),
        Kind::Bool => rng.pick(&["true", "false"]).to_string(),
        Kind::Structure => rng
            .pick(&[
                r#"{"a": [1, 2]}"#,
                "[1,\t\"x\" , null]",
                "{}",
                "[]",
                r#"{"k":"v\n"}"#,
            ])
            .to_string(),
    }
}

/// A random part: `columns` columns, each mostly of one kind, with nulls,
/// absent values, other kinds now and then and shuffled column order.
fn random_part(rng: &mut Rng, rows: usize, columns: usize) -> Part {
    let main: Vec<Kind> = (0..columns)
        .map(|_| KINDS[rng.below(KINDS.len())])
        .collect();
    let mut datas = Vec::with_capacity(rows);
    for _ in 0..rows {
        let mut members = Vec::new();
        for (c, kind) in main.iter().enumerate() {
            let value = match rng.below(20) {
                0 | 1 => None,
                2 | 3 => Some("null".to_string()),
                4 => {
                    let other = KINDS[rng.below(KINDS.len())];
                    Some(token(rng, other))
                }
                _ => Some(token(rng, *kind)),
            };
            if let Some(v) = value {
                members.push(format!("\"c{c}\":{v}"));
            }
        }
        if rng.below(4) == 0 {
            for i in (1..members.len()).rev() {
                members.swap(i, rng.below(i + 1));
            }
        }
        datas.push(format!("{{{}}}", members.join(",")));
    }
    let datas: Vec<&str> = datas.iter().map(String::as_str).collect();
    part_of(&datas)
}

fn random_type(rng: &mut Rng) -> ColumnType {
    match rng.below(9) {
        0 => ColumnType::String,
        1 => ColumnType::Boolean,
        2 => ColumnType::Int64,
        3 => ColumnType::Float64,
        4 => ColumnType::Decimal {
            scale: rng.below(7) as u8,
        },
        5 => ColumnType::Date,
        6 => ColumnType::Timestamp,
        7 => ColumnType::LocalTimestamp,
        _ => ColumnType::Binary,
    }
}

/// The part's columns with the types the registry would infer, some
/// replaced by a random declared type, and now and then a registered
/// column this part does not have.
fn random_types(rng: &mut Rng, part: &Part) -> Vec<(String, ColumnType)> {
    let table = TableName {
        schema: "s".into(),
        table: "t".into(),
    };
    let mut types = TableSchema::new(&table).resolve(part.kinds()).0;
    for (_, ty) in types.iter_mut() {
        if rng.below(2) == 0 {
            *ty = random_type(rng);
        }
    }
    if rng.below(5) == 0 {
        let at = rng.below(types.len() + 1);
        types.insert(at, ("registered_only".to_string(), random_type(rng)));
    }
    types
}

fn same_output(part: &Part, types: &[(String, ColumnType)]) -> Result<(), String> {
    let new = to_parquet(part, types);
    let old = encode_with(part, types, json_arrays);
    match (new, old) {
        (Ok(new), Ok(old)) => {
            if new.rescued != old.rescued {
                return Err(format!("rescued {:?} vs {:?}", new.rescued, old.rescued));
            }
            if new.inexact_integers != old.inexact_integers {
                return Err(format!(
                    "inexact integers {} vs {}",
                    new.inexact_integers, old.inexact_integers
                ));
            }
            if new.bytes != old.bytes {
                return Err("the Parquet bytes differ".to_string());
            }
            Ok(())
        }
        // Both refuse the part: it is quarantined either way.
        (Err(_), Err(_)) => Ok(()),
        (new, old) => Err(format!(
            "one path failed: tokens {:?}, arrow-json {:?}",
            new.err(),
            old.err()
        )),
    }
}

#[test]
fn tokens_write_what_arrow_json_wrote() {
    let seeds: u64 = std::env::var("DIFF_SEEDS")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or(600);
    for seed in 0..seeds {
        let mut rng = Rng(seed);
        // Every 50th case crosses an Arrow batch boundary.
        let rows = if seed % 50 == 7 {
            BATCH_ROWS + 1 + rng.below(100)
        } else {
            1 + rng.below(40)
        };
        let columns = rng.below(7);
        let part = random_part(&mut rng, rows, columns);
        let types = random_types(&mut rng, &part);
        if let Err(e) = same_output(&part, &types) {
            panic!(
                "seed {seed}: {e}\ntypes: {types:?}\nrows:\n{}",
                String::from_utf8_lossy(&part.data.json_lines())
            );
        }
    }
}

#[test]
fn the_generator_reaches_every_wire_type_and_rescue() {
    // The comparison above means little unless the random parts take every
    // branch of `token_array` and of the conversions.
    let (mut native, mut text, mut rescued, mut inexact) = ([0u32; 3], 0, 0, 0);
    for seed in 0..200 {
        let mut rng = Rng(seed);
        let rows = 1 + rng.below(40);
        let columns = rng.below(7);
        let part = random_part(&mut rng, rows, columns);
        let types = random_types(&mut rng, &part);
        for (name, ty) in &types {
            let kinds = part.kinds().get(name).copied().unwrap_or_default();
            match wire_type(*ty, kinds) {
                DataType::Int64 => native[0] += 1,
                DataType::Float64 => native[1] += 1,
                DataType::Boolean => native[2] += 1,
                _ => text += 1,
            }
        }
        if let Ok(e) = to_parquet(&part, &types) {
            rescued += e.rescued.len();
            inexact += e.inexact_integers;
        }
    }
    assert!(native.iter().all(|&n| n > 10), "native columns {native:?}");
    assert!(
        text > 100 && rescued > 50 && inexact > 0,
        "{text} {rescued} {inexact}"
    );
}
