//! `customers/data_request` answered: personal data is stored sealed, the export holds everything known about the
//! customer, only the shop's own token downloads it, and a later erasure of the customer erases the export too.

use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use streams::MerchantId;

use crate::dashboard::get;
use crate::helpers::{eventually, fixture, gdpr_fixture, post_webhook};
use crate::live::{shop, spawn_sealing_engine, token};

const WAIT: Duration = Duration::from_secs(30);
const CUSTOMER: i64 = 115310627314723954;
const DATA_REQUEST_ID: &str = "7310246";

async fn stored(pool: &PgPool, sql: &str, shop: &MerchantId) -> Option<String> {
    sqlx::query_scalar::<_, Option<String>>(sql)
        .bind(shop.as_str())
        .fetch_optional(pool)
        .await
        .unwrap()
        .flatten()
}

#[actix_web::test]
async fn a_data_request_exports_everything_held_to_the_shop_alone() {
    let (app, pool) = spawn_sealing_engine().await;
    let (a, b) = (shop(), shop());
    post_webhook(
        &app.address,
        &a,
        "customers/create",
        fixture("customers_create.json"),
    )
    .await;
    post_webhook(
        &app.address,
        &a,
        "orders/create",
        fixture("orders_create.json"),
    )
    .await;
    let sealed_sql = "SELECT pii_sealed FROM customers WHERE merchant_id = $1";
    eventually("the sealed personal data at rest", WAIT, async || {
        stored(&pool, sealed_sql, &a).await.is_some()
    })
    .await;
    let sealed = stored(&pool, sealed_sql, &a).await.unwrap();
    assert!(
        !sealed.contains("ana@") && !sealed.contains("Ana"),
        "{sealed}"
    );

    post_webhook(
        &app.address,
        &a,
        "customers/data_request",
        gdpr_fixture("customers_data_request.json", a.as_str()),
    )
    .await;
    let path = format!("/api/v1/gdpr/requests/{DATA_REQUEST_ID}");
    let mut answer = Value::Null;
    eventually("the data request answered", WAIT, async || {
        let (status, body) = get(&app, &path, &token(&a)).await;
        answer = body;
        status == 200 && answer["status"] == "completed"
    })
    .await;
    let export = &answer["export"];
    assert_eq!(export["customer_id"], CUSTOMER);
    assert_eq!(
        export["personal_data"]["fields"]["email"],
        "ana@example.com"
    );
    assert_eq!(export["personal_data"]["fields"]["first_name"], "Ana");
    let orders = export["held_in_memory"]["orders"].as_array().unwrap();
    assert_eq!(orders[0]["order_id"], 820982911946154508u64);
    assert!(!export["evaluations"].as_array().unwrap().is_empty());
    assert!(!export["segment_changes"].as_array().unwrap().is_empty());
    let raw_export = stored(
        &pool,
        "SELECT export FROM gdpr_requests WHERE merchant_id = $1 AND export IS NOT NULL",
        &a,
    )
    .await
    .unwrap();
    assert!(
        !raw_export.contains("ana@example.com"),
        "the export is sealed at rest"
    );

    // Another shop's token finds nothing, and the list shows the request without its export.
    assert_eq!(get(&app, &path, &token(&b)).await.0, 404);
    let (status, list) = get(&app, "/api/v1/gdpr/requests", &token(&a)).await;
    assert_eq!(status, 200);
    assert!(list["requests"][0].get("export").is_none());

    // Erasing the customer erases the export made for them.
    post_webhook(
        &app.address,
        &a,
        "customers/redact",
        gdpr_fixture("customers_redact.json", a.as_str()),
    )
    .await;
    eventually("the export erased with the customer", WAIT, async || {
        let (_, body) = get(&app, &path, &token(&a)).await;
        body["status"] == "expired" && body.get("export").is_none()
    })
    .await;
    assert_eq!(stored(&pool, sealed_sql, &a).await, None);
}
