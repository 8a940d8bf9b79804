//! A timer wheel keyed by the second: which customers may change at which instant without a new event.
//!
//! Entries are never removed when a customer's boundary moves (a new order pushes it out); a stale entry simply
//! finds nothing to change when it fires. That keeps scheduling O(log n) with no per-customer handle to store, and
//! stale entries are bounded by the events of the last recency window.

use std::collections::BTreeMap;

use functions::Timestamp;

#[derive(Debug, Default)]
pub struct TimerWheel {
    due: BTreeMap<i64, Vec<(u32, u64)>>,
    len: usize,
}

impl TimerWheel {
    pub fn schedule(&mut self, at: Timestamp, merchant_slot: u32, customer_id: u64) {
        self.due
            .entry(at.unix())
            .or_default()
            .push((merchant_slot, customer_id));
        self.len += 1;
    }

    /// Removes and returns every entry due at or before `now`, earliest first.
    pub fn pop_due(&mut self, now: Timestamp) -> Vec<(u32, u64)> {
        let later = self.due.split_off(&(now.unix() + 1));
        let due = std::mem::replace(&mut self.due, later);
        let fired: Vec<(u32, u64)> = due.into_values().flatten().collect();
        self.len -= fired.len();
        fired
    }

    pub fn len(&self) -> usize {
        self.len
    }

    pub fn is_empty(&self) -> bool {
        self.len == 0
    }

    pub fn next_due(&self) -> Option<Timestamp> {
        self.due.keys().next().map(|s| Timestamp(*s))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn pops_only_what_is_due_in_order() {
        let mut wheel = TimerWheel::default();
        wheel.schedule(Timestamp(30), 0, 3);
        wheel.schedule(Timestamp(10), 0, 1);
        wheel.schedule(Timestamp(20), 1, 2);
        assert_eq!(wheel.pop_due(Timestamp(9)), vec![]);
        assert_eq!(wheel.pop_due(Timestamp(20)), vec![(0, 1), (1, 2)]);
        assert_eq!(wheel.len(), 1);
        assert_eq!(wheel.next_due(), Some(Timestamp(30)));
    }
}
