//! The RFM rules of DESIGN.md §4 at every boundary of the default (medium preset) configuration.

use functions::lifecycle::{churn_risk, lifecycle_stage};
use functions::score::{frequency_score, monetary_score, next_change, recency_score, score};
use functions::{
    evaluate, CustomerAggregate, Fact, LifecycleStage, Money, Rfm, RfmConfig, Timestamp,
};

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

fn segment_key(config: &RfmConfig, aggregate: &CustomerAggregate, now: Timestamp) -> String {
    let e = evaluate(aggregate, config, now);
    config.segments[usize::from(e.segment)].key.clone()
}

#[test]
fn recency_boundaries() {
    let c = RfmConfig::default();
    for (days, expected) in [
        (0, 5),
        (7, 5),
        (8, 4),
        (30, 4),
        (31, 3),
        (60, 3),
        (61, 2),
        (90, 2),
        (91, 1),
        (400, 1),
    ] {
        assert_eq!(recency_score(Some(days), &c), expected, "day {days}");
    }
    assert_eq!(recency_score(None, &c), 1);
}

#[test]
fn recency_counts_whole_elapsed_days() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&order(1, 10_000, T0));
    let just_before_day_8 = Timestamp(T0.plus_days(8).unix() - 1);
    assert_eq!(score(&a, &c, just_before_day_8).recency, 5);
    assert_eq!(score(&a, &c, T0.plus_days(8)).recency, 4);
}

#[test]
fn frequency_boundaries() {
    let c = RfmConfig::default();
    for (orders, expected) in [
        (0, 1),
        (1, 1),
        (2, 2),
        (3, 2),
        (4, 3),
        (5, 3),
        (6, 4),
        (10, 4),
        (11, 5),
        (500, 5),
    ] {
        assert_eq!(
            frequency_score(f64::from(orders), &c),
            expected,
            "{orders} orders"
        );
    }
}

#[test]
fn monetary_boundaries_at_multiples_of_aov() {
    let c = RfmConfig::default(); // AOV $100
    let cases = [
        (4_999, 1),
        (5_000, 2), // 0.5×
        (9_999, 2),
        (10_000, 3), // 1×
        (19_999, 3),
        (20_000, 4), // 2×
        (50_000, 4), // 5× is still M4
        (50_001, 5),
        (1_000_000, 5), // $10,000+
        (0, 1),
        (-500, 1),
    ];
    for (cents, expected) in cases {
        assert_eq!(monetary_score(cents as f64, &c), expected, "{cents} cents");
    }
}

#[test]
fn seed_example_r5_f3_m4_scores_4_1() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    for i in 0..4 {
        a.apply(&order(i, 6_000, T0.plus_days(i as i64)));
    }
    let now = T0.plus_days(5);
    let rfm = score(&a, &c, now);
    assert_eq!(rfm, Rfm::new(5, 3, 4));
    assert_eq!(rfm.score_tenths(&c), 41);
    assert_eq!(segment_key(&c, &a, now), "loyal");
}

#[test]
fn no_orders_is_r1_f1_m1_new_lead() {
    let c = RfmConfig::default();
    let a = CustomerAggregate::default();
    let e = evaluate(&a, &c, T0);
    assert_eq!(e.rfm(), Rfm::new(1, 1, 1));
    assert_eq!(e.stage, LifecycleStage::NewLead);
    assert_eq!(segment_key(&c, &a, T0), "inactive");
    assert_eq!(next_change(&a, &c, T0), None);
}

#[test]
fn big_spender_is_m5_and_champion_when_frequent() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&order(1, 1_000_000, T0));
    assert_eq!(score(&a, &c, T0).monetary, 5);
    for i in 2..=6 {
        a.apply(&order(i, 100, T0));
    }
    assert_eq!(segment_key(&c, &a, T0), "champions");
    assert_eq!(evaluate(&a, &c, T0).stage, LifecycleStage::Vip);
}

#[test]
fn refunded_to_zero_is_m1() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&order(1, 8_000, T0));
    a.apply(&Fact::Refunded {
        order_id: 1,
        refund_id: 1,
        amount: Money::from_minor(8_000),
    });
    assert_eq!(score(&a, &c, T0).monetary, 1);
}

#[test]
fn cancelled_and_test_orders_are_excluded() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&Fact::OrderPlaced {
        order_id: 1,
        total: Money::from_minor(90_000),
        placed_at: T0,
        excluded: true,
        cancelled: false,
    });
    a.apply(&order(2, 90_000, T0));
    a.apply(&Fact::OrderCancelled { order_id: 2 });
    assert_eq!(a.totals().orders, 0);
    assert_eq!(evaluate(&a, &c, T0).rfm(), Rfm::new(1, 1, 1));
}

#[test]
fn lifecycle_stages() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&order(1, 1_000, T0));
    assert_eq!(evaluate(&a, &c, T0).stage, LifecycleStage::OneTimeBuyer);
    a.apply(&order(2, 1_000, T0));
    assert_eq!(evaluate(&a, &c, T0).stage, LifecycleStage::RepeatBuyer);
    assert_eq!(
        lifecycle_stage(&a.totals(), false, &c, T0.plus_days(365)),
        LifecycleStage::RepeatBuyer
    );
    assert_eq!(
        evaluate(&a, &c, T0.plus_days(366)).stage,
        LifecycleStage::Churned
    );
}

#[test]
fn next_change_walks_every_boundary() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&order(1, 1_000, T0));
    let mut now = T0;
    let mut seen = Vec::new();
    while let Some(next) = next_change(&a, &c, now) {
        assert!(next > now);
        let before = evaluate(&a, &c, Timestamp(next.unix() - 1));
        let after = evaluate(&a, &c, next);
        assert_ne!(before, after, "nothing changed at {next:?}");
        seen.push(next.whole_days_since(T0));
        now = next;
    }
    assert_eq!(seen, vec![8, 31, 61, 91, 366]);
}

#[test]
fn churn_risk_is_monotone_and_bounded() {
    let c = RfmConfig::default();
    let mut a = CustomerAggregate::default();
    a.apply(&order(1, 1_000, T0));
    a.apply(&order(2, 1_000, T0.plus_days(30)));
    let totals = a.totals();
    let risk = |days: i64| churn_risk(&totals, &c, T0.plus_days(30 + days)).score;
    assert_eq!(risk(0), 0.0);
    assert_eq!(risk(30), 0.0);
    assert!(
        (risk(60) - 0.5).abs() < 1e-9,
        "one rhythm overdue halves: {}",
        risk(60)
    );
    let mut previous = 0.0;
    for days in (0..2_000).step_by(7) {
        let r = risk(days);
        assert!((0.0..=1.0).contains(&r));
        assert!(r >= previous);
        previous = r;
    }
}

#[test]
fn decay_weights_old_orders_down() {
    let c = RfmConfig {
        recency_decay: Some(functions::config::RecencyDecay {
            half_life_days: 30.0,
        }),
        ..RfmConfig::default()
    };
    let mut a = CustomerAggregate::default();
    for i in 0..4 {
        a.apply(&order(i, 30_000, T0));
    }
    // Fresh: 4 orders, $1,200 → F3 M5. After one half-life: 2 orders, $600 → F2 M5. After two: 1, $300 → F1 M4.
    assert_eq!(score(&a, &c, T0), Rfm::new(5, 3, 5));
    assert_eq!(score(&a, &c, T0.plus_days(30)), Rfm::new(4, 2, 5));
    assert_eq!(score(&a, &c, T0.plus_days(60)), Rfm::new(3, 1, 4));
    assert_eq!(next_change(&a, &c, T0), Some(T0.plus_days(1)));
}
