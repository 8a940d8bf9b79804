//! The snapshot codec from the inside: state that events cannot produce, and damaged contents behind a valid frame
//! (a checksum collision or an encoder bug), which must be refused without a panic.

use functions::Fact;
use proptest::prelude::*;

use super::*;

const T0: i64 = 1_780_000_000;

/// Built from facts rather than events, as a restore builds it.
fn sample() -> PartitionCore {
    let config = RfmConfig::default();
    let id = MerchantId::parse("fuzz.myshopify.com").unwrap();
    let mut m = MerchantState::new(id.clone(), config.clone());
    for c in 1..=12u64 {
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
    let mut core = PartitionCore::new(7);
    core.slots.insert(id, 0);
    core.merchants.push(m);
    core
}

fn offsets() -> SnapshotOffsets {
    SnapshotOffsets(BTreeMap::from([("orders.create".to_owned(), 12)]))
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
    assert_eq!(restored.encode_snapshot(&offsets()), bytes);
}

proptest! {
    #[test]
    fn damaged_contents_in_a_valid_frame_never_panic(
        edits in prop::collection::vec((any::<prop::sample::Index>(), any::<u8>()), 1..6),
        cut in any::<Option<prop::sample::Index>>(),
    ) {
        let bytes = sample().encode_snapshot(&offsets());
        let mut content = bytes[..bytes.len() - wire::TRAILER].to_vec();
        for (at, value) in edits {
            let i = wire::HEADER + at.index(content.len() - wire::HEADER);
            content[i] = value;
        }
        if let Some(cut) = cut {
            content.truncate(wire::HEADER + cut.index(content.len() - wire::HEADER));
        }
        let _ = decode(&reseal(content));
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
