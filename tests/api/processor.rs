//! The stream core end to end: a scripted stream for several merchants through a real broker into the processor,
//! checked against an oracle computed here, independently of the engine's own scoring code.

use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::Ordering;
use std::time::Duration;

use chrono::{DateTime, Utc};
use functions::Timestamp;
use sqlx::PgPool;
use streams::events::{OrderCancelled, OrderCreated, PointsChanged, PointsSource, RefundCreated};
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

use crate::harness::{start_processor, T0};
use crate::helpers::{brokers, eventually, read_records, record_count, unique};

const DAY: i64 = 86_400;

// ---- the oracle: the design's rules written out again, without the engine's code ----

#[derive(Default, Clone)]
struct OrderTruth {
    total_cents: i64,
    refunded_cents: i64,
    created_at: Option<i64>,
    cancelled: bool,
    test: bool,
}

#[derive(Default, Clone)]
pub(crate) struct CustomerTruth {
    orders: BTreeMap<u64, OrderTruth>,
}

#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Expected {
    pub orders: i64,
    pub net_cents: i64,
    r: i16,
    f: i16,
    m: i16,
    pub segment: &'static str,
}

impl CustomerTruth {
    pub(crate) fn expected(&self, now: i64) -> Expected {
        let valid: Vec<&OrderTruth> = self
            .orders
            .values()
            .filter(|o| o.created_at.is_some() && !o.cancelled && !o.test)
            .collect();
        let orders = valid.len() as i64;
        let net_cents: i64 = valid
            .iter()
            .map(|o| (o.total_cents - o.refunded_cents).max(0))
            .sum();
        let last = valid.iter().filter_map(|o| o.created_at).max();
        let r = match last.map(|l| (now - l).max(0) / DAY) {
            None => 1,
            Some(d) if d <= 7 => 5,
            Some(d) if d <= 30 => 4,
            Some(d) if d <= 60 => 3,
            Some(d) if d <= 90 => 2,
            Some(_) => 1,
        };
        let f = match orders {
            0..=1 => 1,
            2..=3 => 2,
            4..=5 => 3,
            6..=10 => 4,
            _ => 5,
        };
        let m = match net_cents {
            n if n < 5_000 => 1,
            n if n < 10_000 => 2,
            n if n < 20_000 => 3,
            n if n <= 50_000 => 4,
            _ => 5,
        };
        let segment = if r == 5 && f >= 4 && m >= 4 {
            "champions"
        } else if r >= 3 && f >= 3 && m >= 3 {
            "loyal"
        } else if r >= 4 && f == 1 && m <= 2 {
            "new"
        } else if r == 1 && f == 1 && m == 1 {
            "inactive"
        } else if r <= 2 && f <= 2 && m <= 2 {
            "at_risk"
        } else {
            "other"
        };
        Expected {
            orders,
            net_cents,
            r,
            f,
            m,
            segment,
        }
    }
}

/// A deterministic scripted stream: orders, cancels (some before their order), refunds (some before their order,
/// some larger than the order), test orders, points, and redeliveries of about one event in five.
pub(crate) fn script(
    merchants: &[MerchantId],
) -> (Vec<InputEvent>, HashMap<(String, u64), CustomerTruth>) {
    let mut seed: u64 = 0x5eed;
    let mut rand = move |n: u64| {
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (seed >> 33) % n
    };
    let at = |secs: i64| DateTime::<Utc>::from_timestamp(secs, 0).unwrap();
    let mut events = Vec::new();
    let mut truth: HashMap<(String, u64), CustomerTruth> = HashMap::new();
    let mut next_id = 1_000u64;
    for merchant in merchants {
        for customer_id in 1..=25u64 {
            let t = truth
                .entry((merchant.to_string(), customer_id))
                .or_default();
            for _ in 0..rand(8) {
                next_id += 1;
                let (order_id, cents, created) = (
                    next_id,
                    1_000 + rand(30_000) as i64,
                    T0 - rand(120) as i64 * DAY - 60,
                );
                let test = rand(10) == 0;
                let truth_order = t.orders.entry(order_id).or_default();
                truth_order.total_cents = cents;
                truth_order.created_at = Some(created);
                truth_order.test = test;
                let create = InputEvent::OrderCreated(OrderCreated {
                    event_id: unique("e"),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id,
                    order_id,
                    total_price: format!("{}.{:02}", cents / 100, cents % 100),
                    currency: "USD".into(),
                    created_at: at(created),
                    financial_status: "paid".into(),
                    test,
                    cancelled: false,
                    locale: None,
                    pii: None,
                });
                let mut extras = Vec::new();
                if rand(6) == 0 {
                    truth_order.cancelled = true;
                    extras.push(InputEvent::OrderCancelled(OrderCancelled {
                        event_id: unique("e"),
                        schema_version: SCHEMA_VERSION,
                        merchant_id: merchant.clone(),
                        customer_id,
                        order_id,
                        cancelled_at: at(created + 3_600),
                    }));
                }
                if rand(4) == 0 {
                    next_id += 1;
                    let refund = if rand(5) == 0 {
                        cents + 5_000
                    } else {
                        rand(cents as u64) as i64
                    };
                    truth_order.refunded_cents += refund;
                    extras.push(InputEvent::RefundCreated(RefundCreated {
                        event_id: unique("e"),
                        schema_version: SCHEMA_VERSION,
                        merchant_id: merchant.clone(),
                        customer_id: None,
                        order_id,
                        refund_id: next_id,
                        amount: format!("{}.{:02}", refund / 100, refund % 100),
                        created_at: at(created + 7_200),
                    }));
                }
                // Unordered delivery: sometimes the cancel or refund arrives before its order.
                if rand(3) == 0 {
                    events.extend(extras);
                    events.push(create);
                } else {
                    events.push(create);
                    events.extend(extras);
                }
            }
            if rand(3) == 0 {
                events.push(InputEvent::PointsEarned(PointsChanged {
                    event_id: unique("e"),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id,
                    points: 100,
                    source: PointsSource::Review,
                    created_at: at(T0 - DAY),
                }));
            }
        }
    }
    let redelivered: Vec<InputEvent> = events.iter().filter(|_| rand(5) == 0).cloned().collect();
    events.extend(redelivered);
    (events, truth)
}

