//! The aggregate from the inside: idempotent facts in any order, the packed order record, persistence parts.

use super::*;

const DAY0: Timestamp = Timestamp(1_700_000_000);

fn placed(order_id: u64, cents: i64) -> Fact {
    Fact::OrderPlaced {
        order_id,
        total: Money::from_minor(cents),
        placed_at: DAY0,
        excluded: false,
        cancelled: false,
    }
}

fn net(a: &CustomerAggregate) -> (u32, i64) {
    let t = a.totals();
    (t.orders, t.net.minor())
}

#[test]
fn an_order_records_parts_round_trip_within_61_bits() {
    for (balance, flags) in [
        (-1_500, 0),
        (0, CREATED),
        (BALANCE_MAX, 7),
        (BALANCE_MIN, 5),
    ] {
        let record = OrderRecord::from_parts(u64::MAX - 3, balance, 812_345, flags).unwrap();
        assert_eq!(record.parts(), (u64::MAX - 3, balance, 812_345, flags));
    }
    let clamped = OrderRecord::from_parts(1, i64::MAX, 0, CREATED).unwrap();
    assert_eq!(clamped.parts(), (1, BALANCE_MAX, 0, CREATED));
    assert_eq!(OrderRecord::from_parts(1, 0, 0, 8), None);
}

#[test]
fn a_balance_saturates_instead_of_spilling_into_the_flags() {
    let mut a = CustomerAggregate::default();
    a.apply(&placed(1, i64::MAX));
    a.apply(&placed(2, 100));
    assert_eq!(a.orders()[0].parts().1, BALANCE_MAX);
    assert!(a.orders()[0].counts(), "the flags are intact");
    a.apply(&Fact::Refunded {
        order_id: 3,
        refund_id: 1,
        amount: Money::from_minor(i64::MAX),
    });
    assert_eq!(a.orders()[2].parts(), (3, BALANCE_MIN, 0, 0));
    a.apply(&placed(3, 500));
    assert_eq!(net(&a), (3, BALANCE_MAX.saturating_add(100)));
}

#[test]
fn duplicates_change_nothing() {
    let mut a = CustomerAggregate::default();
    assert!(a.apply(&placed(1, 5_000)));
    assert!(!a.apply(&placed(1, 5_000)));
    assert_eq!(net(&a), (1, 5_000));
}

#[test]
fn cancel_before_create_still_cancels() {
    let mut a = CustomerAggregate::default();
    assert!(a.apply(&Fact::OrderCancelled { order_id: 7 }));
    assert!(a.apply(&placed(7, 9_000)));
    assert_eq!(net(&a), (0, 0));
}

#[test]
fn refunds_lower_net_once_and_floor_at_zero() {
    let mut a = CustomerAggregate::default();
    let refund = Fact::Refunded {
        order_id: 1,
        refund_id: 10,
        amount: Money::from_minor(1_500),
    };
    assert!(a.apply(&refund));
    assert!(a.apply(&placed(1, 5_000)));
    assert!(!a.apply(&refund));
    assert_eq!(net(&a), (1, 3_500));
    a.apply(&Fact::Refunded {
        order_id: 1,
        refund_id: 11,
        amount: Money::from_minor(99_999),
    });
    a.apply(&placed(2, 2_000));
    assert_eq!(net(&a), (2, 2_000));
}

#[test]
fn refunds_on_cancelled_orders_contribute_nothing() {
    let mut a = CustomerAggregate::default();
    a.apply(&placed(1, 5_000));
    a.apply(&Fact::OrderCancelled { order_id: 1 });
    a.apply(&Fact::Refunded {
        order_id: 1,
        refund_id: 3,
        amount: Money::from_minor(5_000),
    });
    assert_eq!(net(&a), (0, 0));
}

#[test]
fn excluded_orders_do_not_count() {
    let mut a = CustomerAggregate::default();
    a.apply(&Fact::OrderPlaced {
        order_id: 1,
        total: Money::from_minor(100),
        placed_at: DAY0,
        excluded: true,
        cancelled: false,
    });
    assert_eq!(net(&a), (0, 0));
}

#[test]
fn points_are_idempotent_per_event() {
    let mut a = CustomerAggregate::default();
    let earn = Fact::Points {
        event_key: 1,
        delta: 100,
        at: DAY0,
    };
    assert!(a.apply(&earn));
    assert!(!a.apply(&earn));
    a.apply(&Fact::Points {
        event_key: 2,
        delta: -30,
        at: DAY0.plus_days(1),
    });
    assert_eq!(a.points(), 70);
    assert_eq!(a.last_engaged(), Some(DAY0.plus_days(1)));
}

#[test]
fn parts_round_trip_and_reject_unsorted_keys() {
    let mut a = CustomerAggregate::default();
    a.apply(&placed(5, 5_000));
    a.apply(&placed(2, 1_000));
    a.apply(&Fact::Refunded {
        order_id: 9,
        refund_id: 4,
        amount: Money::from_minor(300),
    });
    a.apply(&Fact::Points {
        event_key: 8,
        delta: 40,
        at: DAY0,
    });
    assert_eq!(CustomerAggregate::from_parts(a.parts()), Some(a.clone()));
    let plain = CustomerAggregate::default();
    assert_eq!(CustomerAggregate::from_parts(plain.parts()), Some(plain));
    let reversed: Vec<OrderRecord> = a.orders().iter().rev().copied().collect();
    let parts = AggregateParts {
        orders: &reversed,
        ..a.parts()
    };
    assert_eq!(CustomerAggregate::from_parts(parts), None);
    assert_eq!(OrderRecord::from_parts(1, 0, 0, 8), None);
}

#[test]
fn stays_compact() {
    assert!(std::mem::size_of::<CustomerAggregate>() <= 32);
    assert_eq!(std::mem::size_of::<OrderRecord>(), 20);
}
