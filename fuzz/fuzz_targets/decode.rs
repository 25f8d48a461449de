//! Any payload: decoding must not panic, and a payload that decodes to a row
//! must buffer and encode to Parquet without error (the row JSON we write is
//! always readable by the Arrow decoder with the types we chose).
#![no_main]

use std::sync::Arc;

use cdc_batcher::batcher::Batcher;
use cdc_batcher::config::{FlushMode, Thresholds};
use cdc_batcher::dms::{decode, Message};
use cdc_batcher::encode::to_parquet;
use cdc_batcher::layout::RecordId;
use cdc_batcher::schema::TableSchema;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    let Ok(Message::Row(change)) = decode(data, "before-image") else {
        return;
    };
    let mut batcher = Batcher::new(Thresholds::unlimited(), FlushMode::Warm);
    let id = RecordId {
        shard: Arc::from("shardId-000000000000"),
        sequence: "1".to_string(),
    };
    batcher.push(id, &change, 0);
    for part in batcher.take_all() {
        let types = TableSchema::new(&part.table).resolve(&part.kinds).0;
        if let Err(e) = to_parquet(&part, &types) {
            panic!("a decoded row could not be encoded: {e}\n{}", String::from_utf8_lossy(&part.rows));
        }
    }
});
