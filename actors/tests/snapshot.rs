//! The partition snapshot codec against the engine itself: a partition built from a realistic event mix, encoded
//! and decoded, must hold the same customers and behave the same from then on; damaged or foreign bytes must be
//! refused without a panic.

use std::collections::BTreeMap;
use std::time::Instant;

use actors::{merchant::MerchantState, SnapshotSummary};
use actors::{Change, Configs, Outcome, PartitionCore, SnapshotError, SnapshotOffsets};
use functions::CustomerState;
use proptest::prelude::*;
use streams::InputEvent;

mod common;

use common::*;

fn offsets() -> SnapshotOffsets {
    SnapshotOffsets {
        inputs: BTreeMap::from([
            ("orders.create".to_owned(), 41),
            ("refunds.create".to_owned(), 7),
            ("points.earned".to_owned(), 0),
        ]),
        marks: BTreeMap::from([(0, 9), (1, 0)]),
    }
}

fn customers(m: &MerchantState) -> BTreeMap<u64, CustomerState> {
    m.customers().map(|(id, c)| (id, c.clone())).collect()
}

fn assert_same_state(a: &PartitionCore, b: &PartitionCore) {
    let ids = |c: &PartitionCore| c.merchants().map(|m| m.id.clone()).collect::<Vec<_>>();
    assert_eq!(ids(a), ids(b), "merchants, in slot order");
    for (ma, mb) in a.merchants().zip(b.merchants()) {
        assert_eq!(ma.config, mb.config);
        assert_eq!(ma.currency_exponent(), mb.currency_exponent());
        assert_eq!(ma.segment_counts(), mb.segment_counts());
        assert_eq!(customers(ma), customers(mb));
    }
}

/// Timers fire in scheduling order within a second, which a restore does not reproduce; the set is what counts.
fn sorted(outcome: Outcome) -> (Vec<Change>, Vec<String>) {
    let mut changes = outcome.changes;
    changes.sort_by_key(|c| (c.merchant.clone(), c.customer_id, c.version));
    let mut live: Vec<String> = outcome.live.iter().map(|l| format!("{l:?}")).collect();
    live.sort();
    (changes, live)
}

#[test]
fn round_trip_keeps_every_customer_and_the_future() {
    let (mut original, configs) = built();
    let bytes = original.encode_snapshot(&offsets());
    let (mut restored, covered) =
        PartitionCore::decode_snapshot(PARTITION, &bytes, &configs, day(12)).unwrap();
    assert_eq!(covered, offsets());
    assert_same_state(&original, &restored);
    assert_eq!(
        restored.merchant(&mid(SAKURA)).unwrap().currency_exponent(),
        0
    );
    assert_eq!(
        restored.encode_snapshot(&covered),
        bytes,
        "exact, index and orphans included"
    );

    let (a, b) = (original.tick(day(12)), restored.tick(day(12)));
    assert!(
        !a.changes.is_empty(),
        "day-3 orders crossed R5 → R4 on day 11"
    );
    assert_eq!(sorted(a), sorted(b));
    let (a, b) = (
        original.apply(&later_batch(), day(12), &configs),
        restored.apply(&later_batch(), day(12), &configs),
    );
    assert!(a.changes.len() >= 5, "{:?}", a.changes);
    assert_eq!(a.changes, b.changes);
    assert_eq!(a.live, b.live);
    assert_eq!(a.redactions, b.redactions);
    for d in [13, 20, 40, 70, 100, 400] {
        assert_eq!(
            sorted(original.tick(day(d))),
            sorted(restored.tick(day(d))),
            "day {d}"
        );
    }
    assert_same_state(&original, &restored);
}

#[test]
fn a_boundary_passed_while_unowned_fires_on_the_first_tick() {
    let configs = configs();
    let mut original = PartitionCore::new(PARTITION);
    original.apply(&first_batch(), day(0), &configs);
    let bytes = original.encode_snapshot(&offsets());
    let (mut restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &bytes, &configs, day(20)).unwrap();
    let (a, b) = (original.tick(day(20)), restored.tick(day(20)));
    assert!(a.changes.iter().any(|c| c.rfm.recency == 4));
    assert_eq!(sorted(a), sorted(b));
}

#[test]
fn every_prefix_is_refused_as_truncated() {
    let bytes = built().0.encode_snapshot(&offsets());
    let configs = configs();
    for len in 0..bytes.len() {
        let result = PartitionCore::decode_snapshot(PARTITION, &bytes[..len], &configs, day(12));
        assert_eq!(result.err(), Some(SnapshotError::Truncated), "prefix {len}");
    }
}

#[test]
fn every_bit_flip_is_refused() {
    let bytes = built().0.encode_snapshot(&offsets());
    let configs = configs();
    for i in 0..bytes.len() {
        for bit in 0..8 {
            let mut damaged = bytes.clone();
            damaged[i] ^= 1 << bit;
            let error = PartitionCore::decode_snapshot(PARTITION, &damaged, &configs, day(12))
                .err()
                .unwrap_or_else(|| panic!("byte {i} bit {bit} went unnoticed"));
            if i >= 14 {
                assert_eq!(error, SnapshotError::ChecksumMismatch, "byte {i} bit {bit}");
            }
        }
    }
}

