//! A compact, versioned binary snapshot of one partition's state and the Kafka offsets it covers, so that a
//! restarted or newly assigned processor loads it, seeks and replays only what came after, instead of whole topics
//! (DESIGN.md §6, docs/RECOVERY.md). Pure code: the caller moves the bytes to and from the snapshot store.
//!
//! What can be derived is not stored: segment counts come from the published evaluations; timers from each
//! customer's next boundary; and the order → customer index from the order records (it holds all of them). Each
//! merchant's configuration is stored with its customers (format 6): configurations reach the partition on the
//! config topic, in order with the events, so the state a snapshot covers was computed under the configuration
//! the partition had at that offset, which may be older or newer than what Postgres holds when it is restored.
//! Decoding treats the bytes as untrusted: a length and a checksum frame them, every count is checked against the
//! bytes left before anything is allocated, and every value later code indexes or binary-searches with is
//! validated, so bad input is an error, never a panic.
//!
//! Layout, version 6. Version 5 lacks the configuration at the start of each piece: its merchants take the
//! configuration from [`Configs`] (Postgres), and a snapshot whose fingerprint differs from it is refused. Version
//! 4 keeps the output marks among the input offsets, each under a topic name ">{output
//! topic}:{partition}" (read into the marks). Version 3 lacks the incarnation and the piece lengths and checksums, and keeps each merchant's
//! customers right after the front without them; version 2 also lacks the tombstones at the end of each merchant
//! (read with none). Both are still read; so is version 1, which also had an order-index bit (0x80) in each order's
//! flags and, after each merchant's customers, a list of other index entries (count, then order id gap and customer
//! id each); both are ignored, since the index is rebuilt from the order records. A build older than a version
//! refuses its snapshots and replays from Kafka instead. Integers are LEB128 varints unless marked, signed ones
//! zigzag; ascending ids are written as the first id then the gaps to the next, which the decoder requires to be at
//! least one. Everything before the pieces is the *front*; stored alone, framed as "LNRM", it is a round's
//! manifest (`pieces`, `front`).
//! ```text
//! "LNRS" | format version u16 LE | total length u64 LE | partition i32 LE
//! offsets:    count, then per input topic: name length, name UTF-8, next offset (signed)
//! marks:      count, then per output partition: partition (signed), high watermark (signed)
//! incarnation: broker cluster id (length, UTF-8; empty when unknown), count, then per input topic the last record
//!             applied: name, offset (signed), timestamp ms (signed, -1 for none), digest u64 LE of key and payload
//! merchants:  count, then per merchant: id length, id, config fingerprint u64 LE, currency exponent u8,
//!             piece length, piece checksum u64 LE
//! per merchant, in that order, its piece: exactly the length its entry gives, with the checksum its entry holds
//! (the frame's checksum function over the piece alone):
//!   (version 6) configuration: length, then its JSON as Postgres stores it; length 0 for the default (the
//!     fingerprint in the front, of the configuration meant, is checked either way)
//!   customers by ascending id: id gap, version, (r-1)·25+(f-1)·5+(m-1) u8, segment u8, stage | 8 if extra u8,
//!     first seen, last engaged (compact seconds), order count, per order by ascending id:
//!     id gap, balance (signed), placed at minus the previous order's (signed), flags u8;
//!     with extra: refund ids (count, gaps), points event keys (count, u64 LE each), points (signed)
//!   orphan refunds: count, then per order by ascending id: order id gap, count, per refund: id, amount (signed)
//!   (version 3) shop erased: 0, or 1 then the time (signed); tombstones: count, then per customer by ascending
//!     id: id gap, erasure requested at (signed Unix seconds)
//! checksum u64 LE of every byte before it
//! ```

use std::collections::{BTreeMap, HashMap};

use functions::{
    AggregateParts, CustomerAggregate, CustomerState, Evaluation, LifecycleStage, Money,
    OrderRecord, RfmConfig,
};
use streams::MerchantId;

use crate::merchant::MerchantState;
use crate::partition::{Configs, PartitionCore};

use config::{read_config, starting_config, write_config, CONFIG_IN_PIECE};
use front::{piece_mark, write_front, Front, PieceMark};
use wire::{checksum, put_len, put_signed, put_varint, Gaps, Reader, FORMAT_VERSION};

mod config;
mod decode;
mod front;
mod pieces;
mod wire;

pub use front::{Incarnation, RecordStamp};
pub use pieces::{assemble, Restain, RoundAnswer, SnapshotRound, TakeSnapshotRound};

#[cfg(test)]
mod tests;

