//! The merchant state from the inside: attribution of refunds, segment counts, redaction, reconfiguration.

use chrono::DateTime;
use streams::events::{OrderCreated, PointsChanged, PointsSource, RefundCreated};
use streams::SCHEMA_VERSION;

use super::*;

const T0: i64 = 1_780_000_000;

fn merchant() -> MerchantState {
    MerchantState::new(
        MerchantId::parse("m.myshopify.com").unwrap(),
        RfmConfig::default(),
    )
}

fn order(customer_id: u64, order_id: u64, price: &str) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: format!("o{order_id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: MerchantId::parse("m.myshopify.com").unwrap(),
        customer_id,
        order_id,
        total_price: price.into(),
        currency: "USD".into(),
        created_at: DateTime::from_timestamp(T0, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

fn refund(order_id: u64, refund_id: u64, amount: &str) -> InputEvent {
    InputEvent::RefundCreated(RefundCreated {
        event_id: format!("r{refund_id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: MerchantId::parse("m.myshopify.com").unwrap(),
        customer_id: None,
        order_id,
        refund_id,
        amount: amount.into(),
        created_at: DateTime::from_timestamp(T0, 0).unwrap(),
    })
}

fn net(m: &MerchantState, customer: u64) -> i64 {
    m.customer(customer).unwrap().aggregate.totals().net.minor()
}

#[test]
fn a_refund_before_its_order_waits_for_it() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&refund(9, 1, "20.00"), Timestamp(T0), &mut effects);
    assert!(
        effects.is_empty() && m.is_empty(),
        "nothing to attribute yet"
    );
    m.apply(&order(7, 9, "100.00"), Timestamp(T0), &mut effects);
    assert_eq!(net(&m, 7), 8_000);
    m.apply(&refund(9, 1, "20.00"), Timestamp(T0), &mut effects);
    assert_eq!(net(&m, 7), 8_000, "the redelivered refund counts once");
}

#[test]
fn segment_counts_follow_moves_and_redactions() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 1, "60.00"), Timestamp(T0), &mut effects);
    m.apply(&order(2, 2, "10.00"), Timestamp(T0), &mut effects);
    let new = m
        .config
        .segments
        .iter()
        .position(|s| s.key == "new")
        .unwrap();
    assert_eq!(m.segment_counts()[new], 2);
    assert_eq!(m.segment_counts().iter().sum::<u64>(), 2);
    let redact = InputEvent::CustomerRedact(streams::events::CustomerRedact {
        event_id: "g1".into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: m.id.clone(),
        customer_id: 1,
        orders_to_redact: vec![1],
        requested_at: None,
    });
    m.apply(&redact, Timestamp(T0), &mut effects);
    assert_eq!(m.segment_counts()[new], 1);
    assert!(m.customer(1).is_none());
    assert_eq!(effects.last(), Some(&Effect::Redacted { customer_id: 1 }));
}

#[test]
fn a_refund_finds_its_customer_by_order_even_after_a_redaction_reused_the_slot() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 10, "50.00"), Timestamp(T0), &mut effects);
    m.apply(&order(2, 20, "70.00"), Timestamp(T0), &mut effects);
    let slot = m.slot_of(1).unwrap();
    m.forget(1);
    m.apply(&order(3, 30, "90.00"), Timestamp(T0), &mut effects);
    assert_eq!(m.slot_of(3), Some(slot), "the freed slot is reused");
    m.apply(&refund(10, 1, "5.00"), Timestamp(T0), &mut effects);
    assert_eq!(
        net(&m, 3),
        9_000,
        "the erased customer's order is not the new one's"
    );
    assert!(m.customer(1).is_none() && m.orphan_refunds.contains_key(&10));
    m.apply(&refund(30, 2, "5.00"), Timestamp(T0), &mut effects);
    m.apply(&refund(20, 3, "5.00"), Timestamp(T0), &mut effects);
    assert_eq!((net(&m, 3), net(&m, 2)), (8_500, 6_500));
}

fn held_refunds(m: &MerchantState) -> usize {
    m.orphan_refunds.values().map(Vec::len).sum()
}

