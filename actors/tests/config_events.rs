//! A saved configuration arriving as an event on the config topic: applied in order with the merchant's events,
//! every customer re-scored in that one step, each move published with the old table's segment key as its
//! "from", nothing published for a customer whose segment only changed its place in the table, and the same
//! event applied again (a replay) changing nothing.

mod common;

use actors::{Configs, PartitionCore};
use common::*;
use functions::segment::{ScoreRange, SegmentRule};
use functions::RfmConfig;
use streams::events::ConfigChanged;
use streams::{InputEvent, SCHEMA_VERSION};

fn rule(key: &str, r: (u8, u8), f: (u8, u8), m: (u8, u8)) -> SegmentRule {
    SegmentRule {
        key: key.into(),
        name: [("en".to_owned(), key.to_uppercase())].into(),
        recency: ScoreRange::new(r.0, r.1),
        frequency: ScoreRange::new(f.0, f.1),
        monetary: ScoreRange::new(m.0, m.1),
        vip: false,
    }
}

/// Two tiers by spend alone, with the default table's `other` kept (now first) as the catch-all's key.
fn tiers() -> RfmConfig {
    RfmConfig {
        segments: vec![
            rule("gold", (1, 5), (1, 5), (4, 5)),
            rule("other", (1, 5), (1, 5), (1, 3)),
        ],
        ..RfmConfig::default()
    }
}

fn config_event(id: &str, config: RfmConfig) -> InputEvent {
    revised(id, config, None)
}

fn revised(id: &str, config: RfmConfig, revision: Option<u64>) -> InputEvent {
    InputEvent::ConfigChanged(ConfigChanged {
        event_id: id.into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(ALPHA),
        config,
        saved_at: at(0),
        revision,
    })
}

#[test]
fn a_revision_older_than_the_applied_one_is_ignored() {
    let configs = Configs::default();
    let mut core = PartitionCore::new(PARTITION);
    core.apply(&[order(ALPHA, 1, 11, "250.00", 0)], day(0), &configs);
    // Saves 1 and 2, then save 1 again (the outbox re-sent it after a crash) and save 2 again.
    let first = core.apply(&[revised("c1", tiers(), Some(1))], day(0), &configs);
    assert_eq!(first.changes.len(), 1, "customer 1 moves to gold");
    let second = core.apply(
        &[revised("c2", RfmConfig::default(), Some(2))],
        day(0),
        &configs,
    );
    assert_eq!(second.changes.len(), 1, "and back");
    for again in [
        revised("c1", tiers(), Some(1)),
        revised("c2", RfmConfig::default(), Some(2)),
    ] {
        let outcome = core.apply(&[again], day(0), &configs);
        assert!(
            outcome.changes.is_empty(),
            "a revision already passed moves nobody"
        );
    }
    assert_eq!(
        core.merchants().next().unwrap().config,
        RfmConfig::default()
    );
    assert!(configs
        .get(&mid(ALPHA))
        .is_some_and(|c| *c == RfmConfig::default()));
    // A record from before revisions is applied as it comes.
    let old = core.apply(&[config_event("c0", tiers())], day(0), &configs);
    assert_eq!(old.changes.len(), 1);
}

#[test]
fn after_a_shop_erasure_the_reinstalled_shops_saves_count_again() {
    let configs = Configs::default();
    let mut core = PartitionCore::new(PARTITION);
    core.apply(&[revised("c1", tiers(), Some(3))], day(0), &configs);
    let redact = InputEvent::ShopRedact(streams::events::ShopRedact {
        event_id: "erase".into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(ALPHA),
        requested_at: None,
    });
    core.apply(&[redact], day(1), &configs);
    let merchant = core.merchants().next().unwrap();
    assert_eq!(
        merchant.config,
        RfmConfig::default(),
        "the erased save is gone"
    );
    assert_eq!(merchant.config_revision, 0);
    assert!(configs.get(&mid(ALPHA)).is_none());
    // The reinstalled shop's first save is revision 1 again, and it applies.
    core.apply(&[revised("c2", tiers(), Some(1))], day(2), &configs);
    assert_eq!(core.merchants().next().unwrap().config, tiers());
}

