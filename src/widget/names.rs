//! A customer's first name for a nudge's greeting, opened from the sealed personal data on the customer's row at
//! the moment the nudge is rendered (DESIGN.md §3: personal data is never plaintext on Kafka, in Redis or in logs).
//!
//! The name is read, used for one message and dropped; it is never logged, cached or sent anywhere but the
//! customer's own widget. A customer with no row yet, no sealed data, or data sealed under a key this instance
//! cannot open gets a greeting without a name: a missing name is never a reason to hold a nudge back.

use sqlx::Row;

use actors::customer::CustomerKey;

use crate::pii::{KeyRing, Owner, SHOP_KEY_PREFIX};
use crate::shop_keys;
use crate::store::Store;

/// Opens first names with the configured keys (and the shops' own data keys).
#[derive(Clone)]
pub struct FirstNames {
    store: Store,
    keys: KeyRing,
}

impl FirstNames {
    pub fn new(store: Store, keys: KeyRing) -> FirstNames {
        FirstNames { store, keys }
    }

    /// The customer's first name, if one is stored and can be opened here.
    pub async fn first_name(&self, key: &CustomerKey) -> Option<String> {
        if self.keys.is_empty() {
            return None;
        }
        match self.open(key).await {
            Ok(name) => name,
            Err(reason) => {
                // The reason names a key id or a database error, never the data.
                tracing::warn!(merchant = %key.merchant, customer_id = key.customer_id, reason = %reason, "first name not opened for a nudge");
                metrics::counter!(streams::metric_names::WIDGET_NAMES_UNOPENED).increment(1);
                None
            }
        }
    }

    async fn open(&self, key: &CustomerKey) -> Result<Option<String>, String> {
        let row = sqlx::query(
            "SELECT pii_key_id, pii_sealed, email_index FROM customers
             WHERE merchant_id = $1 AND customer_id = $2",
        )
        .bind(key.merchant.as_str())
        .bind(key.customer_id as i64)
        .fetch_optional(self.store.pool())
        .await
        .map_err(|e| e.to_string())?;
        let Some(row) = row else { return Ok(None) };
        let key_id: Option<String> = row.try_get(0).map_err(|e| e.to_string())?;
        let sealed: Option<String> = row.try_get(1).map_err(|e| e.to_string())?;
        let (Some(key_id), Some(sealed)) = (key_id, sealed) else {
            return Ok(None);
        };
        let sealed = streams::events::SealedPii {
            key_id: key_id.clone(),
            sealed,
            email_index: row.try_get(2).map_err(|e| e.to_string())?,
        };
        let owner = Owner {
            merchant: &key.merchant,
            customer_id: key.customer_id,
        };
        let pii = if key_id.starts_with(SHOP_KEY_PREFIX) {
            let shop_key = shop_keys::load(self.store.pool(), &self.keys, &key.merchant)
                .await
                .map_err(|e| e.to_string())?
                .ok_or("the shop's data key was destroyed")?;
            shop_key.open(&sealed, owner)
        } else {
            self.keys.open(&sealed, owner)
        };
        pii.map(|pii| pii.first_name).map_err(|e| e.to_string())
    }
}
