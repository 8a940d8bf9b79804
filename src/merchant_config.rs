//! A merchant's saved RFM configuration: kept in Postgres (`program_settings`), versioned by an entity tag, and
//! carried to the engine through the config topic.
//!
//! A save is one transaction that holds the merchant's row locked: it compares the caller's `If-Match` with the
//! tag of the configuration saved now (412 when another admin saved first), writes the new one and an `audit_logs`
//! row with both, and produces the `ConfigChanged` event, committing only after Kafka acknowledged it. So a saved
//! configuration is always on its way to the partition that owns the merchant, and one that could not be sent is
//! not saved (503). The partition applies it in order with the merchant's events (`actors::partition`).

use chrono::{DateTime, Utc};
use functions::{Measured, Money, RfmConfig};
use serde_json::json;
use sha2::{Digest, Sha256};
use sqlx::{Postgres, Transaction};
use streams::events::{ConfigChanged, InputEvent, SCHEMA_VERSION};
use streams::sink::{EventSink, Outgoing, ProduceError};
use streams::{MerchantId, Topics};

use crate::store::{Store, StoreError};

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

/// Whether an `If-Match` header value admits `current`: `*`, or a list naming it (weak tags compared strongly).
pub fn matches(if_match: &str, current: &str) -> bool {
    if_match
        .split(',')
        .map(|tag| tag.trim())
        .any(|tag| tag == "*" || tag.strip_prefix("W/").unwrap_or(tag) == current)
}

#[derive(Debug, thiserror::Error)]
pub enum SaveError {
    #[error("configurations are kept in Postgres, and DATABASE_URL is not set")]
    NoDatabase,
    #[error(transparent)]
    Store(#[from] StoreError),
    #[error("another change was saved first")]
    Stale(Current),
    #[error("the configuration could not be sent to the engine: {0}")]
    Produce(#[from] ProduceError),
}

impl From<sqlx::Error> for SaveError {
    fn from(e: sqlx::Error) -> Self {
        SaveError::Store(e.into())
    }
}

/// Reads and saves configurations; one per instance.
pub struct ConfigService {
    pub store: Option<Store>,
    pub sink: EventSink,
    pub topics: Topics,
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
        let row: (DateTime<Utc>,) = sqlx::query_as(
            "INSERT INTO program_settings (merchant_id, rfm_thresholds, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (merchant_id) DO UPDATE SET rfm_thresholds = EXCLUDED.rfm_thresholds, updated_at = now()
             RETURNING updated_at",
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
        self.send(merchant, request.config).await?;
        tx.commit().await?;
        tracing::info!(merchant = %merchant, action = request.action, "rfm configuration saved and sent");
        Ok(Current {
            config: request.config.clone(),
            saved: true,
            updated_at: Some(row.0),
        })
    }

    /// Produces the configuration to the config topic, keyed by the merchant, and waits for the acknowledgement.
    async fn send(&self, merchant: &MerchantId, config: &RfmConfig) -> Result<(), ProduceError> {
        let event = InputEvent::ConfigChanged(ConfigChanged {
            event_id: format!("config-{}", uuid::Uuid::new_v4().simple()),
            schema_version: SCHEMA_VERSION,
            merchant_id: merchant.clone(),
            config: config.clone(),
            saved_at: Utc::now(),
        });
        let payload = event.encode();
        let record = Outgoing {
            topic: &self.topics.rfm_config,
            key: merchant.as_str(),
            payload: &payload,
            headers: &[],
        };
        self.sink.send(record).await.map(|_| ())
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
    fn if_match_accepts_star_lists_and_weak_tags() {
        let tag = etag(&RfmConfig::default());
        assert!(matches("*", &tag));
        assert!(matches(&format!("\"x\", W/{tag}"), &tag));
        assert!(!matches("\"x\"", &tag));
        assert!(!matches("", &tag));
    }
}
