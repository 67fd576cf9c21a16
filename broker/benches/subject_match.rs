//! Subject-matcher micro-benchmarks: routing a published subject through the
//! subscription trie with literal and wildcard subscriptions, in lookups per second.
//!
//! `cargo bench --bench subject_match`

// criterion's macros generate undocumented functions.
#![allow(missing_docs)]

use criterion::{criterion_group, criterion_main, BenchmarkId, Criterion, Throughput};
use std::hint::black_box;
use tern_broker::routing::{pattern_matches, SubjectIndex};

const REGIONS: [&str; 8] = ["eu", "us", "ap", "sa", "af", "me", "oc", "an"];
const EVENTS: [&str; 4] = ["created", "paid", "shipped", "cancelled"];

/// `count` subscriptions: mostly literals, some `*` and `>` wildcards.
fn index_with(count: usize) -> SubjectIndex<usize> {
    let mut index = SubjectIndex::new();
    for n in 0..count {
        let region = REGIONS[n % REGIONS.len()];
        let event = EVENTS[(n / REGIONS.len()) % EVENTS.len()];
        let pattern = match n % 10 {
            0 => format!("orders.*.{event}"),
            1 => format!("orders.{region}.>"),
            _ => format!("svc{}.orders.{region}.{event}", n / 32),
        };
        index.insert(&pattern, n);
    }
    index
}

fn lookup(c: &mut Criterion) {
    let mut group = c.benchmark_group("trie_lookup");
    group.throughput(Throughput::Elements(1));
    for count in [10, 1_000, 100_000] {
        let index = index_with(count);
        group.bench_with_input(BenchmarkId::from_parameter(count), &index, |b, index| {
            b.iter(|| {
                let mut matched = 0usize;
                index.for_each_match(black_box("orders.eu.created"), |_| matched += 1);
                black_box(matched)
            });
        });
    }
    group.finish();
}

fn single_pattern(c: &mut Criterion) {
    let mut group = c.benchmark_group("pattern_matches");
    group.throughput(Throughput::Elements(1));
    for (name, pattern) in [
        ("literal", "orders.eu.created"),
        ("star", "orders.*.created"),
        ("tail", "orders.>"),
    ] {
        group.bench_function(name, |b| {
            b.iter(|| pattern_matches(black_box(pattern), black_box("orders.eu.created")))
        });
    }
    group.finish();
}

criterion_group!(benches, lookup, single_pattern);
criterion_main!(benches);
