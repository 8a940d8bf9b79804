//! Event builders and a realistic partition shared by the actor-level tests (snapshot codec, restore).
#![allow(dead_code)]

use actors::{Configs, PartitionCore};
use chrono::{DateTime, Utc};
use functions::{Money, RfmConfig, Timestamp};
use streams::events::{
    CustomerCreated, CustomerRedact, OrderCancelled, OrderCreated, PointsChanged, PointsSource,
    RefundCreated,
};
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

pub const T0: i64 = 1_780_000_000;
pub const PARTITION: i32 = 3;
pub const ALPHA: &str = "alpha.myshopify.com";
pub const SAKURA: &str = "sakura.myshopify.com";
pub const GAMMA: &str = "gamma.myshopify.com";

pub fn day(d: i64) -> Timestamp {
    Timestamp(T0).plus_days(d)
}

pub fn at(d: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(day(d).unix(), 0).unwrap()
}

pub fn mid(shop: &str) -> MerchantId {
    MerchantId::parse(shop).unwrap()
}

pub fn order_created(shop: &str, customer: u64, order: u64, price: &str, d: i64) -> OrderCreated {
    OrderCreated {
        event_id: format!("o{order}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(shop),
        customer_id: customer,
        order_id: order,
        total_price: price.into(),
        currency: if shop == SAKURA { "JPY" } else { "USD" }.into(),
        created_at: at(d),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: Some("en".into()),
        pii: None,
    }
}

pub fn order(shop: &str, customer: u64, order: u64, price: &str, d: i64) -> InputEvent {
    InputEvent::OrderCreated(order_created(shop, customer, order, price, d))
}

pub fn cancel(shop: &str, customer: u64, order: u64, d: i64) -> InputEvent {
    InputEvent::OrderCancelled(OrderCancelled {
        event_id: format!("c{order}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(shop),
        customer_id: customer,
        order_id: order,
        cancelled_at: at(d),
    })
}

pub fn refund(shop: &str, customer: Option<u64>, order: u64, id: u64, amount: &str) -> InputEvent {
    InputEvent::RefundCreated(RefundCreated {
        event_id: format!("r{id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(shop),
        customer_id: customer,
        order_id: order,
        refund_id: id,
        amount: amount.into(),
        created_at: at(0),
    })
}

pub fn created(shop: &str, customer: u64, d: i64) -> InputEvent {
    InputEvent::CustomerCreated(CustomerCreated {
        event_id: format!("cc{customer}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(shop),
        customer_id: customer,
        created_at: at(d),
        locale: Some("ja".into()),
        pii: None,
    })
}

pub fn points(shop: &str, customer: u64, event: &str, points: i64, d: i64) -> InputEvent {
    let change = PointsChanged {
        event_id: event.into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(shop),
        customer_id: customer,
        points,
        source: PointsSource::Review,
        created_at: at(d),
    };
    if points < 0 {
        InputEvent::PointsRedeemed(change)
    } else {
        InputEvent::PointsEarned(change)
    }
}

pub fn redact(shop: &str, customer: u64) -> InputEvent {
    InputEvent::CustomerRedact(CustomerRedact {
        event_id: format!("g{customer}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(shop),
        customer_id: customer,
        orders_to_redact: vec![],
        requested_at: None,
    })
}

/// SAKURA sells in yen with its own thresholds; the others use the default.
pub fn configs() -> Configs {
    let configs = Configs::default();
    configs.insert(mid(SAKURA), RfmConfig::from_aov(Money::from_minor(6_000)));
    configs
}

pub fn first_batch() -> Vec<InputEvent> {
    let mut test_order = order_created(ALPHA, 5, 1006, "40.00", 0);
    test_order.test = true;
    let mut voided = order_created(ALPHA, 5, 1007, "40.00", 0);
    voided.financial_status = "voided".into();
    vec![
        created(ALPHA, 1, -30),
        order(ALPHA, 1, 1001, "120.00", 0),
        order(ALPHA, 1, 1002, "80.00", 0),
        order(ALPHA, 1, 1001, "120.00", 0),
        order(ALPHA, 2, 1003, "30.00", 0),
        refund(ALPHA, None, 1004, 1, "10.00"),
        order(ALPHA, 3, 1004, "200.00", 0),
        refund(ALPHA, None, 1099, 2, "5.00"),
        cancel(ALPHA, 4, 1005, 0),
        order(ALPHA, 4, 1005, "50.00", 0),
        InputEvent::OrderCreated(test_order),
        InputEvent::OrderCreated(voided),
        points(ALPHA, 6, "p1", 100, 0),
        points(ALPHA, 6, "p2", -30, 0),
        points(ALPHA, 6, "p1", 100, 0),
        refund(ALPHA, Some(2), 1003, 3, "5.00"),
        refund(ALPHA, Some(9), 1900, 4, "1.00"),
        order(ALPHA, 7, 1008, "70.00", 0),
        redact(ALPHA, 7),
        order(SAKURA, 10, 2001, "15000", 0),
        order(SAKURA, 11, 2002, "3000", 0),
        refund(SAKURA, None, 2002, 20, "500"),
        created(SAKURA, 12, 0),
        created(GAMMA, 20, 0),
        points(GAMMA, 20, "p9", 50, 0),
    ]
}

pub fn second_batch() -> Vec<InputEvent> {
    let mut events: Vec<InputEvent> = (0..7)
        .map(|i| order(SAKURA, 13, 2003 + i, "9000", 3))
        .collect();
    events.extend([
        order(ALPHA, 2, 1010, "60.00", 3),
        order(ALPHA, 30, 1011, "15.00", 3),
        order(SAKURA, 10, 2020, "20000", 5),
    ]);
    events
}

/// The events after the snapshot: the pending orphan's order arrives, refunds resolve through the index.
pub fn later_batch() -> Vec<InputEvent> {
    vec![
        order(ALPHA, 8, 1099, "25.00", 12),
        refund(ALPHA, None, 1001, 5, "20.00"),
        refund(ALPHA, None, 1004, 1, "10.00"),
        cancel(ALPHA, 1, 1002, 12),
        order(ALPHA, 31, 1100, "500.00", 12),
        points(ALPHA, 6, "p3", 10, 12),
        order(SAKURA, 11, 2030, "4000", 12),
        refund(SAKURA, None, 2020, 21, "1000"),
        created(GAMMA, 21, 12),
    ]
}

/// The original partition at day 12, with its last tick at day 10 so some boundaries are due but not yet fired.
pub fn built() -> (PartitionCore, Configs) {
    let configs = configs();
    let mut core = PartitionCore::new(PARTITION);
    core.apply(&first_batch(), day(0), &configs);
    core.tick(day(2));
    core.apply(&second_batch(), day(5), &configs);
    core.tick(day(10));
    (core, configs)
}
