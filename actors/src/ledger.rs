//! Which merchants of a partition changed since the last snapshot round: per merchant slot, the mark (length and
//! checksum) of the piece last encoded, cleared whenever the merchant changes. A leaf, so the partition core can
//! keep one without importing the snapshot code that reads it.

/// What identifies a merchant's encoded piece: its length and checksum.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub(crate) struct PieceMark {
    pub(crate) len: usize,
    pub(crate) sum: u64,
}

/// Per merchant slot, the mark of the piece last encoded for a round; none when the merchant changed since, or was
/// never encoded. Those are the merchants the next round encodes.
#[derive(Debug, Default, PartialEq)]
pub(crate) struct PieceLedger(Vec<Option<PieceMark>>);

impl PieceLedger {
    /// The merchant in `slot` changed: its piece must be encoded again.
    pub(crate) fn touch(&mut self, slot: u32) {
        if let Some(mark) = self.0.get_mut(slot as usize) {
            *mark = None;
        }
    }

    pub(crate) fn set(&mut self, slot: usize, mark: PieceMark) {
        if self.0.len() <= slot {
            self.0.resize(slot + 1, None);
        }
        self.0[slot] = Some(mark);
    }

    pub(crate) fn get(&self, slot: usize) -> Option<PieceMark> {
        self.0.get(slot).copied().flatten()
    }
}
