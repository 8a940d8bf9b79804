//! A saved configuration at 1,000,000 customers of one merchant (DESIGN.md §10: re-scored in ≤ 200 ms), and the
//! preview of one on the same state (issue 18: ≤ 200 ms). Three measurements, each alternating between two
//! configurations so that every iteration moves customers:
//! - `merchant_reconfigure`: `MerchantState::reconfigure`, the re-score itself;
//! - `partition_config_step`: the `ConfigChanged` event through `PartitionCore::apply`, as the partition actor
//!   runs it: the re-score and the first chunk of its moves resolved to the `Change`s the publisher takes (names,
//!   totals) with as many boundaries scheduled; later steps publish the rest;
//! - `preview`: `actors::preview::preview`, sizes and move matrix under a proposal.
//!
//! After those, `stall`: the partition actor itself (decoding, applying, encoding every output record) takes a
//! batch of another merchant's order with the configuration, then one such batch per step until the moves are all
//! published (`actors::MOVES_CHUNK` a step); it prints each kind of step's time, the longest being how long that
//! other merchant waited.
//!
//! `cargo bench -p loyalnest-actors --bench reconfigure`; results in docs/PERFORMANCE.md.

use std::time::{Duration, Instant};

use actix::Actor;
use actors::merchant::MerchantState;
use actors::preview::preview;
use actors::{ApplyBatch, Configs, Inspect, PartitionActor, PartitionCore, RawRecord};
use chrono::DateTime;
use criterion::{criterion_group, criterion_main, Criterion};
use functions::{Money, RfmConfig, Timestamp};
use streams::events::{ConfigChanged, OrderCreated};
use streams::{InputEvent, MerchantId, Topics, SCHEMA_VERSION};

/// The binary's allocator (mimalloc, wiping freed blocks), so the allocation-heavy steps cost what they cost there.
#[global_allocator]
static ALLOCATOR: streams::zeroing::ZeroingAllocator = streams::zeroing::ZeroingAllocator::new();

const SHOP: &str = "million.myshopify.com";
const CUSTOMERS: u64 = 1_000_000;
const NOW: Timestamp = Timestamp(1_790_000_000);

fn shop() -> MerchantId {
    MerchantId::parse(SHOP).expect("shop")
}

/// One to four orders per customer, $12–$311 each, placed 0–399 days ago: every score occurs.
fn orders() -> impl Iterator<Item = InputEvent> {
    (1..=CUSTOMERS).flat_map(|customer| {
        let n = 1 + customer % 4;
        (0..n).map(move |o| {
            let order_id = customer * 8 + o;
            let days = ((customer * 7 + o * 31) % 400) as i64;
            let cents = 1_200 + (customer * 37 + o * 101) % 30_000;
            InputEvent::OrderCreated(OrderCreated {
                event_id: format!("o{order_id}"),
                schema_version: SCHEMA_VERSION,
                merchant_id: shop(),
                customer_id: customer,
                order_id,
                total_price: Money::from_minor(cents as i64).to_decimal_string(2),
                currency: "USD".into(),
                created_at: DateTime::from_timestamp(NOW.plus_days(-days).unix(), 0).expect("time"),
                financial_status: "paid".into(),
                test: false,
                cancelled: false,
                locale: None,
                pii: None,
            })
        })
    })
}

/// The default and a merchant's own: thresholds from a $40 AOV, a 30-day grace, recency bounds moved.
fn configs() -> [RfmConfig; 2] {
    let mut own = RfmConfig::from_aov(Money::from_minor(4_000));
    own.recency_days = [14, 45, 90, 180];
    own.grace_period_days = 30;
    [RfmConfig::default(), own]
}

fn partition() -> PartitionCore {
    let mut core = PartitionCore::new(0);
    let configs = Configs::default();
    let events: Vec<InputEvent> = orders().collect();
    for chunk in events.chunks(100_000) {
        core.apply(chunk, NOW, &configs);
    }
    core
}

/// An event as the consumer hands it to the actor.
fn raw(event: &InputEvent, offset: i64) -> RawRecord {
    RawRecord {
        kind: Some(event.kind()),
        topic: "bench".into(),
        offset,
        key: Some(event.merchant_id().as_str().as_bytes().to_vec()),
        payload: event.encode(),
        timestamp_ms: None,
        traceparent: None,
    }
}

