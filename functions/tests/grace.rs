//! The demotion grace period: a customer keeps the segment they had before a drop caused by time passing for
//! `grace_period_days`, while their scores stay honest; a drop caused by an event shows at once; and the engine's
//! timers (`next_change`) name every instant at which the graced segment moves.

use functions::score::next_change;
use functions::{evaluate, CustomerAggregate, Fact, Money, Rfm, RfmConfig, Timestamp};

const T0: Timestamp = Timestamp(1_750_000_000);

fn order(id: u64, cents: i64, at: Timestamp) -> Fact {
    Fact::OrderPlaced {
        order_id: id,
        total: Money::from_minor(cents),
        placed_at: at,
        excluded: false,
        cancelled: false,
    }
}

fn graced(days: u32) -> RfmConfig {
    RfmConfig {
        grace_period_days: days,
        ..RfmConfig::default()
    }
}

fn key(config: &RfmConfig, aggregate: &CustomerAggregate, now: Timestamp) -> String {
    let e = evaluate(aggregate, config, now);
    config.segments[usize::from(e.segment)].key.clone()
}

/// Six orders of $100: F4 M5; a champion while R5 (day 0–7), loyal from day 8 when R drops to 4.
fn champion() -> CustomerAggregate {
    let mut a = CustomerAggregate::default();
    for id in 1..=6 {
        a.apply(&order(id, 10_000, T0));
    }
    a
}

#[test]
fn a_time_driven_demotion_waits_for_the_grace() {
    let a = champion();
    assert_eq!(key(&graced(0), &a, T0.plus_days(8)), "loyal");
    let c = graced(30);
    assert_eq!(key(&c, &a, T0.plus_days(8)), "champions");
    assert_eq!(key(&c, &a, T0.plus_days(37)), "champions");
    assert_eq!(key(&c, &a, T0.plus_days(38)), "loyal");
    // The published scores are today's, only the segment is held.
    assert_eq!(evaluate(&a, &c, T0.plus_days(8)).rfm(), Rfm::new(4, 4, 5));
}

#[test]
fn an_event_driven_demotion_is_not_held() {
    let mut a = champion();
    let c = graced(30);
    for id in 1..=6 {
        a.apply(&Fact::OrderCancelled { order_id: id });
    }
    assert_ne!(key(&c, &a, T0.plus_days(1)), "champions");
}

#[test]
fn timers_fire_where_the_graced_segment_moves() {
    let a = champion();
    let c = graced(30);
    let mut now = T0;
    let mut moves = Vec::new();
    while let Some(next) = next_change(&a, &c, now) {
        assert!(next > now);
        let before = key(&c, &a, Timestamp(next.unix() - 1));
        if before != key(&c, &a, next) {
            moves.push(next.whole_days_since(T0));
        }
        now = next;
    }
    // Every segment move is seen by a timer; champions → loyal only once the grace has passed.
    assert_eq!(moves.first(), Some(&38));
    for day in 0..500 {
        let (at, after) = (T0.plus_days(day), T0.plus_days(day + 1));
        if key(&c, &a, at) != key(&c, &a, after) {
            assert!(moves.contains(&(day + 1)), "move on day {} missed", day + 1);
        }
    }
}
