//! Properties that must hold for any stream: order and duplicates do not matter, scores stay in range, and every
//! score triple lands in exactly one segment.

use functions::segment::{classify, default_rules};
use functions::{evaluate, CustomerAggregate, Fact, Money, Rfm, RfmConfig, Timestamp};
use proptest::prelude::*;

const T0: i64 = 1_750_000_000;

fn fact() -> impl Strategy<Value = Fact> {
    let order_id = 1u64..8;
    prop_oneof![
        (
            order_id.clone(),
            -100i64..200_000,
            0i64..400,
            any::<bool>(),
            any::<bool>()
        )
            .prop_map(
                |(order_id, cents, day, excluded, cancelled)| Fact::OrderPlaced {
                    order_id,
                    total: Money::from_minor(cents),
                    placed_at: Timestamp(T0).plus_days(day),
                    excluded,
                    cancelled,
                }
            ),
        order_id
            .clone()
            .prop_map(|order_id| Fact::OrderCancelled { order_id }),
        (order_id, 1u64..6, 0i64..300_000).prop_map(|(order_id, refund_id, cents)| {
            Fact::Refunded {
                order_id,
                refund_id,
                amount: Money::from_minor(cents),
            }
        }),
        (1u64..6, -500i64..500, 0i64..400).prop_map(|(event_key, delta, day)| Fact::Points {
            event_key,
            delta,
            at: Timestamp(T0).plus_days(day),
        }),
        (0i64..400).prop_map(|day| Fact::CustomerCreated {
            at: Timestamp(T0).plus_days(day)
        }),
    ]
}

/// Facts that share an idempotency key must be the same fact (as a redelivery is); keep the first of each key.
fn canonical(facts: Vec<Fact>) -> Vec<Fact> {
    let mut seen = std::collections::HashSet::new();
    facts
        .into_iter()
        .filter(|f| {
            let key = match f {
                Fact::OrderPlaced { order_id, .. } => (0, *order_id),
                Fact::OrderCancelled { order_id } => (1, *order_id),
                Fact::Refunded { refund_id, .. } => (2, *refund_id),
                Fact::Points { event_key, .. } => (3, *event_key),
                Fact::CustomerCreated { at } => (4, at.unix() as u64),
            };
            seen.insert(key)
        })
        .collect()
}

fn apply_all(facts: &[Fact]) -> CustomerAggregate {
    let mut a = CustomerAggregate::default();
    for f in facts {
        a.apply(f);
    }
    a
}

proptest! {
    #[test]
    fn any_order_with_duplicates_gives_the_same_aggregate(
        facts in prop::collection::vec(fact(), 0..24),
        shuffle_seed in any::<u64>(),
        duplicate_mask in any::<u32>(),
    ) {
        let facts = canonical(facts);
        let reference = apply_all(&facts);
        let mut replayed: Vec<Fact> = facts.clone();
        for (i, f) in facts.iter().enumerate() {
            if duplicate_mask & (1 << (i % 32)) != 0 {
                replayed.push(f.clone());
            }
        }
        // Fisher–Yates with a small LCG so the permutation is reproducible from the seed.
        let mut state = shuffle_seed | 1;
        for i in (1..replayed.len()).rev() {
            state = state.wrapping_mul(6_364_136_223_846_793_005).wrapping_add(1_442_695_040_888_963_407);
            replayed.swap(i, (state >> 33) as usize % (i + 1));
        }
        let shuffled = apply_all(&replayed);
        prop_assert_eq!(shuffled.totals(), reference.totals());
        prop_assert_eq!(shuffled.points(), reference.points());
        let config = RfmConfig::default();
        let now = Timestamp(T0).plus_days(500);
        prop_assert_eq!(evaluate(&shuffled, &config, now), evaluate(&reference, &config, now));
    }

    #[test]
    fn scores_stay_in_range(facts in prop::collection::vec(fact(), 0..24), day in -10i64..2_000) {
        let config = RfmConfig::default();
        let e = evaluate(&apply_all(&facts), &config, Timestamp(T0).plus_days(day));
        for s in [e.rfm().recency, e.rfm().frequency, e.rfm().monetary] {
            prop_assert!((1..=5).contains(&s));
        }
        let tenths = e.rfm().score_tenths(&config);
        prop_assert!((10..=50).contains(&tenths));
        prop_assert!(usize::from(e.segment) < config.segments.len());
    }

    #[test]
    fn net_spend_is_never_negative(facts in prop::collection::vec(fact(), 0..24)) {
        prop_assert!(apply_all(&facts).totals().net >= Money::ZERO);
    }
}

#[test]
fn every_triple_has_exactly_one_segment() {
    let rules = default_rules();
    for rfm in Rfm::all() {
        // First match wins, so "exactly one" means classification is defined and is the first matching rule.
        let id = classify(&rules, rfm).expect("table is total");
        let first = rules.iter().position(|r| r.matches(rfm)).unwrap();
        assert_eq!(usize::from(id), first, "{rfm}");
    }
    assert_eq!(Rfm::all().count(), 125);
}
