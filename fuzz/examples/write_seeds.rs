//! Writes the committed seed corpora under `fuzz/corpus/<target>/seed-*`, deterministically (no clock, no random
//! nonce: PII is sealed with no key configured, and the one sealed-PII seed uses fixed strings). Run from `fuzz/`:
//!
//! ```text
//! cargo run --example write_seeds
//! ```
//!
//! Each target's input starts with a selector byte (topic, kind, exponent, mode); see the target's header.

use std::fs;
use std::path::{Path, PathBuf};

use actors::{Configs, PartitionCore, SnapshotOffsets};
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use chrono::{DateTime, Utc};
use functions::Timestamp;
use hmac::{Hmac, Mac};
use loyalnest_rfm::pii::KeyRing;
use loyalnest_rfm::shopify::normalize::{normalize, Envelope, Normalized, WebhookTopic};
use sha2::Sha256;
use streams::events::{
    ConfigChanged, CustomerCreated, CustomerDataRequest, CustomerRedact, OrderCancelled,
    OrderCreated, PointsChanged, PointsSource, RefundCreated, SealedPii, ShopRedact,
};
use streams::{InputEvent, InputKind, MerchantId, SCHEMA_VERSION};

const T0: i64 = 1_780_000_000;

fn root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).to_path_buf()
}

fn write(target: &str, name: &str, selector: u8, body: &[u8]) {
    let dir = root().join("corpus").join(target);
    fs::create_dir_all(&dir).expect("corpus directory");
    let mut bytes = vec![selector];
    bytes.extend_from_slice(body);
    fs::write(dir.join(format!("seed-{name}")), bytes).expect("seed file");
}

/// Same order as the `TOPICS` table of `webhook_normalize`.
const FIXTURES: [(&str, u8, WebhookTopic); 9] = [
    ("orders_create", 0, WebhookTopic::OrdersCreate),
    ("orders_create_guest", 0, WebhookTopic::OrdersCreate),
    ("orders_create_test", 0, WebhookTopic::OrdersCreate),
    ("orders_cancelled", 1, WebhookTopic::OrdersCancelled),
    ("refunds_create", 2, WebhookTopic::RefundsCreate),
    ("customers_create", 3, WebhookTopic::CustomersCreate),
    ("customers_redact", 4, WebhookTopic::CustomersRedact),
    (
        "customers_data_request",
        5,
        WebhookTopic::CustomersDataRequest,
    ),
    ("shop_redact", 6, WebhookTopic::ShopRedact),
];

/// Same order as the `KINDS` table of `event_decode`.
fn kind_selector(kind: InputKind) -> u8 {
    match kind {
        InputKind::OrderCreated => 0,
        InputKind::OrderCancelled => 1,
        InputKind::RefundCreated => 2,
        InputKind::CustomerCreated => 3,
        InputKind::PointsEarned => 4,
        InputKind::PointsRedeemed => 5,
        InputKind::CustomerRedact => 6,
        InputKind::CustomerDataRequest => 7,
        InputKind::ShopRedact => 8,
        InputKind::ConfigChanged => 9,
    }
}

fn at(secs: i64) -> DateTime<Utc> {
    DateTime::from_timestamp(secs, 0).expect("in range")
}

/// The ingress stamps erasure requests with its clock; a fixed time keeps the seeds the same from run to run.
fn pin_clock(mut event: InputEvent) -> InputEvent {
    match &mut event {
        InputEvent::CustomerRedact(e) => e.requested_at = e.requested_at.map(|_| at(T0)),
        InputEvent::ShopRedact(e) => e.requested_at = e.requested_at.map(|_| at(T0)),
        _ => {}
    }
    event
}

