use std::time::Duration;

use functions::Timestamp;

use super::*;
use crate::clock::ManualClock;
use crate::customer::PendingNudge;
use crate::partition::{test_change, Change};

const SHOP: &str = "desk.myshopify.com";
const OTHER: &str = "other.myshopify.com";
const T0: Timestamp = Timestamp(1_790_000_000);

fn desk(config: NudgeDeskConfig) -> (NudgeDesk, ManualClock) {
    let clock = ManualClock::new(T0);
    (config.build(Arc::new(clock.clone())), clock)
}

fn quick() -> NudgeDeskConfig {
    NudgeDeskConfig {
        linger: Duration::from_millis(10),
        ..NudgeDeskConfig::default()
    }
}

fn key(shop: &str, customer_id: u64) -> CustomerKey {
    CustomerKey {
        merchant: MerchantId::parse(shop).unwrap(),
        customer_id,
    }
}

/// A change of `customer` to `version` that moves it from "new" to `to`.
fn moved(shop: &str, customer_id: u64, version: u32, to: &str) -> Change {
    test_change(shop, customer_id, version, "new", to)
}

fn nudges(changes: &[Change]) -> Vec<PendingNudge> {
    changes.iter().filter_map(PendingNudge::of).collect()
}

/// Waits until the desk's counts satisfy `done`: passivation happens on the desk's arbiter after a linger, so the
/// test observes it rather than guessing how long it takes.
async fn eventually(desk: &NudgeDesk, done: impl Fn(&DeskStats) -> bool) -> DeskStats {
    let deadline = std::time::Instant::now() + Duration::from_secs(10);
    loop {
        let stats = desk.stats().await;
        if done(&stats) {
            return stats;
        }
        assert!(
            std::time::Instant::now() < deadline,
            "desk never reached the state: {stats:?}"
        );
        tokio::time::sleep(Duration::from_millis(5)).await;
    }
}

async fn next(updates: &mut mpsc::Receiver<Arc<PendingNudge>>) -> Option<Arc<PendingNudge>> {
    tokio::time::timeout(Duration::from_secs(10), updates.recv())
        .await
        .expect("an update or the end of the stream")
}

#[actix::test]
async fn a_fired_nudge_waits_without_an_actor_and_an_older_version_never_replaces_it() {
    let (desk, _) = desk(quick());
    desk.offer(nudges(&[moved(SHOP, 1, 2, "loyal")])).await;
    desk.offer(nudges(&[moved(SHOP, 1, 1, "at_risk")])).await;
    // No segment change, no nudge.
    desk.offer(nudges(&[moved(SHOP, 2, 5, "new")])).await;

    let held = desk.current(key(SHOP, 1)).await.expect("pending");
    assert_eq!((held.version, held.segment.as_str()), (2, "loyal"));
    assert_eq!(held.nudge_id(), "nudge:desk.myshopify.com:1:2");
    assert_eq!(desk.current(key(SHOP, 2)).await, None);
    let stats = desk.stats().await;
    assert_eq!((stats.pending, stats.active, stats.activations), (1, 0, 0));
}

#[actix::test]
async fn a_watch_activates_the_customer_gets_the_current_then_each_newer_nudge_and_passivates_after(
) {
    let (desk, _) = desk(quick());
    desk.offer(nudges(&[moved(SHOP, 7, 2, "loyal")])).await;
    let mut watching = desk.watch(key(SHOP, 7)).await.unwrap();
    assert_eq!(watching.current.as_ref().map(|n| n.version), Some(2));
    assert_eq!(desk.stats().await.active, 1);

    desk.offer(nudges(&[moved(SHOP, 7, 3, "champions")])).await;
    // A replay of version 3 and an older version are not pushed again; version 4 is next on the stream.
    desk.offer(nudges(&[
        moved(SHOP, 7, 3, "champions"),
        moved(SHOP, 7, 1, "x"),
    ]))
    .await;
    desk.offer(nudges(&[moved(SHOP, 7, 4, "at_risk")])).await;
    let third = next(&mut watching.updates).await.unwrap();
    assert_eq!((third.version, third.segment.as_str()), (3, "champions"));
    assert_eq!(next(&mut watching.updates).await.unwrap().version, 4);

    drop(watching);
    let stats = eventually(&desk, |s| s.active == 0).await;
    assert_eq!((stats.activations, stats.passivations), (1, 1));
    // The nudge outlives the actor, and a new watch is a new activation that starts from it.
    let again = desk.watch(key(SHOP, 7)).await.unwrap();
    assert_eq!(again.current.map(|n| n.version), Some(4));
    assert_eq!(desk.stats().await.activations, 2);
}

