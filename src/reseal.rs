//! `loyalnest-rfm reseal`: after a key rotation (a new key prepended to `ENCRYPTION_KEYS`), moves everything sealed
//! at rest under an older key to the newest one, so the older key can then be removed.
//!
//! Three kinds of value name a configured key: the shops' wrapped data keys (re-wrapping one re-keys all of that
//! shop's personal data at once, since the values themselves are under the shop's key), personal data sealed
//! directly under a configured key (written without a shop key), and data-request exports. Work goes in batches with
//! a pause between them, so it can run beside live traffic. It is resumable by construction: every query selects
//! only values still under an older key, and every update applies only if the value is still the one read, so a
//! crash, a concurrent writer or a second run loses nothing and does nothing twice.

use std::time::Duration;

use sqlx::{PgPool, Row};
use streams::events::SealedPii;
use streams::MerchantId;

use crate::pii::{KeyRing, Owner, Purpose, SHOP_KEY_PREFIX};
use crate::store::StoreError;

#[derive(Debug, thiserror::Error)]
pub enum ResealError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("ENCRYPTION_KEYS is not set: there is no key to reseal under")]
    NoKeys,
}

impl From<sqlx::Error> for ResealError {
    fn from(e: sqlx::Error) -> Self {
        ResealError::Store(StoreError::from(e))
    }
}

/// How much was moved, and what could not be (a value under a key no longer configured, or damaged).
#[derive(Debug, Default, Clone, PartialEq, Eq, serde::Serialize)]
pub struct ResealReport {
    pub shop_keys: u64,
    pub personal_data: u64,
    pub exports: u64,
    /// Shops' Admin API offline tokens (`shop_access`).
    pub tokens: u64,
    pub unreadable: u64,
}

pub struct Resealer<'a> {
    pub pool: &'a PgPool,
    pub keys: &'a KeyRing,
    pub batch: i64,
    pub pause: Duration,
}

/// Where each table's walk has got to (keyset cursors), so one run passes over each table once, unreadable
/// values included.
#[derive(Default)]
struct Cursors {
    shop: String,
    customer: (String, i64),
    export: (String, String),
    token: String,
}

