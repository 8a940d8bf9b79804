//! An erasure published behind a slower outcome that changed the same customer. Outcomes publish concurrently
//! (up to eight in flight) and an erasure has no Kafka records to wait for, so without ordering it completes first
//! and the earlier outcome then writes the customer's rows back after the erasure was recorded.

use std::time::Duration;

use actors::outputs::Record;
use actors::{Change, Outcome};
use functions::{LifecycleStage, Money, Rfm, Timestamp};
use loyalnest_rfm::processor::publish::Publisher;
use loyalnest_rfm::store::Store;
use sqlx::PgPool;
use streams::{MerchantId, SinkConfig, Topics};

use crate::helpers::{fresh_database, unique, PrivateBroker};

/// How long the private broker answers nothing while both outcomes are in flight.
const SLOW: Duration = Duration::from_secs(3);

fn change(merchant: &MerchantId, customer_id: u64) -> Change {
    Change {
        merchant: merchant.clone(),
        customer_id,
        version: 1,
        from_segment: "inactive".into(),
        to_segment: "new".into(),
        rfm: Rfm {
            recency: 5,
            frequency: 1,
            monetary: 1,
        },
        score_tenths: 30,
        stage: LifecycleStage::OneTimeBuyer,
        orders: 1,
        net_spend: Money::parse("20.00", 2).unwrap(),
        currency_exponent: 2,
        last_order: Some(Timestamp(1_780_000_000)),
        churn_risk: None,
        occurred_at: Timestamp(1_780_000_000),
        trace_id: unique("order-"),
        locale: None,
        event_ms: None,
        traceparent: None,
        order_added: None,
        points: 0,
    }
}

#[actix_web::test]
async fn an_erasure_waits_for_a_slower_earlier_outcome_of_the_same_customer() {
    crate::helpers::init_test_logs();
    let broker = PrivateBroker::start(crate::helpers::free_port());
    let topics = Topics::with_prefix(&format!("{}.", unique("order")));
    streams::admin::ensure_topics(&broker.address(), &topics, 1, 1)
        .await
        .unwrap();
    let url = fresh_database().await;
    let store = Store::connect_lazy(&url).unwrap();
    let publisher = Publisher {
        sink: SinkConfig {
            delivery_timeout: Duration::from_millis(1_000),
            ..SinkConfig::new(broker.address())
        }
        .build()
        .unwrap(),
        topics: topics.clone(),
        store: Some(store.clone()),
        cache: None,
        nudges: None,
        relay: None,
        desk_turn: Default::default(),
        gdpr: None,
        rows_order: Default::default(),
        nudge_rules: Default::default(),
        ledger: Some(std::sync::Arc::new(
            loyalnest_rfm::experiments::ledger::PgLedger(store),
        )),
    };
    let merchant = MerchantId::parse(&format!("{}.myshopify.com", unique("erase"))).unwrap();
    let changed = Outcome {
        records: vec![Record {
            topic: topics.rfm_updated.clone(),
            key: merchant.to_string(),
            payload: b"{}".to_vec(),
            trace_id: "t".into(),
            traceparent: None,
        }],
        changes: vec![change(&merchant, 9)],
        ..Outcome::default()
    };
    let erased = Outcome {
        redactions: vec![(merchant.clone(), Some(9), unique("redact-"))],
        ..Outcome::default()
    };

    // The change's record cannot be acknowledged while the broker is frozen, so its rows wait; the erasure,
    // started after it, must wait too.
    broker.set_frozen(true);
    let slow = std::time::Instant::now();
    let first = actix_web::rt::spawn(publisher.start(changed));
    let second = actix_web::rt::spawn(publisher.start(erased));
    while slow.elapsed() < SLOW {
        assert!(
            !second.is_finished(),
            "the erasure completed before the earlier outcome of its customer"
        );
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    broker.set_frozen(false);
    tokio::time::timeout(Duration::from_secs(60), async {
        first.await.unwrap();
        second.await.unwrap();
    })
    .await
    .expect("both outcomes complete once the broker answers");

    let db = PgPool::connect(&url).await.unwrap();
    let rows: i64 = sqlx::query_scalar(
        "SELECT (SELECT count(*) FROM customers WHERE merchant_id = $1)
              + (SELECT count(*) FROM rfm_segment_deltas WHERE merchant_id = $1)",
    )
    .bind(merchant.as_str())
    .fetch_one(&db)
    .await
    .unwrap();
    assert_eq!(rows, 0, "nothing of the erased customer was written back");
}