#[actix::test]
async fn two_watchers_share_one_actor_which_stays_while_either_is_open() {
    let (desk, _) = desk(quick());
    let first = desk.watch(key(SHOP, 3)).await.unwrap();
    let mut second = desk.watch(key(SHOP, 3)).await.unwrap();
    assert_eq!(desk.stats().await.activations, 1);
    drop(first);
    desk.offer(nudges(&[moved(SHOP, 3, 2, "loyal")])).await;
    assert_eq!(next(&mut second.updates).await.unwrap().version, 2);
    assert_eq!(desk.stats().await.active, 1);
    drop(second);
    eventually(&desk, |s| s.active == 0 && s.passivations == 1).await;
}

#[actix::test]
async fn erasing_a_customer_or_a_shop_drops_its_nudges_and_closes_its_watchers() {
    let (desk, _) = desk(quick());
    let changes = [
        moved(SHOP, 1, 2, "loyal"),
        moved(SHOP, 2, 2, "loyal"),
        moved(OTHER, 1, 2, "loyal"),
    ];
    desk.offer(nudges(&changes)).await;
    let mut one = desk.watch(key(SHOP, 1)).await.unwrap();
    let mut two = desk.watch(key(SHOP, 2)).await.unwrap();
    let mut other = desk.watch(key(OTHER, 1)).await.unwrap();

    desk.forget(&key(SHOP, 1).merchant, Some(1)).await;
    assert_eq!(next(&mut one.updates).await, None, "stream ends");
    assert_eq!(desk.current(key(SHOP, 1)).await, None);
    assert!(desk.current(key(SHOP, 2)).await.is_some());

    desk.forget(&key(SHOP, 2).merchant, None).await;
    assert_eq!(next(&mut two.updates).await, None);
    assert_eq!(desk.current(key(SHOP, 2)).await, None);

    // The other shop's customer with the same id is untouched and still gets its nudges.
    desk.offer(nudges(&[moved(OTHER, 1, 3, "champions")])).await;
    assert_eq!(next(&mut other.updates).await.unwrap().version, 3);
    let stats = eventually(&desk, |s| s.active == 1).await;
    assert_eq!(stats.pending, 1);
}

#[actix::test]
async fn past_the_cap_the_oldest_nudges_are_evicted_and_past_the_window_they_expire() {
    let config = NudgeDeskConfig {
        max_pending: 3,
        pending_for: Duration::from_secs(60),
        ..quick()
    };
    let (desk, clock) = desk(config);
    for customer in 1..=5 {
        desk.offer(nudges(&[moved(SHOP, customer, 2, "loyal")]))
            .await;
    }
    let stats = desk.stats().await;
    assert_eq!((stats.pending, stats.evicted), (3, 2));
    assert_eq!(desk.current(key(SHOP, 2)).await, None);
    assert!(desk.current(key(SHOP, 3)).await.is_some());

    // Customer 3 fires again later, so it is the only one still pending once the first three are past the window.
    clock.set(Timestamp(T0.unix() + 30));
    desk.offer(nudges(&[moved(SHOP, 3, 3, "champions")])).await;
    clock.set(Timestamp(T0.unix() + 61));
    desk.sweep().await;
    let stats = desk.stats().await;
    assert_eq!((stats.pending, stats.expired), (1, 2));
    assert_eq!(desk.current(key(SHOP, 3)).await.map(|n| n.version), Some(3));
}

#[actix::test]
async fn a_watcher_that_stops_reading_is_disconnected_and_gets_the_latest_on_return() {
    // A long linger: the stream must end because the watcher lagged, not because the actor passivated.
    let config = NudgeDeskConfig {
        watcher_buffer: 1,
        linger: Duration::from_secs(600),
        ..NudgeDeskConfig::default()
    };
    let (desk, _) = desk(config);
    let mut slow = desk.watch(key(SHOP, 9)).await.unwrap();
    desk.offer(nudges(&[moved(SHOP, 9, 2, "loyal")])).await;
    desk.offer(nudges(&[moved(SHOP, 9, 3, "champions")])).await;
    // Version 3 must meet the full buffer, so nothing is read before the actor has handled it.
    desk.settle().await;
    assert_eq!(next(&mut slow.updates).await.unwrap().version, 2);
    assert_eq!(next(&mut slow.updates).await, None, "disconnected");
    let stats = desk.stats().await;
    assert_eq!(
        (stats.active, stats.passivations),
        (1, 0),
        "the actor stays"
    );
    let back = desk.watch(key(SHOP, 9)).await.unwrap();
    assert_eq!(back.current.map(|n| n.version), Some(3));
}
