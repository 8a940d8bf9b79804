//! Incremental snapshot rounds: a round sends the manifest and the pieces of the merchants that changed since the
//! previous one; the pieces a store has gathered over many rounds must assemble into exactly the snapshot a full
//! encoding gives, and a round the store refused must be sent again.

use std::collections::{BTreeMap, HashMap};

use actors::{
    assemble, Incarnation, PartitionCore, RecordStamp, SnapshotError, SnapshotOffsets,
    SnapshotRound, SnapshotSummary,
};
use streams::MerchantId;

mod common;

use common::*;

/// A store that keeps what rounds send, as the Postgres one does: the last manifest, one piece per merchant, and
/// the pieces of merchants a manifest no longer lists deleted.
#[derive(Default)]
struct PieceStore {
    manifest: Vec<u8>,
    pieces: HashMap<MerchantId, Vec<u8>>,
}

impl PieceStore {
    fn take(&mut self, round: &SnapshotRound) {
        self.manifest = round.manifest.clone();
        for (merchant, piece) in &round.pieces {
            self.pieces.insert(merchant.clone(), piece.clone());
        }
        self.pieces.retain(|m, _| round.merchants.contains(m));
    }

    fn whole(&self) -> Result<Vec<u8>, SnapshotError> {
        assemble(&self.manifest, |m| self.pieces.get(m).map(Vec::as_slice))
    }
}

fn offsets(next: i64) -> SnapshotOffsets {
    SnapshotOffsets::of_inputs([("orders.create", next)])
}

fn sent(round: &SnapshotRound) -> Vec<&str> {
    let mut merchants: Vec<&str> = round.pieces.iter().map(|(m, _)| m.as_str()).collect();
    merchants.sort_unstable();
    merchants
}

#[test]
fn a_round_encodes_only_the_merchants_that_changed_and_the_pieces_assemble_exactly() {
    let (mut core, configs) = built();
    let mut store = PieceStore::default();
    let none = Incarnation::default();
    let first = core.snapshot_round(&offsets(10), &none, true);
    assert_eq!(
        sent(&first),
        [ALPHA, GAMMA, SAKURA],
        "a full round sends all"
    );
    store.take(&first);
    assert_eq!(store.whole().unwrap(), core.encode_snapshot(&offsets(10)));

    let quiet = core.snapshot_round(&offsets(10), &none, false);
    assert!(
        quiet.pieces.is_empty(),
        "nothing changed: only the manifest"
    );
    store.take(&quiet);

    core.apply(&[order(SAKURA, 11, 2090, "7000", 11)], day(11), &configs);
    let round = core.snapshot_round(&offsets(11), &none, false);
    assert_eq!(sent(&round), [SAKURA]);
    assert_eq!(
        round.merchants.len(),
        3,
        "the manifest still lists everyone"
    );
    store.take(&round);
    let whole = store.whole().unwrap();
    assert_eq!(whole, core.encode_snapshot(&offsets(11)));
    let (restored, covered) = PartitionCore::decode_snapshot(PARTITION, &whole, &configs, day(11))
        .expect("the assembled snapshot decodes");
    assert_eq!(covered, offsets(11));
    assert_eq!(
        restored.merchant(&mid(SAKURA)).unwrap().customer(11),
        core.merchant(&mid(SAKURA)).unwrap().customer(11)
    );
    assert_eq!(
        restored.changed_merchants(),
        0,
        "a restored partition knows the store holds its pieces"
    );
}

#[test]
fn ticks_erasures_and_reconfigurations_make_their_merchant_changed() {
    let (mut core, configs) = built();
    let none = Incarnation::default();
    core.snapshot_round(&offsets(10), &none, true);
    // By day 12 the day-3 orders have crossed a recency boundary (R5 → R4 on day 11).
    let moved = core.tick(day(12));
    let mut moved_merchants: Vec<&str> =
        moved.changes.iter().map(|c| c.merchant.as_str()).collect();
    moved_merchants.sort_unstable();
    moved_merchants.dedup();
    assert!(!moved_merchants.is_empty(), "the tick moves someone");
    let round = core.snapshot_round(&offsets(10), &none, false);
    assert_eq!(
        sent(&round),
        moved_merchants,
        "only the merchants a tick moved"
    );
    let quiet = core.tick(day(12));
    assert!(quiet.changes.is_empty());
    assert!(core
        .snapshot_round(&offsets(10), &none, false)
        .pieces
        .is_empty());

    core.apply(&[redact(GAMMA, 20)], day(12), &configs);
    assert_eq!(
        sent(&core.snapshot_round(&offsets(11), &none, false)),
        [GAMMA]
    );
    let config = functions::RfmConfig::from_aov(functions::Money::from_minor(9_000));
    core.reconfigure(&mid(ALPHA), config, day(12));
    assert_eq!(
        sent(&core.snapshot_round(&offsets(11), &none, false)),
        [ALPHA]
    );
}

