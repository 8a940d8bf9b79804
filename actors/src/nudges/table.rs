//! The desk's table of pending nudges, kept compact because a catch-up can fill it to its cap at once: merchants
//! are interned to a number, segment keys and locales to shared strings, an experiment's id and arm names are
//! shared with its plan, and the expiry queue holds 24-byte entries.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::Arc;

use functions::{NudgeKind, Timestamp};
use streams::MerchantId;

use crate::customer::{CustomerKey, PendingNudge};

/// Interned strings beyond this are allocated per row instead, so odd input cannot grow the interner forever.
const MAX_WORDS: usize = 4096;

/// (interned merchant, customer id)
type Key = (u32, u64);

struct Held {
    /// Which insertion this row is, matched against the expiry queue's entries.
    seq: u64,
    version: u32,
    fired_at: Timestamp,
    segment: Arc<str>,
    kind: NudgeKind,
    /// Shared with the experiment's plan: no allocation per row.
    experiment_id: Option<Arc<str>>,
    variant: Arc<str>,
    locale: Option<Arc<str>>,
    trace_id: Box<str>,
    points: i64,
}

#[derive(Default)]
pub(crate) struct PendingTable {
    merchants: Vec<MerchantId>,
    merchant_ids: HashMap<MerchantId, u32>,
    words: HashSet<Arc<str>>,
    rows: HashMap<Key, Held>,
    /// Rows in the order they were held, by insertion number; an entry whose number is not its row's (the row was
    /// replaced, evicted or erased) is stale and skipped. Numbers, not versions: an erased customer who comes back
    /// restarts its versions, and an old entry must not match the new row.
    fired: VecDeque<(u32, u64, u64)>,
    next_seq: u64,
}

impl PendingTable {
    pub(crate) fn len(&self) -> usize {
        self.rows.len()
    }

    fn key(&self, key: &CustomerKey) -> Option<Key> {
        let merchant = *self.merchant_ids.get(&key.merchant)?;
        Some((merchant, key.customer_id))
    }

    fn intern_merchant(&mut self, merchant: &MerchantId) -> u32 {
        if let Some(id) = self.merchant_ids.get(merchant) {
            return *id;
        }
        let id = self.merchants.len() as u32;
        self.merchants.push(merchant.clone());
        self.merchant_ids.insert(merchant.clone(), id);
        id
    }

    fn word(&mut self, text: &str) -> Arc<str> {
        if let Some(word) = self.words.get(text) {
            return word.clone();
        }
        let word: Arc<str> = Arc::from(text);
        if self.words.len() < MAX_WORDS {
            self.words.insert(word.clone());
        }
        word
    }

    /// Holds `nudge` unless the customer's held version is as new; true when it was held.
    pub(crate) fn hold(&mut self, nudge: &PendingNudge) -> bool {
        let key = (
            self.intern_merchant(&nudge.key.merchant),
            nudge.key.customer_id,
        );
        if self
            .rows
            .get(&key)
            .is_some_and(|h| h.version >= nudge.version)
        {
            return false;
        }
        self.next_seq += 1;
        let seq = self.next_seq;
        let held = Held {
            seq,
            version: nudge.version,
            fired_at: nudge.fired_at,
            segment: self.word(&nudge.segment),
            kind: nudge.kind,
            experiment_id: nudge.experiment_id.clone(),
            variant: nudge.variant.clone(),
            locale: nudge.locale.as_deref().map(|l| self.word(l)),
            trace_id: nudge.trace_id.as_str().into(),
            points: nudge.points,
        };
        self.rows.insert(key, held);
        self.fired.push_back((key.0, key.1, seq));
        // Stale entries (replaced nudges) are dropped once they outnumber the live ones.
        if self.fired.len() > 2 * self.rows.len() + 1024 {
            self.compact();
        }
        true
    }

    pub(crate) fn get(&self, key: &CustomerKey) -> Option<PendingNudge> {
        let held = self.rows.get(&self.key(key)?)?;
        Some(PendingNudge {
            key: key.clone(),
            version: held.version,
            segment: held.segment.to_string(),
            kind: held.kind,
            experiment_id: held.experiment_id.clone(),
            variant: held.variant.clone(),
            locale: held.locale.as_deref().map(str::to_owned),
            trace_id: held.trace_id.to_string(),
            fired_at: held.fired_at,
            points: held.points,
        })
    }

