//! The webhook ingress with a healthy broker and Redis: what each webhook produces, and what it must not.

use std::time::Duration;

use crate::helpers::{fixture, gdpr_fixture, read_records, spawn_app, Webhook, PREVIOUS_SECRET};

/// Posts a valid webhook and returns the single record it produced on `kafka_topic`.
async fn produce_one(
    topic: &str,
    body: Vec<u8>,
    kafka_topic: &str,
) -> (crate::helpers::TestApp, crate::helpers::Record, String) {
    produce_on(spawn_app().await, topic, body, kafka_topic).await
}

/// [`produce_one`] for a GDPR fixture, rewritten to name the test's shop as Shopify's body would.
async fn produce_one_gdpr(
    topic: &str,
    fixture_name: &str,
    kafka_topic: &str,
) -> (crate::helpers::TestApp, crate::helpers::Record, String) {
    let app = spawn_app().await;
    let body = gdpr_fixture(fixture_name, &app.shop);
    produce_on(app, topic, body, kafka_topic).await
}

async fn produce_on(
    app: crate::helpers::TestApp,
    topic: &str,
    body: Vec<u8>,
    kafka_topic: &str,
) -> (crate::helpers::TestApp, crate::helpers::Record, String) {
    let webhook = Webhook::new(topic, body);
    let response = app.post(&webhook).await;
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
    let id = webhook.id.clone();
    let mut records = read_records(
        &app.brokers,
        kafka_topic_of(&app, kafka_topic),
        move |r| r.value["event_id"] == id.as_str(),
        Duration::from_secs(20),
    )
    .await;
    assert_eq!(records.len(), 1, "exactly one record: {records:?}");
    (app, records.pop().unwrap(), webhook.id)
}

pub(crate) fn kafka_topic_of<'a>(app: &'a crate::helpers::TestApp, name: &str) -> &'a str {
    let t = &app.topics;
    match name {
        "orders.create" => &t.orders_create,
        "orders.cancelled" => &t.orders_cancelled,
        "refunds.create" => &t.refunds_create,
        "customer.created" => &t.customer_created,
        "customers.redact" => &t.customers_redact,
        "customers.data_request" => &t.customers_data_request,
        "shop.redact" => &t.shop_redact,
        other => panic!("unknown topic {other}"),
    }
}

#[tokio::test]
async fn order_create_produces_one_compact_event_with_key_and_headers() {
    let (app, record, webhook_id) = produce_one(
        "orders/create",
        fixture("orders_create.json"),
        "orders.create",
    )
    .await;
    assert_eq!(record.key, app.shop);
    assert_eq!(record.headers["webhook_id"], webhook_id);
    assert_eq!(record.headers["shopify_topic"], "orders/create");
    assert_eq!(record.headers["trace_id"].len(), 32);
    let v = &record.value;
    assert_eq!(v["merchant_id"], app.shop.as_str());
    assert_eq!(v["schema_version"], 1);
    assert_eq!(v["customer_id"], 115310627314723954u64);
    assert_eq!(v["order_id"], 820982911946154508u64);
    assert_eq!(v["total_price"], "199.99", "shop-currency amount, exact");
    assert_eq!(v["currency"], "USD");
    assert_eq!(v["financial_status"], "paid");
    assert_eq!(v["test"], false);
    assert_eq!(v["created_at"], "2026-11-20T15:15:00Z", "normalised to UTC");
    assert_eq!(v["pii"]["key_id"], "k1");
}

#[tokio::test]
async fn no_plaintext_pii_reaches_kafka() {
    let (_app, record, _) = produce_one(
        "orders/create",
        fixture("orders_create.json"),
        "orders.create",
    )
    .await;
    let raw = String::from_utf8_lossy(&record.raw).to_lowercase();
    for needle in [
        "ana@example.com",
        "garcía",
        "\"ana\"",
        "first_name",
        "email\"",
    ] {
        assert!(!raw.contains(needle), "{needle} leaked: {raw}");
    }
}

#[tokio::test]
async fn cancellation_refund_and_customer_events() {
    let (_, cancel, _) = produce_one(
        "orders/cancelled",
        fixture("orders_cancelled.json"),
        "orders.cancelled",
    )
    .await;
    assert_eq!(cancel.value["order_id"], 820982911946154508u64);
    assert_eq!(cancel.value["customer_id"], 115310627314723954u64);
    assert_eq!(cancel.value["cancelled_at"], "2026-11-21T14:00:00Z");

    let (_, refund, _) = produce_one(
        "refunds/create",
        fixture("refunds_create.json"),
        "refunds.create",
    )
    .await;
    assert_eq!(refund.value["refund_id"], 929361464u64);
    assert_eq!(refund.value["order_id"], 820982911946154508u64);
    assert_eq!(
        refund.value["amount"], "49.99",
        "shop-currency lines and tax, not the EUR transaction"
    );
    assert_eq!(refund.value["customer_id"], serde_json::Value::Null);

    let (_, customer, _) = produce_one(
        "customers/create",
        fixture("customers_create.json"),
        "customer.created",
    )
    .await;
    assert_eq!(customer.value["customer_id"], 115310627314723954u64);
    assert!(customer.value["pii"]["email_index"]
        .as_str()
        .is_some_and(|s| s.len() == 64));
}

