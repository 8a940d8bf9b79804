//! The snapshot codec from the inside: state that events cannot produce, and damaged contents behind a valid frame
//! (a checksum collision or an encoder bug), which must be refused without a panic.

use functions::{Fact, Timestamp};
use proptest::prelude::*;

use super::wire::put_str;
use super::*;

const T0: i64 = 1_780_000_000;

/// Built from facts rather than events, as a restore builds it.
fn sample() -> PartitionCore {
    let mut core = PartitionCore::new(7);
    let m = sample_merchant("fuzz.myshopify.com", 12);
    core.slots.insert(m.id.clone(), 0);
    core.merchants.push(m);
    core
}

/// A merchant of `customers` customers with orders, refunds, points, orphan refunds and tombstones.
fn sample_merchant(shop: &str, customers: u64) -> MerchantState {
    let config = RfmConfig::default();
    let id = MerchantId::parse(shop).unwrap();
    let mut m = MerchantState::new(id, config.clone());
    for c in 1..=customers {
        let mut state = CustomerState::new(&config);
        for o in 0..c % 4 {
            let fact = Fact::OrderPlaced {
                order_id: c * 100 + o,
                total: Money::from_minor(2_500 * (o as i64 + 1)),
                placed_at: Timestamp(T0).plus_days(-(c as i64)),
                excluded: o == 2,
                cancelled: false,
            };
            state.apply(&fact, &config, Timestamp(T0));
        }
        if c % 3 == 0 {
            let refund = Fact::Refunded {
                order_id: c * 100,
                refund_id: c,
                amount: Money::from_minor(300),
            };
            state.apply(&refund, &config, Timestamp(T0));
            let points = Fact::Points {
                event_key: c.wrapping_mul(0x9e37_79b9_7f4a_7c15),
                delta: -5,
                at: Timestamp(T0),
            };
            state.apply(&points, &config, Timestamp(T0));
        }
        m.insert_restored(c, state);
    }
    m.reindex_orders();
    m.orphan_refunds
        .insert(999, vec![(5, Money::from_minor(700)), (6, Money::ZERO)]);
    m.tombstones.insert(5_000, T0 - 10);
    m.tombstones.insert(70, T0);
    m.shop_erased_at = Some(T0 - 86_400);
    m
}

/// Merchants of several sizes, so pieces decoded on several threads finish out of order.
fn several() -> PartitionCore {
    let mut core = PartitionCore::new(7);
    for (slot, customers) in [12, 300, 1, 40, 7].into_iter().enumerate() {
        let m = sample_merchant(&format!("shop-{slot}.myshopify.com"), customers);
        core.slots.insert(m.id.clone(), slot as u32);
        core.merchants.push(m);
    }
    core
}

fn decode_on(
    bytes: &[u8],
    threads: usize,
) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
    PartitionCore::decode_snapshot_on(7, bytes, &Configs::default(), Timestamp(T0), threads)
}

fn offsets() -> SnapshotOffsets {
    SnapshotOffsets {
        inputs: BTreeMap::from([("orders.create".to_owned(), 12)]),
        marks: BTreeMap::from([(0, 40), (1, 0), (2, 17)]),
    }
}

fn decode(bytes: &[u8]) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
    PartitionCore::decode_snapshot(7, bytes, &Configs::default(), Timestamp(T0))
}

/// Gives damaged contents a valid frame, so the parser behind the checksum gets exercised.
fn reseal(mut content: Vec<u8>) -> Vec<u8> {
    wire::seal(&mut content);
    content
}

#[test]
fn index_and_orphans_survive_exactly() {
    let core = sample();
    let bytes = core.encode_snapshot(&offsets());
    let (restored, _) = decode(&bytes).unwrap();
    let (a, b) = (&core.merchants[0], &restored.merchants[0]);
    for (id, state) in a.customers() {
        for order in state.aggregate.orders() {
            assert_eq!(
                b.order_customer(order.order_id()),
                Some(id),
                "order {}",
                order.order_id()
            );
        }
    }
    assert_eq!(a.order_customers.len(), b.order_customers.len());
    assert_eq!(a.orphan_refunds, b.orphan_refunds);
    assert_eq!(a.customers, b.customers);
    assert_eq!(a.segment_counts, b.segment_counts);
    assert_eq!(a.tombstones, b.tombstones);
    assert_eq!(b.shop_erased_at, Some(T0 - 86_400));
    assert_eq!(restored.encode_snapshot(&offsets()), bytes);
}

