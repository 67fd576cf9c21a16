//! Codec micro-benchmarks: encoding and decoding the frames on the per-message path
//! (PUBLISH in, DELIVER out), in bytes and frames per second.
//!
//! `cargo bench --bench codec`

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use bytes::BytesMut;
use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tern_proto::{codec, Header, Message, DEFAULT_MAX_FRAME_BYTES};

const BATCH: usize = 1000;
const SIZES: [usize; 3] = [16, 128, 4096];

fn publish_batch(payload: &[u8], headers: &[Header]) -> BytesMut {
    let mut buffer = BytesMut::new();
    for sequence in 0..BATCH as u64 {
        codec::encode_publish(
            &mut buffer,
            sequence,
            "orders.eu.created",
            None,
            headers,
            payload,
        )
        .expect("encode");
    }
    buffer
}

fn encode(c: &mut Criterion) {
    let mut group = c.benchmark_group("encode_deliver");
    for size in SIZES {
        let payload = vec![7u8; size];
        let frame_bytes = publish_batch(&payload, &[]).len() / BATCH;
        group.throughput(Throughput::Bytes((frame_bytes * BATCH) as u64));
        let message = Message::new("orders.eu.created", &payload).expect("valid");
        group.bench_with_input(BenchmarkId::from_parameter(size), &message, |b, message| {
            let mut buffer = BytesMut::with_capacity(frame_bytes * BATCH + 64);
            b.iter(|| {
                buffer.clear();
                for n in 0..BATCH as u64 {
                    codec::encode_deliver(&mut buffer, 1, n, false, black_box(message))
                        .expect("encode");
                }
                black_box(buffer.len())
            });
        });
    }
    group.finish();
}

fn decode(c: &mut Criterion) {
    let mut group = c.benchmark_group("decode_publish");
    let headers = [Header::new("trace-id", "4bf92f3577b34da6")];
    for (name, headers) in [("plain", &[][..]), ("one_header", &headers[..])] {
        for size in SIZES {
            let batch = publish_batch(&vec![7u8; size], headers).freeze();
            group.throughput(Throughput::Elements(BATCH as u64));
            group.bench_with_input(BenchmarkId::new(name, size), &batch, |b, batch| {
                b.iter(|| {
                    let mut buffer = BytesMut::from(&batch[..]);
                    let mut frames = 0;
                    while let Some(frame) =
                        codec::decode(&mut buffer, DEFAULT_MAX_FRAME_BYTES).expect("decode")
                    {
                        black_box(frame);
                        frames += 1;
                    }
                    assert_eq!(frames, BATCH);
                });
            });
        }
    }
    group.finish();
}

criterion_group!(benches, encode, decode);
criterion_main!(benches);
