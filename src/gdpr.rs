//! GDPR on the Postgres side: personal data at rest, and the answer to `customers/data_request`.
//!
//! Personal fields arrive sealed from the ingress and are stored sealed on the customer's row (never opened by
//! the processor, except to answer a data request). A data request's export gathers everything held about the
//! customer: the personal fields (opened with the configured keys), the in-memory aggregates (orders, refunds,
//! points), the stored scores, every evaluation, every segment change, the nudges and their events. The export is
//! sealed for that shop and customer (a purpose of its own, so it cannot pass for sealed PII), kept until
//! `GDPR_EXPORT_RETENTION_DAYS` after the request (Shopify asks for an answer within 30 days), and then erased by a
//! sweep that runs whenever a request is answered or read.

use std::time::Duration;

use actors::DataRequest;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::{PgPool, Row};
use streams::events::SealedPii;
use streams::MerchantId;

use crate::pii::{KeyRing, Owner, Purpose, ShopKey, SHOP_KEY_PREFIX};
use crate::shop_keys::{self, ShopKeyError};
use crate::store::{Store, StoreError};

/// What answering data requests needs: the database, the keys, and how long an export is kept.
#[derive(Clone)]
pub struct Gdpr {
    pub store: Store,
    pub keys: KeyRing,
    pub retention: Duration,
}

/// One request as the merchant sees it; `export` only while it is kept and when asked for.
#[derive(Debug, Clone, Serialize)]
pub struct RequestView {
    pub id: String,
    pub kind: String,
    pub status: String,
    pub customer_id: Option<i64>,
    pub data_request_id: Option<i64>,
    pub received_at: chrono::DateTime<chrono::Utc>,
    pub completed_at: Option<chrono::DateTime<chrono::Utc>>,
    pub expires_at: Option<chrono::DateTime<chrono::Utc>>,
    #[serde(skip_serializing_if = "Option::is_none")]
    pub export: Option<Value>,
}

/// Stores sealed personal data on the customers' rows (after their scores were written). The newest seal of a
/// customer in the batch wins.
pub async fn write_pii(
    store: &Store,
    rows: &[(MerchantId, u64, SealedPii)],
) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let mut latest = std::collections::HashMap::new();
    for (merchant, customer, pii) in rows {
        latest.insert((merchant.as_str(), *customer as i64), pii);
    }
    let (mut merchants, mut customers, mut keys, mut sealed, mut indexes) =
        (vec![], vec![], vec![], vec![], vec![]);
    for ((merchant, customer), pii) in latest {
        merchants.push(merchant.to_owned());
        customers.push(customer);
        keys.push(pii.key_id.clone());
        sealed.push(pii.sealed.clone());
        indexes.push(pii.email_index.clone());
    }
    sqlx::query(
        "UPDATE customers c SET pii_key_id = v.key_id, pii_sealed = v.sealed,
                email_index = COALESCE(v.email_index, c.email_index)
         FROM UNNEST($1::text[], $2::int8[], $3::text[], $4::text[], $5::text[])
              AS v(merchant_id, customer_id, key_id, sealed, email_index)
         WHERE c.merchant_id = v.merchant_id AND c.customer_id = v.customer_id",
    )
    .bind(merchants)
    .bind(customers)
    .bind(keys)
    .bind(sealed)
    .bind(indexes)
    .execute(store.pool())
    .await?;
    Ok(())
}

impl Gdpr {
    /// With the store, the configured keys and export retention from `settings`.
    pub fn new(store: Store, settings: &crate::configuration::Settings) -> Gdpr {
        Gdpr {
            store,
            keys: settings.keys.clone(),
            retention: settings.gdpr_export_retention,
        }
    }

