//! A merchant's customers, each in a stable numbered slot.
//!
//! Customers live in fixed-size chunks of 48-byte slots (id and state), found through a hash table that holds only
//! the 4-byte slot number. A `HashMap<u64, CustomerState>` keeps the whole 48-byte entry in its buckets, so its
//! spare capacity (between 1/8 and 9/16 of the buckets) costs 48 bytes a bucket; here it costs 5. A slot keeps its
//! number for as long as its customer exists, which lets the order index and the timer queue name a customer in 4
//! bytes instead of 8. A removed customer's slot is reused by the next new one; whoever holds a slot number checks
//! the id in it (the order index) or tolerates finding another customer there (a timer only re-scores).

use functions::CustomerState;
use hashbrown::HashTable;

/// Slots per chunk after the first; the first grows like a vector up to this, so a small shop stays small.
const CHUNK: usize = 1024;

#[derive(Debug, Clone, PartialEq, Eq)]
struct Slot {
    id: u64,
    /// `None` while the slot is free.
    state: Option<CustomerState>,
}

#[derive(Debug, Default)]
pub struct CustomerTable {
    chunks: Vec<Vec<Slot>>,
    index: HashTable<u32>,
    free: Vec<u32>,
}

/// A customer id's hash: one 128-bit multiply folded, so that both the low bits (bucket) and the high bits
/// (hashbrown's tag) depend on every bit of the id.
fn hash(id: u64) -> u64 {
    let product = u128::from(id) * 0x9E37_79B9_7F4A_7C15_u128;
    (product as u64) ^ ((product >> 64) as u64)
}

/// The id in `slot`, for the hash table's closures; they only see slot numbers the table holds, which exist.
fn id_at(chunks: &[Vec<Slot>], slot: u32) -> u64 {
    let slot = slot as usize;
    chunks[slot / CHUNK][slot % CHUNK].id
}

impl CustomerTable {
    pub fn len(&self) -> usize {
        self.index.len()
    }

    pub fn is_empty(&self) -> bool {
        self.index.is_empty()
    }

    fn slot(&self, slot: u32) -> Option<&Slot> {
        let slot = slot as usize;
        self.chunks.get(slot / CHUNK)?.get(slot % CHUNK)
    }

    fn slot_mut(&mut self, slot: u32) -> Option<&mut Slot> {
        let slot = slot as usize;
        self.chunks.get_mut(slot / CHUNK)?.get_mut(slot % CHUNK)
    }

    /// The slot holding `id`, if it is resident.
    pub fn slot_of(&self, id: u64) -> Option<u32> {
        let chunks = &self.chunks;
        self.index
            .find(hash(id), |&s| id_at(chunks, s) == id)
            .copied()
    }

    /// The customer in `slot`, with its id; `None` for a free or unknown slot.
    pub fn by_slot(&self, slot: u32) -> Option<(u64, &CustomerState)> {
        let slot = self.slot(slot)?;
        slot.state.as_ref().map(|state| (slot.id, state))
    }

    pub fn by_slot_mut(&mut self, slot: u32) -> Option<(u64, &mut CustomerState)> {
        let slot = self.slot_mut(slot)?;
        slot.state.as_mut().map(|state| (slot.id, state))
    }

    pub fn get(&self, id: u64) -> Option<&CustomerState> {
        self.by_slot(self.slot_of(id)?).map(|(_, state)| state)
    }

    pub fn get_mut(&mut self, id: u64) -> Option<&mut CustomerState> {
        let slot = self.slot_of(id)?;
        self.by_slot_mut(slot).map(|(_, state)| state)
    }

    /// The customer's slot and state, inserting `create()` first when it is not resident.
    pub fn get_or_insert_with(
        &mut self,
        id: u64,
        create: impl FnOnce() -> CustomerState,
    ) -> (u32, &mut CustomerState) {
        let slot = match self.slot_of(id) {
            Some(slot) => slot,
            None => self.insert_new(id, create()),
        };
        let state = self.slot_mut(slot).and_then(|s| s.state.as_mut());
        (
            slot,
            state.expect("a slot found by id or just filled holds a customer"),
        )
    }

    /// Inserts or replaces `id`'s state.
    pub fn insert(&mut self, id: u64, state: CustomerState) -> u32 {
        match self.slot_of(id) {
            Some(slot) => {
                if let Some(s) = self.slot_mut(slot) {
                    s.state = Some(state);
                }
                slot
            }
            None => self.insert_new(id, state),
        }
    }

    fn insert_new(&mut self, id: u64, state: CustomerState) -> u32 {
        let filled = Slot {
            id,
            state: Some(state),
        };
        let slot = match self.free.pop() {
            Some(slot) => {
                if let Some(s) = self.slot_mut(slot) {
                    *s = filled;
                }
                slot
            }
            None => self.push(filled),
        };
        let chunks = &self.chunks;
        self.index
            .insert_unique(hash(id), slot, |&s| hash(id_at(chunks, s)));
        slot
    }