#[test]
fn a_round_the_store_refused_is_sent_again() {
    let (mut core, configs) = built();
    let mut store = PieceStore::default();
    let none = Incarnation::default();
    store.take(&core.snapshot_round(&offsets(10), &none, true));
    core.apply(&[order(ALPHA, 1, 1200, "10.00", 11)], day(11), &configs);
    let lost = core.snapshot_round(&offsets(11), &none, false);
    assert_eq!(sent(&lost), [ALPHA]);
    // The write failed; meanwhile GAMMA changed too.
    core.apply(&[created(GAMMA, 22, 11)], day(11), &configs);
    let failed: Vec<MerchantId> = lost.pieces.iter().map(|(m, _)| m.clone()).collect();
    core.restain(&failed);
    let again = core.snapshot_round(&offsets(12), &none, false);
    assert_eq!(sent(&again), [ALPHA, GAMMA]);
    store.take(&again);
    assert_eq!(store.whole().unwrap(), core.encode_snapshot(&offsets(12)));
}

#[test]
fn pieces_of_another_round_or_a_missing_piece_are_refused() {
    let (mut core, configs) = built();
    let mut store = PieceStore::default();
    let none = Incarnation::default();
    store.take(&core.snapshot_round(&offsets(10), &none, true));
    let stale_alpha = store.pieces[&mid(ALPHA)].clone();
    core.apply(&[order(ALPHA, 1, 1200, "10.00", 11)], day(11), &configs);
    store.take(&core.snapshot_round(&offsets(11), &none, false));
    assert!(store.whole().is_ok());

    let mut mixed = store.pieces.clone();
    mixed.insert(mid(ALPHA), stale_alpha);
    let assembled = assemble(&store.manifest, |m| mixed.get(m).map(Vec::as_slice));
    assert_eq!(
        assembled.err(),
        Some(SnapshotError::Corrupt(
            "a piece is not the one its manifest names"
        ))
    );
    let mut missing = store.pieces.clone();
    missing.remove(&mid(GAMMA));
    let assembled = assemble(&store.manifest, |m| missing.get(m).map(Vec::as_slice));
    assert_eq!(
        assembled.err(),
        Some(SnapshotError::Corrupt("a merchant's piece is missing"))
    );
    let mut damaged = store.manifest.clone();
    let last = damaged.len() - 1;
    damaged[last] ^= 1;
    assert_eq!(
        assemble(&damaged, |m| store.pieces.get(m).map(Vec::as_slice)).err(),
        Some(SnapshotError::ChecksumMismatch)
    );
}

#[test]
fn a_full_round_deletes_the_pieces_of_merchants_no_longer_held() {
    let (mut core, configs) = built();
    let mut store = PieceStore::default();
    let none = Incarnation::default();
    store.take(&core.snapshot_round(&offsets(10), &none, true));
    // A partition replayed from the start (its snapshot was refused) holds only what it has replayed so far.
    let mut replayed = PartitionCore::new(PARTITION);
    replayed.apply(&[created(GAMMA, 20, 0)], day(0), &configs);
    let round = replayed.snapshot_round(&offsets(1), &none, true);
    store.take(&round);
    assert_eq!(
        store
            .pieces
            .keys()
            .map(MerchantId::as_str)
            .collect::<Vec<_>>(),
        [GAMMA]
    );
    assert_eq!(
        store.whole().unwrap(),
        replayed.encode_snapshot(&offsets(1))
    );
}

#[test]
fn the_incarnation_travels_with_the_manifest() {
    let (mut core, _) = built();
    let incarnation = Incarnation {
        cluster_id: Some("cluster-7".into()),
        last: BTreeMap::from([(
            "orders.create".to_owned(),
            RecordStamp::of(9, Some(1_700_000_000_000), Some(b"alpha"), b"{}"),
        )]),
    };
    let round = core.snapshot_round(&offsets(10), &incarnation, true);
    let summary = SnapshotSummary::read(&round.whole().unwrap()).unwrap();
    assert_eq!(summary.incarnation, incarnation);
    assert_eq!(summary.offsets, offsets(10));
    assert_eq!(summary.merchants.len(), 3);
}
