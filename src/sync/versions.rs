//! `shopify_sync_versions`: per customer, the newest state version Shopify accepted and the `compareDigest` of its
//! `loyalnest.rfm_version` metafield. Checked before a write (an older or equal version is not sent again; a newer
//! one is sent guarded by the digest) and raised after Shopify accepted one, never lowered, so a replay after a
//! crash or a late record cannot put an older state over a newer one. The guard in Shopify is what makes this
//! hold between two workers (a rebalance): the table only saves the calls.

use std::collections::HashMap;

use sqlx::PgPool;
use streams::MerchantId;

/// What Shopify holds for a customer, as far as this table knows.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Known {
    pub version: u32,
    /// `None` for rows written before the digest was kept: the next write finds the digest by a read.
    pub digest: Option<String>,
}

/// Versions already written for `customers` of `shop` (customers never written are absent).
pub async fn written(
    pool: &PgPool,
    shop: &MerchantId,
    customers: &[u64],
) -> Result<HashMap<u64, Known>, sqlx::Error> {
    let ids: Vec<i64> = customers.iter().map(|&c| c as i64).collect();
    let rows: Vec<(i64, i64, Option<String>)> = sqlx::query_as(
        "SELECT customer_id, version, compare_digest FROM shopify_sync_versions
         WHERE merchant_id = $1 AND customer_id = ANY($2)",
    )
    .bind(shop.as_str())
    .bind(&ids)
    .fetch_all(pool)
    .await?;
    Ok(rows
        .into_iter()
        .map(|(c, v, digest)| {
            let version = v.clamp(0, u32::MAX as i64) as u32;
            (c as u64, Known { version, digest })
        })
        .collect())
}

/// Records what Shopify holds: `(customer, version, digest)`. A row only ever moves up; the digest goes with the
/// version it belongs to.
pub async fn record(
    pool: &PgPool,
    shop: &MerchantId,
    accepted: &[(u64, u32, Option<String>)],
) -> Result<(), sqlx::Error> {
    if accepted.is_empty() {
        return Ok(());
    }
    let ids: Vec<i64> = accepted.iter().map(|a| a.0 as i64).collect();
    let versions: Vec<i64> = accepted.iter().map(|a| a.1 as i64).collect();
    let digests: Vec<Option<String>> = accepted.iter().map(|a| a.2.clone()).collect();
    sqlx::query(
        "INSERT INTO shopify_sync_versions (merchant_id, customer_id, version, compare_digest)
         SELECT $1, c, v, d FROM UNNEST($2::int8[], $3::int8[], $4::text[]) AS t(c, v, d)
         ON CONFLICT (merchant_id, customer_id) DO UPDATE
         SET version = EXCLUDED.version, compare_digest = EXCLUDED.compare_digest, written_at = now()
         WHERE shopify_sync_versions.version < EXCLUDED.version
            OR (shopify_sync_versions.version = EXCLUDED.version AND EXCLUDED.compare_digest IS NOT NULL)",
    )
    .bind(shop.as_str())
    .bind(&ids)
    .bind(&versions)
    .bind(&digests)
    .execute(pool)
    .await?;
    Ok(())
}
