//! Webhooks are bound to what Shopify signs. A session token is an HMAC-SHA256 under the same app secret, so a
//! merchant holding one owns a valid MAC of its signing input; these tests replay exactly that, and captured GDPR
//! bodies against another shop, and check every door refuses with nothing produced.

use base64::engine::general_purpose::{STANDARD, URL_SAFE_NO_PAD};
use base64::Engine;
use loyalnest_rfm::auth::mint;
use streams::MerchantId;

use crate::helpers::{fixture, gdpr_fixture, spawn_app, TestApp, Webhook, SECRET};
use crate::webhooks::kafka_topic_of;

/// Every topic the ingress acts on, the Kafka topic it would produce to, and a body Shopify would sign for it
/// (used as the marker that proves nothing was produced before it).
const TOPICS: [(&str, &str, &str); 7] = [
    ("orders/create", "orders.create", "orders_create.json"),
    (
        "orders/cancelled",
        "orders.cancelled",
        "orders_cancelled.json",
    ),
    ("refunds/create", "refunds.create", "refunds_create.json"),
    (
        "customers/create",
        "customer.created",
        "customers_create.json",
    ),
    (
        "customers/redact",
        "customers.redact",
        "customers_redact.json",
    ),
    (
        "customers/data_request",
        "customers.data_request",
        "customers_data_request.json",
    ),
    ("shop/redact", "shop.redact", "shop_redact.json"),
];

/// A session token's signing input and its signature re-encoded the way the webhook header carries one.
fn forged_from_session_token(victim: &str) -> (Vec<u8>, String) {
    let shop = MerchantId::parse(victim).unwrap();
    let now = chrono::Utc::now().timestamp();
    let token = mint(&shop, "any-api-key", SECRET.as_bytes(), now, 60);
    let (signed, signature) = token.rsplit_once('.').unwrap();
    let signature = STANDARD.encode(URL_SAFE_NO_PAD.decode(signature).unwrap());
    (signed.as_bytes().to_vec(), signature)
}

fn body_for(app: &TestApp, fixture_name: &str) -> Vec<u8> {
    if fixture_name.starts_with("customers_redact")
        || fixture_name.starts_with("customers_data")
        || fixture_name.starts_with("shop_")
    {
        gdpr_fixture(fixture_name, &app.shop)
    } else {
        fixture(fixture_name)
    }
}

/// Nothing reached `kafka_topic` before a genuine webhook sent now.
async fn assert_nothing_produced(
    app: &TestApp,
    topic: &str,
    kafka_topic: &str,
    fixture_name: &str,
) {
    let records = app
        .records_before_marker(
            topic,
            body_for(app, fixture_name),
            kafka_topic_of(app, kafka_topic),
        )
        .await;
    assert!(
        records.is_empty(),
        "{topic}: forged request produced {records:?}"
    );
}

#[tokio::test]
async fn a_session_token_replayed_as_a_webhook_is_refused_for_every_topic() {
    let app = spawn_app().await;
    let (body, signature) = forged_from_session_token(&app.shop);
    let topics = TOPICS
        .iter()
        .map(|t| t.0)
        .chain(["products/update", "app/uninstalled"]);
    for topic in topics {
        let mut forged = Webhook::new(topic, body.clone());
        forged.signature = Some(signature.clone());
        let response = app.post(&forged).await;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 400, "{topic}: {answer}");
        assert_eq!(answer["error"], "malformed", "{topic}: {answer}");
    }
    for (topic, kafka_topic, fixture_name) in TOPICS {
        assert_nothing_produced(&app, topic, kafka_topic, fixture_name).await;
    }
}

#[tokio::test]
async fn a_gdpr_body_of_another_shop_is_refused() {
    let app = spawn_app().await;
    let gdpr = TOPICS
        .iter()
        .filter(|t| t.0.contains("redact") || t.0.contains("data_request"));
    for (topic, kafka_topic, fixture_name) in gdpr {
        // A genuine body captured from another shop, replayed under a new webhook id against the test's shop.
        let other = gdpr_fixture(fixture_name, "someone-else.myshopify.com");
        let response = app.post(&Webhook::new(topic, other)).await;
        let status = response.status();
        let answer: serde_json::Value = response.json().await.unwrap();
        assert_eq!(status, 401, "{topic}: {answer}");
        assert_eq!(answer["error"], "shop_mismatch", "{topic}: {answer}");
        // A body naming no shop at all is no better.
        let anonymous = br#"{"customer":{"id":1},"orders_to_redact":[]}"#.to_vec();
        let response = app.post(&Webhook::new(topic, anonymous)).await;
        assert_eq!(response.status(), 400, "{topic} without shop_domain");
        assert_nothing_produced(&app, topic, kafka_topic, fixture_name).await;
    }
}

