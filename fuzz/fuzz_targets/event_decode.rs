//! `InputEvent::decode` on arbitrary record values, for every input topic kind. It must answer an event or a
//! `DecodeError`, never panic, and a value it accepts must round-trip: encoding the event and decoding the result
//! by the same kind gives the same event (the processor re-publishes and replays what it decoded).
//!
//! Input: byte 0 picks the kind (modulo the number of kinds), the rest is the Kafka record's value.

#![no_main]

use libfuzzer_sys::fuzz_target;
use streams::{InputEvent, InputKind};

const KINDS: [InputKind; 10] = [
    InputKind::OrderCreated,
    InputKind::OrderCancelled,
    InputKind::RefundCreated,
    InputKind::CustomerCreated,
    InputKind::PointsEarned,
    InputKind::PointsRedeemed,
    InputKind::CustomerRedact,
    InputKind::CustomerDataRequest,
    InputKind::ShopRedact,
    InputKind::ConfigChanged,
];

/// Fails to compile when a kind is added without being listed above.
#[allow(dead_code)]
fn every_kind_is_listed(kind: InputKind) {
    match kind {
        InputKind::OrderCreated
        | InputKind::OrderCancelled
        | InputKind::RefundCreated
        | InputKind::CustomerCreated
        | InputKind::PointsEarned
        | InputKind::PointsRedeemed
        | InputKind::CustomerRedact
        | InputKind::CustomerDataRequest
        | InputKind::ShopRedact
        | InputKind::ConfigChanged => {}
    }
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, value)) = data.split_first() else {
        return;
    };
    let kind = KINDS[usize::from(selector) % KINDS.len()];
    let Ok(event) = InputEvent::decode(kind, value) else {
        return;
    };
    assert_eq!(event.kind(), kind, "decoded as another kind");
    let encoded = event.encode();
    match InputEvent::decode(kind, &encoded) {
        Ok(again) => assert_eq!(
            again,
            event,
            "{kind:?}: the event changed through encode/decode: {}",
            String::from_utf8_lossy(&encoded)
        ),
        Err(e) => panic!(
            "{kind:?}: an accepted value re-encodes to one that does not decode: {e}: {}",
            String::from_utf8_lossy(&encoded)
        ),
    }
});