impl Resealer<'_> {
    pub async fn run(&self) -> Result<ResealReport, ResealError> {
        let current = self
            .keys
            .current_id()
            .ok_or(ResealError::NoKeys)?
            .to_owned();
        let (mut report, mut at) = (ResealReport::default(), Cursors::default());
        loop {
            let seen = self.shop_keys(&current, &mut at, &mut report).await?
                + self.personal_data(&current, &mut at, &mut report).await?
                + self.exports(&current, &mut at, &mut report).await?
                + self.tokens(&current, &mut at, &mut report).await?;
            if seen == 0 {
                return Ok(report);
            }
            tracing::info!(?report, "reseal batch done");
            tokio::time::sleep(self.pause).await;
        }
    }

    async fn shop_keys(
        &self,
        current: &str,
        at: &mut Cursors,
        report: &mut ResealReport,
    ) -> Result<usize, ResealError> {
        let rows = sqlx::query(
            "SELECT merchant_id, kek_id, wrapped_key FROM shop_data_keys WHERE kek_id <> $1 AND merchant_id > $3
             ORDER BY merchant_id LIMIT $2",
        )
        .bind(current)
        .bind(self.batch)
        .bind(&at.shop)
        .fetch_all(self.pool)
        .await?;
        let seen = rows.len();
        for row in rows {
            let (shop, kek_id, wrapped): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            at.shop.clone_from(&shop);
            let Ok(merchant) = MerchantId::parse(&shop) else {
                report.unreadable += 1;
                continue;
            };
            let rewrapped = self
                .keys
                .unwrap_shop_key(&merchant, &kek_id, &wrapped)
                .ok()
                .and_then(|key| self.keys.rewrap_shop_key(&merchant, &key));
            let Some((new_kek, new_wrapped)) = rewrapped else {
                report.unreadable += 1;
                continue;
            };
            let updated = sqlx::query(
                "UPDATE shop_data_keys SET kek_id = $3, wrapped_key = $4
                 WHERE merchant_id = $1 AND wrapped_key = $2",
            )
            .bind(&shop)
            .bind(&wrapped)
            .bind(new_kek)
            .bind(new_wrapped)
            .execute(self.pool)
            .await?;
            report.shop_keys += updated.rows_affected();
        }
        Ok(seen)
    }

    async fn personal_data(
        &self,
        current: &str,
        at: &mut Cursors,
        report: &mut ResealReport,
    ) -> Result<usize, ResealError> {
        let rows = sqlx::query(
            "SELECT merchant_id, customer_id, pii_key_id, pii_sealed, email_index FROM customers
             WHERE pii_key_id IS NOT NULL AND pii_key_id <> $1 AND pii_key_id NOT LIKE $3
               AND (merchant_id, customer_id) > ($4, $5)
             ORDER BY merchant_id, customer_id LIMIT $2",
        )
        .bind(current)
        .bind(self.batch)
        .bind(format!("{SHOP_KEY_PREFIX}%"))
        .bind(&at.customer.0)
        .bind(at.customer.1)
        .fetch_all(self.pool)
        .await?;
        let seen = rows.len();
        for row in rows {
            let (shop, customer): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            at.customer = (shop.clone(), customer);
            let sealed = SealedPii {
                key_id: row.try_get(2)?,
                sealed: row.try_get(3)?,
                email_index: row.try_get(4)?,
            };
            let Ok(merchant) = MerchantId::parse(&shop) else {
                report.unreadable += 1;
                continue;
            };
            let owner = Owner {
                merchant: &merchant,
                customer_id: customer as u64,
            };
            let resealed = self
                .keys
                .open(&sealed, owner)
                .ok()
                .and_then(|pii| self.keys.seal(&pii, owner));
            let Some(resealed) = resealed else {
                report.unreadable += 1;
                continue;
            };
            let updated = sqlx::query(
                "UPDATE customers SET pii_key_id = $4, pii_sealed = $5
                 WHERE merchant_id = $1 AND customer_id = $2 AND pii_sealed = $3",
            )
            .bind(&shop)
            .bind(customer)
            .bind(&sealed.sealed)
            .bind(resealed.key_id)
            .bind(resealed.sealed)
            .execute(self.pool)
            .await?;
            report.personal_data += updated.rows_affected();
        }
        Ok(seen)
    }

    async fn exports(
        &self,
        current: &str,
        at: &mut Cursors,
        report: &mut ResealReport,
    ) -> Result<usize, ResealError> {
        let rows = sqlx::query(
            "SELECT merchant_id, event_id, customer_id, export_key_id, export FROM gdpr_requests
             WHERE export IS NOT NULL AND export_key_id IS NOT NULL AND export_key_id <> $1
               AND (merchant_id, event_id) > ($3, $4)
             ORDER BY merchant_id, event_id LIMIT $2",
        )
        .bind(current)
        .bind(self.batch)
        .bind(&at.export.0)
        .bind(&at.export.1)
        .fetch_all(self.pool)
        .await?;
        let seen = rows.len();
        for row in rows {
            let (shop, event_id, customer): (String, String, Option<i64>) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            at.export = (shop.clone(), event_id.clone());
            let (key_id, stored): (String, String) = (row.try_get(3)?, row.try_get(4)?);
            let (Ok(merchant), Some(customer)) = (MerchantId::parse(&shop), customer) else {
                report.unreadable += 1;
                continue;
            };
            let owner = Owner {
                merchant: &merchant,
                customer_id: customer as u64,
            };
            let purpose = Purpose::DataExport;
            let Some((new_key, new_stored)) = self.reseal_bytes(&key_id, &stored, owner, purpose)
            else {
                report.unreadable += 1;
                continue;
            };
            let updated = sqlx::query(
                "UPDATE gdpr_requests SET export_key_id = $4, export = $5
                 WHERE merchant_id = $1 AND event_id = $2 AND export = $3",
            )
            .bind(&shop)
            .bind(&event_id)
            .bind(&stored)
            .bind(new_key)
            .bind(new_stored)
            .execute(self.pool)
            .await?;
            report.exports += updated.rows_affected();
        }
        Ok(seen)
    }

    /// Opens a value sealed under an older key and seals it again under the current one; `None` when it cannot be
    /// opened (a key no longer configured, or damage).
    fn reseal_bytes(
        &self,
        key_id: &str,
        stored: &str,
        owner: Owner<'_>,
        purpose: Purpose,
    ) -> Option<(String, String)> {
        let bytes = self.keys.open_bytes(key_id, stored, owner, purpose).ok()?;
        self.keys.seal_bytes(&bytes, owner, purpose)
    }

    /// Offline tokens are sealed to their shop (customer 0) under their own purpose; without this pass a rotation
    /// that retires the old key would leave every shop's write-back unable to open its token.
    async fn tokens(
        &self,
        current: &str,
        at: &mut Cursors,
        report: &mut ResealReport,
    ) -> Result<usize, ResealError> {
        let rows = sqlx::query(
            "SELECT merchant_id, key_id, sealed_token FROM shop_access
             WHERE key_id <> $1 AND merchant_id > $3 ORDER BY merchant_id LIMIT $2",
        )
        .bind(current)
        .bind(self.batch)
        .bind(&at.token)
        .fetch_all(self.pool)
        .await?;
        let seen = rows.len();
        for row in rows {
            let (shop, key_id, stored): (String, String, String) =
                (row.try_get(0)?, row.try_get(1)?, row.try_get(2)?);
            at.token = shop.clone();
            let Ok(merchant) = MerchantId::parse(&shop) else {
                report.unreadable += 1;
                continue;
            };
            let owner = Owner {
                merchant: &merchant,
                customer_id: 0,
            };
            let purpose = Purpose::OfflineToken;
            let Some((new_key, new_stored)) = self.reseal_bytes(&key_id, &stored, owner, purpose)
            else {
                report.unreadable += 1;
                continue;
            };
            // Conditional on the value read, so a token stored meanwhile (a reinstall) is not overwritten.
            let updated = sqlx::query(
                "UPDATE shop_access SET key_id = $3, sealed_token = $4
                 WHERE merchant_id = $1 AND sealed_token = $2",
            )
            .bind(&shop)
            .bind(&stored)
            .bind(new_key)
            .bind(new_stored)
            .execute(self.pool)
            .await?;
            report.tokens += updated.rows_affected();
        }
        Ok(seen)
    }
}