const EXTRA: u8 = 8;
/// Version 1's order-index bit.
const INDEXED_V1: u8 = 0x80;
/// Highest currency exponent this build produces (`functions::money::currency_exponent`).
const MAX_EXPONENT: u8 = 3;

/// The Kafka position a snapshot covers: where its input stops and where the output it published stops.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct SnapshotOffsets {
    /// For each input topic of the partition, the next offset to read.
    pub inputs: BTreeMap<String, i64>,
    /// The output topic's (`rfm.updated`) high watermark per partition when the snapshot was taken: a restore reads
    /// back from there what a later owner published after it.
    pub marks: BTreeMap<i32, i64>,
}

impl SnapshotOffsets {
    /// Input offsets with no output marks.
    pub fn of_inputs<'a>(inputs: impl IntoIterator<Item = (&'a str, i64)>) -> Self {
        SnapshotOffsets {
            inputs: inputs.into_iter().map(|(t, o)| (t.to_owned(), o)).collect(),
            marks: BTreeMap::new(),
        }
    }
}

/// Why a snapshot was refused. Any of these means: do not trust it, replay from Kafka instead.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SnapshotError {
    #[error("the snapshot is truncated")]
    Truncated,
    #[error("not a partition snapshot (bad magic)")]
    BadMagic,
    #[error("snapshot format version {0} is not one this build reads ({FORMAT_VERSION})")]
    UnknownVersion(u16),
    #[error("the snapshot is of partition {found}, not {expected}")]
    WrongPartition { expected: i32, found: i32 },
    #[error("the snapshot's checksum does not match its contents")]
    ChecksumMismatch,
    #[error("the snapshot was taken under another configuration of {0}")]
    ConfigChanged(MerchantId),
    #[error("the snapshot is corrupt: {0}")]
    Corrupt(&'static str),
}

use SnapshotError::Corrupt;

/// What a snapshot covers, read without decoding its customers: enough to load the merchants' configurations into
/// [`Configs`] and to compare the offsets with the topics' watermarks before calling `decode_snapshot`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct SnapshotSummary {
    pub partition: i32,
    pub offsets: SnapshotOffsets,
    /// Which incarnation of the topics the snapshot covers (empty before format 4).
    pub incarnation: Incarnation,
    pub merchants: Vec<MerchantId>,
}

impl SnapshotSummary {
    pub fn read(bytes: &[u8]) -> Result<Self, SnapshotError> {
        let (version, content) = wire::open(bytes)?;
        let front = Front::read(version, content)?;
        Ok(SnapshotSummary {
            partition: front.partition,
            offsets: front.offsets,
            incarnation: front.incarnation,
            merchants: front.merchants.into_iter().map(|m| m.id).collect(),
        })
    }
}

impl PartitionCore {
    /// The partition's state and `offsets` as one self-checking byte string, with no incarnation. Deterministic:
    /// the same state gives the same bytes whatever the hash maps' iteration order. Leaves the round ledger alone.
    pub fn encode_snapshot(&self, offsets: &SnapshotOffsets) -> Vec<u8> {
        let pieces: Vec<Vec<u8>> = self.merchants.iter().map(pieces::encode_piece).collect();
        let entries: Vec<_> = self
            .merchants
            .iter()
            .zip(&pieces)
            .map(|(merchant, piece)| pieces::entry(merchant, piece_mark(piece)))
            .collect();
        let size: usize = pieces.iter().map(Vec::len).sum();
        let mut out = wire::begin(64 + 48 * entries.len() + size);
        let incarnation = Incarnation::default();
        write_front(&mut out, self.partition, offsets, &incarnation, &entries);
        pieces.iter().for_each(|piece| out.extend_from_slice(piece));
        wire::seal(&mut out);
        out
    }
}

/// A snapshot's identity of a configuration: any change to it, thresholds included, may move customers.
pub(super) fn config_fingerprint(config: &RfmConfig) -> u64 {
    checksum(&serde_json::to_vec(config).unwrap_or_default())
}

pub(super) fn write_merchant(out: &mut Vec<u8>, merchant: &MerchantState) {
    write_config(out, &merchant.config, merchant.config_revision);
    write_merchant_body(out, merchant);
}

/// A merchant's piece after its configuration: all a piece held before format 6.
pub(super) fn write_merchant_body(out: &mut Vec<u8>, merchant: &MerchantState) {
    let mut customers: Vec<(u64, &CustomerState)> = merchant.customers().collect();
    customers.sort_unstable_by_key(|(id, _)| *id);
    put_len(out, customers.len());
    let mut ids = Gaps::default();
    for (id, state) in customers {
        ids.put(out, id);
        write_customer(out, state);
    }
    write_orphans(out, &merchant.orphan_refunds);
    write_tombstones(out, merchant);
}

