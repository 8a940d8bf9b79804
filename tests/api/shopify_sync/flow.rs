//! The whole path in the real binary (`--role all`): install (token exchange, sealed token, metafield
//! definitions), an order webhook, the processor's `rfm.updated`, the write-back to the customer's metafields;
//! then `app/uninstalled` drops the token and later changes are skipped, not written.

use std::time::Duration;

use loyalnest_rfm::shopify::admin::metafields::CUSTOMER_METAFIELDS;
use loyalnest_rfm::shopify::admin::{AdminClient, AdminSettings};
use serde_json::{json, Value};

use super::{fresh_topics, install, shop, standin, Binary};
use crate::helpers::{eventually, fresh_database, read_all_records, unique, SECRET};
use crate::live::post_order;

const WAIT: Duration = Duration::from_secs(90);

/// The customer's `loyalnest` metafields, read back through the stand-in's GraphQL endpoint with a token of
/// the shop's, as a merchant's tool would.
pub async fn read_back(admin: &str, token: &str, shop: &str, customer: u64) -> Vec<Value> {
    let client = AdminClient::new(AdminSettings {
        base_url: admin.to_owned(),
        api_version: "2025-10".into(),
    });
    let id = format!("gid://shopify/Customer/{customer}");
    let reply = client
        .graphql(shop, token, CUSTOMER_METAFIELDS, json!({ "id": id }))
        .await
        .expect("read-back");
    reply.data["customer"]["metafields"]["nodes"]
        .as_array()
        .cloned()
        .unwrap_or_default()
}

pub fn field<'a>(nodes: &'a [Value], key: &str) -> Option<&'a str> {
    nodes
        .iter()
        .find(|n| n["key"] == key)
        .and_then(|n| n["value"].as_str())
}

async fn no_token_skips(address: &str) -> f64 {
    let text = reqwest::get(format!("{address}/metrics"))
        .await
        .expect("metrics")
        .text()
        .await
        .unwrap_or_default();
    text.lines()
        .find_map(|l| l.strip_prefix("rfm_shopify_writes_total{outcome=\"no_token\"} "))
        .and_then(|v| v.trim().parse().ok())
        .unwrap_or(0.0)
}

#[actix_web::test]
async fn a_segment_change_reaches_the_customers_metafield_until_the_app_is_uninstalled() {
    let standin = standin(|_| {});
    let database = fresh_database().await;
    let (prefix, topics) = fresh_topics().await;
    let mut binary = Binary::new("all", &prefix, &database, &standin.address);
    binary.start();
    binary.wait_healthy().await;
    let shop = shop();

    let installed = install(&binary.address, &shop).await;
    assert_eq!(installed["definitions_created"], 3, "{installed}");
    let again = install(&binary.address, &shop).await;
    assert_eq!(
        again["definitions_created"], 0,
        "a second install finds the definitions there"
    );
    let definitions = standin
        .state
        .with_shop(shop.as_str(), |s| s.definitions.clone());
    assert_eq!(definitions.len(), 3);
    for definition in definitions.values() {
        assert_eq!(definition["ownerType"], "CUSTOMER");
        assert_eq!(
            definition["capabilities"]["adminFilterable"]["enabled"],
            true
        );
    }
    let pool = sqlx::PgPool::connect(&database).await.expect("postgres");
    let sealed: String =
        sqlx::query_scalar("SELECT sealed_token FROM shop_access WHERE merchant_id = $1")
            .bind(shop.as_str())
            .fetch_one(&pool)
            .await
            .expect("the token is stored");
    assert!(
        !sealed.contains("shpat_"),
        "stored sealed, not in the clear"
    );

    post_order(&binary.address, &shop, 1, 42, "250.00", 1).await;
    eventually("customer 42's segment in Shopify", WAIT, async || {
        standin
            .state
            .metafield(shop.as_str(), 42, "loyalnest", "rfm_segment")
            .is_some()
    })
    .await;
    let published = read_all_records(&crate::helpers::brokers(), &topics.rfm_updated).await;
    let latest = published
        .iter()
        .filter(|r| r.value["customer_id"] == 42)
        .max_by_key(|r| r.value["version"].as_u64())
        .expect("rfm.updated for customer 42");
    let reader = standin.state.issue_token(shop.as_str());
    let nodes = read_back(&standin.address, &reader, shop.as_str(), 42).await;
    assert_eq!(
        field(&nodes, "rfm_segment"),
        latest.value["segment"]["to"].as_str(),
        "{nodes:?}"
    );
    assert_eq!(
        field(&nodes, "rfm_stage"),
        latest.value["lifecycle_stage"].as_str()
    );
    assert_eq!(
        field(&nodes, "rfm_version"),
        Some(latest.value["version"].to_string().as_str()),
        "the version metafield guards the write"
    );
    let score = latest.value["score"]["score"].as_f64().expect("score");
    assert_eq!(
        field(&nodes, "rfm_score"),
        Some(format!("{score:.1}").as_str())
    );

    super::discount::applies_the_merchants_discount(&standin, &shop, 42).await;

    // app/uninstalled, signed like every webhook: the token goes, and later changes are skipped.
    let body = json!({"id": 1, "myshopify_domain": shop.as_str()}).to_string();
    let response = reqwest::Client::new()
        .post(format!("{}/webhooks/shopify", binary.address))
        .header("X-Shopify-Topic", "app/uninstalled")
        .header(
            "X-Shopify-Hmac-Sha256",
            loyalnest_rfm::shopify::hmac::sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", unique("wh-"))
        .body(body)
        .send()
        .await
        .expect("ingress");
    assert_eq!(response.status(), 200);
    let left: i64 = sqlx::query_scalar("SELECT count(*) FROM shop_access WHERE merchant_id = $1")
        .bind(shop.as_str())
        .fetch_one(&pool)
        .await
        .expect("count");
    assert_eq!(left, 0, "uninstall drops the token");
    let skipped_before = no_token_skips(&binary.address).await;
    post_order(&binary.address, &shop, 2, 43, "80.00", 1).await;
    eventually(
        "customer 43's change skipped for want of a token",
        WAIT,
        async || no_token_skips(&binary.address).await > skipped_before,
    )
    .await;
    assert!(standin
        .state
        .metafield(shop.as_str(), 43, "loyalnest", "rfm_segment")
        .is_none());
}
