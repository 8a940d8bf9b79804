//! Crypto-shredding: a shop's personal data leaves the ingress sealed under the shop's own data key, so erasing the
//! shop (`shop/redact`) destroys the one thing that could open the copies Kafka still keeps.

use std::time::Duration;

use loyalnest_rfm::pii::{KeyRing, Owner, PiiError};
use loyalnest_rfm::shop_keys;
use streams::events::SealedPii;

use crate::helpers::{
    brokers, eventually, fixture, gdpr_fixture, post_webhook, read_records, ENCRYPTION_KEYS,
    PII_INDEX_KEY,
};
use crate::live::{shop, spawn_sealing_engine};

const WAIT: Duration = Duration::from_secs(30);
const CUSTOMER: u64 = 115310627314723954;

#[actix_web::test]
async fn erasing_a_shop_leaves_its_sealed_data_on_kafka_unreadable() {
    let (app, pool) = spawn_sealing_engine().await;
    let ring = KeyRing::parse(ENCRYPTION_KEYS, PII_INDEX_KEY).unwrap();
    let a = shop();
    let owner = Owner {
        merchant: &a,
        customer_id: CUSTOMER,
    };

    let id = post_webhook(
        &app.address,
        &a,
        "customers/create",
        fixture("customers_create.json"),
    )
    .await;
    let records = read_records(
        &brokers(),
        &app.settings.topics.customer_created,
        move |r| r.value["event_id"] == id.as_str(),
        WAIT,
    )
    .await;
    let sealed: SealedPii =
        serde_json::from_value(records.last().unwrap().value["pii"].clone()).unwrap();
    assert_eq!(
        sealed.key_id, "shop:k1",
        "sealed under the shop's key, wrapped by k1"
    );
    assert!(
        matches!(ring.open(&sealed, owner), Err(PiiError::UnknownKey(_))),
        "the configured key alone does not open it"
    );
    let key = shop_keys::load(&pool, &ring, &a)
        .await
        .unwrap()
        .expect("the shop's key");
    assert_eq!(
        key.open(&sealed, owner).unwrap().email.as_deref(),
        Some("ana@example.com")
    );

    let request = post_webhook(
        &app.address,
        &a,
        "shop/redact",
        gdpr_fixture("shop_redact.json", a.as_str()),
    )
    .await;
    eventually("the shop's erasure completed", WAIT, async || {
        sqlx::query_scalar::<_, Option<bool>>(
            "SELECT completed_at IS NOT NULL FROM gdpr_requests WHERE merchant_id = $1 AND event_id = $2",
        )
        .bind(a.as_str())
        .bind(&request)
        .fetch_optional(&pool)
        .await
        .unwrap()
        .flatten()
            == Some(true)
    })
    .await;
    assert!(
        shop_keys::load(&pool, &ring, &a).await.unwrap().is_none(),
        "the key is destroyed"
    );
    // The record is still on Kafka, and with the key gone nothing configured opens it.
    assert!(ring.open(&sealed, owner).is_err());
}