fn webhook_seeds(merchant: &MerchantId) -> Vec<(String, InputEvent)> {
    let fixtures = root().join("../tests/fixtures/shopify");
    let keys = KeyRing::empty();
    let env = Envelope {
        event_id: "seed-webhook",
        merchant_id: merchant,
        keys: &keys,
        shop_key: None,
    };
    let mut events = Vec::new();
    for (name, selector, topic) in FIXTURES {
        let body = fs::read(fixtures.join(format!("{name}.json"))).expect("fixture");
        write("webhook_normalize", name, selector, &body);
        // The GDPR bodies name their shop, which must be the header's: a copy naming the fuzz shop gets past
        // that check.
        let text = String::from_utf8_lossy(&body);
        if text.contains("\"shop_domain\"") {
            let ours = text.replace("fixture-shop.myshopify.com", merchant.as_str());
            write(
                "webhook_normalize",
                &format!("{name}-fuzz-shop"),
                selector,
                ours.as_bytes(),
            );
            if let Ok(Normalized::Event(event)) = normalize(topic, ours.as_bytes(), &env) {
                events.push((format!("{name}-fuzz-shop"), pin_clock(*event)));
            }
        }
        if let Ok(Normalized::Event(event)) = normalize(topic, &body, &env) {
            events.push((name.to_owned(), pin_clock(*event)));
        }
    }
    events
}

/// Events of every kind, as the ingress and the other LoyalNest services put them on Kafka.
fn events(merchant: &MerchantId) -> Vec<(String, InputEvent)> {
    let m = || merchant.clone();
    let points = |event_id: &str, customer_id, points, source| PointsChanged {
        event_id: event_id.into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: m(),
        customer_id,
        points,
        source,
        created_at: at(T0 - 3_600),
    };
    vec![
        (
            "order_sealed_pii".into(),
            InputEvent::OrderCreated(OrderCreated {
                event_id: "seed-order-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                customer_id: 41,
                order_id: 9_001,
                total_price: "1500".into(),
                currency: "JPY".into(),
                created_at: at(T0 - 86_400),
                financial_status: "paid".into(),
                test: false,
                cancelled: false,
                locale: Some("ja".into()),
                pii: Some(SealedPii {
                    key_id: "k1".into(),
                    sealed: "AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=".into(),
                    email_index: Some("00ff".repeat(16)),
                }),
            }),
        ),
        (
            "order_cancelled".into(),
            InputEvent::OrderCancelled(OrderCancelled {
                event_id: "seed-cancel-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                customer_id: 41,
                order_id: 9_001,
                cancelled_at: at(T0 - 3_600),
            }),
        ),
        (
            "refund_with_customer".into(),
            InputEvent::RefundCreated(RefundCreated {
                event_id: "seed-refund-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                customer_id: Some(41),
                order_id: 9_001,
                refund_id: 77,
                amount: "0.500".into(),
                created_at: at(T0 - 1_800),
            }),
        ),
        (
            "customer_created".into(),
            InputEvent::CustomerCreated(CustomerCreated {
                event_id: "seed-customer-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                customer_id: 42,
                created_at: at(T0 - 7 * 86_400),
                locale: Some("fr-CA".into()),
                pii: None,
            }),
        ),
        (
            "points_earned".into(),
            InputEvent::PointsEarned(points("seed-points-1", 42, 250, PointsSource::Referral)),
        ),
        (
            "points_redeemed".into(),
            InputEvent::PointsRedeemed(points("seed-points-2", 42, 100, PointsSource::Admin)),
        ),
        (
            "customer_redact".into(),
            InputEvent::CustomerRedact(CustomerRedact {
                event_id: "seed-redact-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                customer_id: 42,
                orders_to_redact: vec![9_001, 9_002],
                requested_at: Some(at(T0 - 60)),
            }),
        ),
        (
            "customer_data_request".into(),
            InputEvent::CustomerDataRequest(CustomerDataRequest {
                event_id: "seed-data-request-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                customer_id: 42,
                data_request_id: None,
            }),
        ),
        (
            "shop_redact".into(),
            InputEvent::ShopRedact(ShopRedact {
                event_id: "seed-shop-redact-1".into(),
                schema_version: SCHEMA_VERSION,
                merchant_id: m(),
                requested_at: None,
            }),
        ),
        (
            "config_changed".into(),
            InputEvent::ConfigChanged(seed_config(m(), "seed-config-1")),
        ),
    ]
}