#[test]
fn refunds_of_orders_that_never_come_are_bounded_and_the_lowest_orders_go_first() {
    let mut m = merchant();
    let mut effects = Vec::new();
    let cap = MAX_ORPHAN_REFUNDS as u64;
    for order_id in 1..=3 * cap {
        m.apply(
            &refund(order_id, order_id, "1.00"),
            Timestamp(T0),
            &mut effects,
        );
    }
    assert_eq!(held_refunds(&m), MAX_ORPHAN_REFUNDS);
    assert!(!m.orphan_refunds.contains_key(&(2 * cap)));
    assert!(m.orphan_refunds.contains_key(&(2 * cap + 1)));
    m.apply(&order(1, 3 * cap, "10.00"), Timestamp(T0), &mut effects);
    assert_eq!(net(&m, 1), 900, "a kept refund still meets its order");
    m.apply(&order(2, 1, "10.00"), Timestamp(T0), &mut effects);
    assert_eq!(net(&m, 2), 1_000, "an evicted refund is gone");
    assert_eq!(held_refunds(&m), MAX_ORPHAN_REFUNDS - 1);

    // One order named by an endless run of refund ids is held in check as well.
    for refund_id in 1..=3 * cap {
        let event = refund(10 * cap, 10 * cap + refund_id, "1.00");
        m.apply(&event, Timestamp(T0), &mut effects);
        assert!(held_refunds(&m) <= MAX_ORPHAN_REFUNDS);
    }
    assert!(m.orphan_refunds.len() <= 1, "lower orders went first");
}

#[test]
fn refunds_find_their_customers_where_order_fingerprints_collide() {
    // 100,000 orders over 16-bit fingerprints: most fingerprints are shared by one order or more.
    let mut m = merchant();
    let mut effects = Vec::new();
    let customer_of = |order: u64| order % 997 + 1;
    for order_id in 1..=100_000u64 {
        let event = order(customer_of(order_id), order_id, "10.00");
        m.apply(&event, Timestamp(T0), &mut effects);
    }
    for order in (1..=100_000u64).step_by(101) {
        m.apply(&refund(order, order, "1.00"), Timestamp(T0), &mut effects);
    }
    for customer in [1, 500, 997] {
        let state = m.customer(customer).unwrap();
        let refunded = (1..=100_000u64)
            .step_by(101)
            .filter(|o| customer_of(*o) == customer)
            .count() as i64;
        let orders = state.aggregate.orders().len() as i64;
        assert_eq!(
            state.aggregate.totals().net.minor(),
            orders * 1_000 - refunded * 100
        );
    }
    assert!(m.orphan_refunds.is_empty(), "every refund found its order");
}

#[test]
fn reconfiguring_rescores_everyone_at_once() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 1, "150.00"), Timestamp(T0), &mut effects);
    effects.clear();
    let small = RfmConfig::from_aov(functions::SizePreset::Small.aov());
    m.reconfigure(small, Timestamp(T0), &mut effects);
    assert_eq!(effects.len(), 1, "$150 is M3 at a $100 AOV and M5 at $20");
    let Effect::Changed { transition, .. } = &effects[0] else {
        panic!("{effects:?}")
    };
    assert_eq!(transition.to.rfm().monetary, 5);
}

#[test]
fn an_order_two_customers_hold_is_attributed_the_same_live_and_after_a_restore() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 20, "10.00"), Timestamp(T0), &mut effects);
    m.apply(&order(2, 10, "10.00"), Timestamp(T0), &mut effects);
    let cancel = InputEvent::OrderCancelled(streams::events::OrderCancelled {
        event_id: "c10".into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: m.id.clone(),
        customer_id: 1,
        order_id: 10,
        cancelled_at: DateTime::from_timestamp(T0, 0).unwrap(),
    });
    m.apply(&cancel, Timestamp(T0), &mut effects);
    assert_eq!(
        m.order_customer(10),
        Some(2),
        "the customer it was created for"
    );
    m.apply(&order(1, 10, "10.00"), Timestamp(T0), &mut effects);
    assert_eq!(
        m.order_customer(10),
        Some(1),
        "both created it: the lowest id"
    );

    let mut restored = merchant();
    let mut states: Vec<(u64, CustomerState)> =
        m.customers().map(|(id, s)| (id, s.clone())).collect();
    states.sort_by_key(|(id, _)| std::cmp::Reverse(*id));
    states
        .into_iter()
        .for_each(|(id, s)| restored.insert_restored(id, s));
    restored.reindex_orders();
    assert_eq!(restored.order_customer(10), Some(1));
    assert_eq!(restored.order_customer(20), Some(1));
}

