//! GDPR erasure through the real ingress, processor, Postgres and Redis: a redacted customer, then a redacted shop,
//! leave nothing in any table, any Redis key or any dashboard frame, and the request is complete only then.

use std::time::Duration;

use futures_util::StreamExt;
use redis::AsyncCommands;
use serde_json::json;
use sqlx::PgPool;
use streams::MerchantId;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, post_webhook};
use crate::live::{frames_until, open_socket, post_order, shop, spawn_engine, token};

const WAIT: Duration = Duration::from_secs(30);

async fn completed(pool: &PgPool, shop: &MerchantId, event_id: &str) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT completed_at IS NOT NULL FROM gdpr_requests WHERE merchant_id = $1 AND event_id = $2",
    )
    .bind(shop.as_str())
    .bind(event_id)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(false)
}

/// Rows that name `shop` (and `customer`, where given) in each table, by table; empty tables are left out.
async fn rows_left(pool: &PgPool, shop: &MerchantId, customer: Option<i64>) -> Vec<(String, i64)> {
    let by_customer = [
        "customers",
        "rfm_segment_deltas",
        "rfm_score_history",
        "nudges",
        "shopify_sync_versions",
    ];
    let mut left = Vec::new();
    for table in by_customer {
        let sql = format!(
            "SELECT count(*) FROM {table} WHERE merchant_id = $1 AND ($2::int8 IS NULL OR customer_id = $2)"
        );
        let n: i64 = sqlx::query_scalar(&sql)
            .bind(shop.as_str())
            .bind(customer)
            .fetch_one(pool)
            .await
            .unwrap();
        left.push((table.to_owned(), n));
    }
    // A customer's nudge events by its nudge id; for the whole shop, every row of it.
    let events: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM nudge_events WHERE merchant_id = $1 AND ($2::text IS NULL OR nudge_id = $2)",
    )
    .bind(shop.as_str())
    .bind(customer.map(|c| format!("n-{c}")))
    .fetch_one(pool)
    .await
    .unwrap();
    left.push(("nudge_events".to_owned(), events));
    if customer.is_none() {
        for table in [
            "merchants",
            "program_settings",
            "audit_logs",
            "nudge_experiments",
            "shop_access",
        ] {
            let sql = format!("SELECT count(*) FROM {table} WHERE merchant_id = $1");
            let n: i64 = sqlx::query_scalar(&sql)
                .bind(shop.as_str())
                .fetch_one(pool)
                .await
                .unwrap();
            left.push((table.to_owned(), n));
        }
    }
    left.retain(|(_, n)| *n > 0);
    left
}

/// Rows the engine does not write yet (settings, audit, nudge events): put there the way later features will.
async fn seed_merchant_rows(pool: &PgPool, shop: &MerchantId) {
    for sql in [
        "INSERT INTO merchants (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING",
        "INSERT INTO program_settings (merchant_id, rfm_thresholds) VALUES ($1, '{}') ON CONFLICT DO NOTHING",
        "INSERT INTO audit_logs (merchant_id, actor, action) VALUES ($1, 'staff-1', 'config_update')",
        "INSERT INTO nudge_experiments (merchant_id, experiment_id, kind, definition) VALUES ($1, 'e', 'new', '{}')",
        "INSERT INTO shop_access (merchant_id, key_id, sealed_token) VALUES ($1, 'k1', 'sealed') ON CONFLICT DO NOTHING",
    ] {
        sqlx::query(sql).bind(shop.as_str()).execute(pool).await.unwrap();
    }
    sqlx::query(
        "INSERT INTO nudge_events (merchant_id, nudge_id, kind) VALUES ($1, 'orphan', 'view')",
    )
    .bind(shop.as_str())
    .execute(pool)
    .await
    .unwrap();
    for customer in [7, 8] {
        sqlx::query(
            "INSERT INTO shopify_sync_versions (merchant_id, customer_id, version) VALUES ($1, $2, 3)",
        )
        .bind(shop.as_str())
        .bind(customer)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO nudges (merchant_id, nudge_id, customer_id, version, segment, variant)
             VALUES ($1, $2, $3, 1000, 'other', 'A') ON CONFLICT DO NOTHING",
        )
        .bind(shop.as_str())
        .bind(format!("n-{customer}"))
        .bind(customer)
        .execute(pool)
        .await
        .unwrap();
        sqlx::query(
            "INSERT INTO nudge_events (merchant_id, nudge_id, kind) VALUES ($1, $2, 'view')",
        )
        .bind(shop.as_str())
        .bind(format!("n-{customer}"))
        .execute(pool)
        .await
        .unwrap();
    }
}

fn names_customer(json: &str, customer: u64) -> bool {
    json.contains(&format!("\"customer_id\":{customer}"))
}

