//! A restore against the engine itself: the old owner snapshots, goes on publishing, and dies; the new owner
//! decodes the snapshot, replays quietly what came after (and what arrived while nobody owned the partition), reads
//! back what the old owner published, and must end with the state of an owner that never died, without
//! re-publishing a version that is already out.

use std::collections::{BTreeMap, HashMap};

use actors::{Change, Configs, PartitionCore, PublishedVersion, SnapshotOffsets};
use functions::{evaluate, Timestamp};
use streams::InputEvent;

mod common;

use common::*;

fn published(changes: &[Change], core: &PartitionCore) -> Vec<PublishedVersion> {
    changes
        .iter()
        .map(|c| PublishedVersion {
            merchant: c.merchant.clone(),
            customer_id: c.customer_id,
            version: c.version,
            from_segment: c.from_segment.clone(),
            segment: c.to_segment.clone(),
            rfm: c.rfm,
            stage: c.stage,
            occurred_at: c.occurred_at,
            trace_id: c.trace_id.clone(),
        })
        .inspect(|p| assert!(core.merchant(&p.merchant).is_some()))
        .collect()
}

/// After the snapshot the old owner publishes the second batch, then dies; `later_batch` arrives unowned.
struct Crash {
    snapshot: Vec<u8>,
    configs: Configs,
    after_snapshot: Vec<PublishedVersion>,
}

fn crash() -> Crash {
    let configs = configs();
    let mut old = PartitionCore::new(PARTITION);
    old.apply(&first_batch(), day(0), &configs);
    old.tick(day(2));
    let snapshot = old.encode_snapshot(&SnapshotOffsets::default());
    let outcome = old.apply(&second_batch(), day(5), &configs);
    assert!(
        !outcome.changes.is_empty(),
        "the old owner publishes after the snapshot"
    );
    Crash {
        after_snapshot: published(&outcome.changes, &old),
        snapshot,
        configs,
    }
}

/// What an owner that never died holds at `now`, evaluated at `now`.
fn survivor(configs: &Configs, now: Timestamp) -> PartitionCore {
    let mut core = PartitionCore::new(PARTITION);
    core.apply(&first_batch(), day(0), configs);
    core.tick(day(2));
    core.apply(&second_batch(), day(5), configs);
    core.apply(&later_batch(), now, configs);
    core.tick(now);
    core
}

fn last_versions(versions: &[PublishedVersion]) -> HashMap<(String, u64), u32> {
    let mut last = HashMap::new();
    for v in versions {
        let entry = last
            .entry((v.merchant.to_string(), v.customer_id))
            .or_insert(0);
        *entry = (*entry).max(v.version);
    }
    last
}

#[test]
fn a_restore_continues_each_customers_versions_and_ends_in_the_survivors_state() {
    let crash = crash();
    let now = day(12);
    let (mut restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &crash.snapshot, &crash.configs, now).unwrap();
    let replay: Vec<InputEvent> = second_batch().into_iter().chain(later_batch()).collect();
    let quiet = restored.apply_quietly(&replay, now, &crash.configs);
    assert!(quiet.changes.is_empty(), "a quiet replay publishes nothing");
    assert!(quiet.records.is_empty());
    assert!(restored.is_restoring());

    let mut changes = restored.finish_restore(&crash.after_snapshot, now).changes;
    assert!(!restored.is_restoring());
    // Boundaries that passed while nobody owned the partition fire on the first tick.
    changes.extend(restored.tick(now).changes);

    // No version the old owner published is published again; each customer's sequence continues from it.
    let before = last_versions(&crash.after_snapshot);
    let continued = changes
        .iter()
        .filter(|c| before.contains_key(&(c.merchant.to_string(), c.customer_id)))
        .count();
    assert!(
        continued > 0,
        "some customer the old owner published moves again: {changes:?}"
    );
    for change in &changes {
        let key = (change.merchant.to_string(), change.customer_id);
        let last = before.get(&key).copied();
        if let Some(last) = last {
            assert_eq!(change.version, last + 1, "{key:?} continues from v{last}");
        }
    }
    let mut seen = HashMap::new();
    for change in &changes {
        let key = (change.merchant.to_string(), change.customer_id);
        assert!(
            seen.insert(key, change.version).is_none(),
            "one net change per customer"
        );
    }

    // Same aggregates and evaluations as an owner that never died; published is current at `now`.
    let survivor = survivor(&crash.configs, now);
    for merchant in survivor.merchants() {
        let mine = restored.merchant(&merchant.id).expect("merchant restored");
        let theirs: BTreeMap<u64, _> = merchant.customers().collect();
        let ours: BTreeMap<u64, _> = mine.customers().collect();
        assert_eq!(
            theirs.keys().collect::<Vec<_>>(),
            ours.keys().collect::<Vec<_>>()
        );
        for (id, state) in ours {
            assert_eq!(
                state.aggregate, theirs[&id].aggregate,
                "{} {id}",
                merchant.id
            );
            assert_eq!(
                state.published,
                evaluate(&state.aggregate, &mine.config, now),
                "{} {id} is published as it stands now",
                merchant.id
            );
        }
        assert_eq!(
            mine.segment_counts(),
            merchant.segment_counts(),
            "{}",
            merchant.id
        );
    }
}