    pub(crate) fn version(&self, key: &CustomerKey) -> Option<u32> {
        Some(self.rows.get(&self.key(key)?)?.version)
    }

    /// Drops the oldest rows until at most `cap` are left; how many were dropped.
    pub(crate) fn evict_beyond(&mut self, cap: usize) -> u64 {
        let mut evicted = 0;
        while self.rows.len() > cap {
            let Some((m, c, seq)) = self.fired.pop_front() else {
                break;
            };
            if live(&self.rows, &(m, c, seq)).is_some() {
                self.rows.remove(&(m, c));
                evicted += 1;
            }
        }
        evicted
    }

    /// Drops rows held for `window` seconds or more by `now`; how many were dropped.
    pub(crate) fn expire(&mut self, now: Timestamp, window: i64) -> u64 {
        let mut expired = 0;
        while let Some(&(m, c, seq)) = self.fired.front() {
            if let Some(held) = live(&self.rows, &(m, c, seq)) {
                if now.unix() - held.fired_at.unix() < window {
                    break;
                }
                self.rows.remove(&(m, c));
                expired += 1;
            }
            self.fired.pop_front();
        }
        expired
    }

    /// Drops a customer's row, or (`None`) every row of the merchant.
    pub(crate) fn forget(&mut self, merchant: &MerchantId, customer_id: Option<u64>) {
        let Some(&m) = self.merchant_ids.get(merchant) else {
            return;
        };
        match customer_id {
            Some(c) => drop(self.rows.remove(&(m, c))),
            None => self.rows.retain(|(rm, _), _| *rm != m),
        }
        // Erasures are rare; the queue keeps no trace of the erased customers.
        self.compact();
    }

    /// Drops the queue's stale entries, and gives back the room they took.
    fn compact(&mut self) {
        let rows = &self.rows;
        self.fired.retain(|entry| live(rows, entry).is_some());
        self.fired.shrink_to(2 * self.rows.len() + 1024);
    }
}

/// The row an expiry-queue entry stands for, unless the entry is stale (its row was replaced, evicted or erased).
fn live<'a>(rows: &'a HashMap<Key, Held>, &(m, c, seq): &(u32, u64, u64)) -> Option<&'a Held> {
    rows.get(&(m, c)).filter(|h| h.seq == seq)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::customer::DEFAULT_VARIANT;

    fn nudge(customer_id: u64, version: u32, at: i64) -> PendingNudge {
        PendingNudge {
            key: CustomerKey {
                merchant: MerchantId::parse("table.myshopify.com").unwrap(),
                customer_id,
            },
            version,
            segment: "loyal".into(),
            kind: NudgeKind::Loyal,
            experiment_id: None,
            variant: DEFAULT_VARIANT.into(),
            locale: None,
            trace_id: "t".into(),
            fired_at: Timestamp(at),
            points: 0,
        }
    }

    #[test]
    fn an_erased_customer_who_comes_back_is_evicted_and_expired_in_its_new_place() {
        let mut table = PendingTable::default();
        let (old, other) = (nudge(1, 2, 0), nudge(2, 2, 10));
        assert!(table.hold(&old) && table.hold(&other));
        table.forget(&old.key.merchant, Some(1));
        // The same customer and version again, the newest row now.
        assert!(table.hold(&nudge(1, 2, 20)));
        assert_eq!(table.fired.len(), 2, "the erased row left no entry");
        assert_eq!(table.evict_beyond(1), 1);
        assert!(table.get(&other.key).is_none(), "the oldest row went");
        assert!(table.get(&old.key).is_some());

        let mut table = PendingTable::default();
        table.hold(&nudge(1, 2, 0));
        table.forget(&old.key.merchant, None);
        table.hold(&nudge(1, 2, 100));
        table.hold(&nudge(2, 2, 100));
        table.hold(&nudge(3, 2, 200));
        assert_eq!(table.expire(Timestamp(250), 60), 2);
        assert_eq!(table.len(), 1);
    }
}
