//! History on install (issue 19): a generated shop served by the Admin API stand-in as a bulk operation, backfilled
//! into real Tansu topics and applied by a real processor, compared with an oracle that scores the generated orders
//! with the pure `functions` crate directly (not through the engine).

use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

use functions::{evaluate, CustomerAggregate, Fact, Money, RfmConfig, Timestamp};
use loyalnest_rfm::backfill::{Backfill, Phase, ProgressStore};
use loyalnest_rfm::pii::KeyRing;
use loyalnest_rfm::shopify::admin::{AdminClient, AdminSettings};
use loyalnest_rfm::shopify::normalize::{normalize, Envelope, Normalized, WebhookTopic};
use loyalnest_rfm::shopify::standin::shop_data::{GeneratedOrder, GeneratedShop, ShopSpec};
use loyalnest_rfm::shopify::standin::{Standin, StandinOptions};
use serde_json::json;
use streams::MerchantId;

use crate::harness::{start_processor, Harness, T0};
use crate::helpers::{brokers, eventually, record_count, unique};

/// Each customer's segment key and (orders, net minor units), as the oracle or the engine sees them.
pub(crate) type Outcome = BTreeMap<u64, (String, u32, i64)>;

/// The oracle: the generated orders as facts, each customer's aggregate built and evaluated at the processor's
/// clock with the configuration of a merchant that saved none.
pub(crate) fn oracle(orders: &[GeneratedOrder]) -> Outcome {
    let mut aggregates: HashMap<u64, CustomerAggregate> = HashMap::new();
    for o in orders {
        let aggregate = aggregates.entry(o.customer_id).or_default();
        aggregate.apply(&Fact::OrderPlaced {
            order_id: o.id,
            total: Money::from_minor(o.total_cents),
            placed_at: Timestamp(o.created_at),
            excluded: o.test,
            cancelled: o.cancelled_at.is_some(),
        });
        for r in &o.refunds {
            aggregate.apply(&Fact::Refunded {
                order_id: o.id,
                refund_id: r.id,
                amount: Money::from_minor(r.amount_cents),
            });
        }
    }
    let config = RfmConfig::default();
    aggregates
        .into_iter()
        .map(|(id, aggregate)| {
            let evaluation = evaluate(&aggregate, &config, Timestamp(T0));
            let key = config.segments[usize::from(evaluation.segment)].key.clone();
            let totals = aggregate.totals();
            (id, (key, totals.orders, totals.net.minor()))
        })
        .collect()
}