/// Published scores per customer, as Postgres holds them.
async fn customer_rows(db: &PgPool) -> HashMap<(String, i64), Scores> {
    let rows: Vec<(String, i64, i16, i16, i16, String)> = sqlx::query_as(
        "SELECT merchant_id, customer_id, recency, frequency, monetary, segment FROM customers",
    )
    .fetch_all(db)
    .await
    .unwrap();
    rows.into_iter()
        .map(|(m, c, r, f, mo, seg)| ((m, c), (r, f, mo, seg)))
        .collect()
}

type Scores = (i16, i16, i16, String);

fn scores(e: &Expected) -> Scores {
    (e.r, e.f, e.m, e.segment.to_owned())
}

/// What a customer who never changed looks like: R1 F1 M1, Inactive.
fn initial() -> Scores {
    (1, 1, 1, "inactive".to_owned())
}

#[actix_web::test]
async fn scripted_stream_matches_the_oracle_replays_change_nothing_and_time_moves_recency() {
    // Three partitions: a merchant's orders, cancels and refunds must meet in one partition actor.
    let h = start_processor(3).await;
    // Fixed names (topics and database are fresh per test): the partitioner spreads them deterministically.
    let merchants: Vec<MerchantId> = ["oracle-a", "oracle-b", "oracle-c", "oracle-d"]
        .iter()
        .map(|m| MerchantId::parse(&format!("{m}.myshopify.com")).unwrap())
        .collect();
    let (events, truth) = script(&merchants);
    h.produce(&events).await;
    h.wait_processed(events.len() as u64).await;
    assert!(
        h.registry.len() >= 2,
        "the merchants should span several partitions"
    );

    // Every customer's live aggregates and published scores equal the oracle. Postgres holds the evaluation as of
    // the customer's last change; customers whose events net to nothing never changed and have no row.
    let rows = customer_rows(&h.db).await;
    let live = h.live_totals().await;
    for ((merchant, customer), t) in &truth {
        let expected = t.expected(T0);
        let key = (merchant.clone(), *customer as i64);
        assert_eq!(
            live.get(&key).copied().unwrap_or((0, 0)),
            (expected.orders, expected.net_cents),
            "{key:?} totals"
        );
        let actual = rows.get(&key).cloned().unwrap_or_else(initial);
        assert_eq!(actual, scores(&expected), "{merchant} customer {customer}");
    }

    // Replaying the whole stream adds nothing: no rows, no output records.
    let history_before = h.history_rows().await;
    let outputs_before = record_count(&brokers(), &h.topics.rfm_updated).await;
    let deltas_before: i64 = sqlx::query_scalar("SELECT count(*) FROM rfm_segment_deltas")
        .fetch_one(&h.db)
        .await
        .unwrap();
    h.produce(&events).await;
    h.wait_processed(2 * events.len() as u64).await;
    assert_eq!(h.history_rows().await, history_before);
    assert_eq!(
        record_count(&brokers(), &h.topics.rfm_updated).await,
        outputs_before
    );
    let deltas_after: i64 = sqlx::query_scalar("SELECT count(*) FROM rfm_segment_deltas")
        .fetch_one(&h.db)
        .await
        .unwrap();
    assert_eq!(deltas_after, deltas_before);

    // Twenty days pass with no event: exactly the customers whose evaluation differs get exactly one new row.
    let later = T0 + 20 * DAY;
    h.clock.set(Timestamp(later));
    let stats = h.stats.clone();
    eventually(
        "a tick at the new time",
        Duration::from_secs(30),
        async || stats.last_tick.load(Ordering::SeqCst) >= later,
    )
    .await;
    let history_after = h.history_rows().await;
    let mut affected = 0;
    for ((merchant, customer), t) in &truth {
        let key = (merchant.clone(), *customer as i64);
        let new_rows = history_after.get(&key).copied().unwrap_or(0)
            - history_before.get(&key).copied().unwrap_or(0);
        let moved = t.expected(T0) != t.expected(later);
        affected += usize::from(moved);
        assert_eq!(
            new_rows,
            i64::from(moved),
            "{merchant} customer {customer}: new rows after 20 days"
        );
    }
    assert!(
        affected > 5,
        "the script should move several customers by time alone ({affected})"
    );
    let rows = customer_rows(&h.db).await;
    for ((merchant, customer), t) in &truth {
        let actual = rows
            .get(&(merchant.clone(), *customer as i64))
            .cloned()
            .unwrap_or_else(initial);
        assert_eq!(
            actual,
            scores(&t.expected(later)),
            "{merchant} customer {customer} after 20 days"
        );
    }
}