/// A snapshot as version 3 wrote it: a front without incarnation and piece marks, each merchant's customers right
/// after it.
fn version_3_snapshot(core: &PartitionCore, offsets: &SnapshotOffsets) -> Vec<u8> {
    let mut out = wire::begin(0);
    out[4..6].copy_from_slice(&3u16.to_le_bytes());
    out.extend_from_slice(&core.partition.to_le_bytes());
    // Before version 5 the output marks were offsets of topics named ">{output topic}:{partition}".
    put_len(&mut out, offsets.inputs.len() + offsets.marks.len());
    for (topic, offset) in &offsets.inputs {
        put_str(&mut out, topic);
        put_signed(&mut out, *offset);
    }
    for (partition, high) in &offsets.marks {
        put_str(&mut out, &format!(">rfm.updated:{partition}"));
        put_signed(&mut out, *high);
    }
    put_len(&mut out, core.merchants.len());
    for merchant in &core.merchants {
        put_str(&mut out, merchant.id.as_str());
        out.extend_from_slice(&config_fingerprint(&merchant.config).to_le_bytes());
        out.push(merchant.exponent);
    }
    core.merchants
        .iter()
        .for_each(|merchant| write_merchant_body(&mut out, merchant));
    wire::seal(&mut out);
    out
}

#[test]
fn a_version_3_snapshot_still_restores_and_is_rewritten_in_the_newest_format() {
    let core = sample();
    let (restored, covered) = decode(&version_3_snapshot(&core, &offsets())).unwrap();
    assert_eq!(covered, offsets());
    assert_eq!(restored.merchants[0].customers, core.merchants[0].customers);
    assert_eq!(
        restored.merchants[0].tombstones,
        core.merchants[0].tombstones
    );
    assert_eq!(
        restored.changed_merchants(),
        1,
        "a version 3 snapshot has no pieces, so the first round sends every merchant"
    );
    let newest = restored.encode_snapshot(&offsets());
    assert_eq!(&newest[4..6], &FORMAT_VERSION.to_le_bytes());
    assert_eq!(newest, core.encode_snapshot(&offsets()));
}

#[test]
fn a_version_2_snapshot_restores_with_no_tombstones() {
    let mut core = sample();
    core.merchants[0].tombstones.clear();
    core.merchants[0].shop_erased_at = None;
    let v3 = version_3_snapshot(&core, &offsets());
    // Version 2 is version 3 without the two bytes an untombstoned merchant ends with (no shop erasure, none).
    let mut content = v3[..v3.len() - wire::TRAILER - 2].to_vec();
    assert_eq!(
        &v3[v3.len() - wire::TRAILER - 2..v3.len() - wire::TRAILER],
        &[0, 0]
    );
    content[4..6].copy_from_slice(&2u16.to_le_bytes());
    let (restored, _) = decode(&reseal(content)).unwrap();
    assert_eq!(restored.merchants[0].customers, core.merchants[0].customers);
    assert!(restored.merchants[0].tombstones.is_empty());
    assert_eq!(
        restored.encode_snapshot(&offsets()),
        core.encode_snapshot(&offsets())
    );
}

/// A version 1 snapshot as the previous build wrote it: one customer with one order flagged indexed, and an entry
/// in the list of other index entries, which this build ignores.
fn version_1_snapshot() -> Vec<u8> {
    let config = RfmConfig::default();
    let mut out = wire::begin(0);
    out[4..6].copy_from_slice(&1u16.to_le_bytes());
    out.extend_from_slice(&7i32.to_le_bytes());
    put_len(&mut out, 0);
    put_len(&mut out, 1);
    put_str(&mut out, "old.myshopify.com");
    out.extend_from_slice(&config_fingerprint(&config).to_le_bytes());
    out.push(2);
    put_len(&mut out, 1);
    Gaps::default().put(&mut out, 42);
    let published = Evaluation::initial(&config);
    put_varint(&mut out, 1);
    out.extend([
        published.rfm_code(),
        published.segment,
        published.stage as u8,
    ]);
    put_varint(&mut out, 0);
    put_varint(&mut out, 0);
    put_len(&mut out, 1);
    Gaps::default().put(&mut out, 9_001);
    put_signed(&mut out, 4_500);
    put_signed(&mut out, 812_000_000);
    out.push(1 | INDEXED_V1);
    put_len(&mut out, 1);
    Gaps::default().put(&mut out, 5_555);
    put_varint(&mut out, 42);
    put_len(&mut out, 0);
    wire::seal(&mut out);
    out
}

