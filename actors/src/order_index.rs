//! The order → customer index a merchant keeps because Shopify's refund payload names the order, not the customer.
//!
//! Every order of every resident customer is in it, so it is the largest piece of state after the customers
//! themselves: as a `HashMap<u64, u64>` it cost about 17 bytes per order divided by the table's load (often under
//! a half right after it doubles), about 100 bytes per customer with three orders. Here the entries live in a
//! sorted vector of exactly 16 bytes each, and new ones in a small hash map that is merged into the vector once it
//! holds an eighth as many; lookups try both. Merging copies the vector, so its cost is spread over the eighth of
//! its length that was inserted since the last merge.

use std::collections::HashMap;

/// Below this many new entries no merge happens, so small merchants never pay for one.
const MIN_MERGE: usize = 64;

#[derive(Debug, Default, Clone)]
pub struct OrderIndex {
    /// Sorted by order id, at most one entry per order.
    sorted: Vec<(u64, u64)>,
    /// Orders not in `sorted`.
    recent: HashMap<u64, u64>,
}

impl OrderIndex {
    /// Maps `order` to `customer`; returns the customer it was mapped to before, if any.
    pub fn insert(&mut self, order: u64, customer: u64) -> Option<u64> {
        if let Ok(at) = self.sorted.binary_search_by_key(&order, |(o, _)| *o) {
            return Some(std::mem::replace(&mut self.sorted[at].1, customer));
        }
        let previous = self.recent.insert(order, customer);
        if self.recent.len() > MIN_MERGE.max(self.sorted.len() / 8) {
            self.merge();
        }
        previous
    }

    pub fn get(&self, order: u64) -> Option<u64> {
        match self.sorted.binary_search_by_key(&order, |(o, _)| *o) {
            Ok(at) => Some(self.sorted[at].1),
            Err(_) => self.recent.get(&order).copied(),
        }
    }

    /// Drops every order of `customer` (an erasure: rare, so a full pass is fine).
    pub fn remove_customer(&mut self, customer: u64) {
        self.sorted.retain(|(_, c)| *c != customer);
        self.recent.retain(|_, c| *c != customer);
    }

    pub fn clear(&mut self) {
        self.sorted = Vec::new();
        self.recent = HashMap::new();
    }

    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Every `(order, customer)`, in no particular order.
    pub fn iter(&self) -> impl Iterator<Item = (u64, u64)> + '_ {
        self.sorted
            .iter()
            .copied()
            .chain(self.recent.iter().map(|(o, c)| (*o, *c)))
    }

    /// Bytes held on the heap, counting capacity (and the hash map's control bytes) as used.
    pub fn heap_bytes(&self) -> usize {
        let entry = std::mem::size_of::<(u64, u64)>();
        self.sorted.capacity() * entry + self.recent.capacity() * (entry + 1)
    }

    /// Folds `recent` into `sorted`, allocating the result at its exact size.
    fn merge(&mut self) {
        let mut recent: Vec<(u64, u64)> = self.recent.drain().collect();
        recent.sort_unstable();
        let mut merged = Vec::with_capacity(self.sorted.len() + recent.len());
        let (mut old, mut new) = (self.sorted.iter().peekable(), recent.into_iter().peekable());
        while let (Some(a), Some(b)) = (old.peek(), new.peek()) {
            if a.0 < b.0 {
                merged.extend(old.next());
            } else {
                merged.extend(new.next());
            }
        }
        merged.extend(old);
        merged.extend(new);
        self.sorted = merged;
    }
}

impl PartialEq for OrderIndex {
    /// Equal when they map the same orders to the same customers, however the entries are split.
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len() && self.iter().all(|(o, c)| other.get(o) == Some(c))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn behaves_like_a_map_across_merges() {
        let mut index = OrderIndex::default();
        let mut model = HashMap::new();
        // A scrambled order of arrival, with overwrites, crossing several merges.
        for i in 0..5_000u64 {
            let order = (i * 7_919) % 3_001;
            let customer = i % 97;
            assert_eq!(
                index.insert(order, customer),
                model.insert(order, customer),
                "insert {order}"
            );
        }
        assert_eq!(index.len(), model.len());
        for order in 0..3_100 {
            assert_eq!(index.get(order), model.get(&order).copied(), "get {order}");
        }
        index.remove_customer(5);
        model.retain(|_, c| *c != 5);
        assert_eq!(index.len(), model.len());
        assert!(index.iter().all(|(o, c)| model.get(&o) == Some(&c)));
        assert!(index.sorted.windows(2).all(|w| w[0].0 < w[1].0));
    }

    #[test]
    fn equality_ignores_how_entries_are_split() {
        let mut merged = OrderIndex::default();
        let mut recent = OrderIndex::default();
        for order in 0..200 {
            merged.insert(order, order + 1);
        }
        for order in (0..200).rev() {
            recent.recent.insert(order, order + 1);
        }
        assert_eq!(merged, recent);
        recent.insert(3, 99);
        assert_ne!(merged, recent);
    }
}
