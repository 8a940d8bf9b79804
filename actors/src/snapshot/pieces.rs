//! Incremental snapshot rounds. A partition's snapshot is a *manifest* (its front: offsets, the incarnation of the
//! topics, and per merchant the length and checksum of its piece) plus one *piece* per merchant (that merchant's
//! customers, orphan refunds and tombstones, exactly as a whole format-4 snapshot holds them). A store that keeps
//! the pieces apart (Postgres) is sent, each round, the manifest and only the pieces of merchants that changed
//! since the previous round; the partition actor encodes nothing else, so a round costs what changed rather than
//! what is held. [`assemble`] puts a manifest and its pieces back together into the whole snapshot that
//! `PartitionCore::decode_snapshot` reads, checking every piece against the manifest, so pieces of two different
//! rounds can never be mixed into one state unnoticed.
//!
//! What "changed" means is tracked per merchant slot by the [`PieceLedger`]: every applied record, recency tick that
//! moved a customer, reconfiguration and restore step clears the merchant's mark, and a round encodes the merchants
//! without one. A round the store did not take is handed back with [`Restain`], so its merchants are encoded again.

use std::collections::HashMap;

use actix::{Handler, Message, MessageResult};
use streams::MerchantId;

use super::front::{piece_mark, write_front, Front, Incarnation, MerchantEntry, PieceMark};
use super::wire::{self, HEADER, MANIFEST_MAGIC, TRAILER};

/// Manifests (and pieces) began with format 4.
const FIRST_MANIFEST_VERSION: u16 = 4;
use super::{config_fingerprint, write_merchant, SnapshotError, SnapshotOffsets};
pub(crate) use crate::ledger::PieceLedger;
use crate::merchant::MerchantState;
use crate::partition::{PartitionActor, PartitionCore};
use SnapshotError::Corrupt;

/// What one round sends to the store.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotRound {
    pub partition: i32,
    /// The manifest, framed and checksummed on its own ("LNRM").
    pub manifest: Vec<u8>,
    /// The pieces encoded this round, of merchants that changed (every merchant when `full`).
    pub pieces: Vec<(MerchantId, Vec<u8>)>,
    /// Every merchant the manifest lists, in its order. A store deletes the pieces of merchants not listed.
    pub merchants: Vec<MerchantId>,
    /// Every piece is here: the round does not depend on what the store held before.
    pub full: bool,
}

impl SnapshotRound {
    /// Bytes of the manifest and the pieces sent.
    pub fn len(&self) -> usize {
        self.manifest.len() + self.pieces.iter().map(|(_, p)| p.len()).sum::<usize>()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// The whole snapshot, for a store that keeps it in one piece. Only a full round holds every piece.
    pub fn whole(&self) -> Result<Vec<u8>, SnapshotError> {
        let pieces: HashMap<&MerchantId, &[u8]> =
            self.pieces.iter().map(|(m, p)| (m, p.as_slice())).collect();
        assemble(&self.manifest, |merchant| pieces.get(merchant).copied())
    }
}

/// The merchant's piece: what a whole snapshot holds for it after the front.
pub(super) fn encode_piece(merchant: &MerchantState) -> Vec<u8> {
    let mut out = Vec::with_capacity(16 + 48 * merchant.len());
    write_merchant(&mut out, merchant);
    out
}

pub(super) fn entry(merchant: &MerchantState, piece: PieceMark) -> MerchantEntry {
    MerchantEntry {
        id: merchant.id.clone(),
        fingerprint: config_fingerprint(&merchant.config),
        exponent: merchant.exponent,
        piece: Some(piece),
    }
}

impl PartitionCore {
    /// The next round: the manifest of the partition as it stands, covering `offsets` and `incarnation`, and the
    /// pieces of every merchant that changed since the last round (of every merchant when `full`, which the first
    /// round after a fresh start or a store conflict must be). Deterministic, like `encode_snapshot`.
    pub fn snapshot_round(
        &mut self,
        offsets: &SnapshotOffsets,
        incarnation: &Incarnation,
        full: bool,
    ) -> SnapshotRound {
        if full {
            self.pieces = PieceLedger::default();
        }
        let mut pieces = Vec::new();
        let mut entries = Vec::with_capacity(self.merchants.len());
        for (slot, merchant) in self.merchants.iter().enumerate() {
            let mark = match self.pieces.get(slot) {
                Some(mark) => mark,
                None => {
                    let piece = encode_piece(merchant);
                    let mark = piece_mark(&piece);
                    self.pieces.set(slot, mark);
                    pieces.push((merchant.id.clone(), piece));
                    mark
                }
            };
            entries.push(entry(merchant, mark));
        }
        let mut manifest = wire::begin_framed(MANIFEST_MAGIC, 64 + 48 * entries.len());
        write_front(
            &mut manifest,
            self.partition,
            offsets,
            incarnation,
            &entries,
        );
        wire::seal(&mut manifest);
        SnapshotRound {
            partition: self.partition,
            manifest,
            pieces,
            merchants: entries.into_iter().map(|e| e.id).collect(),
            full,
        }
    }

