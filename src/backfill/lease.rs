//! Who runs a shop's backfill: a lease on its `backfill_runs` row (`lease_owner`, `lease_until`), so that across
//! instances one runs it at a time and the backfill of an instance that died is taken over once its lease expired.
//! Every time is Postgres's `now()`, so the instances' clocks do not matter.

use std::time::Duration;

use sqlx::PgPool;
use streams::MerchantId;

/// One instance's leases: its owner id and how long a claim or renewal holds.
#[derive(Clone)]
pub struct Leases {
    pub pool: PgPool,
    /// Unique per process: a restarted instance is a new owner and waits out its predecessor's lease.
    pub owner: String,
    pub ttl: Duration,
}

fn millis(d: Duration) -> i64 {
    i64::try_from(d.as_millis()).unwrap_or(i64::MAX)
}

impl Leases {
    pub fn new(pool: PgPool, ttl: Duration) -> Leases {
        let owner = format!(
            "{}-{}",
            std::process::id(),
            &uuid::Uuid::new_v4().simple().to_string()[..12]
        );
        Leases { pool, owner, ttl }
    }

    /// Claims `shop` for a backfill that is about to start (after an install), creating its row if it has none.
    /// False when another owner's lease still runs.
    pub async fn claim_for_start(&self, shop: &MerchantId) -> Result<bool, sqlx::Error> {
        let claimed: Option<String> = sqlx::query_scalar(
            "INSERT INTO backfill_runs (merchant_id, phase, lease_owner, lease_until)
             VALUES ($1, 'running', $2, now() + $3 * interval '1 millisecond')
             ON CONFLICT (merchant_id) DO UPDATE SET lease_owner = $2, lease_until = EXCLUDED.lease_until
             WHERE backfill_runs.lease_until IS NULL OR backfill_runs.lease_until < now()
                OR backfill_runs.lease_owner = $2
             RETURNING merchant_id",
        )
        .bind(shop.as_str())
        .bind(&self.owner)
        .bind(millis(self.ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(claimed.is_some())
    }

    /// Claims an unfinished backfill nobody holds (never held, released, or its holder's lease ran out).
    pub async fn claim_unfinished(&self, shop: &MerchantId) -> Result<bool, sqlx::Error> {
        let claimed: Option<String> = sqlx::query_scalar(
            "UPDATE backfill_runs SET lease_owner = $2, lease_until = now() + $3 * interval '1 millisecond'
             WHERE merchant_id = $1 AND phase IN ('running', 'downloading')
               AND (lease_until IS NULL OR lease_until < now())
             RETURNING merchant_id",
        )
        .bind(shop.as_str())
        .bind(&self.owner)
        .bind(millis(self.ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(claimed.is_some())
    }

    /// Shops with an unfinished backfill that nobody holds and whose offline token is stored (without it nothing
    /// can be resumed: the shop must open the app again).
    pub async fn unclaimed(&self) -> Result<Vec<MerchantId>, sqlx::Error> {
        let shops: Vec<String> = sqlx::query_scalar(
            "SELECT r.merchant_id FROM backfill_runs r JOIN shop_access a ON a.merchant_id = r.merchant_id
             WHERE r.phase IN ('running', 'downloading') AND (r.lease_until IS NULL OR r.lease_until < now())
             ORDER BY r.updated_at",
        )
        .fetch_all(&self.pool)
        .await?;
        Ok(shops
            .iter()
            .filter_map(|s| MerchantId::parse(s).ok())
            .collect())
    }

    /// Extends this owner's lease; false when it is no longer this owner's (it expired and another took it). A
    /// claim changes the owner in one statement, so a late renewal cannot take a lease back.
    pub async fn renew(&self, shop: &MerchantId) -> Result<bool, sqlx::Error> {
        let renewed: Option<String> = sqlx::query_scalar(
            "UPDATE backfill_runs SET lease_until = now() + $3 * interval '1 millisecond'
             WHERE merchant_id = $1 AND lease_owner = $2
             RETURNING merchant_id",
        )
        .bind(shop.as_str())
        .bind(&self.owner)
        .bind(millis(self.ttl))
        .fetch_optional(&self.pool)
        .await?;
        Ok(renewed.is_some())
    }

    /// Gives the lease up, so another instance may continue at once rather than after the lease runs out.
    pub async fn release(&self, shop: &MerchantId) -> Result<(), sqlx::Error> {
        sqlx::query(
            "UPDATE backfill_runs SET lease_owner = NULL, lease_until = NULL
             WHERE merchant_id = $1 AND lease_owner = $2",
        )
        .bind(shop.as_str())
        .bind(&self.owner)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}
