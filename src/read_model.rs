//! What the read API answers with, and where it comes from.
//!
//! The live state in this instance's partition actors is the source of truth when this instance owns the
//! merchant's partition: it is current to the last event. Otherwise (the merchant is on another instance, or this
//! is an ingress-only process) the answer comes from Postgres, which the owning processor keeps current with every
//! change. History is only in Postgres. Each answer says which source it came from.

use actors::PartitionCore;
use chrono::{DateTime, Utc};
use functions::{churn_risk, RfmConfig, Timestamp};
use serde::Serialize;
use sqlx::Row;
use streams::MerchantId;

use crate::directory::{Owners, Registry};
use crate::store::{Store, StoreError};

mod ranking;
pub use ranking::Rankings;

/// The segment key whose members the churn-risk list shows.
pub const AT_RISK: &str = "at_risk";

#[derive(Debug, Clone, Serialize, PartialEq)]
pub struct SegmentCount {
    pub key: String,
    pub name: String,
    pub count: u64,
}

#[derive(Debug, Clone, Serialize)]
pub struct CustomerView {
    pub customer_id: u64,
    pub version: u32,
    pub segment: String,
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    pub score: f64,
    pub lifecycle_stage: String,
    pub orders: u32,
    pub net_spend: String,
    pub last_order_at: Option<DateTime<Utc>>,
    /// Only known live.
    pub points: Option<i64>,
    pub churn_risk: Option<f64>,
}

#[derive(Debug, Clone, Serialize)]
pub struct HistoryEntry {
    pub version: i32,
    pub segment: String,
    pub recency: i16,
    pub frequency: i16,
    pub monetary: i16,
    pub score: f64,
    pub lifecycle_stage: String,
    pub occurred_at: DateTime<Utc>,
}

/// One page of the churn-risk list, highest net spend first.
#[derive(Debug, Clone, Serialize)]
pub struct RiskPage {
    pub total: u64,
    pub customers: Vec<CustomerView>,
}

#[derive(Debug, Clone, Copy, Serialize, serde::Deserialize, PartialEq, Eq)]
#[serde(rename_all = "lowercase")]
pub enum Source {
    Live,
    Database,
}

pub struct ReadModel {
    pub registry: Option<Registry>,
    pub store: Option<Store>,
    /// Churn-risk rankings of the merchants read recently, computed off the partition actors.
    pub rankings: Rankings,
    owners: Owners,
}

fn time(ts: Option<Timestamp>) -> Option<DateTime<Utc>> {
    ts.and_then(|t| DateTime::from_timestamp(t.unix(), 0))
}

fn view(
    core: &PartitionCore,
    merchant: &MerchantId,
    customer_id: u64,
    now: Timestamp,
) -> Option<CustomerView> {
    let m = core.merchant(merchant)?;
    let c = m.customer(customer_id)?;
    let totals = c.aggregate.totals();
    let rule = m.config.segments.get(usize::from(c.published.segment))?;
    let rfm = c.published.rfm();
    Some(CustomerView {
        customer_id,
        version: c.version,
        segment: rule.key.clone(),
        recency: rfm.recency,
        frequency: rfm.frequency,
        monetary: rfm.monetary,
        score: f64::from(rfm.score_tenths(&m.config)) / 10.0,
        lifecycle_stage: c.published.stage.as_str().to_owned(),
        orders: totals.orders,
        net_spend: totals.net.to_decimal_string(m.currency_exponent()),
        last_order_at: time(totals.last_order),
        points: Some(c.aggregate.points()),
        churn_risk: Some(churn_risk(&totals, &m.config, now).score),
    })
}

impl ReadModel {
    pub fn new(registry: Option<Registry>, store: Option<Store>) -> Self {
        ReadModel {
            registry,
            store,
            rankings: Rankings::default(),
            owners: Owners::default(),
        }
    }