    /// The store did not take a round with these merchants' pieces: encode them again in the next.
    pub fn restain(&mut self, merchants: &[MerchantId]) {
        for merchant in merchants {
            if let Some(slot) = self.slots.get(merchant) {
                self.pieces.touch(*slot);
            }
        }
    }

    /// How many merchants the next incremental round would encode.
    pub fn changed_merchants(&self) -> usize {
        (0..self.merchants.len())
            .filter(|slot| self.pieces.get(*slot).is_none())
            .count()
    }
}

/// The whole snapshot (in the manifest's format, 4 or later) from a manifest and its merchants' pieces, looked up by `piece`. Refused when a
/// piece is missing or is not the one the manifest names (its length or checksum differs): pieces of another round
/// would make a state that never existed.
pub fn assemble<'p>(
    manifest: &[u8],
    mut piece: impl FnMut(&MerchantId) -> Option<&'p [u8]>,
) -> Result<Vec<u8>, SnapshotError> {
    let (version, content) = wire::open_framed(MANIFEST_MAGIC, manifest)?;
    if version < FIRST_MANIFEST_VERSION {
        return Err(SnapshotError::UnknownVersion(version));
    }
    let front = Front::read(version, content)?;
    if !front.rest.0.is_empty() {
        return Err(Corrupt("bytes after the manifest's merchants"));
    }
    let mut found = Vec::with_capacity(front.merchants.len());
    let mut total = HEADER + content.len() + TRAILER;
    for entry in &front.merchants {
        let bytes = piece(&entry.id).ok_or(Corrupt("a merchant's piece is missing"))?;
        if Some(piece_mark(bytes)) != entry.piece {
            return Err(Corrupt("a piece is not the one its manifest names"));
        }
        total += bytes.len();
        found.push(bytes);
    }
    // The content keeps the manifest's format, so the whole snapshot must say that format too.
    let mut out = wire::begin_versioned(wire::MAGIC, version, total);
    out.extend_from_slice(content);
    found.iter().for_each(|p| out.extend_from_slice(p));
    wire::seal(&mut out);
    Ok(out)
}

/// Asks the actor for its next snapshot round (`PartitionCore::snapshot_round`).
#[derive(Message)]
#[rtype(result = "RoundAnswer")]
pub struct TakeSnapshotRound {
    pub offsets: SnapshotOffsets,
    pub incarnation: Incarnation,
    pub full: bool,
    /// The store is known to hold a round of exactly these offsets and incarnation: answer
    /// [`RoundAnswer::Unchanged`] when no merchant changed since the last round, as that round would be the same bytes.
    pub unless_unchanged: bool,
}

/// The actor's answer to [`TakeSnapshotRound`].
#[derive(Debug)]
pub enum RoundAnswer {
    Taken(SnapshotRound),
    /// A re-score's moves are still being published (the state holds versions not yet out); the round after them
    /// covers them.
    Busy,
    /// Nothing changed since the round the store holds; nothing was encoded.
    Unchanged,
}

impl Handler<TakeSnapshotRound> for PartitionActor {
    type Result = MessageResult<TakeSnapshotRound>;

    fn handle(&mut self, msg: TakeSnapshotRound, _: &mut Self::Context) -> Self::Result {
        if self.core.has_pending_moves() {
            return MessageResult(RoundAnswer::Busy);
        }
        if msg.unless_unchanged && self.core.changed_merchants() == 0 {
            return MessageResult(RoundAnswer::Unchanged);
        }
        let round = self
            .core
            .snapshot_round(&msg.offsets, &msg.incarnation, msg.full);
        MessageResult(RoundAnswer::Taken(round))
    }
}

/// Tells the actor that a round with these merchants' pieces was not written (`PartitionCore::restain`).
#[derive(Message)]
#[rtype(result = "()")]
pub struct Restain(pub Vec<MerchantId>);

impl Handler<Restain> for PartitionActor {
    type Result = ();

    fn handle(&mut self, msg: Restain, _: &mut Self::Context) {
        self.core.restain(&msg.0);
    }
}
