//! A configuration of a merchant bigger than one chunk: the step that applies it re-scores and publishes none of
//! its moves, each later step at most `MOVES_CHUNK`, other merchants' events in the same and later steps are applied at once, a customer's
//! waiting move is published just before its own next change, and once every move is out the changes, versions
//! and recency boundaries are those of re-scoring the merchant in one step.

mod common;

use std::collections::BTreeMap;

use actors::{Change, Configs, PartitionCore, MOVES_CHUNK};
use common::*;
use functions::{Money, RfmConfig};
use streams::events::ConfigChanged;
use streams::{InputEvent, SCHEMA_VERSION};

const CUSTOMERS: u64 = 3 * MOVES_CHUNK as u64;

/// Thresholds from a $40 AOV and other recency bounds: most customers move.
fn own() -> RfmConfig {
    let mut config = RfmConfig::from_aov(Money::from_minor(4_000));
    config.recency_days = [14, 45, 90, 180];
    config
}

fn config_event() -> InputEvent {
    InputEvent::ConfigChanged(ConfigChanged {
        event_id: "config-big".into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: mid(ALPHA),
        config: own(),
        saved_at: at(0),
        revision: Some(1),
    })
}

/// `ALPHA` with customers of one to three orders, $12 to $300, 0 to 399 days old.
fn big() -> PartitionCore {
    let mut core = PartitionCore::new(PARTITION);
    let events: Vec<InputEvent> = (1..=CUSTOMERS)
        .flat_map(|c| {
            (0..1 + c % 3).map(move |o| {
                let cents = 1_200 + (c * 37 + o * 101) % 28_800;
                let price = format!("{}.{:02}", cents / 100, cents % 100);
                order(
                    ALPHA,
                    c,
                    c * 4 + o,
                    &price,
                    -(((c * 7 + o * 31) % 400) as i64),
                )
            })
        })
        .collect();
    for chunk in events.chunks(10_000) {
        core.apply(chunk, day(0), &Configs::default());
    }
    core
}

/// A change without its trace (the one-step re-score names its time, the event its id).
type Key = (u64, u32, String, String);

fn keyed(changes: &[Change]) -> BTreeMap<(u64, u32), Key> {
    changes
        .iter()
        .map(|c| {
            let key = (c.customer_id, c.version);
            let value = (
                c.customer_id,
                c.version,
                c.from_segment.clone(),
                c.to_segment.clone(),
            );
            (key, value)
        })
        .collect()
}

#[test]
fn a_big_reconfiguration_is_published_in_chunks_between_other_merchants_events() {
    let configs = Configs::default();
    let mut chunked = big();
    let mut whole = big();
    let all_at_once = whole.reconfigure(&mid(ALPHA), own(), day(0)).changes;
    assert!(
        all_at_once.len() > 2 * MOVES_CHUNK,
        "most customers move: {}",
        all_at_once.len()
    );

    // The configuration and another merchant's order in one batch: the order's change is out at once.
    let first = chunked.apply(
        &[config_event(), order(GAMMA, 1, 1, "30.00", 0)],
        day(0),
        &configs,
    );
    let (gamma, moves): (Vec<Change>, Vec<Change>) = first
        .changes
        .into_iter()
        .partition(|c| c.merchant == mid(GAMMA));
    assert_eq!(gamma.len(), 1);
    // Re-scoring the whole merchant is that step's allowance: its moves start with the next step.
    assert!(moves.is_empty(), "{} moves in the first step", moves.len());
    assert!(chunked.has_pending_moves());
    let mut published = moves;

    // The last customer's move is still waiting: its order publishes it first, then the order's own change.
    let last = all_at_once
        .iter()
        .map(|c| c.customer_id)
        .max()
        .expect("moves");
    let next = chunked.apply(
        &[order(ALPHA, last, 9_999_999, "50.00", 0)],
        day(0),
        &configs,
    );
    let of_last: Vec<(u32, &str)> = next
        .changes
        .iter()
        .filter(|c| c.customer_id == last)
        .map(|c| (c.version, c.trace_id.as_str()))
        .collect();
    let version = all_at_once
        .iter()
        .find(|c| c.customer_id == last)
        .map(|c| c.version);
    assert_eq!(of_last[0], (version.expect("moved"), "config-big"));
    assert_eq!(
        of_last[1].0,
        of_last[0].0 + 1,
        "the order's change follows, one version on"
    );
    published.extend(
        next.changes
            .into_iter()
            .filter(|c| c.trace_id == "config-big"),
    );

    let mut steps = 2;
    while chunked.has_pending_moves() {
        let outcome = chunked.apply(&[], day(0), &configs);
        assert!(outcome.changes.len() <= MOVES_CHUNK);
        published.extend(outcome.changes);
        steps += 1;
    }
    assert!(steps >= 3, "{steps} steps");
    assert_eq!(published.len(), all_at_once.len(), "each move once");
    assert!(keyed(&published) == keyed(&all_at_once), "the same moves");

    // Every boundary was scheduled: a month later both fire the same recency moves (the last customer aside,
    // whose order changed it).
    let later = |core: &mut PartitionCore| {
        let mut changes = core.tick(day(30)).changes;
        changes.retain(|c| c.customer_id != last && c.merchant == mid(ALPHA));
        keyed(&changes)
    };
    let (a, b) = (later(&mut chunked), later(&mut whole));
    assert!(!a.is_empty());
    assert!(a == b, "{} and {} boundary moves", a.len(), b.len());
}