/// What the live processor holds for `shop`.
pub(crate) async fn engine(h: &Harness, shop: &MerchantId) -> Outcome {
    let shop = shop.clone();
    let read = move |core: &actors::PartitionCore| {
        let mut out = Vec::new();
        for m in core.merchants().filter(|m| m.id == shop) {
            for (id, c) in m.customers() {
                let key = m.config.segments[usize::from(c.published.segment)]
                    .key
                    .clone();
                let totals = c.aggregate.totals();
                out.push((id, (key, totals.orders, totals.net.minor())));
            }
        }
        out
    };
    loyalnest_rfm::processor::inspect_all(&h.registry, read)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The shop's access token at the stand-in, registered as if the shop had installed the app.
const TOKEN: &str = "offline-token";

struct Setup {
    h: Harness,
    standin: Standin,
    shop: MerchantId,
    data: GeneratedShop,
}

async fn setup(customers: u64, orders: u64) -> Setup {
    setup_failing(customers, orders, 0).await
}

/// `fail_every`: every Nth GraphQL call the stand-in answers 502 (0: none).
async fn setup_failing(customers: u64, orders: u64, fail_every: u64) -> Setup {
    let h = start_processor(2).await;
    let shop = MerchantId::parse(&format!("{}.myshopify.com", unique("hist"))).unwrap();
    let data = GeneratedShop::generate(ShopSpec {
        customers,
        orders,
        now: T0,
        seed: 42,
    });
    let options = StandinOptions {
        bulk_polls: 2,
        fail_every,
        ..StandinOptions::new("backfill-app", "backfill-secret")
    };
    let standin = loyalnest_rfm::shopify::standin::start(options, "127.0.0.1:0").unwrap();
    standin.state.bulk.add_shop(shop.as_str(), data.clone());
    standin
        .state
        .register_token(shop.as_str(), TOKEN)
        .expect("a token of its own");
    Setup {
        h,
        standin,
        shop,
        data,
    }
}

fn backfill(s: &Setup, batch_lines: usize) -> Backfill {
    Backfill {
        admin: AdminClient::new(AdminSettings {
            base_url: s.standin.address.clone(),
            api_version: "2025-10".into(),
        }),
        sink: s.h.sink.clone(),
        topics: s.h.topics.clone(),
        keys: KeyRing::empty(),
        shop_keys: None,
        progress: ProgressStore::Postgres(s.h.db.clone()),
        poll_interval: Duration::from_millis(20),
        max_wait: Duration::from_secs(30),
        batch_lines,
    }
}

#[actix_web::test]
async fn a_backfilled_shop_equals_the_oracle_and_a_second_backfill_changes_nothing() {
    let s = setup(300, 1_200).await;
    let expected = oracle(&s.data.orders);
    let segments: std::collections::BTreeSet<&str> =
        expected.values().map(|v| v.0.as_str()).collect();
    assert!(
        segments.len() >= 4,
        "the generated shop spreads over segments: {segments:?}"
    );

    let first = backfill(&s, 250)
        .run(&s.shop, TOKEN, &|_| {})
        .await
        .expect("backfill runs");
    assert_eq!(
        (first.phase, first.lines_done, first.lines_failed),
        (Phase::Completed, 1_200, 0)
    );
    let (peak, _) = s
        .standin
        .state
        .peak_used(s.shop.as_str())
        .expect("the bulk calls were charged to the shop's bucket");
    assert!(peak >= 10.0, "at least the bulk query's cost: {peak}");
    s.h.wait_processed(first.events_produced).await;
    let after_first = engine(&s.h, &s.shop).await;
    assert_eq!(
        after_first, expected,
        "every customer's segment and totals as the oracle computes them"
    );

    let second = backfill(&s, 250)
        .run(&s.shop, TOKEN, &|_| {})
        .await
        .expect("second backfill runs");
    assert_eq!(
        second.events_produced, first.events_produced,
        "the same events again"
    );
    assert_eq!(
        s.standin.state.bulk.operations_started(),
        2,
        "a finished backfill is not continued but run anew"
    );
    s.h.wait_processed(first.events_produced + second.events_produced)
        .await;
    assert_eq!(
        engine(&s.h, &s.shop).await,
        after_first,
        "the second backfill changed nothing"
    );

    // The stand-in checks the access token of bulk calls like every other: an unknown one is refused.
    let started = s.standin.state.bulk.operations_started();
    let refused = backfill(&s, 250)
        .run(&s.shop, "shpat_not-issued", &|_| {})
        .await;
    assert!(refused.is_err(), "an unknown token is refused");
    let counters = &s.standin.state.counters;
    assert!(s.standin.state.count(&counters.unauthorized) > 0);
    assert_eq!(s.standin.state.bulk.operations_started(), started);
}

/// The webhook body Shopify would have sent for the order, through the ingress's own normalisation.
fn webhook_events(shop: &MerchantId, o: &GeneratedOrder) -> Vec<streams::InputEvent> {
    let keys = KeyRing::empty();
    let time = |t: i64| chrono::DateTime::from_timestamp(t, 0).unwrap().to_rfc3339();
    let order = json!({"id": o.id, "customer": {"id": o.customer_id}, "created_at": time(o.created_at),
        "total_price": format!("{}.{:02}", o.total_cents / 100, o.total_cents % 100), "currency": "USD",
        "financial_status": "paid", "test": o.test});
    let mut bodies = vec![(WebhookTopic::OrdersCreate, order)];
    for r in &o.refunds {
        bodies.push((WebhookTopic::RefundsCreate, json!({"id": r.id, "order_id": o.id, "created_at": time(r.created_at),
            "transactions": [{"amount": format!("{}.{:02}", r.amount_cents / 100, r.amount_cents % 100),
                "kind": "refund", "status": "success", "currency": "USD"}]})));
    }
    bodies
        .into_iter()
        .map(|(topic, body)| {
            let id = unique("wh-");
            let env = Envelope {
                event_id: &id,
                merchant_id: shop,
                keys: &keys,
                shop_key: None,
            };
            match normalize(topic, body.to_string().as_bytes(), &env).expect("a valid webhook") {
                Normalized::Event(e) => *e,
                Normalized::Ignored(why) => panic!("ignored: {why}"),
            }
        })
        .collect()
}

#[actix_web::test]
async fn an_order_that_arrived_by_webhook_and_by_backfill_counts_once() {
    let s = setup(40, 120).await;
    let refunded = s
        .data
        .orders
        .iter()
        .find(|o| !o.refunds.is_empty() && !o.test && o.cancelled_at.is_none());
    let refunded = refunded
        .expect("the generated shop has a refunded order")
        .clone();
    let live = webhook_events(&s.shop, &refunded);
    s.h.produce(&live).await;
    let done = backfill(&s, 50)
        .run(&s.shop, TOKEN, &|_| {})
        .await
        .expect("backfill runs");
    s.h.wait_processed(live.len() as u64 + done.events_produced)
        .await;
    let state = engine(&s.h, &s.shop).await;
    let expected = oracle(&s.data.orders);
    assert_eq!(
        state[&refunded.customer_id], expected[&refunded.customer_id],
        "the order and its refund once"
    );
    assert_eq!(state, expected);
}

#[actix_web::test]
async fn a_backfill_rides_out_status_queries_that_fail_on_the_way() {
    // Every second call a 502: the start (call 1) passes, the status queries after it fail every other time.
    let s = setup_failing(40, 120, 2).await;
    let done = backfill(&s, 50)
        .run(&s.shop, TOKEN, &|_| {})
        .await
        .expect("the failed status queries are tried again");
    assert_eq!(done.phase, Phase::Completed);
    let failed = s.standin.state.count(&s.standin.state.counters.failed);
    assert!(failed >= 1, "the stand-in failed {failed} calls");
    s.h.wait_processed(done.events_produced).await;
    assert_eq!(engine(&s.h, &s.shop).await, oracle(&s.data.orders));
}

#[actix_web::test]
async fn an_interrupted_backfill_continues_from_its_last_acknowledged_line() {
    let s = setup(200, 2_000).await;
    // The download breaks off about a third of the way, as a dropped connection or a crash would end it.
    let mut jsonl = Vec::new();
    s.data.write_jsonl(&mut jsonl).unwrap();
    *s.standin.state.bulk.cut_after.lock().unwrap() = Some(jsonl.len() / 3);
    let broken = backfill(&s, 100).run(&s.shop, TOKEN, &|_| {}).await;
    assert!(broken.is_err(), "the cut download is an error: {broken:?}");
    let (phase, done): (String, i64) =
        sqlx::query_as("SELECT phase, lines_done FROM backfill_runs WHERE merchant_id = $1")
            .bind(s.shop.as_str())
            .fetch_one(&s.h.db)
            .await
            .unwrap();
    assert_eq!(phase, "downloading", "left resumable");
    assert!(done > 0 && done < 2_000, "stopped part-way, at line {done}");

    *s.standin.state.bulk.cut_after.lock().unwrap() = None;
    let resumed = backfill(&s, 100)
        .run(&s.shop, TOKEN, &|_| {})
        .await
        .expect("the resumed run ends");
    assert_eq!(
        (resumed.phase, resumed.lines_done),
        (Phase::Completed, 2_000)
    );
    assert_eq!(
        s.standin.state.bulk.operations_started(),
        1,
        "the same bulk operation was continued"
    );
    eventually(
        "every produced event applied",
        Duration::from_secs(60),
        async || engine(&s.h, &s.shop).await == oracle(&s.data.orders),
    )
    .await;
    // Lines up to the checkpoint were not produced again: at most one unrecorded batch is sent twice.
    let orders_on_topic = record_count(&brokers(), &s.h.topics.orders_create).await;
    assert!(
        orders_on_topic < 2_000 + 100,
        "{orders_on_topic} order records; stopped at {done}, resumed: {resumed:?}"
    );
}