#[test]
fn customers_the_old_owner_already_published_as_they_stand_get_no_change() {
    let crash = crash();
    let now = day(5);
    // The new owner replays exactly what the old owner applied, at the same time: nothing is left to publish.
    let mut restored = replayed_second_batch(&crash, now);
    let outcome = restored.finish_restore(&crash.after_snapshot, now);
    assert_eq!(outcome.changes, Vec::new());
    let last = last_versions(&crash.after_snapshot);
    for ((merchant, customer), version) in last {
        let merchant = restored
            .merchants()
            .find(|m| m.id.as_str() == merchant)
            .unwrap();
        assert_eq!(merchant.customer(customer).unwrap().version, version);
    }
}

/// The new owner after replaying exactly what the old owner applied, at the same time, with its restore pending.
fn replayed_second_batch(crash: &Crash, now: Timestamp) -> PartitionCore {
    let (mut restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &crash.snapshot, &crash.configs, now).unwrap();
    restored.apply_quietly(&second_batch(), now, &crash.configs);
    restored
}

#[test]
fn versions_taken_over_are_rewritten_for_the_database_as_the_old_owner_published_them() {
    let crash = crash();
    let now = day(5);
    let mut restored = replayed_second_batch(&crash, now);
    let outcome = restored.finish_restore(&crash.after_snapshot, now);
    assert!(outcome.records.is_empty(), "rewrites publish nothing");
    let key = |p: &PublishedVersion| (p.merchant.to_string(), p.customer_id, p.version);
    let mut rewritten = published(&outcome.rewrites, &restored);
    let mut expected = crash.after_snapshot.clone();
    rewritten.sort_by_key(key);
    expected.sort_by_key(key);
    assert_eq!(
        rewritten, expected,
        "segments, scores, time and trace as published"
    );

    // Each version is rewritten once, however often the read-back holds it (it starts before the snapshot's marks).
    let mut again = replayed_second_batch(&crash, now);
    let doubled: Vec<PublishedVersion> = crash
        .after_snapshot
        .iter()
        .chain(&crash.after_snapshot)
        .cloned()
        .collect();
    assert_eq!(
        again.finish_restore(&doubled, now).rewrites.len(),
        expected.len()
    );
}

#[test]
fn a_large_restore_publishes_its_net_changes_in_chunks_and_live_events_may_come_between() {
    let configs = configs();
    let now = day(3);
    let customers = (actors::RESTORE_CHUNK * 2 + 100) as u64;
    let replay: Vec<InputEvent> = (1..=customers)
        .map(|c| order("a.myshopify.com", c, 10_000 + c, "80.00", 1))
        .collect();
    let empty = PartitionCore::new(PARTITION).encode_snapshot(&SnapshotOffsets::default());
    let (mut restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &empty, &configs, now).unwrap();
    restored.apply_quietly(&replay, now, &configs);

    let mut changes = restored.finish_restore(&[], now).changes;
    assert_eq!(changes.len(), actors::RESTORE_CHUNK, "the first chunk only");
    assert!(restored.is_restoring(), "so no snapshot is taken yet");
    // A live order of a customer still queued is published live; its chunk then finds nothing to publish.
    let live = restored.apply(
        &[order("a.myshopify.com", customers, 1, "900.00", 3)],
        now,
        &configs,
    );
    changes.extend(live.changes);
    let mut chunks = 0;
    while let Some(chunk) = restored.next_restore_chunk(now) {
        assert!(chunk.changes.len() <= actors::RESTORE_CHUNK);
        changes.extend(chunk.changes);
        chunks += 1;
    }
    assert_eq!(chunks, 2);
    assert!(!restored.is_restoring());

    let mut seen = HashMap::new();
    for change in &changes {
        let previous = seen.insert(change.customer_id, change.version);
        assert!(
            previous.is_none_or(|v| v < change.version),
            "customer {} published v{} twice or out of order",
            change.customer_id,
            change.version
        );
    }
    assert_eq!(seen.len() as u64, customers, "every customer published");
    let merchant = restored.merchant(&mid("a.myshopify.com")).unwrap();
    for (id, state) in merchant.customers() {
        assert_eq!(
            state.published,
            evaluate(&state.aggregate, &merchant.config, now),
            "{id} is published as it stands"
        );
    }
}