#[test]
fn a_version_1_snapshot_still_restores_and_its_index_is_rebuilt() {
    let (core, _) = decode(&version_1_snapshot()).unwrap();
    let merchant = &core.merchants[0];
    let orders = merchant.customer(42).unwrap().aggregate.orders();
    assert_eq!(orders.len(), 1);
    assert_eq!(orders[0].parts(), (9_001, 4_500, 812_000_000, 1));
    assert_eq!(merchant.order_customer(9_001), Some(42));
    assert_eq!(
        merchant.order_customer(5_555),
        None,
        "no record, no attribution"
    );
    let rewritten = core.encode_snapshot(&SnapshotOffsets::default());
    assert_eq!(&rewritten[4..6], &FORMAT_VERSION.to_le_bytes());
    let (again, _) = decode(&rewritten).unwrap();
    assert_eq!(again.merchants[0].customers, merchant.customers);
}

/// A snapshot as version 5 wrote it: pieces without the configuration, taken from [`Configs`] when read.
fn version_5_snapshot(core: &PartitionCore, offsets: &SnapshotOffsets) -> Vec<u8> {
    let pieces: Vec<Vec<u8>> = core
        .merchants
        .iter()
        .map(|merchant| {
            let mut piece = Vec::new();
            write_merchant_body(&mut piece, merchant);
            piece
        })
        .collect();
    let entries: Vec<_> = core
        .merchants
        .iter()
        .zip(&pieces)
        .map(|(merchant, piece)| pieces::entry(merchant, piece_mark(piece)))
        .collect();
    let mut out = wire::begin(0);
    out[4..6].copy_from_slice(&5u16.to_le_bytes());
    write_front(
        &mut out,
        core.partition,
        offsets,
        &Incarnation::default(),
        &entries,
    );
    pieces.iter().for_each(|piece| out.extend_from_slice(piece));
    wire::seal(&mut out);
    out
}

#[test]
fn a_version_5_snapshot_restores_and_its_pieces_are_all_sent_again() {
    let core = sample();
    let (restored, covered) = decode(&version_5_snapshot(&core, &offsets())).unwrap();
    assert_eq!(covered, offsets());
    assert_eq!(restored.merchants[0].customers, core.merchants[0].customers);
    assert_eq!(
        restored.changed_merchants(),
        core.merchants.len(),
        "pieces of the old layout are rewritten, so no manifest mixes layouts"
    );
    assert_eq!(
        restored.encode_snapshot(&offsets()),
        core.encode_snapshot(&offsets())
    );
}

/// Tiers of the merchant's own: a configuration Postgres may no longer (or not yet) hold when the snapshot is read.
fn tiers() -> RfmConfig {
    let mut config = RfmConfig::from_aov(Money::from_minor(4_000));
    config.grace_period_days = 30;
    config.segments.swap(0, 1);
    config
}

#[test]
fn a_snapshot_carries_each_merchants_configuration() {
    let mut core = sample();
    let mut effects = Vec::new();
    core.merchants[0].reconfigure(tiers(), Timestamp(T0), &mut effects);
    let bytes = core.encode_snapshot(&offsets());
    // Whatever the configurations known at restore say (here: the default for everyone), the snapshot's own hold.
    let (restored, _) = decode(&bytes).unwrap();
    assert_eq!(restored.merchants[0].config, tiers());
    assert_eq!(restored.merchants[0].customers, core.merchants[0].customers);
    assert_eq!(
        restored.merchants[0].segment_counts(),
        core.merchants[0].segment_counts()
    );
    assert_eq!(restored.encode_snapshot(&offsets()), bytes);
}

#[test]
fn a_snapshot_carries_the_configuration_revision_even_of_the_default() {
    let mut core = sample();
    core.merchants[0].config_revision = 7;
    let bytes = core.encode_snapshot(&offsets());
    let (restored, _) = decode(&bytes).unwrap();
    assert_eq!(restored.merchants[0].config_revision, 7);
    assert_eq!(restored.merchants[0].config, RfmConfig::default());
    let mut effects = Vec::new();
    core.merchants[0].reconfigure(tiers(), Timestamp(T0), &mut effects);
    core.merchants[0].config_revision = 8;
    let (restored, _) = decode(&core.encode_snapshot(&offsets())).unwrap();
    assert_eq!(
        (
            restored.merchants[0].config_revision,
            &restored.merchants[0].config
        ),
        (8, &tiers())
    );
}