    /// Runs `read` on the partition actor that holds `merchant`, if this instance has it.
    async fn live<R: Send + 'static>(
        &self,
        merchant: &MerchantId,
        read: impl Fn(&PartitionCore) -> Option<R> + Clone + Send + 'static,
    ) -> Option<R> {
        let registry = self.registry.as_ref()?;
        self.owners.inspect(registry, merchant, read).await
    }

    pub async fn segments(
        &self,
        merchant: &MerchantId,
    ) -> Result<(Source, Vec<SegmentCount>), StoreError> {
        let m = merchant.clone();
        let live = self
            .live(merchant, move |core| {
                let state = core.merchant(&m)?;
                let counts = state.config.segments.iter().zip(state.segment_counts());
                Some(counts.map(|(rule, n)| count(rule, *n)).collect::<Vec<_>>())
            })
            .await;
        if let Some(counts) = live {
            return Ok((Source::Live, counts));
        }
        let Some(store) = &self.store else {
            return Ok((Source::Live, zero_counts(&RfmConfig::default())));
        };
        let config = store.load_config(merchant).await?.unwrap_or_default();
        let rows = sqlx::query(
            "SELECT segment, count(*) FROM customers WHERE merchant_id = $1 GROUP BY segment",
        )
        .bind(merchant.as_str())
        .fetch_all(store.pool())
        .await?;
        let mut counts = zero_counts(&config);
        for row in rows {
            let (key, n): (String, i64) = (row.try_get(0)?, row.try_get(1)?);
            if let Some(c) = counts.iter_mut().find(|c| c.key == key) {
                c.count = n.max(0) as u64;
            }
        }
        Ok((Source::Database, counts))
    }

    pub async fn customer(
        &self,
        merchant: &MerchantId,
        customer_id: u64,
        now: Timestamp,
    ) -> Result<Option<(Source, CustomerView)>, StoreError> {
        let m = merchant.clone();
        if let Some(v) = self
            .live(merchant, move |core| view(core, &m, customer_id, now))
            .await
        {
            return Ok(Some((Source::Live, v)));
        }
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let row = sqlx::query(&format!(
            "{CUSTOMER_COLUMNS} WHERE merchant_id = $1 AND customer_id = $2"
        ))
        .bind(merchant.as_str())
        .bind(customer_id as i64)
        .fetch_optional(store.pool())
        .await?;
        Ok(row
            .map(|r| customer_row(&r))
            .transpose()?
            .map(|v| (Source::Database, v)))
    }

    /// `None` when history cannot be read here (no Postgres).
    pub async fn history(
        &self,
        merchant: &MerchantId,
        customer_id: u64,
        after_version: i32,
        limit: usize,
    ) -> Result<Option<Vec<HistoryEntry>>, StoreError> {
        let Some(store) = &self.store else {
            return Ok(None);
        };
        let rows = sqlx::query(
            "SELECT version, segment, recency, frequency, monetary, score::float8, lifecycle_stage, occurred_at
             FROM rfm_score_history WHERE merchant_id = $1 AND customer_id = $2 AND version > $3
             ORDER BY version LIMIT $4",
        )
        .bind(merchant.as_str())
        .bind(customer_id as i64)
        .bind(after_version)
        .bind(limit as i64)
        .fetch_all(store.pool())
        .await?;
        let entries = rows.iter().map(|r| {
            Ok(HistoryEntry {
                version: r.try_get(0)?,
                segment: r.try_get(1)?,
                recency: r.try_get(2)?,
                frequency: r.try_get(3)?,
                monetary: r.try_get(4)?,
                score: r.try_get(5)?,
                lifecycle_stage: r.try_get(6)?,
                occurred_at: r.try_get(7)?,
            })
        });
        Ok(Some(entries.collect::<Result<_, sqlx::Error>>()?))
    }

    pub async fn churn_risk(
        &self,
        merchant: &MerchantId,
        offset: usize,
        limit: usize,
        now: Timestamp,
    ) -> Result<(Source, RiskPage), StoreError> {
        if let Some(page) = self.live_risk_page(merchant, offset, limit, now).await {
            return Ok((Source::Live, page));
        }
        let Some(store) = &self.store else {
            return Ok((
                Source::Live,
                RiskPage {
                    total: 0,
                    customers: vec![],
                },
            ));
        };
        let rows = sqlx::query(&format!(
            "{CUSTOMER_COLUMNS} WHERE merchant_id = $1 AND segment = $2
             ORDER BY net_spend DESC, customer_id DESC OFFSET $3 LIMIT $4"
        ))
        .bind(merchant.as_str())
        .bind(AT_RISK)
        .bind(offset as i64)
        .bind(limit as i64)
        .fetch_all(store.pool())
        .await?;
        let total: i64 = sqlx::query_scalar(
            "SELECT count(*) FROM customers WHERE merchant_id = $1 AND segment = $2",
        )
        .bind(merchant.as_str())
        .bind(AT_RISK)
        .fetch_one(store.pool())
        .await?;
        let customers = rows.iter().map(customer_row).collect::<Result<_, _>>()?;
        Ok((
            Source::Database,
            RiskPage {
                total: total.max(0) as u64,
                customers,
            },
        ))
    }
}

fn count(rule: &functions::SegmentRule, n: u64) -> SegmentCount {
    SegmentCount {
        key: rule.key.clone(),
        name: rule.display_name("en").to_owned(),
        count: n,
    }
}

fn zero_counts(config: &RfmConfig) -> Vec<SegmentCount> {
    config.segments.iter().map(|r| count(r, 0)).collect()
}

const CUSTOMER_COLUMNS: &str =
    "SELECT customer_id, version, segment, recency, frequency, monetary, score::float8,
    lifecycle_stage, orders,
    CASE WHEN net_spend = trunc(net_spend, 2) THEN round(net_spend, 2)::text ELSE net_spend::text END,
    last_order_at FROM customers";

fn customer_row(r: &sqlx::postgres::PgRow) -> Result<CustomerView, sqlx::Error> {
    let small =
        |i: usize| -> Result<u8, sqlx::Error> { Ok(r.try_get::<i16, _>(i)?.clamp(0, 5) as u8) };
    Ok(CustomerView {
        customer_id: r.try_get::<i64, _>(0)? as u64,
        version: r.try_get::<i32, _>(1)?.max(0) as u32,
        segment: r.try_get(2)?,
        recency: small(3)?,
        frequency: small(4)?,
        monetary: small(5)?,
        score: r.try_get(6)?,
        lifecycle_stage: r.try_get(7)?,
        orders: r.try_get::<i32, _>(8)?.max(0) as u32,
        net_spend: r.try_get(9)?,
        last_order_at: r.try_get(10)?,
        points: None,
        churn_risk: None,
    })
}