fn write_tombstones(out: &mut Vec<u8>, merchant: &MerchantState) {
    match merchant.shop_erased_at {
        Some(at) => {
            out.push(1);
            put_signed(out, at);
        }
        None => out.push(0),
    }
    let mut tombstones: Vec<(&u64, &i64)> = merchant.tombstones.iter().collect();
    tombstones.sort_unstable();
    put_len(out, tombstones.len());
    let mut ids = Gaps::default();
    for (customer, at) in tombstones {
        ids.put(out, *customer);
        put_signed(out, *at);
    }
}

fn read_tombstones(r: &mut Reader<'_>, merchant: &mut MerchantState) -> Result<(), SnapshotError> {
    merchant.shop_erased_at = match r.u8()? {
        0 => None,
        1 => Some(r.signed()?),
        _ => return Err(Corrupt("shop erasure flag")),
    };
    let mut ids = Gaps::default();
    for _ in 0..r.count(2)? {
        let customer = ids.get(r)?;
        merchant.tombstones.insert(customer, r.signed()?);
    }
    Ok(())
}

fn write_customer(out: &mut Vec<u8>, state: &CustomerState) {
    put_varint(out, u64::from(state.version));
    let (segment, stage) = (state.published.segment, state.published.stage);
    out.push(state.published.rfm_code());
    out.push(segment);
    let parts = state.aggregate.parts();
    let extra =
        !parts.refund_ids.is_empty() || !parts.points_event_keys.is_empty() || parts.points != 0;
    out.push(stage as u8 | if extra { EXTRA } else { 0 });
    put_varint(out, u64::from(parts.first_seen));
    put_varint(out, u64::from(parts.last_engaged));
    put_len(out, parts.orders.len());
    let (mut ids, mut placed) = (Gaps::default(), 0);
    for order in parts.orders {
        let (order_id, balance, placed_at, flags) = order.parts();
        ids.put(out, order_id);
        put_signed(out, balance);
        // Order ids rise roughly with time, so the step from the previous order is short.
        put_signed(out, i64::from(placed_at) - i64::from(placed));
        placed = placed_at;
        out.push(flags);
    }
    if extra {
        put_len(out, parts.refund_ids.len());
        let mut refunds = Gaps::default();
        parts.refund_ids.iter().for_each(|r| refunds.put(out, *r));
        put_len(out, parts.points_event_keys.len());
        // Event keys are hashes: gaps between them would be as long as the keys, and fixed width is shorter.
        parts
            .points_event_keys
            .iter()
            .for_each(|k| out.extend_from_slice(&k.to_le_bytes()));
        put_signed(out, parts.points);
    }
}

fn write_orphans(out: &mut Vec<u8>, orphans: &HashMap<u64, Vec<(u64, Money)>>) {
    let mut orders: Vec<(&u64, &Vec<(u64, Money)>)> = orphans.iter().collect();
    orders.sort_unstable_by_key(|(order, _)| **order);
    put_len(out, orders.len());
    let mut ids = Gaps::default();
    for (order, refunds) in orders {
        ids.put(out, *order);
        put_len(out, refunds.len());
        for (refund_id, amount) in refunds {
            put_varint(out, *refund_id);
            put_signed(out, amount.minor());
        }
    }
}

/// Reusable buffers, so decoding a million customers does not allocate three temporaries each, and the format
/// version being read.
#[derive(Default)]
struct Scratch {
    version: u16,
    version_1: bool,
    orders: Vec<OrderRecord>,
    refund_ids: Vec<u64>,
    points_event_keys: Vec<u64>,
}

impl Scratch {
    fn for_version(version: u16) -> Scratch {
        Scratch {
            version,
            version_1: version == 1,
            ..Scratch::default()
        }
    }
}

/// A format-4 piece: exactly `mark.len` bytes, with `mark`'s checksum, holding one merchant and nothing more.
fn read_piece(
    r: &mut Reader<'_>,
    mark: PieceMark,
    merchant: &mut MerchantState,
    scratch: &mut Scratch,
) -> Result<(), SnapshotError> {
    let bytes = r.take(mark.len)?;
    if piece_mark(bytes) != mark {
        return Err(Corrupt("a merchant's piece does not match its checksum"));
    }
    let mut piece = Reader(bytes);
    read_merchant(&mut piece, merchant, scratch)?;
    if !piece.0.is_empty() {
        return Err(Corrupt("bytes after a merchant's piece"));
    }
    Ok(())
}