#[actix_web::test]
async fn a_poison_record_goes_to_the_dlq_and_the_partition_goes_on() {
    let h = start_processor(1).await;
    let merchant = MerchantId::parse(&format!("{}.myshopify.com", unique("m-"))).unwrap();
    h.produce_raw(&h.topics.orders_create, merchant.as_str(), b"{not json")
        .await;
    let order = InputEvent::OrderCreated(OrderCreated {
        event_id: unique("e"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id: 42,
        order_id: 4242,
        total_price: "60.00".into(),
        currency: "USD".into(),
        created_at: DateTime::from_timestamp(T0 - DAY, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: Some("es".into()),
        pii: None,
    });
    // A valid order of another shop filed under this shop's key: it would slip into the wrong partition.
    let mut foreign: serde_json::Value = serde_json::from_slice(&order.encode()).unwrap();
    foreign["merchant_id"] = format!("{}.myshopify.com", unique("other-")).into();
    h.produce_raw(
        &h.topics.orders_create,
        merchant.as_str(),
        foreign.to_string().as_bytes(),
    )
    .await;
    // A well-formed order from a producer on a newer schema than this build understands.
    let mut future: serde_json::Value = serde_json::from_slice(&order.encode()).unwrap();
    future["schema_version"] = 99.into();
    future["order_id"] = 1.into();
    h.produce_raw(
        &h.topics.orders_create,
        merchant.as_str(),
        future.to_string().as_bytes(),
    )
    .await;
    h.produce(std::slice::from_ref(&order)).await;
    h.wait_processed(1).await;
    let stats = h.stats.clone();
    eventually(
        "the three poison records dead-lettered",
        Duration::from_secs(30),
        async || stats.dead_lettered.load(Ordering::SeqCst) >= 3,
    )
    .await;
    // The three are dead-lettered each after its own retries, so they reach the DLQ in no fixed order: read
    // until all three are there.
    let read = std::sync::Arc::new(std::sync::atomic::AtomicUsize::new(0));
    let counted = read.clone();
    let dlq = read_records(
        &brokers(),
        &h.topics.dlq,
        move |_| counted.fetch_add(1, Ordering::SeqCst) + 1 >= 3,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(dlq.len(), 3);
    // Found by what they are, not by their order on the DLQ.
    let not_json = dlq
        .iter()
        .find(|r| r.raw == b"{not json")
        .expect("the record that is not JSON");
    assert_eq!(
        not_json.headers["dlq.original_topic"],
        h.topics.orders_create
    );
    assert_eq!(not_json.headers["dlq.original_offset"], "0");
    assert!(not_json.headers["dlq.reason"].contains("not a valid"));
    assert!(
        dlq.iter()
            .any(|r| r.headers["dlq.reason"].contains("record key")),
        "the foreign order"
    );
    assert!(
        dlq.iter()
            .any(|r| r.headers["dlq.reason"].contains("schema_version")),
        "the order of a newer schema"
    );

    let segment = h
        .segment_of(&merchant, 42)
        .await
        .expect("the customer's row");
    assert_eq!(
        segment, "new",
        "the valid order after the poison was processed"
    );
    let tasks = read_records(
        &brokers(),
        &h.topics.rfm_task,
        |_| true,
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(tasks[0].value["segment"], "new");
    assert_eq!(tasks[0].value["locale"], "es");
    assert_eq!(tasks[0].value["customer_id"], 42);

    // `replay-dlq` puts the three records back on their topic; still poison, they come back to the DLQ, once each.
    let report = streams::replay::replay_dlq(
        &brokers(),
        &unique("replay-"),
        &h.topics,
        &h.sink,
        Duration::from_secs(2),
    )
    .await
    .unwrap();
    assert_eq!((report.replayed, report.skipped), (3, 0));
    let stats = h.stats.clone();
    eventually(
        "the replayed records dead-lettered again",
        Duration::from_secs(30),
        async || stats.dead_lettered.load(Ordering::SeqCst) >= 6,
    )
    .await;
    assert_eq!(
        record_count(&brokers(), &h.topics.orders_create).await,
        7,
        "4 originals + 3 replayed"
    );
}
