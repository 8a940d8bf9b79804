//! The timer queue: which customers may change at which instant without a new event.
//!
//! A binary heap of 12-byte entries (the instant in compact seconds, the merchant's slot, the customer's slot in
//! the merchant's table). Entries are never removed when a customer's boundary moves (a new order pushes it out): a
//! stale entry finds nothing to change when it fires, or, if its slot has passed to another customer since, only
//! re-scores that one. That keeps scheduling O(log n) with no per-customer handle to store. Stale entries are
//! dropped by [`TimerQueue::rebuild`], which the partition runs once the queue holds half again as many entries as
//! it has customers, so the queue stays near one entry per customer. (The `BTreeMap` keyed by the second that this
//! replaces held a node slot and a small vector per distinct second, and was never pruned.)

use std::cmp::Reverse;
use std::collections::BinaryHeap;

use functions::Timestamp;

/// `(due, merchant slot, customer slot)`, ordered by time first.
type Entry = (u32, u32, u32);

#[derive(Debug, Default)]
pub struct TimerQueue {
    heap: BinaryHeap<Reverse<Entry>>,
}

impl TimerQueue {
    pub fn schedule(&mut self, at: Timestamp, merchant_slot: u32, customer_slot: u32) {
        self.heap
            .push(Reverse((at.to_compact(), merchant_slot, customer_slot)));
    }

    /// Removes and returns every entry due at or before `now`, earliest first, each `(merchant slot, customer
    /// slot)` once.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<(u32, u32)> {
        let now = now.to_compact();
        let mut fired: Vec<(u32, u32)> = Vec::new();
        while let Some(Reverse((at, slot, customer))) = self.heap.peek().copied() {
            if at > now {
                break;
            }
            self.heap.pop();
            fired.push((slot, customer));
        }
        // Duplicates (a stale entry that fired and was scheduled again at the same boundary) need one rescore.
        let mut seen = std::collections::HashSet::with_capacity(fired.len());
        fired.retain(|entry| seen.insert(*entry));
        fired
    }

    /// Replaces every entry with `entries` (each customer's next boundary as it stands), at exactly their size.
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = (Timestamp, u32, u32)>) {
        let mut entries: Vec<Reverse<Entry>> = entries
            .into_iter()
            .map(|(at, slot, customer)| Reverse((at.to_compact(), slot, customer)))
            .collect();
        entries.shrink_to_fit();
        self.heap = BinaryHeap::from(entries);
    }

    pub fn len(&self) -> usize {
        self.heap.len()
    }

    pub fn is_empty(&self) -> bool {
        self.heap.is_empty()
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        self.heap
            .peek()
            .map(|Reverse((at, _, _))| Timestamp::from_compact(*at))
    }

    /// Bytes held on the heap, at capacity.
    pub fn heap_bytes(&self) -> usize {
        self.heap.capacity() * std::mem::size_of::<Entry>()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_700_000_000;

    #[test]
    fn pops_only_what_is_due_in_order() {
        let mut queue = TimerQueue::default();
        queue.schedule(Timestamp(T + 30), 0, 3);
        queue.schedule(Timestamp(T + 10), 0, 1);
        queue.schedule(Timestamp(T + 20), 1, 2);
        assert_eq!(queue.pop_due(Timestamp(T + 9)), vec![]);
        assert_eq!(queue.pop_due(Timestamp(T + 20)), vec![(0, 1), (1, 2)]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.next_due(), Some(Timestamp(T + 30)));
    }

    #[test]
    fn a_customer_due_twice_fires_once_and_rebuild_keeps_only_what_it_is_given() {
        let mut queue = TimerQueue::default();
        queue.schedule(Timestamp(T + 5), 0, 7);
        queue.schedule(Timestamp(T + 5), 0, 7);
        queue.schedule(Timestamp(T + 4), 0, 7);
        assert_eq!(queue.pop_due(Timestamp(T + 5)), vec![(0, 7)]);
        queue.schedule(Timestamp(T + 50), 0, 8);
        queue.rebuild([(Timestamp(T + 60), 1, 9)]);
        assert_eq!(queue.len(), 1);
        assert_eq!(queue.pop_due(Timestamp(T + 100)), vec![(1, 9)]);
    }
}
