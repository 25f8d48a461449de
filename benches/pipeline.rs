//! Stage benchmarks of the pure core on synthetic DMS messages:
//! decode, decode + buffer, encode of a 5 MiB table buffer, and the whole
//! in-process path (decode → buffer → Parquet) as tables and columns grow.
//! Run: `cargo bench --bench pipeline` (see BENCHMARKS.md).

mod support;

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use domain::batcher::{Batcher, Part};
use domain::batcher::{FlushMode, Thresholds};
use domain::dms::{decode, Message};
use domain::encode::to_parquet;
use domain::event::classify;
use domain::names::RecordId;
use domain::schema::TableSchema;
use serde_json::value::RawValue;

fn unlimited() -> Batcher {
    Batcher::new(Thresholds::unlimited(), FlushMode::Warm)
}

/// Buffers message `i` if it is a row, delivered by `shard`.
fn push(b: &mut Batcher, shard: &Arc<str>, i: usize, message: &[u8]) {
    if let Ok(Message::Row(change)) = decode(message, "before-image") {
        let id = RecordId {
            stream: std::sync::Arc::from(""),
            shard: shard.clone(),
            sequence: format!("{:056}", i),
        };
        b.push(id, &change, 0, None);
    }
}

fn buffer_all(messages: &[Vec<u8>]) -> Batcher {
    let shard: Arc<str> = Arc::from("shardId-000000000000");
    let mut b = unlimited();
    for (i, m) in messages.iter().enumerate() {
        push(&mut b, &shard, i, m);
    }
    b
}

/// The first part a batcher with a `max_bytes` size threshold makes due.
fn first_due_part(messages: &[Vec<u8>], max_bytes: usize) -> Part {
    let shard: Arc<str> = Arc::from("shardId-000000000000");
    let mut b = Batcher::new(
        Thresholds {
            max_bytes,
            ..Thresholds::unlimited()
        },
        FlushMode::Warm,
    );
    for (i, m) in messages.iter().enumerate() {
        push(&mut b, &shard, i, m);
        if let Some((part, _)) = b.take_due(0).into_iter().next() {
            return part;
        }
    }
    panic!("{} messages never reach {max_bytes} bytes", messages.len());
}

/// A Kinesis event of `messages` as Lambda delivers it (one shard).
fn kinesis_event(messages: &[Vec<u8>]) -> String {
    let records: Vec<domain::event::StreamRecord> = messages
        .iter()
        .enumerate()
        .map(|(i, m)| domain::event::StreamRecord {
            sequence: format!("{i:056}"),
            partition_key: "pk".into(),
            data: m.clone(),
            arrival_seconds: 1773450000.123,
        })
        .collect();
    domain::event::event_json(
        "arn:aws:kinesis:eu-west-1:123456789012:stream/dms",
        "shardId-000000000000",
        &records,
        None,
    )
}

fn bytes_of(messages: &[Vec<u8>]) -> u64 {
    messages.iter().map(|m| m.len() as u64).sum()
}

fn stages(c: &mut Criterion) {
    let messages = support::messages(20_000, 20, 15, 2026);
    let total = bytes_of(&messages);

    let mut g = c.benchmark_group("stage");
    g.throughput(Throughput::Bytes(total));
    g.sample_size(20);
    g.bench_function("decode", |b| {
        b.iter(|| {
            for m in &messages {
                black_box(decode(black_box(m), "before-image").is_ok());
            }
        })
    });
    g.bench_function("decode+buffer", |b| {
        b.iter(|| black_box(buffer_all(&messages).buffered_rows()))
    });
    g.finish();

    // Reading one invocation's event (1,000 records): our one pass, and the
    // Box<RawValue> read lambda_runtime does before it in a real Lambda.
    let event = kinesis_event(&messages[..1000]);
    let mut g = c.benchmark_group("event");
    g.throughput(Throughput::Bytes(event.len() as u64));
    g.sample_size(20);
    g.bench_function("classify_1000_records", |b| {
        b.iter(|| black_box(classify(black_box(&event)).is_ok()))
    });
    g.bench_function("lambda_runtime_raw_value_1000_records", |b| {
        b.iter(|| {
            let raw: Box<RawValue> = serde_json::from_slice(black_box(event.as_bytes())).unwrap();
            black_box(raw.get().len())
        })
    });
    g.finish();

    // One table's buffer as the batcher hands it over at the default 5 MiB
    // size threshold (the bytes it counts: row JSON, metadata, ids).
    let part = first_due_part(&support::messages(20_000, 1, 15, 7), 5 << 20);
    let mut g = c.benchmark_group("encode");
    g.throughput(Throughput::Bytes(part.bytes as u64));
    g.sample_size(20);
    let mib = part.bytes as f64 / (1024.0 * 1024.0);
    let types = TableSchema::new(&part.table).resolve(part.kinds()).0;
    g.bench_function(
        format!("parquet_{mib:.1}MiB_buffer_{}_rows", part.row_count()),
        |b| b.iter(|| black_box(to_parquet(&part, &types).unwrap().bytes.len())),
    );
    g.finish();
}

fn scaling(c: &mut Criterion) {
    let mut g = c.benchmark_group("end_to_end_in_process");
    g.sample_size(10);
    for (tables, columns, rows) in [
        (1, 15, 20_000),
        (20, 15, 20_000),
        (1000, 15, 20_000),
        (20, 5, 40_000),
        (20, 100, 4_000),
    ] {
        let messages = support::messages(rows, tables, columns, 11);
        g.throughput(Throughput::Bytes(bytes_of(&messages)));
        g.bench_with_input(
            BenchmarkId::new(format!("{tables}_tables_{columns}_columns"), rows),
            &messages,
            |b, messages| {
                b.iter(|| {
                    let mut batcher = buffer_all(messages);
                    let mut schemas = std::collections::HashMap::new();
                    let mut written = 0;
                    for part in batcher.take_all() {
                        let schema = schemas
                            .entry(part.table.clone())
                            .or_insert_with(|| TableSchema::new(&part.table));
                        let types = schema.resolve(part.kinds()).0;
                        written += to_parquet(&part, &types).unwrap().bytes.len();
                    }
                    black_box(written)
                })
            },
        );
    }
    g.finish();
}

criterion_group!(benches, stages, scaling);
criterion_main!(benches);