    fn push(&mut self, filled: Slot) -> u32 {
        let last_full = self.chunks.last().is_none_or(|c| c.len() == CHUNK);
        if last_full {
            // The first chunk grows as a vector would; later ones are allocated whole, so there is no doubling
            // slack beyond one chunk.
            let capacity = if self.chunks.is_empty() { 0 } else { CHUNK };
            self.chunks.push(Vec::with_capacity(capacity));
        }
        let number = self.chunks.len() - 1;
        let chunk = &mut self.chunks[number];
        chunk.push(filled);
        u32::try_from(number * CHUNK + chunk.len() - 1)
            .expect("fewer than 2^32 customers per merchant")
    }

    /// Removes `id`, returning the slot it held and its state.
    pub fn remove(&mut self, id: u64) -> Option<(u32, CustomerState)> {
        let chunks = &self.chunks;
        let entry = self
            .index
            .find_entry(hash(id), |&s| id_at(chunks, s) == id)
            .ok()?;
        let (slot, _) = entry.remove();
        self.free.push(slot);
        let state = self.slot_mut(slot).and_then(|s| s.state.take())?;
        Some((slot, state))
    }

    pub fn clear(&mut self) {
        *self = CustomerTable::default();
    }

    /// Makes room for `additional` more customers in the hash table (the chunks grow as they fill).
    pub fn reserve(&mut self, additional: usize) {
        let chunks = &self.chunks;
        self.index.reserve(additional, |&s| hash(id_at(chunks, s)));
    }

    /// Every resident customer with its slot, in slot order.
    pub fn iter(&self) -> impl Iterator<Item = (u32, u64, &CustomerState)> {
        self.chunks
            .iter()
            .flatten()
            .enumerate()
            .filter_map(|(slot, s)| s.state.as_ref().map(|state| (slot as u32, s.id, state)))
    }

    pub fn iter_mut(&mut self) -> impl Iterator<Item = (u32, u64, &mut CustomerState)> {
        self.chunks
            .iter_mut()
            .flatten()
            .enumerate()
            .filter_map(|(slot, s)| {
                let id = s.id;
                s.state.as_mut().map(|state| (slot as u32, id, state))
            })
    }

    /// Bytes held at capacity: the chunks, the hash table and the free list, not the customers' own heap.
    pub fn heap_bytes(&self) -> usize {
        let chunks: usize = self.chunks.iter().map(Vec::capacity).sum();
        chunks * std::mem::size_of::<Slot>()
            + self.chunks.capacity() * std::mem::size_of::<Vec<Slot>>()
            + self.index.allocation_size()
            + self.free.capacity() * 4
    }
}

/// Equal when the same customers have the same states, whatever slots they sit in.
impl PartialEq for CustomerTable {
    fn eq(&self, other: &Self) -> bool {
        self.len() == other.len()
            && self
                .iter()
                .all(|(_, id, state)| other.get(id) == Some(state))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::RfmConfig;
    use std::collections::HashMap;

    fn state(version: u32) -> CustomerState {
        let mut state = CustomerState::new(&RfmConfig::default());
        state.version = version;
        state
    }

    #[test]
    fn a_slot_is_48_bytes() {
        assert_eq!(std::mem::size_of::<Slot>(), 48);
    }

    #[test]
    fn behaves_like_a_map_across_chunks_and_reused_slots() {
        let mut table = CustomerTable::default();
        let mut model: HashMap<u64, u32> = HashMap::new();
        let mut slots: HashMap<u64, u32> = HashMap::new();
        for step in 0u64..20_000 {
            let id = step.wrapping_mul(2_654_435_761) % 5_000 + 1;
            if step % 7 == 3 {
                assert_eq!(table.remove(id).map(|(_, s)| s.version), model.remove(&id));
                slots.remove(&id);
            } else {
                let (slot, s) = table.get_or_insert_with(id, || state(0));
                s.version += 1;
                *model.entry(id).or_default() += 1;
                let first = *slots.entry(id).or_insert(slot);
                assert_eq!(first, slot, "a resident customer keeps its slot");
            }
        }
        assert_eq!(table.len(), model.len());
        for (id, version) in &model {
            assert_eq!(table.get(*id).map(|s| s.version), Some(*version));
            let slot = table.slot_of(*id).unwrap();
            assert_eq!(table.by_slot(slot).map(|(i, _)| i), Some(*id));
        }
        assert_eq!(table.iter().count(), model.len());
        let most = table.iter().map(|(slot, _, _)| slot).max().unwrap() as usize;
        assert!(most < 5_000, "freed slots are reused: highest slot {most}");
        assert!(table.chunks.len() > 1, "the test crosses a chunk boundary");
    }

    #[test]
    fn equality_ignores_slots() {
        let (mut a, mut b) = (CustomerTable::default(), CustomerTable::default());
        a.insert(1, state(1));
        a.insert(2, state(2));
        b.insert(2, state(2));
        b.insert(1, state(1));
        assert_eq!(a, b);
        b.insert(1, state(5));
        assert_ne!(a, b);
    }
}
