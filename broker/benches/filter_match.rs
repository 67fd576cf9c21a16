//! Header-filter matching micro-benchmarks: which of N filters, each on its own
//! `device_id`, match a message for one device — the index's cost per message with
//! 10, 1,000 and 10,000 filters that do not match (issue 15: it should not grow
//! with them). Devices are visited in a pseudo-random order, so the table is not
//! hot in cache for a small N only.
//!
//! `cargo bench -p tern-broker --bench filter_match`

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use std::hint::black_box;
use std::sync::Arc;

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use tern_broker::filter_index::FilterIndex;
use tern_proto::filter::Filter;
use tern_proto::{Header, Message};

/// Messages for 4,096 devices out of `count`, in a scattered order.
fn messages(count: usize) -> Vec<Message> {
    (0..4096u64)
        .map(|n| {
            let device = (n.wrapping_mul(0x9E37_79B9_7F4A_7C15) >> 11) % count as u64;
            let headers = [
                Header::new("profile_id", "u1"),
                Header::new("device_id", format!("d{device}")),
            ];
            Message::encode("user.event.delivery", None, &headers, &[0u8; 128]).expect("valid")
        })
        .collect()
}

fn matching(c: &mut Criterion) {
    let mut group = c.benchmark_group("filter_matching");
    group.throughput(Throughput::Elements(1));
    for count in [10usize, 1_000, 10_000] {
        let mut index = FilterIndex::default();
        for device in 0..count {
            let text = format!("device_id = 'd{device}'");
            index.insert(
                device as u32,
                Arc::new(Filter::parse(&text).expect("valid")),
            );
        }
        let messages = messages(count);
        group.bench_with_input(BenchmarkId::from_parameter(count), &index, |b, index| {
            let mut next = 0;
            b.iter(|| {
                next = (next + 1) % messages.len();
                let mut matched: Vec<u32> = Vec::with_capacity(4);
                index.matching(black_box(&messages[next]), &mut matched);
                black_box(matched.len())
            });
        });
    }
    group.finish();
}

criterion_group!(benches, matching);
criterion_main!(benches);
