//! A saved configuration at 1,000,000 customers of one merchant (DESIGN.md §10: re-scored in ≤ 200 ms), and the
//! preview of one on the same state (issue 18: ≤ 200 ms). Three measurements, each alternating between two
//! configurations so that every iteration moves customers:
//! - `merchant_reconfigure`: `MerchantState::reconfigure`, the re-score itself;
//! - `partition_config_event`: the `ConfigChanged` event through `PartitionCore::apply`, as the partition actor
//!   runs it, with every change resolved to the `Change` the publisher takes (names, totals, timers);
//! - `preview`: `actors::preview::preview`, sizes and move matrix under a proposal.
//!
//! `cargo bench -p loyalnest-actors --bench reconfigure`; results in docs/PERFORMANCE.md.

use std::time::Duration;

use actors::merchant::MerchantState;
use actors::preview::preview;
use actors::{Configs, PartitionCore};
use chrono::DateTime;
use criterion::{criterion_group, criterion_main, Criterion};
use functions::{Money, RfmConfig, Timestamp};
use streams::events::{ConfigChanged, OrderCreated};
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

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
    group.bench_function("partition_config_event", |b| {
        b.iter(|| {
            flip = !flip;
            n += 1;
            let event = InputEvent::ConfigChanged(ConfigChanged {
                event_id: format!("config-{n}"),
                schema_version: SCHEMA_VERSION,
                merchant_id: shop(),
                config: if flip { own.clone() } else { plain.clone() },
                saved_at: DateTime::from_timestamp(NOW.unix(), 0).expect("time"),
            });
            core.apply(&[event], NOW, &configs).changes.len()
        })
    });
    group.finish();
}

criterion_group!(benches, bench);
criterion_main!(benches);
