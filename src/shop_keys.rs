//! Per-shop data keys for crypto-shredding, kept in Postgres (`shop_data_keys`), wrapped by the configured key.
//!
//! The ingress seals a shop's personal data under the shop's own key, created on first use. Sealed values travel
//! on Kafka, where retention keeps them beyond our reach; deleting the shop's wrapped key (`shop/redact`) is what
//! makes them unreadable. Keys are cached for `CACHE_TTL`, so an instance keeps sealing under a just-destroyed key
//! for at most that long: values nobody can open, which is the safe side. While Postgres is down an instance keeps
//! using the key it has; when it has none, the webhook is refused with 503 and Shopify retries, rather than sealing
//! without the shop's key.

use std::time::{Duration, Instant};

use dashmap::DashMap;
use sqlx::{PgPool, Row};
use streams::MerchantId;

use crate::pii::{KeyRing, PiiError, ShopKey};
use crate::store::{Store, StoreError};

const CACHE_TTL: Duration = Duration::from_secs(60);

#[derive(Debug, thiserror::Error)]
pub enum ShopKeyError {
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("the shop's data key cannot be opened: {0}")]
    Key(#[from] PiiError),
}

impl From<sqlx::Error> for ShopKeyError {
    fn from(e: sqlx::Error) -> Self {
        ShopKeyError::Store(StoreError::from(e))
    }
}

/// The ingress's view: each shop's key, created when missing, cached briefly.
pub struct ShopKeys {
    store: Store,
    keys: KeyRing,
    cache: DashMap<MerchantId, (Instant, ShopKey)>,
}

impl ShopKeys {
    pub fn new(store: Store, keys: KeyRing) -> ShopKeys {
        ShopKeys {
            store,
            keys,
            cache: DashMap::new(),
        }
    }

    /// The key to seal `merchant`'s personal data under, created on first use.
    pub async fn for_sealing(&self, merchant: &MerchantId) -> Result<ShopKey, ShopKeyError> {
        if let Some(entry) = self.cache.get(merchant) {
            if entry.0.elapsed() < CACHE_TTL {
                return Ok(entry.1.clone());
            }
        }
        let pool = self.store.pool();
        let fetched = match load(pool, &self.keys, merchant).await {
            Ok(Some(key)) => Ok(key),
            Ok(None) => create(pool, &self.keys, merchant).await,
            Err(e) => Err(e),
        };
        let key = match (fetched, self.cache.get(merchant)) {
            (Ok(key), _) => key,
            // Postgres is down: a key this instance had is still the shop's (a destroyed one only seals values
            // nobody can open), and refusing every order until Postgres is back would be worse.
            (Err(ShopKeyError::Store(e)), Some(entry)) => {
                tracing::warn!(merchant = %merchant, error = %e, "using the cached data key past its time");
                return Ok(entry.1.clone());
            }
            (Err(e), _) => return Err(e),
        };
        if self.cache.len() > 100_000 {
            self.cache.retain(|_, (at, _)| at.elapsed() < CACHE_TTL);
        }
        self.cache
            .insert(merchant.clone(), (Instant::now(), key.clone()));
        Ok(key)
    }
}

/// The shop's key, if it has one (none after `shop/redact`).
pub async fn load(
    pool: &PgPool,
    keys: &KeyRing,
    merchant: &MerchantId,
) -> Result<Option<ShopKey>, ShopKeyError> {
    let row = sqlx::query("SELECT kek_id, wrapped_key FROM shop_data_keys WHERE merchant_id = $1")
        .bind(merchant.as_str())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (kek_id, wrapped): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    Ok(Some(keys.unwrap_shop_key(merchant, &kek_id, &wrapped)?))
}

/// Creates the shop's key; when another instance created one first, that one is used.
async fn create(
    pool: &PgPool,
    keys: &KeyRing,
    merchant: &MerchantId,
) -> Result<ShopKey, ShopKeyError> {
    let (key, wrapped) =
        keys.new_shop_key(merchant)
            .ok_or(ShopKeyError::Key(PiiError::UnknownKey(
                "(none configured)".into(),
            )))?;
    let inserted = sqlx::query(
        "INSERT INTO shop_data_keys (merchant_id, kek_id, wrapped_key) VALUES ($1, $2, $3)
         ON CONFLICT (merchant_id) DO NOTHING",
    )
    .bind(merchant.as_str())
    .bind(&key.kek_id)
    .bind(wrapped)
    .execute(pool)
    .await?;
    if inserted.rows_affected() == 1 {
        return Ok(key);
    }
    load(pool, keys, merchant)
        .await?
        .ok_or(ShopKeyError::Key(PiiError::Corrupt))
}