#[tokio::test]
async fn an_uninstall_must_name_the_headers_shop() {
    let app = spawn_app().await;
    // A genuine uninstall of another shop, or any signed body that is not a Shop resource, cannot drop this
    // shop's Admin API token: the shop header is not signed.
    let other = br#"{"id":7,"myshopify_domain":"someone-else.myshopify.com"}"#.to_vec();
    let response = app.post(&Webhook::new("app/uninstalled", other)).await;
    let status = response.status();
    let answer: serde_json::Value = response.json().await.unwrap();
    assert_eq!(status, 401, "{answer}");
    assert_eq!(answer["error"], "shop_mismatch", "{answer}");
    let order = br#"{"id":1,"customer":{"id":2}}"#.to_vec();
    let response = app.post(&Webhook::new("app/uninstalled", order)).await;
    assert_eq!(response.status(), 400, "a body that is not a shop");
    let own = format!(r#"{{"id":7,"myshopify_domain":"{}"}}"#, app.shop);
    let response = app
        .post(&Webhook::new("app/uninstalled", own.into_bytes()))
        .await;
    assert_eq!(response.status(), 200, "the shop's own uninstall");
}

#[tokio::test]
async fn signed_bodies_that_are_not_json_objects_are_refused() {
    let app = spawn_app().await;
    for (topic, kafka_topic, fixture_name) in TOPICS {
        for body in [&b"[1,2]"[..], b"\"a string\"", b"42", b"", b"{\"id\":"] {
            let response = app.post(&Webhook::new(topic, body.to_vec())).await;
            assert_eq!(
                response.status(),
                400,
                "{topic} {:?}",
                String::from_utf8_lossy(body)
            );
        }
        assert_nothing_produced(&app, topic, kafka_topic, fixture_name).await;
    }
}

#[tokio::test]
async fn invented_topics_never_become_metric_labels() {
    let app = spawn_app().await;
    let invented = crate::helpers::unique("topic-");
    let mut unsigned = Webhook::new(&invented, b"{}".to_vec());
    unsigned.secret = "not-the-secret";
    assert_eq!(app.post(&unsigned).await.status(), 401);
    // Signed but unknown: acknowledged, and still not a label.
    assert_eq!(
        app.post(&Webhook::new(&invented, b"{}".to_vec()))
            .await
            .status(),
        200
    );
    let metrics = app
        .client
        .get(format!("{}/metrics", app.address))
        .send()
        .await
        .unwrap()
        .text()
        .await
        .unwrap();
    assert!(
        metrics.contains("ingress_webhooks_total"),
        "the counter is exported"
    );
    assert!(
        !metrics.contains(&invented),
        "a raw topic header became a label"
    );
    assert!(
        metrics.contains("topic=\"other\""),
        "unknown topics share one label"
    );
}

/// Input topics are created with an explicit retention, so what they hold of an erased shop expires.
#[tokio::test]
async fn input_topics_are_created_with_an_explicit_retention() {
    use rdkafka::admin::{AdminClient, AdminOptions, ResourceSpecifier};
    use rdkafka::client::DefaultClientContext;
    let app = spawn_app().await;
    let admin: AdminClient<DefaultClientContext> = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &app.brokers)
        .create()
        .unwrap();
    let topic = ResourceSpecifier::Topic(&app.topics.orders_create);
    let described = admin
        .describe_configs([&topic], &AdminOptions::new())
        .await
        .unwrap();
    let config = described.into_iter().next().unwrap().unwrap();
    let retention = config.get("retention.ms").and_then(|e| e.value.clone());
    let expected = streams::admin::INPUT_RETENTION_MS.to_string();
    assert_eq!(retention.as_deref(), Some(expected.as_str()));
}

/// The topic header is not signed: a genuine GDPR body of this very shop must not act as another GDPR topic (a
/// customer's redaction replayed as the whole shop's, a data request as a redaction).
#[tokio::test]
async fn a_gdpr_body_cannot_be_replayed_as_another_gdpr_topic() {
    let app = spawn_app().await;
    let swaps = [
        ("shop/redact", "customers_redact.json"),
        ("shop/redact", "customers_data_request.json"),
        ("customers/redact", "customers_data_request.json"),
        ("customers/redact", "shop_redact.json"),
        ("customers/data_request", "customers_redact.json"),
    ];
    for (topic, fixture_name) in swaps {
        let body = gdpr_fixture(fixture_name, &app.shop);
        let response = app.post(&Webhook::new(topic, body)).await;
        assert_eq!(response.status(), 400, "{fixture_name} as {topic}");
    }
    for (topic, kafka_topic, fixture_name) in &TOPICS[4..] {
        assert_nothing_produced(&app, topic, kafka_topic, fixture_name).await;
    }
}
