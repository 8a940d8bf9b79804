//! `shopify_sync_versions`: per customer, the newest state version Shopify accepted. Checked before a write (an
//! older or equal version is not sent again) and raised after Shopify accepted one, never lowered, so a replay
//! after a crash or a late record cannot put an older state over a newer one.

use std::collections::HashMap;

use sqlx::PgPool;
use streams::MerchantId;

/// Versions already written for `customers` of `shop` (customers never written are absent).
pub async fn written(
    pool: &PgPool,
    shop: &MerchantId,
    customers: &[u64],
) -> Result<HashMap<u64, u32>, sqlx::Error> {
    let ids: Vec<i64> = customers.iter().map(|&c| c as i64).collect();
    let rows: Vec<(i64, i64)> = sqlx::query_as(
        "SELECT customer_id, version FROM shopify_sync_versions
         WHERE merchant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(shop.as_str())
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(c, v)| (c as u64, v.clamp(0, u32::MAX as i64) as u32))
        .collect())
}

/// Records what Shopify accepted; a row only ever moves up.
pub async fn record(
    pool: &PgPool,
    shop: &MerchantId,
    accepted: &[(u64, u32)],
) -> Result<(), sqlx::Error> {
    if accepted.is_empty() {
        return Ok(());
    }
    let (ids, versions): (Vec<i64>, Vec<i64>) =
        accepted.iter().map(|&(c, v)| (c as i64, v as i64)).unzip();
    sqlx::query(
        "INSERT INTO shopify_sync_versions (merchant_id, customer_id, version)
         SELECT $1, c, v FROM UNNEST($2::int8[], $3::int8[]) AS t(c, v)
         ON CONFLICT (merchant_id, customer_id) DO UPDATE
         SET version = GREATEST(shopify_sync_versions.version, EXCLUDED.version), written_at = now()",
    )
    .bind(shop.as_str())
    .bind(&ids)
    .bind(&versions)
    .execute(pool)
    .await?;
    Ok(())
}