    /// Builds, seals and stores the export of one data request, marks it completed, and sweeps expired exports.
    /// Idempotent: a replayed request writes the same request row again with a fresh export.
    pub async fn answer(&self, request: &DataRequest) -> Result<(), StoreError> {
        let pool = self.store.pool();
        let export = self.export(pool, request).await?;
        let owner = Owner {
            merchant: &request.merchant,
            customer_id: request.customer_id,
        };
        let bytes = serde_json::to_vec(&export).unwrap_or_default();
        let (key_id, stored) = match self.keys.seal_bytes(&bytes, owner, Purpose::DataExport) {
            Some((key_id, sealed)) => (Some(key_id), sealed),
            None => (None, String::from_utf8(bytes).unwrap_or_default()),
        };
        sqlx::query(
            "INSERT INTO gdpr_requests (merchant_id, event_id, kind, customer_id, data_request_id, status,
                                        completed_at, export_key_id, export, expires_at)
             VALUES ($1, $2, 'customers_data_request', $3, $4, 'completed', now(), $5, $6,
                     now() + make_interval(secs => $7))
             ON CONFLICT (merchant_id, event_id) DO UPDATE SET status = 'completed',
                 completed_at = now(), export_key_id = $5, export = $6,
                 expires_at = COALESCE(gdpr_requests.expires_at, EXCLUDED.expires_at)",
        )
        .bind(request.merchant.as_str())
        .bind(&request.event_id)
        .bind(request.customer_id as i64)
        .bind(request.data_request_id.map(|id| id as i64))
        .bind(key_id)
        .bind(stored)
        .bind(self.retention.as_secs_f64())
        .execute(pool)
        .await?;
        sweep(pool).await
    }

    async fn export(&self, pool: &PgPool, request: &DataRequest) -> Result<Value, StoreError> {
        let (merchant, customer) = (request.merchant.as_str(), request.customer_id as i64);
        let row = sqlx::query(
            "SELECT version, segment, recency, frequency, monetary, score::float8, lifecycle_stage, orders,
                    net_spend::text, last_order_at, pii_key_id, pii_sealed, email_index, updated_at
             FROM customers WHERE merchant_id = $1 AND customer_id = $2",
        )
        .bind(merchant)
        .bind(customer)
        .fetch_optional(pool)
        .await?;
        let owner = Owner {
            merchant: &request.merchant,
            customer_id: request.customer_id,
        };
        let shop_key = shop_keys::load(pool, &self.keys, &request.merchant).await;
        let (scores, personal) = match &row {
            Some(r) => (
                Some(stored_scores(r)?),
                self.personal_data(r, owner, shop_key)?,
            ),
            None => (None, Value::Null),
        };
        let listed = |sql: &'static str| rows_as_json(pool, sql, merchant, customer);
        Ok(json!({
            "shop": merchant,
            "customer_id": request.customer_id,
            "data_request_id": request.data_request_id,
            "request_event_id": request.event_id,
            "generated_at": chrono::Utc::now(),
            "personal_data": personal,
            "held_in_memory": request.held,
            "stored_scores": scores,
            "evaluations": listed(
                "SELECT version, segment, recency, frequency, monetary, score::float8 AS score, lifecycle_stage,
                        occurred_at FROM rfm_score_history WHERE merchant_id = $1 AND customer_id = $2
                 ORDER BY version").await?,
            "segment_changes": listed(
                "SELECT version, from_segment, to_segment, occurred_at FROM rfm_segment_deltas
                 WHERE merchant_id = $1 AND customer_id = $2 ORDER BY version").await?,
            "nudges": listed(
                "SELECT nudge_id, version, segment, variant, locale, created_at FROM nudges
                 WHERE merchant_id = $1 AND customer_id = $2 ORDER BY version").await?,
            "nudge_events": listed(
                "SELECT e.nudge_id, e.kind, e.occurred_at FROM nudge_events e
                 LEFT JOIN nudges n ON n.merchant_id = e.merchant_id AND n.nudge_id = e.nudge_id
                 WHERE e.merchant_id = $1 AND (e.customer_id = $2 OR n.customer_id = $2)
                 ORDER BY e.occurred_at").await?,
        }))
    }

    /// The personal fields, opened. A value sealed under a key no longer configured is reported as such rather
    /// than failing the whole export.
    fn personal_data(
        &self,
        row: &sqlx::postgres::PgRow,
        owner: Owner<'_>,
        shop_key: Result<Option<ShopKey>, ShopKeyError>,
    ) -> Result<Value, StoreError> {
        let key_id: Option<String> = row.try_get("pii_key_id")?;
        let sealed: Option<String> = row.try_get("pii_sealed")?;
        let email_index: Option<String> = row.try_get("email_index")?;
        let (Some(key_id), Some(sealed)) = (key_id, sealed) else {
            return Ok(Value::Null);
        };
        let pii = SealedPii {
            key_id: key_id.clone(),
            sealed,
            email_index: email_index.clone(),
        };
        let opened = if key_id.starts_with(SHOP_KEY_PREFIX) {
            match shop_key {
                Ok(Some(key)) => key.open(&pii, owner).map_err(|e| e.to_string()),
                Ok(None) => Err("the shop's data key was destroyed".to_owned()),
                Err(e) => Err(e.to_string()),
            }
        } else {
            self.keys.open(&pii, owner).map_err(|e| e.to_string())
        };
        Ok(match opened {
            Ok(pii) => json!({ "fields": pii, "email_blind_index": email_index }),
            Err(e) => json!({ "unreadable": e, "key_id": key_id }),
        })
    }

    /// A shop's requests, newest first; with `id` (the webhook id or Shopify's data request id), that one with
    /// its export opened while it is kept.
    pub async fn requests(
        &self,
        merchant: &MerchantId,
        id: Option<&str>,
    ) -> Result<Vec<RequestView>, StoreError> {
        let pool = self.store.pool();
        sweep(pool).await?;
        let rows = sqlx::query(
            "SELECT event_id, kind, status, customer_id, data_request_id, received_at, completed_at, expires_at,
                    export_key_id, export
             FROM gdpr_requests
             WHERE merchant_id = $1 AND ($2::text IS NULL OR event_id = $2 OR data_request_id::text = $2)
             ORDER BY received_at DESC LIMIT 200",
        )
        .bind(merchant.as_str())
        .bind(id)
        .fetch_all(pool)
        .await?;
        rows.iter()
            .map(|r| self.view(r, merchant, id.is_some()))
            .collect()
    }

    fn view(
        &self,
        r: &sqlx::postgres::PgRow,
        merchant: &MerchantId,
        with_export: bool,
    ) -> Result<RequestView, StoreError> {
        let customer_id: Option<i64> = r.try_get("customer_id")?;
        let export = match (
            with_export,
            customer_id,
            r.try_get::<Option<String>, _>("export")?,
        ) {
            (true, Some(customer), Some(stored)) => {
                let owner = Owner {
                    merchant,
                    customer_id: customer as u64,
                };
                Some(self.open_export(r.try_get("export_key_id")?, &stored, owner))
            }
            _ => None,
        };
        Ok(RequestView {
            id: r.try_get("event_id")?,
            kind: r.try_get("kind")?,
            status: r.try_get("status")?,
            customer_id,
            data_request_id: r.try_get("data_request_id")?,
            received_at: r.try_get("received_at")?,
            completed_at: r.try_get("completed_at")?,
            expires_at: r.try_get("expires_at")?,
            export,
        })
    }

    fn open_export(&self, key_id: Option<String>, stored: &str, owner: Owner<'_>) -> Value {
        let bytes = match key_id {
            Some(key_id) => match self
                .keys
                .open_bytes(&key_id, stored, owner, Purpose::DataExport)
            {
                Ok(bytes) => bytes,
                Err(e) => return json!({ "unreadable": e.to_string(), "key_id": key_id }),
            },
            None => stored.as_bytes().to_vec(),
        };
        serde_json::from_slice(&bytes).unwrap_or(Value::Null)
    }
}

fn stored_scores(r: &sqlx::postgres::PgRow) -> Result<Value, StoreError> {
    Ok(json!({
        "version": r.try_get::<i32, _>("version")?,
        "segment": r.try_get::<String, _>("segment")?,
        "recency": r.try_get::<i16, _>("recency")?,
        "frequency": r.try_get::<i16, _>("frequency")?,
        "monetary": r.try_get::<i16, _>("monetary")?,
        "score": r.try_get::<f64, _>("score")?,
        "lifecycle_stage": r.try_get::<String, _>("lifecycle_stage")?,
        "orders": r.try_get::<i32, _>("orders")?,
        "net_spend": r.try_get::<String, _>("net_spend")?,
        "last_order_at": r.try_get::<Option<chrono::DateTime<chrono::Utc>>, _>("last_order_at")?,
        "updated_at": r.try_get::<chrono::DateTime<chrono::Utc>, _>("updated_at")?,
    }))
}

/// Rows of a query over (`$1` merchant, `$2` customer) as JSON objects, through Postgres's own `to_jsonb`.
async fn rows_as_json(
    pool: &PgPool,
    sql: &'static str,
    merchant: &str,
    customer: i64,
) -> Result<Value, StoreError> {
    let wrapped = format!("SELECT coalesce(jsonb_agg(to_jsonb(t)), '[]'::jsonb) FROM ({sql}) t");
    let value: Value = sqlx::query_scalar(&wrapped)
        .bind(merchant)
        .bind(customer)
        .fetch_one(pool)
        .await?;
    Ok(value)
}

/// Erases exports past their retention; the request rows stay as the record that they were answered.
async fn sweep(pool: &PgPool) -> Result<(), StoreError> {
    sqlx::query(
        "UPDATE gdpr_requests SET export = NULL, export_key_id = NULL, status = 'expired'
         WHERE expires_at < now() AND export IS NOT NULL",
    )
    .execute(pool)
    .await?;
    Ok(())
}