#[test]
fn extreme_point_amounts_saturate_instead_of_overflowing() {
    let mut m = merchant();
    let mut effects = Vec::new();
    for (i, points) in [i64::MIN, i64::MIN, i64::MAX].into_iter().enumerate() {
        let change = PointsChanged {
            event_id: format!("p{i}"),
            schema_version: SCHEMA_VERSION,
            merchant_id: MerchantId::parse("m.myshopify.com").unwrap(),
            customer_id: 5,
            points,
            source: PointsSource::Admin,
            created_at: DateTime::from_timestamp(T0, 0).unwrap(),
        };
        m.apply(
            &InputEvent::PointsRedeemed(change),
            Timestamp(T0),
            &mut effects,
        );
    }
    let points = m.customer(5).unwrap().aggregate.points();
    assert_eq!(
        points,
        i64::MIN,
        "|MIN| saturates to MAX, and the balance floors at MIN"
    );
}

fn redaction(customer: Option<u64>, requested_at: i64) -> InputEvent {
    let (event_id, merchant_id) = (
        format!("g{requested_at}"),
        MerchantId::parse("m.myshopify.com").unwrap(),
    );
    let requested_at = Some(DateTime::from_timestamp(requested_at, 0).unwrap());
    match customer {
        Some(customer_id) => InputEvent::CustomerRedact(streams::events::CustomerRedact {
            event_id,
            schema_version: SCHEMA_VERSION,
            merchant_id,
            customer_id,
            orders_to_redact: vec![],
            requested_at,
        }),
        None => InputEvent::ShopRedact(streams::events::ShopRedact {
            event_id,
            schema_version: SCHEMA_VERSION,
            merchant_id,
            requested_at,
        }),
    }
}

fn dated(event: InputEvent, at: i64) -> InputEvent {
    let at = DateTime::from_timestamp(at, 0).unwrap();
    match event {
        InputEvent::OrderCreated(mut e) => {
            e.created_at = at;
            InputEvent::OrderCreated(e)
        }
        InputEvent::RefundCreated(mut e) => {
            e.created_at = at;
            InputEvent::RefundCreated(e)
        }
        other => other,
    }
}

#[test]
fn an_erased_customer_is_not_brought_back_by_older_events_but_a_new_order_counts() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 10, "50.00"), Timestamp(T0), &mut effects);
    m.apply(
        &redaction(Some(1), T0 + 100),
        Timestamp(T0 + 100),
        &mut effects,
    );
    assert!(m.customer(1).is_none());
    effects.clear();
    // A retried webhook and a replayed record, both of the old relationship.
    m.apply(&order(1, 10, "50.00"), Timestamp(T0 + 200), &mut effects);
    m.apply(
        &dated(order(1, 11, "20.00"), T0 + 100),
        Timestamp(T0 + 200),
        &mut effects,
    );
    assert!(m.customer(1).is_none() && effects.is_empty(), "{effects:?}");
    // A genuinely new order afterwards is a new relationship.
    m.apply(
        &dated(order(1, 12, "30.00"), T0 + 300),
        Timestamp(T0 + 300),
        &mut effects,
    );
    assert_eq!(net(&m, 1), 3_000);
    // Another customer was never affected.
    m.apply(&order(2, 20, "10.00"), Timestamp(T0 + 300), &mut effects);
    assert_eq!(net(&m, 2), 1_000);
}

#[test]
fn an_erased_shop_keeps_out_every_older_event() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 10, "50.00"), Timestamp(T0), &mut effects);
    m.apply(
        &redaction(None, T0 + 100),
        Timestamp(T0 + 100),
        &mut effects,
    );
    m.apply(&order(5, 50, "50.00"), Timestamp(T0 + 200), &mut effects);
    m.apply(&refund(10, 1, "5.00"), Timestamp(T0 + 200), &mut effects);
    assert!(
        m.is_empty() && m.orphan_refunds.is_empty(),
        "nothing older comes back"
    );
    m.apply(
        &dated(order(5, 51, "40.00"), T0 + 300),
        Timestamp(T0 + 300),
        &mut effects,
    );
    assert_eq!(net(&m, 5), 4_000);
}

