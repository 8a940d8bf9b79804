use super::*;
use actors::customer::CustomerKey;
use functions::{LifecycleStage, NudgeKind, Rfm};
use serde_json::json;

fn shop() -> MerchantId {
    MerchantId::parse("memory.myshopify.com").unwrap()
}

fn key(customer_id: u64) -> CustomerKey {
    CustomerKey {
        merchant: shop(),
        customer_id,
    }
}

fn nudge(customer_id: u64, version: u32, variant: &str, at: i64) -> PendingNudge {
    PendingNudge {
        key: key(customer_id),
        version,
        segment: "new".into(),
        kind: NudgeKind::New,
        experiment_id: Some("exp".into()),
        variant: variant.into(),
        locale: None,
        trace_id: "t".into(),
        fired_at: Timestamp(at),
        points: 0,
    }
}

fn order(customer_id: u64, version: u32, at: i64, cents: i64) -> Change {
    Change {
        merchant: shop(),
        customer_id,
        version,
        from_segment: "new".into(),
        to_segment: "loyal".into(),
        rfm: Rfm::new(5, 2, 3),
        score_tenths: 35,
        stage: LifecycleStage::RepeatBuyer,
        orders: 2,
        net_spend: Money::from_minor(cents),
        currency_exponent: 2,
        last_order: None,
        churn_risk: None,
        occurred_at: Timestamp(at),
        trace_id: "t".into(),
        locale: None,
        event_ms: None,
        traceparent: None,
        order_added: Some(Money::from_minor(cents)),
        points: 0,
    }
}

fn event<'a>(nudge_id: &'a str, action: &'static str) -> Report<'a> {
    Report {
        nudge_id,
        action,
        event_id: uuid::Uuid::new_v4(),
    }
}

fn experiment() -> Experiment {
    let doc = json!({"id": "exp", "kind": "new", "holdout_percent": 20,
        "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}]});
    Experiment::from_json(&doc, "x").unwrap()
}

#[tokio::test]
async fn experiments_replace_the_running_one_of_their_kind() {
    let ledger = MemoryLedger::new(AttributionWindow::default());
    let first = ledger
        .save_experiment(&shop(), &experiment(), "t")
        .await
        .unwrap();
    assert!(matches!(first, Saved::Running { replaced: None, .. }));
    let mut second = experiment();
    second.id = functions::nudge::experiment::ExperimentId::parse("exp-2").unwrap();
    let saved = ledger.save_experiment(&shop(), &second, "t").await.unwrap();
    assert!(matches!(saved, Saved::Running { replaced: Some(ref id), .. } if id == "exp"));
    let stored = ledger.experiments(&shop()).await.unwrap();
    let running: Vec<bool> = stored.iter().map(|s| s.running).collect();
    assert_eq!(
        running,
        [true, false],
        "newest first, the replaced one ended"
    );
}

#[tokio::test]
async fn the_cap_holds_and_only_shown_nudges_take_events_and_conversions() {
    let ledger = MemoryLedger::new(AttributionWindow::default());
    let cap = FrequencyCap::default();
    // An hour ago: the view below is stamped with the wall clock, and the orders come after both.
    let t = now().unix() - 3_600;
    let (shown, capped, held) = (
        nudge(1, 1, "A", t),
        nudge(1, 2, "A", t + 60),
        nudge(2, 1, "holdout", t),
    );
    let ids = ledger
        .record_fates(
            cap,
            &[shown.clone(), capped.clone()],
            std::slice::from_ref(&held),
        )
        .await
        .unwrap();
    assert_eq!(
        ids,
        HashSet::from([shown.nudge_id()]),
        "the second is within the cap's day"
    );
    let again = ledger
        .record_fates(cap, std::slice::from_ref(&shown), &[])
        .await
        .unwrap();
    assert_eq!(again, ids, "a replay keeps its fate");

    let shown_id = shown.nudge_id();
    let view = event(&shown_id, "view");
    assert_eq!(
        ledger.record_event(&key(1), view).await.unwrap(),
        Recorded::New
    );
    assert_eq!(
        ledger.record_event(&key(1), view).await.unwrap(),
        Recorded::Duplicate
    );
    for (customer, id) in [
        (1, capped.nudge_id()),
        (2, held.nudge_id()),
        (2, shown.nudge_id()),
    ] {
        let refused = ledger
            .record_event(&key(customer), event(&id, "click"))
            .await;
        assert_eq!(refused.unwrap(), Recorded::NotShown, "{customer} {id}");
    }

    let later = now().unix() + 10;
    ledger
        .record_conversions(&[order(1, 3, later, 2_500), order(2, 2, later, 1_000)])
        .await
        .unwrap();
    let counts = ledger.counts(&shop()).await.unwrap();
    let of = |variant: &str, status: &str| {
        counts
            .iter()
            .find(|c| c.variant == variant && c.status == status)
            .map(|c| c.counts)
            .unwrap()
    };
    let a = of("A", "shown");
    assert_eq!((a.nudged, a.viewed, a.clicked, a.converted), (1, 1, 0, 1));
    assert_eq!(a.revenue, Money::from_minor(25_000), "thousandths");
    assert_eq!(of("A", "capped").nudged, 1);
    let h = of("holdout", "holdout");
    assert_eq!((h.nudged, h.viewed, h.converted), (1, 0, 1));

    ledger.erase(&shop(), 1).await.unwrap();
    let left = ledger.counts(&shop()).await.unwrap();
    assert!(left.iter().all(|c| c.variant == "holdout"), "{left:?}");
}