/// A saved configuration unlike the default: thresholds from a $40 AOV, a grace period, and the first two
/// segments swapped.
fn seed_config(merchant: MerchantId, event_id: &str) -> ConfigChanged {
    let mut config = functions::RfmConfig::from_aov(functions::Money::from_minor(4_000));
    config.grace_period_days = 30;
    config.segments.swap(0, 1);
    ConfigChanged {
        event_id: event_id.into(),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant,
        config,
        saved_at: at(T0 - 7_200),
        revision: None,
    }
}

/// Two merchants' customers with orders (one cancelled, one excluded as a test order), refunds, points, an erased
/// customer, a refund for an order not seen yet (kept as an orphan) and a saved configuration for the second, so
/// every section of the snapshot layout has content.
fn partition_events() -> Vec<InputEvent> {
    let mut out = Vec::new();
    for (shop, customers) in [("seed-a.myshopify.com", 5u64), ("seed-b.myshopify.com", 2)] {
        let merchant = MerchantId::parse(shop).expect("shop");
        if customers == 2 {
            out.push(InputEvent::ConfigChanged(seed_config(merchant.clone(), "seed-b-config")));
        }
        for c in 1..=customers {
            for o in 0..c % 3 + 1 {
                let order_id = c * 1_000 + o;
                out.push(InputEvent::OrderCreated(OrderCreated {
                    event_id: format!("{shop}-o{order_id}"),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id: c,
                    order_id,
                    total_price: format!("{}.{:02}", 20 + 7 * o, c * 3 % 100),
                    currency: "USD".into(),
                    created_at: at(T0 - (c as i64 * 11 + o as i64 * 5) * 86_400),
                    financial_status: "paid".into(),
                    test: c == 4 && o == 1,
                    cancelled: false,
                    locale: None,
                    pii: None,
                }));
            }
            if c % 2 == 1 {
                out.push(InputEvent::RefundCreated(RefundCreated {
                    event_id: format!("{shop}-r{c}"),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id: None,
                    order_id: c * 1_000,
                    refund_id: c * 10,
                    amount: "3.50".into(),
                    created_at: at(T0 - 86_400),
                }));
                out.push(InputEvent::PointsEarned(PointsChanged {
                    event_id: format!("{shop}-p{c}"),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id: c,
                    points: 40 * c as i64,
                    source: PointsSource::Order,
                    created_at: at(T0 - 86_400),
                }));
            }
            if c == 2 {
                out.push(InputEvent::OrderCancelled(OrderCancelled {
                    event_id: format!("{shop}-c{c}"),
                    schema_version: SCHEMA_VERSION,
                    merchant_id: merchant.clone(),
                    customer_id: c,
                    order_id: c * 1_000,
                    cancelled_at: at(T0 - 3_600),
                }));
            }
        }
        // An erasure, which leaves a tombstone in the snapshot.
        out.push(InputEvent::CustomerRedact(CustomerRedact {
            event_id: format!("{shop}-erase"),
            schema_version: SCHEMA_VERSION,
            merchant_id: merchant.clone(),
            customer_id: 2,
            orders_to_redact: vec![2_000],
            requested_at: Some(at(T0 - 300)),
        }));
        out.push(InputEvent::RefundCreated(RefundCreated {
            event_id: format!("{shop}-orphan"),
            schema_version: SCHEMA_VERSION,
            merchant_id: merchant.clone(),
            customer_id: None,
            order_id: 999_999,
            refund_id: 5,
            amount: "12.00".into(),
            created_at: at(T0 - 600),
        }));
    }
    out
}