#[test]
fn foreign_snapshots_are_refused() {
    let (core, configs) = built();
    let bytes = core.encode_snapshot(&offsets());
    let decode = |bytes: &[u8], partition, configs: &Configs| {
        PartitionCore::decode_snapshot(partition, bytes, configs, day(12)).err()
    };
    let wrong = SnapshotError::WrongPartition {
        expected: 4,
        found: PARTITION,
    };
    assert_eq!(decode(&bytes, 4, &configs), Some(wrong));
    // The snapshot carries each merchant's configuration, so whatever Postgres holds now does not matter.
    let (restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &bytes, &Configs::default(), day(12))
            .expect("a snapshot restores without the configurations");
    let sakura = configs.get(&mid(SAKURA)).map(|c| c.clone());
    assert_eq!(
        restored.merchant(&mid(SAKURA)).map(|m| m.config.clone()),
        sakura
    );
    for version in [0, 7] {
        let mut other = bytes.clone();
        other[4] = version;
        assert_eq!(
            decode(&other, PARTITION, &configs),
            Some(SnapshotError::UnknownVersion(u16::from(version)))
        );
    }
    assert_eq!(
        decode(b"{\"json\": 1}", PARTITION, &configs),
        Some(SnapshotError::BadMagic)
    );
    let mut longer = bytes.clone();
    longer.push(0);
    assert!(decode(&longer, PARTITION, &configs).is_some());
}

#[test]
fn summary_names_merchants_and_offsets_without_decoding() {
    let bytes = built().0.encode_snapshot(&offsets());
    let summary = SnapshotSummary::read(&bytes).unwrap();
    assert_eq!(summary.partition, PARTITION);
    assert_eq!(summary.offsets, offsets());
    assert_eq!(summary.merchants, vec![mid(ALPHA), mid(SAKURA), mid(GAMMA)]);
}

#[test]
fn an_empty_partition_round_trips() {
    let core = PartitionCore::new(PARTITION);
    let bytes = core.encode_snapshot(&SnapshotOffsets::default());
    let (restored, offsets) =
        PartitionCore::decode_snapshot(PARTITION, &bytes, &Configs::default(), day(0)).unwrap();
    assert_eq!(restored.merchants().count(), 0);
    assert_eq!(offsets, SnapshotOffsets::default());
    assert!(restored.timers().is_empty());
}

/// Not a benchmark: prints the encoded size of a shop with realistic Shopify ids (13 digits, customers and orders
/// interleaved) so the figure can be tracked; the bound only catches a format that grew by accident.
#[test]
fn encoded_size_per_customer() {
    const CUSTOMERS: u64 = 100_000;
    let configs = Configs::default();
    let mut core = PartitionCore::new(PARTITION);
    for round in 0..3u64 {
        let events: Vec<InputEvent> = (0..CUSTOMERS)
            .map(|i| {
                let customer = 6_812_345_000_000 + i * 1_000_003;
                let order_id = 5_412_000_000_000 + (round * CUSTOMERS + i) * 1_009;
                let price = format!("{}.{:02}", 20 + (i * 7 + round * 31) % 180, i % 100);
                order(ALPHA, customer, order_id, &price, round as i64 * 20 - 60)
            })
            .collect();
        core.apply(&events, day(0), &configs);
    }
    let started = Instant::now();
    let bytes = core.encode_snapshot(&offsets());
    let encoded = started.elapsed();
    let started = Instant::now();
    let (restored, _) =
        PartitionCore::decode_snapshot(PARTITION, &bytes, &configs, day(0)).unwrap();
    let decoded = started.elapsed();
    let per_customer = bytes.len() as f64 / CUSTOMERS as f64;
    let in_memory = core
        .merchants()
        .map(MerchantState::state_bytes)
        .sum::<usize>();
    println!(
        "{CUSTOMERS} customers × 3 orders: {} bytes, {per_customer:.1} bytes/customer \
         (in memory {:.1}); {} build: encode {encoded:?}, decode {decoded:?}",
        bytes.len(),
        in_memory as f64 / CUSTOMERS as f64,
        if cfg!(debug_assertions) {
            "debug"
        } else {
            "release"
        },
    );
    assert_eq!(
        restored.merchant(&mid(ALPHA)).unwrap().len(),
        CUSTOMERS as usize
    );
    assert!(per_customer < 64.0, "{per_customer} bytes per customer");
}

proptest! {
    #[test]
    fn arbitrary_bytes_never_panic(bytes in prop::collection::vec(any::<u8>(), 0..600)) {
        let _ = PartitionCore::decode_snapshot(PARTITION, &bytes, &configs(), day(0));
        let _ = SnapshotSummary::read(&bytes);
    }

    #[test]
    fn arbitrary_bytes_behind_the_magic_never_panic(tail in prop::collection::vec(any::<u8>(), 0..600)) {
        let mut bytes = b"LNRS\x01\x00".to_vec();
        bytes.extend(tail);
        let result = PartitionCore::decode_snapshot(PARTITION, &bytes, &configs(), day(0));
        prop_assert!(result.is_err());
    }
}
