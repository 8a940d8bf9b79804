//! A merchant's saved RFM configuration: kept in Postgres (`program_settings`), versioned by an entity tag, and
//! carried to the engine through the config topic.
//!
//! A save is one transaction that holds the merchant's row locked: it compares the caller's `If-Match` with the
//! tag of the configuration saved now (412 when another admin saved first), writes the new one with the next
//! revision, an `audit_logs` row with both, and an outbox row with the `ConfigChanged` event. Only once that
//! committed is the event sent (`outbox`): at once by the saving request, and by a relay pass later if the broker
//! did not take it then. So a committed configuration always reaches the partition that owns the merchant, and one
//! that did not commit is never sent. The partition applies it in order with the merchant's events, and ignores a
//! revision at or below the one it holds (`actors::partition`).

use chrono::{DateTime, Utc};
use functions::{Measured, Money, RfmConfig};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
use streams::MerchantId;

use crate::store::{Store, StoreError};

pub mod outbox;
pub use outbox::ConfigRelay;

/// The audit row's action for a `PUT`, and for a reset.
pub const AUDIT_UPDATE: &str = "rfm_config_update";
pub const AUDIT_RESET: &str = "rfm_config_reset";

/// The configuration a merchant has now.
#[derive(Debug, Clone, PartialEq)]
pub struct Current {
    pub config: RfmConfig,
    /// Whether the merchant ever saved one (else it is the medium preset).
    pub saved: bool,
    pub updated_at: Option<DateTime<Utc>>,
}

impl Current {
    pub fn etag(&self) -> String {
        etag(&self.config)
    }
}

/// A strong entity tag of a configuration: the first 128 bits of the SHA-256 of its stored JSON. Equal
/// configurations have equal tags, so a save that changed nothing does not make another admin's copy stale.
pub fn etag(config: &RfmConfig) -> String {
    let digest = Sha256::digest(serde_json::to_vec(config).unwrap_or_default());
    let hex: String = digest[..16].iter().map(|b| format!("{b:02x}")).collect();
    format!("\"{hex}\"")
}

/// Whether an `If-Match` header value admits `current`: `*`, or a list naming it. RFC 9110 (13.1.1) has `If-Match`
/// use the strong comparison, under which a weak tag (`W/"..."`) equals nothing, so one never admits a save.
pub fn matches(if_match: &str, current: &str) -> bool {
    if_match
        .split(',')
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || (!tag.starts_with("W/") && tag == current))
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("configurations are kept in Postgres, and DATABASE_URL is not set")]
    NoDatabase,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another change was saved first")]
    Stale(Current),
}

impl From<sqlx::Error> for SaveError {
    fn from(e: sqlx::Error) -> Self {
        SaveError::Store(e.into())
    }
}

/// Reads and saves configurations; one per instance.
pub struct ConfigService {
    pub store: Option<Store>,
    /// Sends the outbox (with a database, always).
    pub relay: Option<std::sync::Arc<ConfigRelay>>,
}

/// What a save is asked to do.
pub struct SaveRequest<'a> {
    pub merchant: &'a MerchantId,
    /// The token's `sub`, for the audit row.
    pub actor: &'a str,
    /// `None`: no precondition (a reset without `If-Match`).
    pub if_match: Option<&'a str>,
    pub config: &'a RfmConfig,
    pub action: &'a str,
}

impl ConfigService {
    pub async fn current(&self, merchant: &MerchantId) -> Result<Current, StoreError> {
        let Some(store) = &self.store else {
            return Ok(default_current());
        };
        let mut conn = store.pool().acquire().await?;
        read(&mut conn, merchant).await
    }