fn cancel(customer_id: u64, order_id: u64, at: i64) -> InputEvent {
    InputEvent::OrderCancelled(streams::events::OrderCancelled {
        event_id: format!("c{order_id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: MerchantId::parse("m.myshopify.com").unwrap(),
        customer_id,
        order_id,
        cancelled_at: DateTime::from_timestamp(at, 0).unwrap(),
    })
}

#[test]
fn late_cancels_and_refunds_naming_an_erased_customer_do_not_bring_them_back() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(1, 10, "50.00"), Timestamp(T0), &mut effects);
    m.apply(
        &redaction(Some(1), T0 + 100),
        Timestamp(T0 + 100),
        &mut effects,
    );
    // Dated after the erasure, but about an order of the old relationship.
    assert!(!m.apply(&cancel(1, 10, T0 + 500), Timestamp(T0 + 500), &mut effects));
    let mut named = refund(10, 7, "5.00");
    if let InputEvent::RefundCreated(e) = &mut named {
        e.customer_id = Some(1);
        e.created_at = DateTime::from_timestamp(T0 + 500, 0).unwrap();
    }
    assert!(!m.apply(&named, Timestamp(T0 + 500), &mut effects));
    assert!(m.customer(1).is_none() && m.is_empty());
    // Once a new order brought the customer back, their cancels apply again.
    m.apply(
        &dated(order(1, 12, "30.00"), T0 + 600),
        Timestamp(T0 + 600),
        &mut effects,
    );
    assert!(m.apply(&cancel(1, 12, T0 + 700), Timestamp(T0 + 700), &mut effects));
    assert_eq!(net(&m, 1), 0, "the new order is cancelled");
}

#[test]
fn a_shop_erasure_keeps_customer_tombstones_drawn_after_it() {
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(
        &redaction(Some(1), T0 + 500),
        Timestamp(T0 + 500),
        &mut effects,
    );
    m.apply(
        &redaction(Some(2), T0 + 50),
        Timestamp(T0 + 500),
        &mut effects,
    );
    m.apply(
        &redaction(None, T0 + 100),
        Timestamp(T0 + 500),
        &mut effects,
    );
    assert_eq!(
        m.tombstones.get(&1),
        Some(&(T0 + 500)),
        "later than the shop's line"
    );
    assert_eq!(m.tombstones.get(&2), None, "covered by the shop's line");
    assert!(!m.apply(
        &dated(order(1, 10, "5.00"), T0 + 300),
        Timestamp(T0 + 600),
        &mut effects
    ));
}

#[test]
fn the_revision_moves_with_every_change_and_a_new_state_never_repeats_one() {
    let mut m = merchant();
    let mut effects = Vec::new();
    let first = m.revision();
    m.apply(&order(1, 1, "10.00"), Timestamp(T0), &mut effects);
    let second = m.revision();
    assert!(second.covers(first) && !first.covers(second));
    let slot = m.slot_of(1).unwrap();
    m.rescore(slot, Timestamp(T0), &mut effects);
    assert_eq!(m.revision(), second, "a boundary that changed nothing");
    m.rescore(slot, Timestamp(T0).plus_days(400), &mut effects);
    assert_ne!(m.revision(), second, "a boundary that moved the customer");
    let again = merchant();
    assert!(!again.revision().covers(first) && !first.covers(again.revision()));
}

#[test]
fn a_change_names_the_valid_order_its_event_added() {
    let added = |effects: &[Effect]| -> Vec<Option<i64>> {
        effects
            .iter()
            .filter_map(|e| match e {
                Effect::Changed { order_added, .. } => Some(order_added.map(Money::minor)),
                _ => None,
            })
            .collect()
    };
    let mut m = merchant();
    let mut effects = Vec::new();
    m.apply(&order(7, 1, "80.00"), Timestamp(T0), &mut effects);
    assert_eq!(added(&effects), [Some(8_000)]);
    // Two more orders: the second changes the customer's scores, the third does too (monetary).
    effects.clear();
    m.apply(&order(7, 2, "80.00"), Timestamp(T0), &mut effects);
    m.apply(&order(7, 2, "80.00"), Timestamp(T0), &mut effects);
    assert_eq!(
        added(&effects),
        [Some(8_000)],
        "a redelivered order adds nothing"
    );
    // A refund changes the scores without adding an order. An order whose refund came first adds its amount as it
    // arrived; the waiting refund is applied after it, as its own fact.
    effects.clear();
    m.apply(&refund(2, 1, "75.00"), Timestamp(T0), &mut effects);
    m.apply(&refund(9, 2, "30.00"), Timestamp(T0), &mut effects);
    m.apply(&order(7, 9, "100.00"), Timestamp(T0), &mut effects);
    assert_eq!(added(&effects)[..2], [None, Some(10_000)]);
    assert_eq!(net(&m, 7), 8_000 + 500 + 7_000);
    // A test order never counts, so it adds none even when it is new.
    let mut test_order = order(8, 3, "500.00");
    if let InputEvent::OrderCreated(o) = &mut test_order {
        o.test = true;
    }
    effects.clear();
    m.apply(&test_order, Timestamp(T0), &mut effects);
    assert!(added(&effects).iter().all(Option::is_none));
}