#[test]
fn a_config_event_rescores_the_merchant_in_order() {
    let configs = Configs::default();
    let mut core = PartitionCore::new(PARTITION);
    // Customer 1: one $250 order, R5 F1 M4 → `other` by default, `gold` under the tiers.
    // Customer 2: one $20 order 200 days ago, R1 F1 M1 → `inactive`, then `other`.
    // Customer 3: three $60 orders 40 days ago, R3 F2 M3 → `other` in both tables (first rule, then second).
    let mut events = vec![
        order(ALPHA, 1, 11, "250.00", 0),
        order(ALPHA, 2, 21, "20.00", -200),
        order(ALPHA, 3, 31, "60.00", -40),
        order(ALPHA, 3, 32, "60.00", -40),
        order(ALPHA, 3, 33, "60.00", -40),
    ];
    core.apply(&events, day(0), &configs);
    let version_of_3 = |core: &PartitionCore| {
        core.merchant(&mid(ALPHA))
            .and_then(|m| m.customer(3))
            .map(|c| c.version)
    };
    let before = version_of_3(&core);
    events = vec![
        config_event("config-1", tiers()),
        order(ALPHA, 4, 41, "900.00", 0),
    ];
    let outcome = core.apply(&events, day(0), &configs);
    let moves: Vec<(u64, &str, &str, &str)> = outcome
        .changes
        .iter()
        .map(|c| {
            let (from, to) = (c.from_segment.as_str(), c.to_segment.as_str());
            (c.customer_id, from, to, c.trace_id.as_str())
        })
        .collect();
    assert_eq!(
        moves,
        vec![
            (1, "other", "gold", "config-1"),
            (2, "inactive", "other", "config-1"),
            (4, "other", "gold", "o41"),
        ]
    );
    let merchant = core.merchant(&mid(ALPHA)).expect("alpha");
    assert_eq!(merchant.config, tiers());
    assert_eq!(merchant.segment_counts(), &[2, 2]);
    assert_eq!(configs.get(&mid(ALPHA)).map(|c| c.clone()), Some(tiers()));
    // Customer 3 kept its version: nothing was published about it.
    assert_eq!(version_of_3(&core), before);

    let again = core.apply(&[config_event("config-1", tiers())], day(0), &configs);
    assert!(again.changes.is_empty(), "{:?}", again.changes);
}

#[test]
fn a_replay_from_the_start_ends_where_the_live_run_did() {
    let events = [
        order(ALPHA, 1, 11, "250.00", 0),
        order(ALPHA, 2, 21, "20.00", -200),
        config_event("config-1", tiers()),
        order(ALPHA, 2, 22, "600.00", 1),
        config_event("config-2", RfmConfig::default()),
        order(ALPHA, 5, 51, "5.00", 2),
    ];
    let run = |chunks: &[&[InputEvent]]| {
        let mut core = PartitionCore::new(PARTITION);
        let configs = Configs::default();
        for (i, chunk) in chunks.iter().enumerate() {
            core.apply(chunk, day(i as i64), &configs);
        }
        let m = core.merchant(&mid(ALPHA)).expect("alpha");
        let mut all: Vec<_> = m.customers().map(|(id, c)| (id, c.published)).collect();
        all.sort_by_key(|(id, _)| *id);
        (all, m.segment_counts().to_vec(), m.config.clone())
    };
    let live = run(&[&events[..2], &events[2..4], &events[4..]]);
    let replay = run(&[&events[..], &[], &[]]);
    assert_eq!(live, replay);
    assert_eq!(live.2, RfmConfig::default());
}

/// A restore whose quiet replay crosses a configuration change that drops a segment (`new`) and moves another
/// (`other` first): the net changes it publishes end every customer where an owner that never died ended, each
/// under a key of the new table, with counts that add up.
#[test]
fn a_restore_across_a_config_change_ends_where_the_live_run_did() {
    let configs = Configs::default();
    let before = [
        order(ALPHA, 1, 11, "250.00", 0),
        order(ALPHA, 2, 21, "20.00", 0),
        order(ALPHA, 3, 31, "20.00", -200),
    ];
    let after = [
        config_event("config-1", tiers()),
        order(ALPHA, 5, 51, "700.00", 0),
    ];

    let mut live = PartitionCore::new(PARTITION);
    live.apply(&before, day(0), &configs);
    let snapshot = live.encode_snapshot(&actors::SnapshotOffsets::default());
    live.apply(&after, day(0), &configs);

    let (mut restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &snapshot, &Configs::default(), day(0))
            .expect("the snapshot decodes");
    restored.apply_quietly(&after, day(0), &Configs::default());
    let mut outcome = restored.finish_restore(&[], day(0));
    while let Some(next) = restored.next_restore_chunk(day(0)) {
        outcome.changes.extend(next.changes);
    }
    let keys = ["gold", "other"];
    for change in &outcome.changes {
        assert!(keys.contains(&change.to_segment.as_str()), "{change:?}");
    }
    let state = |core: &PartitionCore| {
        let m = core.merchant(&mid(ALPHA)).expect("alpha");
        let mut all: Vec<_> = m.customers().map(|(id, c)| (id, c.published)).collect();
        all.sort_by_key(|(id, _)| *id);
        (all, m.segment_counts().to_vec(), m.config.clone())
    };
    let (live_state, restored_state) = (state(&live), state(&restored));
    assert_eq!(
        live_state
            .0
            .iter()
            .map(|(id, e)| (*id, e.segment, e.rfm()))
            .collect::<Vec<_>>(),
        restored_state
            .0
            .iter()
            .map(|(id, e)| (*id, e.segment, e.rfm()))
            .collect::<Vec<_>>()
    );
    assert_eq!(live_state.1, restored_state.1);
    assert_eq!(restored_state.1.iter().sum::<u64>(), 4);
    assert_eq!(restored_state.2, tiers());
}