fn read_merchant(
    r: &mut Reader<'_>,
    merchant: &mut MerchantState,
    scratch: &mut Scratch,
) -> Result<(), SnapshotError> {
    if scratch.version >= CONFIG_IN_PIECE {
        let (config, revision) = read_config(r)?;
        merchant.segment_counts = vec![0; config.segments.len()];
        merchant.config = config;
        merchant.config_revision = revision;
    }
    let count = r.count(8)?;
    merchant.customers.reserve(count);
    let mut ids = Gaps::default();
    for _ in 0..count {
        let id = ids.get(r)?;
        let state = read_customer(r, &merchant.config, scratch)?;
        merchant.insert_restored(id, state);
    }
    merchant.reindex_orders();
    if scratch.version_1 {
        let mut orders = Gaps::default();
        for _ in 0..r.count(2)? {
            orders.get(r)?;
            r.varint()?;
        }
    }
    let mut orders = Gaps::default();
    for _ in 0..r.count(2)? {
        let order = orders.get(r)?;
        let n = r.count(2)?;
        let mut refunds = Vec::with_capacity(n);
        for _ in 0..n {
            refunds.push((r.varint()?, Money::from_minor(r.signed()?)));
        }
        merchant.orphan_refunds.insert(order, refunds);
    }
    if scratch.version >= 3 {
        read_tombstones(r, merchant)?;
    }
    Ok(())
}

/// Reads one customer. Segment ids are checked against the merchant's table because segment counts and published
/// changes index it.
fn read_customer(
    r: &mut Reader<'_>,
    config: &RfmConfig,
    s: &mut Scratch,
) -> Result<CustomerState, SnapshotError> {
    let version = r.u32()?;
    let (published, extra) = read_evaluation(r, config)?;
    let (first_seen, last_engaged) = (r.u32()?, r.u32()?);
    s.orders.clear();
    let (mut ids, mut placed) = (Gaps::default(), 0u32);
    for _ in 0..r.count(4)? {
        let order_id = ids.get(r)?;
        let balance = r.signed()?;
        let step = r.signed()?;
        let placed_at = i64::from(placed)
            .checked_add(step)
            .and_then(|t| u32::try_from(t).ok())
            .ok_or(Corrupt("order time out of range"))?;
        placed = placed_at;
        let flags = r.u8()?;
        let flags = if s.version_1 {
            flags & !INDEXED_V1
        } else {
            flags
        };
        let record = OrderRecord::from_parts(order_id, balance, placed_at, flags)
            .ok_or(Corrupt("unknown order flags"))?;
        s.orders.push(record);
    }
    s.refund_ids.clear();
    s.points_event_keys.clear();
    let points = if extra { read_extra(r, s)? } else { 0 };
    let aggregate = CustomerAggregate::from_parts(AggregateParts {
        orders: &s.orders,
        refund_ids: &s.refund_ids,
        points_event_keys: &s.points_event_keys,
        points,
        first_seen,
        last_engaged,
    })
    .ok_or(Corrupt("aggregate keys out of order"))?;
    Ok(CustomerState {
        aggregate,
        version,
        published,
    })
}

/// The published evaluation, and whether the customer has refunds or points.
fn read_evaluation(
    r: &mut Reader<'_>,
    config: &RfmConfig,
) -> Result<(Evaluation, bool), SnapshotError> {
    let rfm = r.u8()?;
    let segment = r.u8()?;
    if usize::from(segment) >= config.segments.len() {
        return Err(Corrupt("segment outside the merchant's table"));
    }
    let tag = r.u8()?;
    let stage = LifecycleStage::from_u8(tag & 7)
        .filter(|_| tag & !(EXTRA | 7) == 0)
        .ok_or(Corrupt("unknown lifecycle stage"))?;
    let evaluation =
        Evaluation::from_rfm_code(rfm, segment, stage).ok_or(Corrupt("score out of range"))?;
    Ok((evaluation, tag & EXTRA != 0))
}

/// Refund ids and points keys into the (cleared) scratch buffers; returns the points balance.
fn read_extra(r: &mut Reader<'_>, s: &mut Scratch) -> Result<i64, SnapshotError> {
    let mut ids = Gaps::default();
    for _ in 0..r.count(1)? {
        s.refund_ids.push(ids.get(r)?);
    }
    for _ in 0..r.count(8)? {
        s.points_event_keys.push(u64::from_le_bytes(r.array()?));
    }
    r.signed()
}