fn snapshot_seeds() {
    const HEADER: usize = 14;
    const TRAILER: usize = 8;
    let configs = Configs::default();
    let mut offsets = SnapshotOffsets::of_inputs([("orders.create", 120), ("points.earned", 7)]);
    offsets.marks.extend([(0, 31), (1, 4)]);
    let empty = PartitionCore::new(7).encode_snapshot(&SnapshotOffsets::default());
    let mut core = PartitionCore::new(7);
    core.apply(&partition_events(), Timestamp(T0), &configs);
    let full = core.encode_snapshot(&offsets);
    assert!(
        PartitionCore::decode_snapshot(7, &full, &configs, Timestamp(T0)).is_ok(),
        "the seed snapshot must decode"
    );
    // Mode 0: the snapshot as stored. Odd modes: its content, framed by the target with format version
    // 1 + (mode >> 1) % newest; this one picks the encoder's own version.
    let version = u16::from_le_bytes([full[4], full[5]]);
    let mode = u8::try_from((version - 1) << 1 | 1).expect("a small version");
    write("snapshot_decode", "empty", 0, &empty);
    write("snapshot_decode", "partition", 0, &full);
    write(
        "snapshot_decode",
        &format!("partition-content-v{version}"),
        mode,
        &full[HEADER..full.len() - TRAILER],
    );
}

fn money_seeds() {
    for (name, exponent, text) in [
        ("usd", 2, "199.99"),
        ("negative", 2, "-3.20"),
        ("jpy", 0, "1500"),
        ("kwd", 3, "1.234"),
        ("trailing-zeros", 2, " +10.000 "),
        ("near-max", 2, "92233720368547758.07"),
    ] {
        write("money_parse", name, exponent, text.as_bytes());
    }
}

fn token_seeds() {
    const CURRENT: &[u8] = b"fuzz-current-secret";
    let header = br#"{"alg":"HS256","typ":"JWT"}"#;
    let claims = serde_json::json!({
        "iss": "https://fuzz.myshopify.com/admin",
        "dest": "https://fuzz.myshopify.com",
        "aud": "fuzz-api-key",
        "sub": "42",
        "exp": T0 + 60,
        "nbf": T0,
        "iat": T0,
        "jti": "00000000-0000-4000-8000-000000000000",
        "sid": "seed",
    })
    .to_string();
    let now = (T0 + 30).to_le_bytes();
    // Signed mode (flags bit 0): header, newline, claims; the target signs them.
    let mut signed = now.to_vec();
    signed.extend_from_slice(header);
    signed.push(b'\n');
    signed.extend_from_slice(claims.as_bytes());
    write("session_token", "signed-current", 1, &signed);
    write("session_token", "signed-previous", 3, &signed);
    // Raw mode: a complete token, signed here the way Shopify signs it.
    let part = |bytes: &[u8]| URL_SAFE_NO_PAD.encode(bytes);
    let body = format!("{}.{}", part(header), part(claims.as_bytes()));
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(CURRENT).expect("any key length");
    mac.update(body.as_bytes());
    let token = format!("{body}.{}", part(&mac.finalize().into_bytes()));
    let mut raw = now.to_vec();
    raw.extend_from_slice(token.as_bytes());
    write("session_token", "raw-valid", 0, &raw);
    // `exp` at i64::MAX, now 0: overflowed `exp + LEEWAY_SECS` before 71490d0 (docs/FUZZING.md, Findings).
    let mut edge = 0i64.to_le_bytes().to_vec();
    edge.extend_from_slice(br#"{"alg":"HS256"}"#);
    edge.push(b'\n');
    edge.extend_from_slice(
        br#"{"aud":"fuzz-api-key","dest":"https://fuzz.myshopify.com","exp":9223372036854775807,"iat":0,"iss":"https://fuzz.myshopify.com/admin","jti":"j","nbf":0,"sid":"s","sub":"s"}"#,
    );
    write("session_token", "exp-i64-max", 1, &edge);
}

fn main() {
    let merchant = MerchantId::parse("fuzz.myshopify.com").expect("shop");
    let normalized = webhook_seeds(&merchant);
    for (name, event) in normalized.into_iter().chain(events(&merchant)) {
        let selector = kind_selector(event.kind());
        write("event_decode", &name, selector, &event.encode());
    }
    snapshot_seeds();
    money_seeds();
    token_seeds();
    println!("seeds written under {}", root().join("corpus").display());
}
