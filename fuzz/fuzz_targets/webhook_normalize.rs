//! A webhook body as Shopify would POST it (after the signature check), for every topic we handle.
//!
//! Input: the first byte picks the topic (modulo the number of topics), the rest is the body. `normalize` must
//! return an error or a result, never panic, and every event it produces must survive the trip through Kafka:
//! `InputEvent::decode(kind, encode(event))` gives the same event back.

#![no_main]

use std::sync::OnceLock;

use libfuzzer_sys::fuzz_target;
use loyalnest_rfm::pii::KeyRing;
use loyalnest_rfm::shopify::normalize::{normalize, Envelope, Normalized, WebhookTopic};
use streams::{InputEvent, MerchantId};

const TOPICS: [WebhookTopic; 9] = [
    WebhookTopic::OrdersCreate,
    WebhookTopic::OrdersCancelled,
    WebhookTopic::RefundsCreate,
    WebhookTopic::CustomersCreate,
    WebhookTopic::CustomersRedact,
    WebhookTopic::CustomersDataRequest,
    WebhookTopic::ShopRedact,
    WebhookTopic::AppUninstalled,
    WebhookTopic::BulkOperationsFinish,
];

/// Fails to compile when a topic is added without being listed above.
#[allow(dead_code)]
fn every_topic_is_listed(topic: WebhookTopic) {
    match topic {
        WebhookTopic::OrdersCreate
        | WebhookTopic::OrdersCancelled
        | WebhookTopic::RefundsCreate
        | WebhookTopic::CustomersCreate
        | WebhookTopic::CustomersRedact
        | WebhookTopic::CustomersDataRequest
        | WebhookTopic::ShopRedact
        | WebhookTopic::AppUninstalled
        | WebhookTopic::BulkOperationsFinish => {}
    }
}

struct Context {
    keys: KeyRing,
    merchant: MerchantId,
}

fn context() -> &'static Context {
    static CONTEXT: OnceLock<Context> = OnceLock::new();
    CONTEXT.get_or_init(|| Context {
        // The encryption key of the brief, and a blind-index key of its own (bytes 32..64).
        keys: KeyRing::parse(
            "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=",
            "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=",
        )
        .expect("valid fixed keys"),
        merchant: MerchantId::parse("fuzz.myshopify.com").expect("a valid shop domain"),
    })
}

fuzz_target!(|data: &[u8]| {
    let Some((&selector, body)) = data.split_first() else {
        return;
    };
    let topic = TOPICS[usize::from(selector) % TOPICS.len()];
    let ctx = context();
    let env = Envelope {
        event_id: "fuzz-webhook-1",
        merchant_id: &ctx.merchant,
        keys: &ctx.keys,
        // Sealing under a shop's own data key is not fuzzed yet: the configured key seals.
        shop_key: None,
    };
    if let Ok(Normalized::Event(event)) = normalize(topic, body, &env) {
        let encoded = event.encode();
        match InputEvent::decode(event.kind(), &encoded) {
            Ok(decoded) => assert_eq!(
                decoded,
                *event,
                "{topic:?}: the event changed through encode/decode: {}",
                String::from_utf8_lossy(&encoded)
            ),
            Err(e) => panic!(
                "{topic:?}: a normalized event does not decode: {e}: {}",
                String::from_utf8_lossy(&encoded)
            ),
        }
    }
});