    /// Saves `request.config` (validated by the caller) and sends it to the engine; see the module comment.
    pub async fn save(&self, request: SaveRequest<'_>) -> Result<Current, SaveError> {
        let store = self.store.as_ref().ok_or(SaveError::NoDatabase)?;
        let merchant = request.merchant;
        let mut tx = store.pool().begin().await?;
        lock_merchant(&mut tx, merchant).await?;
        let before = read(&mut tx, merchant).await?;
        if let Some(if_match) = request.if_match {
            if !matches(if_match, &before.etag()) {
                return Err(SaveError::Stale(before));
            }
        }
        let after =
            serde_json::to_value(request.config).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let (updated_at, revision): (DateTime<Utc>, i64) = sqlx::query_as(
            "INSERT INTO program_settings (merchant_id, rfm_thresholds, updated_at, config_revision)
             VALUES ($1, $2, now(), 1)
             ON CONFLICT (merchant_id) DO UPDATE SET rfm_thresholds = EXCLUDED.rfm_thresholds, updated_at = now(),
                 config_revision = program_settings.config_revision + 1
             RETURNING updated_at, config_revision",
        )
        .bind(merchant.as_str())
        .bind(&after)
        .fetch_one(&mut *tx)
        .await?;
        let detail = json!({
            "before": before.saved.then(|| json!(before.config)),
            "after": after,
            "etag_before": before.etag(),
            "etag_after": etag(request.config),
            "revision": revision,
        });
        sqlx::query(
            "INSERT INTO audit_logs (merchant_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
        )
        .bind(merchant.as_str())
        .bind(request.actor)
        .bind(request.action)
        .bind(detail)
        .execute(&mut *tx)
        .await?;
        outbox::enqueue(&mut tx, merchant, revision, request.config).await?;
        tx.commit().await?;
        tracing::info!(merchant = %merchant, action = request.action, revision, "rfm configuration saved");
        // Sent now so the engine has it about as soon as the answer leaves; what fails here the relay retries.
        if let Some(relay) = &self.relay {
            if let Err(e) = relay.relay_pending().await {
                tracing::warn!(merchant = %merchant, error = %e, "saved configuration not sent yet; the relay retries");
            }
        }
        Ok(Current {
            config: request.config.clone(),
            saved: true,
            updated_at: Some(updated_at),
        })
    }
}

/// The AOV as Postgres knows it, for an instance that does not hold the merchant: the customer rows carry orders
/// and net spend (in major units; the currency's decimals are not stored, so two are assumed), not the dates of
/// the first order, so there is no purchase interval from here.
pub async fn measure_from_database(
    store: &Store,
    merchant: &MerchantId,
) -> Result<Measured, StoreError> {
    let (buyers, orders, net): (i64, i64, i64) = sqlx::query_as(
        "SELECT count(*) FILTER (WHERE orders > 0), COALESCE(sum(orders), 0)::int8,
                COALESCE(round(sum(net_spend) * 100), 0)::int8
         FROM customers WHERE merchant_id = $1",
    )
    .bind(merchant.as_str())
    .fetch_one(store.pool())
    .await?;
    let mut measured = Measured::default();
    measured.buyers = buyers.max(0) as u64;
    measured.orders = orders.max(0) as u64;
    measured.net = Money::from_minor(net);
    Ok(measured)
}

fn default_current() -> Current {
    Current {
        config: RfmConfig::default(),
        saved: false,
        updated_at: None,
    }
}

/// Two saves of one shop queue on its `merchants` row (created if missing, so even the first saves are ordered).
async fn lock_merchant(
    tx: &mut Transaction<'_, Postgres>,
    merchant: &MerchantId,
) -> Result<(), sqlx::Error> {
    sqlx::query("INSERT INTO merchants (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING")
        .bind(merchant.as_str())
        .execute(&mut **tx)
        .await?;
    sqlx::query("SELECT 1 FROM merchants WHERE merchant_id = $1 FOR UPDATE")
        .bind(merchant.as_str())
        .execute(&mut **tx)
        .await?;
    Ok(())
}

async fn read(conn: &mut sqlx::PgConnection, merchant: &MerchantId) -> Result<Current, StoreError> {
    let row: Option<(serde_json::Value, DateTime<Utc>)> = sqlx::query_as(
        "SELECT rfm_thresholds, updated_at FROM program_settings WHERE merchant_id = $1",
    )
    .bind(merchant.as_str())
    .fetch_optional(conn)
    .await?;
    let Some((json, updated_at)) = row else {
        return Ok(default_current());
    };
    let config = RfmConfig::from_json(&json).map_err(|errors| StoreError::InvalidConfig {
        merchant: merchant.to_string(),
        errors,
    })?;
    Ok(Current {
        config,
        saved: true,
        updated_at: Some(updated_at),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn tags_follow_the_content() {
        let a = RfmConfig::default();
        let mut b = a.clone();
        assert_eq!(etag(&a), etag(&b));
        b.grace_period_days = 30;
        assert_ne!(etag(&a), etag(&b));
        assert!(etag(&a).starts_with('"') && etag(&a).len() == 34);
    }

    #[test]
    fn if_match_accepts_star_and_lists_and_refuses_weak_tags() {
        let tag = etag(&RfmConfig::default());
        assert!(matches("*", &tag));
        assert!(matches(&format!("\"x\", {tag}"), &tag));
        assert!(!matches(&format!("W/{tag}"), &tag));
        assert!(!matches(&format!("\"x\", W/{tag}"), &tag));
        assert!(!matches("\"x\"", &tag));
        assert!(!matches("", &tag));
    }
}