#[actix_web::test]
async fn a_redacted_customer_then_a_redacted_shop_leave_nothing_behind() {
    let app = spawn_engine().await;
    let pool = PgPool::connect(app.settings.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let redis = redis::Client::open(app.settings.redis_url.as_str()).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let a = shop();
    let last_frame_key = format!("rfm:dashboard:last:{{{a}}}");

    let (mut socket, _) = open_socket(&app.address, &token(&a))
        .await
        .expect("handshake");
    post_order(&app.address, &a, 1, 7, "50.00", 0).await;
    post_order(&app.address, &a, 2, 8, "50.00", 0).await;
    frames_until(&mut socket, WAIT, |f| {
        let json = serde_json::to_string(f).unwrap();
        f.customers == 2 && names_customer(&json, 7) && names_customer(&json, 8)
    })
    .await;
    seed_merchant_rows(&pool, &a).await;
    // The cache is written after the outputs are published, which can come after the frame.
    eventually("the score cache to hold customer 7", WAIT, async || {
        let cached: Option<String> = conn.get(format!("rfm:customer:{{{a}}}:7")).await.unwrap();
        cached.is_some()
    })
    .await;

    // customers/redact for 7.
    let body = json!({"shop_id": 1, "shop_domain": a.as_str(), "customer": {"id": 7}, "orders_to_redact": [1]});
    let request = post_webhook(&app.address, &a, "customers/redact", body.to_string()).await;
    eventually("the customer redaction to complete", WAIT, async || {
        completed(&pool, &a, &request).await
    })
    .await;
    assert_eq!(
        rows_left(&pool, &a, Some(7)).await,
        vec![],
        "rows of customer 7"
    );
    assert_ne!(
        rows_left(&pool, &a, Some(8)).await,
        vec![],
        "customer 8 is untouched"
    );
    let cached: Option<String> = conn.get(format!("rfm:customer:{{{a}}}:7")).await.unwrap();
    assert_eq!(cached, None, "score cache entry of 7");
    // The board names 7 in its moves until the erasure; the next frame must not.
    let frames = frames_until(&mut socket, WAIT, |f| {
        !names_customer(&serde_json::to_string(f).unwrap(), 7)
    })
    .await;
    let last = serde_json::to_string(frames.last().unwrap()).unwrap();
    assert!(
        names_customer(&last, 8),
        "the frame still shows the other customer: {last}"
    );
    eventually("the last frame in Redis to forget 7", WAIT, async || {
        let frame: Option<String> = conn.get(&last_frame_key).await.unwrap();
        frame.is_some_and(|f| !names_customer(&f, 7))
    })
    .await;

    // A retried webhook of the old relationship (dated yesterday) must not bring 7 back. An order of 8 after it,
    // on the same partition, shows when it has been processed.
    post_order(&app.address, &a, 3, 7, "80.00", 1).await;
    post_order(&app.address, &a, 4, 8, "60.00", 0).await;
    eventually("the marker order of 8", WAIT, async || {
        let orders: Option<i32> = sqlx::query_scalar(
            "SELECT orders FROM customers WHERE merchant_id = $1 AND customer_id = 8",
        )
        .bind(a.as_str())
        .fetch_optional(&pool)
        .await
        .unwrap();
        orders == Some(2)
    })
    .await;
    assert_eq!(rows_left(&pool, &a, Some(7)).await, vec![], "7 came back");

    // shop/redact for the whole shop.
    let request = post_webhook(
        &app.address,
        &a,
        "shop/redact",
        json!({"shop_id": 1, "shop_domain": a.as_str()}).to_string(),
    )
    .await;
    eventually("the shop redaction to complete", WAIT, async || {
        completed(&pool, &a, &request).await
    })
    .await;
    assert_eq!(rows_left(&pool, &a, None).await, vec![], "rows of the shop");
    let others: i64 = sqlx::query_scalar(
        "SELECT count(*) FROM gdpr_requests WHERE merchant_id = $1 AND event_id <> $2",
    )
    .bind(a.as_str())
    .bind(&request)
    .fetch_one(&pool)
    .await
    .unwrap();
    assert_eq!(others, 0, "only the record of the shop's erasure is kept");
    let keys: Vec<String> = conn.keys(format!("rfm:customer:{{{a}}}:*")).await.unwrap();
    assert_eq!(
        keys,
        Vec::<String>::new(),
        "score cache entries of the shop"
    );
    let marks: Vec<String> = conn.keys(format!("processed:{{{a}}}:*")).await.unwrap();
    assert_eq!(
        marks,
        Vec::<String>::new(),
        "the ingress's dedupe marks of the shop"
    );
    eventually("the shop's last frame to be deleted", WAIT, async || {
        let frame: Option<String> = conn.get(&last_frame_key).await.unwrap();
        frame.is_none()
    })
    .await;
    let ended = tokio::time::timeout(WAIT, async {
        while let Some(message) = socket.next().await {
            if matches!(message, Ok(Message::Close(_)) | Err(_)) {
                return;
            }
        }
    })
    .await;
    assert!(
        ended.is_ok(),
        "the erased shop's dashboard socket is closed"
    );
}