/// Another merchant's first order of customer `n`.
fn other_order(n: u64) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: format!("other-{n}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: MerchantId::parse("neighbour.myshopify.com").expect("shop"),
        customer_id: n,
        order_id: n,
        total_price: "25.00".into(),
        currency: "USD".into(),
        created_at: DateTime::from_timestamp(NOW.unix(), 0).expect("time"),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

fn config_changed(config: RfmConfig, n: u64) -> InputEvent {
    InputEvent::ConfigChanged(ConfigChanged {
        event_id: format!("config-{n}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: shop(),
        config,
        saved_at: DateTime::from_timestamp(NOW.unix(), 0).expect("time"),
        revision: Some(n),
    })
}

/// The partition actor's step times while a configuration of the big merchant is applied and its moves published,
/// each step also holding one order of another merchant: what that merchant's records wait.
fn stall(core: PartitionCore, configs: &[RfmConfig; 2]) {
    let system = actix::System::new();
    system.block_on(async {
        let actor = PartitionActor::with_core(core, Configs::default(), Topics::default()).start();
        let mut n = 0u64;
        let step = async |records: Vec<RawRecord>| {
            let started = Instant::now();
            let outcome = actor
                .send(ApplyBatch { records, now: NOW, quiet: false })
                .await
                .expect("the actor answers");
            (started.elapsed(), outcome.changes.len())
        };
        for round in 1..=3u64 {
            n += 1;
            let (quiet, _) = step(vec![raw(&other_order(n), n as i64)]).await;
            let config = configs[(round % 2) as usize].clone();
            n += 1;
            let batch = vec![raw(&config_changed(config, round), n as i64), raw(&other_order(n), n as i64)];
            let (first, first_changes) = step(batch).await;
            let (mut steps, mut longest, mut total, mut changes) = (1, first, first, first_changes);
            while actor
                .send(Inspect(|core: &PartitionCore| core.has_pending_moves()))
                .await
                .expect("the actor answers")
            {
                n += 1;
                let (took, moved) = step(vec![raw(&other_order(n), n as i64)]).await;
                steps += 1;
                longest = longest.max(took);
                total += took;
                changes += moved;
            }
            println!(
                "stall round {round}: a step without moves {quiet:.1?}; with the configuration {first:.1?}; \
                 {steps} steps publishing {changes} changes in {total:.1?}, the longest {longest:.1?}"
            );
        }
    });
}

fn bench(c: &mut Criterion) {
    let mut group = c.benchmark_group("config_1m");
    group
        .sample_size(10)
        .measurement_time(Duration::from_secs(20));
    let [plain, own] = configs();

    let mut merchant = MerchantState::new(shop(), plain.clone());
    let mut effects = Vec::new();
    for event in orders() {
        merchant.apply(&event, NOW, &mut effects);
        effects.clear();
    }
    assert_eq!(merchant.len() as u64, CUSTOMERS);
    let mut flip = false;
    group.bench_function("merchant_reconfigure", |b| {
        b.iter(|| {
            flip = !flip;
            let config = if flip { own.clone() } else { plain.clone() };
            merchant.reconfigure(config, NOW, &mut effects);
            let moved = effects.len();
            effects.clear();
            moved
        })
    });
    group.bench_function("preview", |b| {
        b.iter(|| preview(&merchant, &own, NOW).customers)
    });
    drop(merchant);

    let mut core = partition();
    let configs = Configs::default();
    let mut flip = false;
    let mut n = 0u64;
    // The step that applies the configuration: the re-score and the first chunk of its moves. The rest of the
    // moves are published by later steps, outside the timing.
    group.bench_function("partition_config_step", |b| {
        b.iter_custom(|iters| {
            let mut took = Duration::ZERO;
            for _ in 0..iters {
                flip = !flip;
                n += 1;
                let event = config_changed(if flip { own.clone() } else { plain.clone() }, n);
                let started = Instant::now();
                std::hint::black_box(core.apply(&[event], NOW, &configs).changes.len());
                took += started.elapsed();
                while core.has_pending_moves() {
                    core.apply(&[], NOW, &configs);
                }
            }
            took
        })
    });
    group.finish();
    stall(core, &[plain, own]);
}

criterion_group!(benches, bench);
criterion_main!(benches);
