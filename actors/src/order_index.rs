//! The order → customer index a merchant keeps because Shopify's refund payload names the order, not the customer.
//!
//! It holds an entry for every order record of every resident customer, so it is the largest piece of state after
//! the customers and their orders. An entry is 6 bytes: a 16-bit fingerprint of the order id and the customer's
//! slot in the [`CustomerTable`](crate::customer_table::CustomerTable). Orders share fingerprints, so a lookup
//! yields candidate slots and the caller keeps the one whose customer has a record of the order: the records are
//! the truth and the index only narrows the search, which also makes an entry that outlived its customer harmless.
//! The price of 16 bits: a merchant with N orders checks about N / 65,536 candidates per lookup (one up to 65,536
//! orders, 46 at three million), and lookups happen only for refunds that arrive without their customer. Entries
//! live in a sorted vector at exactly their size; new ones go to a small hash table that is merged into the vector
//! once it holds a sixteenth as many, so the merge's copy is spread over the inserts.

use hashbrown::HashTable;

/// Below this many new entries no merge happens, so small merchants never pay for one.
const MIN_MERGE: usize = 64;

/// `[fingerprint, slot's high half, slot's low half]`: ordered as `(fingerprint, slot)`, 2-byte aligned.
type Entry = [u16; 3];

fn entry(fingerprint: u16, slot: u32) -> Entry {
    [fingerprint, (slot >> 16) as u16, slot as u16]
}

fn slot(entry: &Entry) -> u32 {
    (u32::from(entry[1]) << 16) | u32::from(entry[2])
}

#[derive(Debug, Default, Clone)]
pub struct OrderIndex {
    /// Sorted, no duplicates.
    sorted: Vec<Entry>,
    /// Entries not in `sorted`, hashed by fingerprint.
    recent: HashTable<Entry>,
}

/// The order id's fingerprint: the top of a folded 128-bit multiply, so every bit of the id counts.
pub fn fingerprint(order_id: u64) -> u16 {
    let product = u128::from(order_id) * 0xA076_1D64_78BD_642F_u128;
    (((product as u64) ^ ((product >> 64) as u64)) >> 48) as u16
}

fn bucket_hash(fingerprint: u16) -> u64 {
    u64::from(fingerprint).wrapping_mul(0x9E37_79B9_7F4A_7C15)
}

impl OrderIndex {
    /// Records that the customer in `slot` has a record of `order_id`. Not checked against what is there already:
    /// the merchant inserts only for a new record, and looking the entry up was a cache miss into the vector for
    /// every new order (2.4 % of the pipeline benchmark's samples). A repeated entry only repeats a candidate until
    /// the next merge drops it.
    pub fn insert(&mut self, order_id: u64, slot: u32) {
        let entry = entry(fingerprint(order_id), slot);
        self.recent
            .insert_unique(bucket_hash(entry[0]), entry, |e| bucket_hash(e[0]));
        if self.recent.len() > MIN_MERGE.max(self.sorted.len() / 16) {
            self.merge();
        }
    }

    /// The slots that may hold `order_id`'s customer; the caller checks each against the customer's records.
    pub fn candidates(&self, order_id: u64) -> impl Iterator<Item = u32> + '_ {
        let fp = fingerprint(order_id);
        let from = self.sorted.partition_point(|e| e[0] < fp);
        let sorted = self.sorted[from..]
            .iter()
            .take_while(move |e| e[0] == fp)
            .map(slot);
        let recent = self
            .recent
            .iter_hash(bucket_hash(fp))
            .filter(move |e| e[0] == fp)
            .map(slot);
        sorted.chain(recent)
    }

    /// Drops the entries of a customer leaving `slot` (an erasure: rare, so a pass over the vector is fine).
    pub fn remove(&mut self, slot: u32, order_ids: impl IntoIterator<Item = u64>) {
        let mut gone: Vec<Entry> = order_ids
            .into_iter()
            .map(|o| entry(fingerprint(o), slot))
            .collect();
        gone.sort_unstable();
        self.sorted.retain(|e| gone.binary_search(e).is_err());
        self.recent.retain(|e| gone.binary_search(e).is_err());
    }

    pub fn clear(&mut self) {
        *self = OrderIndex::default();
    }

    /// Entries held, counting an entry inserted twice since the last merge twice.
    pub fn len(&self) -> usize {
        self.sorted.len() + self.recent.len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Replaces every entry with one per `(order id, slot)`, at exactly their size (a restore).
    pub fn rebuild(&mut self, entries: impl IntoIterator<Item = (u64, u32)>) {
        let mut sorted: Vec<Entry> = entries
            .into_iter()
            .map(|(order, slot)| entry(fingerprint(order), slot))
            .collect();
        sorted.sort_unstable();
        sorted.dedup();
        sorted.shrink_to_fit();
        *self = OrderIndex {
            sorted,
            recent: HashTable::new(),
        };
    }

    /// Bytes held on the heap, counting capacity (and the hash table's control bytes) as used.
    pub fn heap_bytes(&self) -> usize {
        self.sorted.capacity() * std::mem::size_of::<Entry>() + self.recent.allocation_size()
    }

    /// Folds `recent` into `sorted`, allocating the result at its exact size.
    fn merge(&mut self) {
        let mut recent: Vec<Entry> = self.recent.drain().collect();
        recent.sort_unstable();
        let mut merged = Vec::with_capacity(self.sorted.len() + recent.len());
        let (mut old, mut new) = (self.sorted.iter().peekable(), recent.into_iter().peekable());
        while let (Some(a), Some(b)) = (old.peek(), new.peek()) {
            if *a < b {
                merged.extend(old.next());
            } else {
                merged.extend(new.next());
            }
        }
        merged.extend(old);
        merged.extend(new);
        merged.dedup();
        if merged.len() < merged.capacity() {
            merged.shrink_to_fit();
        }
        self.sorted = merged;
    }

    /// Every distinct entry, sorted.
    fn entries(&self) -> Vec<Entry> {
        let mut all: Vec<Entry> = self
            .sorted
            .iter()
            .chain(self.recent.iter())
            .copied()
            .collect();
        all.sort_unstable();
        all.dedup();
        all
    }
}

