//! A deterministic generator of DMS messages for the benchmarks: `tables`
//! tables of `columns` columns of mixed DMS value encodings (integers, big
//! integers, decimals as strings, doubles, booleans, dates, times,
//! timestamps, hex binary, JSON text, multilingual text), NULLs omitted
//! as with DMS's default settings.

/// SplitMix64: small, fast, and the same on every platform.
pub struct Rng(u64);

impl Rng {
    pub fn new(seed: u64) -> Self {
        Rng(seed)
    }

    pub fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    fn below(&mut self, n: u64) -> u64 {
        self.next() % n
    }
}

const TITLES: [&str; 6] = [
    "Nordlicht Handels GmbH",
    "深圳星河贸易有限公司",
    "شركة النخيل للتجارة",
    "Café \"Zum Löwen\" & Söhne",
    "ナカムラ精工株式会社",
    "Ωmega Δelta Λtd — 🚀",
];

fn value(rng: &mut Rng, kind: usize, row: u64) -> Option<String> {
    if kind > 0 && rng.below(10) == 0 {
        return None; // NULL: left out of `data`
    }
    Some(match kind % 12 {
        0 => row.to_string(),
        1 => (rng.below(1_000_000) as i64 - 500_000).to_string(),
        2 => format!("\"C{:03}\"", rng.below(1000)),
        3 => serde_json::to_string(TITLES[rng.below(6) as usize]).unwrap(),
        4 => format!("\"{}.{:04}\"", rng.below(100_000_000), rng.below(10_000)),
        5 => format!("{}", rng.below(1_000_000) as f64 / 1024.0),
        6 => if rng.below(2) == 0 { "true" } else { "false" }.to_string(),
        7 => format!(
            "\"{}-{:02}-{:02}\"",
            1990 + rng.below(40),
            1 + rng.below(12),
            1 + rng.below(28)
        ),
        8 => format!(
            "\"{:02}:{:02}:{:02}.{:06}\"",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1_000_000)
        ),
        9 => format!(
            "\"2026-03-14T{:02}:{:02}:{:02}.{:03}Z\"",
            rng.below(24),
            rng.below(60),
            rng.below(60),
            rng.below(1000)
        ),
        10 => format!("\"0x{:016X}{:08X}\"", rng.next(), rng.below(1 << 32)),
        _ => format!(
            "\"{{\\\"tags\\\":[\\\"a{}\\\",\\\"b\\\"],\\\"score\\\":{}}}\"",
            rng.below(100),
            rng.below(1000)
        ),
    })
}

/// `rows` DMS messages (one JSON text each) over `tables` tables.
pub fn messages(rows: u64, tables: u64, columns: usize, seed: u64) -> Vec<Vec<u8>> {
    let mut rng = Rng::new(seed);
    (0..rows)
        .map(|row| {
            let table = rng.below(tables);
            let mut data = String::with_capacity(64 * columns);
            for c in 0..columns {
                if let Some(v) = value(&mut rng, c, row) {
                    if !data.is_empty() {
                        data.push(',');
                    }
                    data.push_str(&format!("\"col_{c:03}\":{v}"));
                }
            }
            let op = ["insert", "update", "load"][rng.below(3) as usize];
            let micros = 1_773_450_000_000_000u64 + row * 1000;
            let ts = chrono::DateTime::from_timestamp_micros(micros as i64)
                .unwrap()
                .to_rfc3339_opts(chrono::SecondsFormat::Micros, true);
            format!(
                "{{\"data\":{{{data}}},\"metadata\":{{\"timestamp\":\"{ts}\",\"record-type\":\"data\",\
                 \"operation\":\"{op}\",\"partition-key-type\":\"schema-table\",\"schema-name\":\"bench\",\
                 \"table-name\":\"tbl_{table:04}\",\"transaction-id\":{},\"commit-timestamp\":\"{ts}\"}}}}",
                100_000 + row / 3
            )
            .into_bytes()
        })
        .collect()
}
