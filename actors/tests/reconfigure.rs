//! A merchant's new configuration may reorder or drop segments: the published change must still name the segment
//! the customer left by the table it was in, and nothing may index past the new table.

use std::collections::HashMap;

use actors::{Configs, PartitionCore};
use chrono::DateTime;
use functions::{RfmConfig, Timestamp};
use streams::events::OrderCreated;
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

const T0: i64 = 1_780_000_000;

fn shop() -> MerchantId {
    MerchantId::parse("shrink.myshopify.com").unwrap()
}

fn order(customer_id: u64, order_id: u64, price: &str) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: format!("o{order_id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: shop(),
        customer_id,
        order_id,
        total_price: price.into(),
        currency: "USD".into(),
        created_at: DateTime::from_timestamp(T0, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

#[test]
fn a_move_caused_by_a_smaller_segment_table_names_the_old_segment() {
    let configs = Configs::default();
    let mut core = PartitionCore::new(0);
    let now = Timestamp(T0);
    // A big spender and a one-time small buyer land in different segments of the default table.
    let mut events: Vec<InputEvent> = (1..=6).map(|n| order(1, n, "900.00")).collect();
    events.push(order(2, 7, "5.00"));
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
    let outcome = core.reconfigure(&shop(), smaller.clone(), now);

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
