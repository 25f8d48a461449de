//! Any payload: decoding must not panic, and a payload that decodes to a row
//! must buffer and encode to Parquet without error, whatever type each column
//! is declared with, and the file's columns have exactly the declared types
//! (a value that does not fit goes to `_rescued`; the first input byte picks
//! the declared types, so conversions to every type are exercised, not just
//! the inferred ones); and the row's text form for the quarantine (data and
//! metadata members) is one JSON object per row.
#![no_main]

use std::collections::HashMap;
use std::sync::Arc;

use serde_json::value::RawValue;

use cdc_batcher::domain::batcher::Batcher;
use cdc_batcher::app::config::{FlushMode, Thresholds};
use cdc_batcher::domain::dms::{decode, Message};
use cdc_batcher::domain::encode::to_parquet;
use cdc_batcher::domain::file_types::{footer_schema, mismatches};
use cdc_batcher::domain::layout::RecordId;
use cdc_batcher::domain::schema::TableSchema;
use cdc_batcher::domain::types::ColumnType;
use libfuzzer_sys::fuzz_target;

const TYPES: [ColumnType; 9] = [
    ColumnType::Boolean,
    ColumnType::Int64,
    ColumnType::Float64,
    ColumnType::Decimal { scale: 2 },
    ColumnType::Date,
    ColumnType::Timestamp,
    ColumnType::LocalTimestamp,
    ColumnType::Binary,
    ColumnType::String,
];

fuzz_target!(|input: &[u8]| {
    let Some((&selector, data)) = input.split_first() else {
        return;
    };
    let Ok(Message::Row(change)) = decode(data, "before-image") else {
        return;
    };
    let mut batcher = Batcher::new(Thresholds::unlimited(), FlushMode::Warm);
    let id = RecordId {
        stream: std::sync::Arc::from(""),
        shard: Arc::from("shardId-000000000000"),
        sequence: "1".to_string(),
    };
    batcher.push(id, &change, 0);
    for part in batcher.take_all() {
        // The quarantine's text form of the row (data and metadata members)
        // must be one valid JSON object per row.
        let lines = part.json_lines();
        // Raw values: a number token like 1e999 is valid JSON that
        // serde_json's `Value` cannot hold.
        let objects: Vec<HashMap<String, &RawValue>> = lines
            .split(|&b| b == b'\n')
            .filter(|l| !l.is_empty())
            .map(|l| serde_json::from_slice(l).expect("a quarantine line is not a JSON object"))
            .collect();
        assert_eq!(objects.len(), part.row_count());
        assert!(objects.iter().all(|o| o.contains_key("_op") && o.contains_key("_sequence_number")));
        let mut types = TableSchema::new(&part.table).resolve(part.kinds()).0;
        if selector & 1 == 1 {
            for (i, (_, ty)) in types.iter_mut().enumerate() {
                *ty = TYPES[(usize::from(selector >> 1) + i) % TYPES.len()];
            }
        }
        match to_parquet(&part, &types) {
            Ok(encoded) => {
                let mut declared = TableSchema::new(&part.table);
                declared.apply_overrides(&types);
                let footer = footer_schema(encoded.bytes).expect("the file reads back");
                let wrong = mismatches(&declared, &footer);
                assert!(wrong.is_empty(), "a column's type is not the declared one: {wrong:?}");
            }
            Err(e) => panic!(
                "a decoded row could not be encoded: {e}\n{}",
                String::from_utf8_lossy(&part.data.json_lines())
            ),
        }
    }
});
