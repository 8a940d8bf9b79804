//! A merchant's new configuration may reorder or drop segments: the published change must still name the segment
//! the customer left by the table it was in, and nothing may index past the new table.

use std::collections::HashMap;

use actors::{Configs, PartitionCore};
use functions::RfmConfig;
use streams::InputEvent;

mod common;

use common::{day, mid, order, ALPHA};

#[test]
fn a_move_caused_by_a_smaller_segment_table_names_the_old_segment() {
    let configs = Configs::default();
    let mut core = PartitionCore::new(0);
    let now = day(0);
    // A big spender and a one-time small buyer land in different segments of the default table.
    let mut events: Vec<InputEvent> = (1..=6).map(|n| order(ALPHA, 1, n, "900.00", 0)).collect();
    events.push(order(ALPHA, 2, 7, "5.00", 0));
    let first = core.apply(&events, now, &configs);
    let mut before: HashMap<u64, String> = HashMap::new();
    for change in first.changes {
        before.insert(change.customer_id, change.to_segment);
    }
    let default = RfmConfig::default();
    let index = |key: &str| default.segments.iter().position(|s| s.key == key).unwrap();
    assert!(
        before.values().any(|key| index(key) > 0),
        "one customer must sit past the first rule, which the smaller table no longer has: {before:?}"
    );

    // Keep only the last rule (the catch-all), so old indexes no longer exist.
    let mut smaller = default.clone();
    smaller.segments = vec![default.segments.last().unwrap().clone()];
    let outcome = core.reconfigure(&mid(ALPHA), smaller.clone(), now);

    assert_eq!(
        outcome.changes.len(),
        2,
        "both customers move into the one segment"
    );
    for change in &outcome.changes {
        assert_eq!(change.from_segment, before[&change.customer_id]);
        assert_eq!(change.to_segment, smaller.segments[0].key);
    }
    let only = &smaller.segments[0];
    assert_eq!(
        outcome.live[0].segments,
        vec![(only.key.clone(), only.display_name("en").to_owned(), 2)]
    );
}
