//! Key rotation at rest: `reseal` moves shop data keys, personal data and exports from an older configured key to
//! the newest, leaves what it cannot open alone (and says so), and a second run finds nothing left to do.

use std::time::Duration;

use base64::Engine;
use loyalnest_rfm::pii::{KeyRing, Owner, Pii, Purpose};
use loyalnest_rfm::reseal::{ResealReport, Resealer};
use loyalnest_rfm::shop_keys::{self, ShopKeys};
use loyalnest_rfm::shopify::access;
use loyalnest_rfm::store::Store;
use sqlx::PgPool;
use streams::MerchantId;

use crate::helpers::{fresh_database, unique, ENCRYPTION_KEYS, PII_INDEX_KEY};

fn k2() -> String {
    format!(
        "k2:{}",
        base64::engine::general_purpose::STANDARD.encode([7u8; 32])
    )
}

fn ana() -> Pii {
    Pii {
        email: Some("ana@example.com".into()),
        first_name: Some("Ana".into()),
        ..Pii::default()
    }
}

async fn customer_row(pool: &PgPool, shop: &MerchantId, customer: i64, key_id: &str, sealed: &str) {
    sqlx::query(
        "INSERT INTO customers (merchant_id, customer_id, version, recency, frequency, monetary, score, segment,
                                lifecycle_stage, pii_key_id, pii_sealed)
         VALUES ($1, $2, 1, 1, 1, 1, 1.0, 'other', 'new_lead', $3, $4)",
    )
    .bind(shop.as_str())
    .bind(customer)
    .bind(key_id)
    .bind(sealed)
    .execute(pool)
    .await
    .unwrap();
}

async fn sealed_of(pool: &PgPool, shop: &MerchantId, customer: i64) -> (String, String) {
    sqlx::query_as(
        "SELECT pii_key_id, pii_sealed FROM customers WHERE merchant_id = $1 AND customer_id = $2",
    )
    .bind(shop.as_str())
    .bind(customer)
    .fetch_one(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn reseal_moves_everything_at_rest_to_the_newest_key_once() {
    let url = fresh_database().await;
    let store = Store::connect_lazy(&url).unwrap();
    let pool = store.pool().clone();
    let old = KeyRing::parse(ENCRYPTION_KEYS, PII_INDEX_KEY).unwrap();
    let rotated = KeyRing::parse(&format!("{},{ENCRYPTION_KEYS}", k2()), PII_INDEX_KEY).unwrap();
    let only_new = KeyRing::parse(&k2(), PII_INDEX_KEY).unwrap();
    let (a, b) = (
        MerchantId::parse(&format!("{}.myshopify.com", unique("rs-"))).unwrap(),
        MerchantId::parse(&format!("{}.myshopify.com", unique("rs-"))).unwrap(),
    );
    let owner = |m, customer_id| Owner {
        merchant: m,
        customer_id,
    };

    // Shop A has its own data key (under k1); shop B's data was sealed directly under k1, plus one value under a
    // key nobody configures any more; and one export under k1.
    let shop_key = ShopKeys::new(store.clone(), old.clone())
        .for_sealing(&a)
        .await
        .unwrap();
    let shop_sealed = old.seal_for_shop(&shop_key, &ana(), owner(&a, 1)).unwrap();
    let direct = old.seal(&ana(), owner(&b, 2)).unwrap();
    customer_row(&pool, &b, 2, &direct.key_id, &direct.sealed).await;
    customer_row(&pool, &b, 3, "k0", "AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA").await;
    let (export_key, export) = old
        .seal_bytes(b"{\"export\":1}", owner(&b, 2), Purpose::DataExport)
        .unwrap();
    sqlx::query(
        "INSERT INTO gdpr_requests (merchant_id, event_id, kind, customer_id, status, export_key_id, export)
         VALUES ($1, 'e1', 'customers_data_request', 2, 'completed', $2, $3)",
    )
    .bind(b.as_str())
    .bind(&export_key)
    .bind(&export)
    .execute(&pool)
    .await
    .unwrap();

    // Shop A's Admin API token, sealed under k1 like the rest.
    let grant = access::Grant {
        access_token: "shpat_reseal".into(),
        scope: "read_orders".into(),
    };
    access::store_token(&pool, &old, &a, &grant).await.unwrap();

    let resealer = Resealer {
        pool: &pool,
        keys: &rotated,
        batch: 1,
        pause: Duration::ZERO,
    };
    let report = resealer.run().await.unwrap();
    assert_eq!(
        report,
        ResealReport {
            shop_keys: 1,
            personal_data: 1,
            exports: 1,
            tokens: 1,
            unreadable: 1
        }
    );

    // Everything now opens without k1.
    let rewrapped = shop_keys::load(&pool, &only_new, &a)
        .await
        .unwrap()
        .expect("shop A's key");
    assert_eq!(
        rewrapped.open(&shop_sealed, owner(&a, 1)).unwrap(),
        ana(),
        "same data key, new wrapping"
    );
    let (key_id, sealed) = sealed_of(&pool, &b, 2).await;
    assert_eq!(key_id, "k2");
    let moved = streams::events::SealedPii {
        key_id,
        sealed,
        email_index: None,
    };
    assert_eq!(only_new.open(&moved, owner(&b, 2)).unwrap(), ana());
    let (key_id, stored): (String, String) =
        sqlx::query_as("SELECT export_key_id, export FROM gdpr_requests WHERE merchant_id = $1")
            .bind(b.as_str())
            .fetch_one(&pool)
            .await
            .unwrap();
    let opened = only_new
        .open_bytes(&key_id, &stored, owner(&b, 2), Purpose::DataExport)
        .unwrap();
    assert_eq!(opened, b"{\"export\":1}");
    assert_eq!(
        sealed_of(&pool, &b, 3).await.0,
        "k0",
        "what cannot be opened is left as it was"
    );

    assert_eq!(
        access::offline_token(&pool, &only_new, &a).await.unwrap(),
        Some("shpat_reseal".to_owned()),
        "the token opens without k1"
    );

    // Run again: nothing moves.
    let again = resealer.run().await.unwrap();
    assert_eq!(
        again,
        ResealReport {
            unreadable: 1,
            ..ResealReport::default()
        }
    );
}
