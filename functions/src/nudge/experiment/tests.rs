use serde_json::json;

use super::*;

const SHOP: &str = "split.myshopify.com";

fn experiment(holdout_bps: u32, weights: &[u64]) -> Experiment {
    Experiment {
        id: ExperimentId::parse("exp-1").unwrap(),
        kind: NudgeKind::AtRisk,
        arms: weights
            .iter()
            .enumerate()
            .map(|(i, &weight)| Arm {
                name: format!("v{i}"),
                weight,
                texts: Default::default(),
            })
            .collect(),
        holdout_bps,
    }
}

fn fields(value: serde_json::Value) -> Vec<String> {
    let errors = Experiment::from_json(&value, "fallback").unwrap_err();
    errors.into_iter().map(|e| e.field).collect()
}

#[test]
fn the_bucket_is_the_same_on_every_machine() {
    // Pinned values: SHA-256 of the canonical string, first 8 bytes big-endian, modulo 10,000. Recomputed apart
    // from this code with `printf 'nudge-ab/v1\nsplit.myshopify.com\nexp-1\n42' | sha256sum`.
    let id = ExperimentId::parse("exp-1").unwrap();
    assert_eq!(bucket(SHOP, &id, 42), PINNED_42);
    assert_eq!(bucket(SHOP, &id, 43), PINNED_43);
    // Every input field matters.
    let other = ExperimentId::parse("exp-2").unwrap();
    let moved = (0..50u64)
        .filter(|&c| bucket(SHOP, &id, c) != bucket(SHOP, &other, c))
        .count();
    assert!(
        moved > 45,
        "another experiment id reshuffles ({moved} of 50 moved)"
    );
    let moved = (0..50u64)
        .filter(|&c| bucket(SHOP, &id, c) != bucket("other.myshopify.com", &id, c))
        .count();
    assert!(moved > 45, "another shop reshuffles ({moved} of 50 moved)");
}

/// From `sha256sum`: 6a5da1d919073680… → 0x6a5da1d919073680 mod 10,000.
const PINNED_42: u32 = 496;
/// From `sha256sum`: 59e512965728cd5e… → 0x59e512965728cd5e mod 10,000.
const PINNED_43: u32 = 2_702;

#[test]
fn assignment_is_deterministic() {
    let e = experiment(1_000, &[1, 1]);
    for customer in 0..1_000u64 {
        assert_eq!(e.assign(SHOP, customer), e.assign(SHOP, customer));
        assert_eq!(e.clone().assign(SHOP, customer), e.assign(SHOP, customer));
    }
}

#[test]
fn split_proportions_hold_over_100_000_customers() {
    let e = experiment(1_000, &[1, 2, 1]);
    let mut counts = [0u32; 4];
    for customer in 0..100_000u64 {
        match e.assign(SHOP, customer) {
            Assignment::Holdout => counts[3] += 1,
            Assignment::Arm(i) => counts[i] += 1,
        }
    }
    // Expected shares: holdout 10 %, then 90 % split 1:2:1. Tolerance is five standard deviations of a binomial
    // with n = 100,000 (at most 0.8 percentage points), so a correct split fails about once in 3.5 million runs.
    let expected = [0.225, 0.45, 0.225, 0.10];
    for (i, (&n, share)) in counts.iter().zip(expected).enumerate() {
        let sd = (share * (1.0 - share) / 100_000f64).sqrt();
        let got = f64::from(n) / 100_000.0;
        assert!(
            (got - share).abs() < 5.0 * sd,
            "bucket {i}: {got} vs {share}"
        );
    }
}

#[test]
fn the_holdout_gets_its_share_and_nothing_else_and_keeps_its_customers_when_weights_change() {
    let before = experiment(2_500, &[1, 1]);
    let after = experiment(2_500, &[5, 1, 3]);
    let mut held = 0;
    for customer in 0..20_000u64 {
        let a = before.assign(SHOP, customer);
        assert_eq!(
            a == Assignment::Holdout,
            after.assign(SHOP, customer) == Assignment::Holdout
        );
        if a == Assignment::Holdout {
            held += 1;
            assert_eq!(before.variant(a), HOLDOUT);
        }
    }
    assert!((4_700..5_300).contains(&held), "{held} of 20,000 held out");
    let none = experiment(0, &[1, 1]);
    assert!((0..20_000u64).all(|c| none.assign(SHOP, c) != Assignment::Holdout));
}