#[tokio::test]
async fn gdpr_topics_produce_their_events() {
    let (_, redact, _) = produce_one_gdpr(
        "customers/redact",
        "customers_redact.json",
        "customers.redact",
    )
    .await;
    assert_eq!(redact.value["customer_id"], 115310627314723954u64);
    assert!(redact.value["orders_to_redact"]
        .as_array()
        .is_some_and(|a| !a.is_empty()));
    let (_, request, _) = produce_one_gdpr(
        "customers/data_request",
        "customers_data_request.json",
        "customers.data_request",
    )
    .await;
    assert_eq!(request.value["customer_id"], 115310627314723954u64);
    assert!(request.value["data_request_id"].is_u64());
    let (app, shop, _) = produce_one_gdpr("shop/redact", "shop_redact.json", "shop.redact").await;
    assert_eq!(shop.value["merchant_id"], app.shop.as_str());
}

#[tokio::test]
async fn headers_without_the_x_prefix_and_the_previous_secret_are_accepted() {
    let app = spawn_app().await;
    let mut webhook = Webhook::new("orders/create", fixture("orders_create.json"));
    webhook.x_prefix = false;
    webhook.secret = PREVIOUS_SECRET;
    assert_eq!(app.post(&webhook).await.status(), 200);
    let records = app.orders_before_marker().await;
    assert_eq!(records.len(), 1);
    assert_eq!(records[0].value["event_id"], webhook.id.as_str());
}

#[tokio::test]
async fn wrong_signature_is_401_and_produces_nothing() {
    let app = spawn_app().await;
    let mut forged = Webhook::new("orders/create", fixture("orders_create.json"));
    forged.secret = "not-the-secret";
    let response = app.post(&forged).await;
    assert_eq!(response.status(), 401);
    let body: serde_json::Value = response.json().await.unwrap();
    assert_eq!(body["error"], "invalid_signature");
    let records = app.orders_before_marker().await;
    assert!(records.is_empty(), "forged webhook produced {records:?}");
}

#[tokio::test]
async fn the_same_webhook_twice_gives_one_record() {
    let app = spawn_app().await;
    let webhook = Webhook::new("orders/create", fixture("orders_create.json"));
    assert_eq!(app.post(&webhook).await.status(), 200);
    let second = app.post(&webhook).await;
    assert_eq!(second.status(), 200);
    assert_eq!(
        second.json::<serde_json::Value>().await.unwrap()["status"],
        "duplicate"
    );
    let records = app.orders_before_marker().await;
    assert_eq!(records.len(), 1, "{records:?}");
}

#[tokio::test]
async fn guest_orders_and_unknown_topics_are_acknowledged_without_records() {
    let app = spawn_app().await;
    let guest = app
        .post(&Webhook::new(
            "orders/create",
            fixture("orders_create_guest.json"),
        ))
        .await;
    assert_eq!(guest.status(), 200);
    assert_eq!(
        guest.json::<serde_json::Value>().await.unwrap()["reason"],
        "guest_order"
    );
    let unknown = app
        .post(&Webhook::new("products/update", b"{\"id\":1}".to_vec()))
        .await;
    assert_eq!(unknown.status(), 200);
    assert_eq!(
        unknown.json::<serde_json::Value>().await.unwrap()["reason"],
        "unknown_topic"
    );
    let records = app.orders_before_marker().await;
    assert!(records.is_empty(), "{records:?}");
}

#[tokio::test]
async fn test_orders_are_forwarded_flagged() {
    let (_, record, _) = produce_one(
        "orders/create",
        fixture("orders_create_test.json"),
        "orders.create",
    )
    .await;
    assert_eq!(record.value["test"], true);
}

/// Shopify can deliver one webhook twice at the same moment. The dedupe claim is atomic, so however the copies
/// interleave exactly one is produced; the others are told `duplicate` or, while the first is in flight, to retry.
#[tokio::test]
async fn concurrent_copies_of_one_webhook_give_one_record() {
    let app = spawn_app().await;
    let webhook = Webhook::new("orders/create", fixture("orders_create.json"));
    let answers = futures_util::future::join_all((0..8).map(|_| app.post(&webhook))).await;
    let statuses: Vec<u16> = answers.iter().map(|r| r.status().as_u16()).collect();
    assert!(
        statuses.iter().all(|s| [200, 409].contains(s)),
        "{statuses:?}"
    );
    assert!(statuses.contains(&200));
    let records = app.orders_before_marker().await;
    assert_eq!(records.len(), 1, "{statuses:?} produced {records:?}");
}
