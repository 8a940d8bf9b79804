//! Refunds that arrived before their order, held until the order does, within a bound per merchant.
//!
//! Delivery is unordered, so a refund can come first; most such refunds wait seconds. Some never find their order:
//! refunds of orders placed before the shop installed the app, or a producer's stream of refunds naming orders
//! that do not exist. Without a bound those would grow a merchant's memory for as long as it runs. The bound counts
//! refunds rather than orders, so one order with an endless run of refund ids is held in check too. Past it, the
//! lowest order ids go first: Shopify's order ids rise with time, so they are the oldest orders, the least likely
//! to still arrive. The rule looks only at what is held, not at when it arrived: a snapshot keeps the refunds but
//! not their arrival, and a restored merchant must evict exactly as the live one would have.

use std::collections::{BTreeSet, HashMap};
use std::ops::Deref;

use functions::money::Money;

/// Refunds held per merchant. A held refund costs about 60 bytes (its entry, its order's list and the order's
/// place in the eviction order), so a merchant's waiting refunds stay under about 60 KB.
pub const MAX_ORPHAN_REFUNDS: usize = 1_024;

/// What a bound evicted, for the caller's log line.
#[derive(Debug, Default, Clone, Copy, PartialEq, Eq)]
pub struct Evicted {
    pub orders: usize,
    pub refunds: usize,
}

/// Waiting refunds by order id: (refund id, amount) each. Reads see the map as it is (the snapshot writes it so);
/// every change goes through the methods here, which keep the eviction order and the count with it.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct OrphanRefunds {
    by_order: HashMap<u64, Vec<(u64, Money)>>,
    /// The held order ids, lowest (first evicted) first.
    orders: BTreeSet<u64>,
    refunds: usize,
}

impl Deref for OrphanRefunds {
    type Target = HashMap<u64, Vec<(u64, Money)>>;

    fn deref(&self) -> &Self::Target {
        &self.by_order
    }
}

impl OrphanRefunds {
    /// Holds a refund of an order not seen yet, once per refund id, then applies the bound. What it evicted is
    /// counted in `orphan_refunds_evicted_total`; the caller logs it with the merchant.
    pub fn hold(&mut self, order_id: u64, refund_id: u64, amount: Money) -> Evicted {
        let pending = self.by_order.entry(order_id).or_default();
        if pending.iter().any(|(id, _)| *id == refund_id) {
            return Evicted::default();
        }
        pending.push((refund_id, amount));
        self.orders.insert(order_id);
        self.refunds += 1;
        self.bound()
    }

    /// Sets an order's refunds as a snapshot stored them, then applies the bound: a snapshot written before the
    /// bound existed may hold more.
    pub fn insert(&mut self, order_id: u64, refunds: Vec<(u64, Money)>) -> Evicted {
        self.take(order_id);
        if refunds.is_empty() {
            return Evicted::default();
        }
        self.refunds += refunds.len();
        self.orders.insert(order_id);
        self.by_order.insert(order_id, refunds);
        let evicted = self.bound();
        if evicted.refunds > 0 {
            tracing::debug!(
                orders = evicted.orders,
                refunds = evicted.refunds,
                "a restored merchant held more orphan refunds than the bound; the oldest orders' were dropped"
            );
        }
        evicted
    }

    /// The refunds waiting for `order_id`, which has now arrived.
    pub fn take(&mut self, order_id: u64) -> Vec<(u64, Money)> {
        let Some(refunds) = self.by_order.remove(&order_id) else {
            return Vec::new();
        };
        self.orders.remove(&order_id);
        self.refunds -= refunds.len();
        refunds
    }

    pub fn clear(&mut self) {
        *self = OrphanRefunds::default();
    }

    /// Refunds held, over all orders.
    pub fn refunds(&self) -> usize {
        self.refunds
    }

    /// Bytes held on the heap: the map's buckets, each order's list and the eviction order (about 1.5 words an
    /// entry for a B-tree's nodes).
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, Vec<(u64, Money)>)>() + 1;
        let lists: usize = self
            .by_order
            .values()
            .map(|v| v.capacity() * std::mem::size_of::<(u64, Money)>())
            .sum();
        self.by_order.capacity() * entry + lists + self.orders.len() * 12
    }

    fn bound(&mut self) -> Evicted {
        let mut evicted = Evicted::default();
        while self.refunds > MAX_ORPHAN_REFUNDS {
            let Some(order_id) = self.orders.pop_first() else {
                break;
            };
            let refunds = self.by_order.remove(&order_id).map_or(0, |v| v.len());
            self.refunds -= refunds;
            evicted.orders += 1;
            evicted.refunds += refunds;
        }
        if evicted.refunds > 0 {
            metrics::counter!(streams::metric_names::ORPHAN_REFUNDS_EVICTED)
                .increment(evicted.refunds as u64);
        }
        evicted
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn an_oversized_snapshot_keeps_the_highest_orders_as_the_live_bound_would() {
        let mut live = OrphanRefunds::default();
        let mut restored = OrphanRefunds::default();
        let orders = 3 * MAX_ORPHAN_REFUNDS as u64;
        for order in 1..=orders {
            live.hold(order, order, Money::from_minor(100));
        }
        // A snapshot from before the bound, read back in its ascending order.
        for order in 1..=orders {
            restored.insert(order, vec![(order, Money::from_minor(100))]);
        }
        assert_eq!(live, restored);
        assert_eq!(restored.refunds(), MAX_ORPHAN_REFUNDS);
        let lowest_kept = orders - MAX_ORPHAN_REFUNDS as u64 + 1;
        assert!(restored.keys().all(|order| *order >= lowest_kept));
        assert_eq!(restored.take(orders).len(), 1);
        assert_eq!(restored.refunds(), MAX_ORPHAN_REFUNDS - 1);
    }
}
