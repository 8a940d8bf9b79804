//! The in-process update path: one event applied to a customer held in its merchant's map, scored, classified
//! and compared with what was last published. `cargo bench -p loyalnest-functions --bench update_path`.

use std::collections::HashMap;
use std::hint::black_box;

use criterion::{criterion_group, criterion_main, BatchSize, Criterion, Throughput};
use functions::{CustomerState, Fact, Money, RfmConfig, Timestamp, Update};

const CUSTOMERS: u64 = 100_000;
const EVENTS: u64 = 200_000;

/// A deterministic mixed stream: mostly orders, some refunds, cancels and points, spread over many customers.
fn stream() -> Vec<(u64, Fact)> {
    let start = Timestamp(1_700_000_000);
    (0..EVENTS)
        .map(|i| {
            let customer = (i.wrapping_mul(2_654_435_761)) % CUSTOMERS;
            let at = Timestamp(start.unix() + (i as i64) * 37);
            let fact = match i % 10 {
                0 => Fact::Refunded {
                    order_id: i - 10,
                    refund_id: i,
                    amount: Money::from_minor(500),
                },
                1 => Fact::OrderCancelled { order_id: i - 1 },
                2 | 3 => Fact::Points {
                    event_key: i,
                    delta: 50,
                    at,
                },
                _ => Fact::OrderPlaced {
                    order_id: i,
                    total: Money::from_minor(1_000 + (i % 37) as i64 * 700),
                    placed_at: at,
                    excluded: false,
                    cancelled: false,
                },
            };
            (customer, fact)
        })
        .collect()
}

fn update_path(c: &mut Criterion) {
    let config = RfmConfig::default();
    let events = stream();
    let now = Timestamp(1_700_000_000 + EVENTS as i64 * 37);
    let mut group = c.benchmark_group("update_path");
    group.throughput(Throughput::Elements(EVENTS));
    group.sample_size(20);
    group.bench_function("apply_score_classify", |b| {
        b.iter_batched(
            || HashMap::<u64, CustomerState>::with_capacity(CUSTOMERS as usize),
            |mut customers| {
                let mut changes = 0u32;
                for (customer, fact) in &events {
                    let state = customers
                        .entry(*customer)
                        .or_insert_with(|| CustomerState::new(&config));
                    if let Update::Changed(_) = state.apply(fact, &config, now) {
                        changes += 1;
                    }
                }
                black_box((changes, customers))
            },
            BatchSize::LargeInput,
        )
    });
    group.finish();
}

criterion_group!(benches, update_path);
criterion_main!(benches);