#[test]
fn every_bucket_maps_inside_the_arms() {
    let e = experiment(MAX_HOLDOUT_BPS, &[3, MAX_WEIGHT, 1, 7, 2]);
    let mut seen = [0u32; 5];
    for b in 0..BUCKETS {
        match e.assignment_of(b) {
            Assignment::Holdout => assert!(b < MAX_HOLDOUT_BPS),
            Assignment::Arm(i) => seen[i] += 1,
        }
    }
    assert!(
        seen.iter().all(|&n| n >= 10),
        "even the smallest weight gets buckets: {seen:?}"
    );
    assert_eq!(seen.iter().sum::<u32>(), BUCKETS - MAX_HOLDOUT_BPS);
}

#[test]
fn a_valid_document_round_trips() {
    let doc = json!({
        "id": "spring-test",
        "kind": "at_risk",
        "variants": [
            {"name": "A", "weight": 1, "texts": {"en": {"title": "Hi", "body": "Come back"}}},
            {"name": "B", "weight": 3}
        ],
        "holdout_percent": 12.5
    });
    let e = Experiment::from_json(&doc, "ignored").unwrap();
    assert_eq!(e.id.as_str(), "spring-test");
    assert_eq!(e.kind, NudgeKind::AtRisk);
    assert_eq!(e.holdout_bps, 1_250);
    assert_eq!(e.arms[0].texts["en"].title, "Hi");
    assert!(e.arms[1].texts.is_empty(), "the kind's template");
    assert_eq!(Experiment::from_json(&e.to_json(), "x").unwrap(), e);
    let unnamed = json!({"kind": "loyal", "variants": [{"name": "a", "weight": 1}, {"name": "b", "weight": 1}]});
    let e = Experiment::from_json(&unnamed, "generated-1").unwrap();
    assert_eq!((e.id.as_str(), e.holdout_bps), ("generated-1", 0));
}

#[test]
fn every_invalid_field_is_named() {
    let arm = |name: &str, weight: i64| json!({"name": name, "weight": weight});
    assert_eq!(
        fields(json!({"kind": "sometimes", "variants": [arm("a", 1), arm("b", 1)]})),
        ["kind"]
    );
    assert_eq!(
        fields(json!({"kind": "loyal", "variants": [arm("a", 0), arm("b", -2)]})),
        ["variants[0].weight", "variants[1].weight"]
    );
    assert_eq!(
        fields(json!({"kind": "loyal", "variants": [arm("a", 1), arm("A", 1)]})),
        ["variants[1].name"],
        "names are unique whatever their case"
    );
    assert_eq!(
        fields(json!({"kind": "loyal", "variants": [arm("a", 1)]})),
        ["variants"]
    );
    let six: Vec<_> = (0..6).map(|i| arm(&format!("v{i}"), 1)).collect();
    assert_eq!(
        fields(json!({"kind": "loyal", "variants": six})),
        ["variants"]
    );
    let long = "x".repeat(MAX_NAME_CHARS + 1);
    assert_eq!(
        fields(json!({"kind": "loyal", "variants": [arm(&long, 1), arm("holdout", 1)]})),
        ["variants[0].name", "variants[1].name"]
    );
    for holdout in [json!(50.5), json!(-1), json!("10")] {
        let doc = json!({"kind": "loyal", "variants": [arm("a", 1), arm("b", 1)], "holdout_percent": holdout});
        assert_eq!(fields(doc), ["holdout_percent"]);
    }
    let doc = json!({"id": "no spaces", "kind": "loyal", "variants": [arm("a", 1), arm("b", 1)], "holdout": 5});
    assert_eq!(fields(doc), ["holdout", "id"]);
    let doc = json!({"kind": "loyal", "variants": [{"name": "a", "weight": 1, "texts": "hi"}, arm("b", 1)]});
    assert_eq!(fields(doc), ["variants[0].texts"]);
    let doc = json!({"kind": "loyal", "variants": [
        {"name": "a", "weight": 1, "texts": {"es": {"title": "<b>Hola</b>"}}}, arm("b", 1)]});
    let found = fields(doc);
    assert!(
        found.contains(&"variants[0].texts".to_owned()),
        "en is required: {found:?}"
    );
    assert!(
        found.contains(&"variants[0].texts.es.title".to_owned()),
        "no markup: {found:?}"
    );
    assert_eq!(fields(json!([1])), [""]);
}
