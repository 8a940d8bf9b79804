//! Recency timers of a partition whose customers keep ordering: every order moves the customer's next boundary
//! and leaves a stale timer entry behind. The queue is rebuilt when stale entries dominate, and the boundaries
//! still fire once per customer.

use std::collections::HashMap;

use actors::PartitionCore;
use functions::evaluate;
use streams::InputEvent;

mod common;

use common::*;

#[test]
fn stale_timers_are_dropped_and_every_boundary_still_fires_once() {
    let configs = configs();
    let (customers, days) = (20u64, 500i64);
    let events: Vec<InputEvent> = (0..days)
        .flat_map(|d| {
            (1..=customers).map(move |c| order(ALPHA, c, (d as u64) * 100 + c, "25.00", d))
        })
        .collect();
    let mut core = PartitionCore::new(PARTITION);
    core.apply(&events, day(days), &configs);
    assert!(
        core.timers().len() > 4096 + 2 * customers as usize,
        "each order left an entry: {}",
        core.timers().len()
    );

    core.tick(day(days));
    assert_eq!(
        core.timers().len(),
        customers as usize,
        "one entry per customer after the rebuild"
    );

    let later = day(days + 400);
    let changes = core.tick(later).changes;
    let mut per_customer: HashMap<u64, usize> = HashMap::new();
    for change in &changes {
        *per_customer.entry(change.customer_id).or_default() += 1;
    }
    let merchant = core.merchant(&mid(ALPHA)).unwrap();
    for (id, state) in merchant.customers() {
        assert_eq!(per_customer.get(&id), Some(&1), "customer {id} moves once");
        assert_eq!(
            state.published,
            evaluate(&state.aggregate, &merchant.config, later)
        );
    }
}