/// Equal when they hold the same distinct entries, however they are split between the vector and the hash table.
impl PartialEq for OrderIndex {
    fn eq(&self, other: &Self) -> bool {
        self.entries() == other.entries()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::{HashMap, HashSet};

    /// Resolves like a merchant does: the candidate whose customer (here: `owner`) has the order.
    fn resolve(index: &OrderIndex, owner: &HashMap<u64, u32>, order: u64) -> Option<u32> {
        index
            .candidates(order)
            .find(|slot| owner.get(&order) == Some(slot))
    }

    #[test]
    fn every_order_resolves_to_its_customer_across_merges_and_removals() {
        let mut index = OrderIndex::default();
        let mut owner: HashMap<u64, u32> = HashMap::new();
        // A scrambled order of arrival, with repeated inserts, crossing several merges.
        for i in 0..5_000u64 {
            let order = (i * 7_919) % 3_001 + 1_000_000_000_000;
            let slot = *owner.entry(order).or_insert((i % 97) as u32);
            index.insert(order, slot);
        }
        assert!(index.sorted.len() > index.recent.len(), "merges happened");
        index.merge();
        assert_eq!(index.len(), owner.len(), "a merge drops repeated entries");
        for (order, slot) in &owner {
            assert_eq!(resolve(&index, &owner, *order), Some(*slot));
        }
        assert_eq!(
            index.candidates(7).count(),
            0,
            "an unknown order has no candidate"
        );
        let leaving: Vec<u64> = owner
            .iter()
            .filter(|(_, s)| **s == 5)
            .map(|(o, _)| *o)
            .collect();
        index.remove(5, leaving.iter().copied());
        owner.retain(|_, s| *s != 5);
        assert_eq!(index.len(), owner.len());
        assert!(leaving.iter().all(|o| index.candidates(*o).all(|s| s != 5)));
        assert!(index.sorted.windows(2).all(|w| w[0] < w[1]));
    }

    #[test]
    fn orders_sharing_a_fingerprint_give_every_candidate() {
        // Find two order ids with one fingerprint by brute force over a small range of the high bits.
        let mut seen: HashMap<u16, u64> = HashMap::new();
        let (a, b) = (0u64..)
            .find_map(|i| {
                let order = i.wrapping_mul(0x2545_F491_4F6C_DD1D);
                seen.insert(fingerprint(order), order)
                    .map(|other| (other, order))
            })
            .unwrap();
        let mut index = OrderIndex::default();
        index.insert(a, 1);
        index.insert(b, 2);
        (0..200).for_each(|order| index.insert(order, 9)); // unrelated entries, forcing a merge
        let found: HashSet<u32> = index.candidates(a).collect();
        assert_eq!(found, HashSet::from([1, 2]));
    }

    #[test]
    fn a_rebuild_equals_the_inserted_index() {
        let (mut live, mut rebuilt) = (OrderIndex::default(), OrderIndex::default());
        let entries: Vec<(u64, u32)> = (0..500u64).map(|o| (o * 31, (o % 17) as u32)).collect();
        entries.iter().for_each(|(o, s)| live.insert(*o, *s));
        rebuilt.rebuild(entries.iter().rev().copied());
        assert_eq!(live, rebuilt);
        assert_eq!(live.entries(), rebuilt.entries());
        rebuilt.insert(4_242, 3);
        assert_ne!(live, rebuilt);
    }
}