#[test]
fn a_configuration_that_does_not_match_its_fingerprint_is_refused() {
    let mut core = sample();
    let mut effects = Vec::new();
    core.merchants[0].reconfigure(tiers(), Timestamp(T0), &mut effects);
    // A piece holding the tiers under an entry naming the default: as if the piece were swapped or altered.
    let pieces: Vec<Vec<u8>> = core.merchants.iter().map(pieces::encode_piece).collect();
    let mut entries: Vec<_> = core
        .merchants
        .iter()
        .zip(&pieces)
        .map(|(merchant, piece)| pieces::entry(merchant, piece_mark(piece)))
        .collect();
    entries[0].fingerprint = config_fingerprint(&RfmConfig::default());
    let mut out = wire::begin(0);
    write_front(
        &mut out,
        core.partition,
        &offsets(),
        &Incarnation::default(),
        &entries,
    );
    pieces.iter().for_each(|piece| out.extend_from_slice(piece));
    wire::seal(&mut out);
    assert_eq!(
        decode(&out).err(),
        Some(SnapshotError::Corrupt(
            "a merchant's configuration does not match its fingerprint"
        ))
    );
}

fn one_pass(bytes: &[u8]) -> Result<(PartitionCore, SnapshotOffsets), SnapshotError> {
    decode::decode_in_one_pass(7, bytes, &Configs::default(), Timestamp(T0))
}

#[test]
fn pieces_decoded_on_several_threads_give_the_partition_one_pass_gives() {
    let bytes = several().encode_snapshot(&offsets());
    for threads in [1, 2, 3, 8] {
        let (mut one, _) = one_pass(&bytes).unwrap();
        let (mut many, restored_offsets) = decode_on(&bytes, threads).unwrap();
        assert_eq!(restored_offsets, offsets());
        assert_eq!(many.encode_snapshot(&offsets()), bytes);
        assert_eq!(many.slots, one.slots);
        assert_eq!(many.pieces, one.pieces);
        assert_eq!(many.timers.len(), one.timers.len());
        let later = Timestamp(T0).plus_days(4_000);
        assert_eq!(many.timers.pop_due(later), one.timers.pop_due(later));
    }
}

/// Two bad merchants: slot 0 names another configuration than its piece holds, slot 1's piece is damaged. Slot 1
/// is the largest and decodes first on several threads; the error is still slot 0's, as one pass finds it.
#[test]
fn the_first_bad_merchant_in_slot_order_is_the_error_on_any_thread_count() {
    let core = several();
    let bytes = core.encode_snapshot(&offsets());
    let mut content = bytes[..bytes.len() - wire::TRAILER].to_vec();
    let fingerprint = config_fingerprint(&core.merchants[0].config).to_le_bytes();
    let at = content
        .windows(8)
        .position(|w| w == fingerprint)
        .expect("slot 0's entry in the front");
    content[at] ^= 1;
    let pieces: Vec<usize> = core
        .merchants
        .iter()
        .map(|m| pieces::encode_piece(m).len())
        .collect();
    let front = content.len() - pieces.iter().sum::<usize>();
    content[front + pieces[0] + pieces[1] / 2] ^= 0x5a;
    let damaged = reseal(content);
    let expected = Some(Corrupt(
        "a merchant's configuration does not match its fingerprint",
    ));
    assert_eq!(one_pass(&damaged).err(), expected);
    for threads in [1, 2, 5] {
        assert_eq!(
            decode_on(&damaged, threads).err(),
            expected,
            "{threads} threads"
        );
    }
}

proptest! {
    #[test]
    fn damaged_contents_in_a_valid_frame_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let bytes = several().encode_snapshot(&offsets());
        let mut content = bytes[..bytes.len() - wire::TRAILER].to_vec();
        for (at, value) in edits {
            let i = wire::HEADER + at.index(content.len() - wire::HEADER);
            content[i] = value;
        }
        if let Some(cut) = cut {
            content.truncate(wire::HEADER + cut.index(content.len() - wire::HEADER));
        }
        let damaged = reseal(content);
        let (many, one) = (decode_on(&damaged, 3), one_pass(&damaged));
        prop_assert_eq!(many.as_ref().err(), one.as_ref().err());
        if let (Ok((many, _)), Ok((one, _))) = (many, one) {
            prop_assert_eq!(many.encode_snapshot(&offsets()), one.encode_snapshot(&offsets()));
        }
    }

    #[test]
    fn random_contents_in_a_valid_frame_never_panic(
        body in prop::collection::vec(any::<u8>(), 0..400),
    ) {
        let mut content = wire::begin(0);
        content.extend_from_slice(&7i32.to_le_bytes());
        content.extend(body);
        let _ = decode(&reseal(content));
    }
}
