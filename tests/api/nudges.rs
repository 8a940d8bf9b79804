//! Nudges end to end: an order through the broker moves a customer's segment, and the shopper watching that
//! customer (what the widget socket will do) gets the very nudge the `rfm.task` record carries, from the
//! customer's actor; erasing the customer ends the watch and drops the nudge.

use std::time::Duration;

use actors::customer::CustomerKey;
use chrono::DateTime;
use streams::events::{CustomerRedact, OrderCreated};
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

use crate::harness::{start_processor, T0};
use crate::helpers::{brokers, eventually, read_records, unique};

fn order(merchant: &MerchantId, customer_id: u64, order_id: u64) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: unique("e"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id,
        order_id,
        total_price: "80.00".into(),
        currency: "USD".into(),
        created_at: DateTime::from_timestamp(T0 - 3_600, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: Some("fr".into()),
        pii: None,
    })
}

#[actix_web::test]
async fn a_watching_shopper_gets_its_segment_change_nudge_and_an_erasure_ends_the_watch() {
    let h = start_processor(1).await;
    let merchant = MerchantId::parse(&format!("{}.myshopify.com", unique("n-"))).unwrap();
    let key = |customer_id| CustomerKey {
        merchant: merchant.clone(),
        customer_id,
    };
    let mut watching = h.nudges.watch(key(42)).await.expect("watch starts");
    assert_eq!(watching.current, None, "nothing fired yet");
    let before = h.nudges.stats().await;

    // Customer 7 is not watched: its nudge waits on the desk without an actor.
    h.produce(&[order(&merchant, 42, 1), order(&merchant, 7, 2)])
        .await;
    let nudge = tokio::time::timeout(Duration::from_secs(60), watching.updates.recv())
        .await
        .expect("the nudge is pushed")
        .expect("the stream is open");

    let tasks = read_records(
        &brokers(),
        &h.topics.rfm_task,
        |r| r.value["customer_id"] == 42,
        Duration::from_secs(20),
    )
    .await;
    let task = &tasks
        .iter()
        .find(|r| r.value["customer_id"] == 42)
        .unwrap()
        .value;
    assert_eq!(task["nudge_id"], nudge.nudge_id().as_str());
    assert_eq!(task["segment"], nudge.segment.as_str());
    assert_eq!(nudge.locale.as_deref(), Some("fr"));
    // The batch's Postgres rows are written after the hand-off to the desk.
    let (harness, wanted) = (&h, nudge.segment.clone());
    eventually(
        "the customer's row with the nudge's segment",
        Duration::from_secs(30),
        async || harness.segment_of(&merchant, 42).await.as_deref() == Some(wanted.as_str()),
    )
    .await;

    let desk = h.nudges.clone();
    eventually(
        "customer 7's nudge held",
        Duration::from_secs(30),
        async || desk.current(key(7)).await.is_some(),
    )
    .await;
    let stats = h.nudges.stats().await;
    assert_eq!(
        stats.activations, before.activations,
        "only the watch activated an actor"
    );
    assert_eq!(stats.active, 1);

    h.produce(&[redact(&merchant, 42)]).await;
    let end = tokio::time::timeout(Duration::from_secs(60), watching.updates.recv())
        .await
        .expect("the erasure reaches the actor");
    assert_eq!(end, None, "the watch ends with the erasure");
    assert_eq!(h.nudges.current(key(42)).await, None);
    assert!(h.nudges.current(key(7)).await.is_some());

    // An order and its customer's erasure back to back leave no nudge held, whichever is consumed first (they
    // are on two topics): order first, its nudge is dropped by the erasure; erasure first, the order, dated
    // before it, is refused by the tombstone. (When they land in two batches the erasure's completes first, having
    // no records; the unit test in `processor::publish` covers that order.) The order of customer 44, after 43's
    // on the same topic and partition, shows when 43's has been processed.
    let before = h.nudges.stats().await;
    h.produce(&[order(&merchant, 43, 3), redact(&merchant, 43)])
        .await;
    h.produce(&[order(&merchant, 44, 4)]).await;
    let desk = h.nudges.clone();
    eventually(
        "the erasure and the later order handed to the desk",
        Duration::from_secs(30),
        async || {
            let now = desk.stats().await;
            now.erasures > before.erasures && desk.current(key(44)).await.is_some()
        },
    )
    .await;
    assert_eq!(h.nudges.current(key(43)).await, None);
}

fn redact(merchant: &MerchantId, customer_id: u64) -> InputEvent {
    InputEvent::CustomerRedact(CustomerRedact {
        event_id: unique("e"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id,
        orders_to_redact: vec![],
        requested_at: None,
    })
}
