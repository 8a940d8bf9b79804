//! The Postgres adapter: migrations, merchant configuration, and the processor's idempotent writes.
//!
//! Every row the processor writes is keyed by the customer's state version, and written with
//! `ON CONFLICT DO NOTHING` (or a version-guarded upsert), so replaying a batch after a crash or a rebalance
//! changes nothing that is already there.

use std::time::Duration;

use actors::Change;
use functions::nudge::attribution::AttributionWindow;
use functions::{FieldError, RfmConfig};
use sqlx::postgres::{PgConnectOptions, PgPool, PgPoolOptions};
use streams::MerchantId;

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("postgres: {0}")]
    Db(#[from] sqlx::Error),
    #[error("migrations: {0}")]
    Migrate(#[from] sqlx::migrate::MigrateError),
    #[error("stored configuration for {merchant} is invalid: {errors:?}")]
    InvalidConfig {
        merchant: String,
        errors: Vec<FieldError>,
    },
}

pub(crate) mod conversions;

pub static MIGRATOR: sqlx::migrate::Migrator = sqlx::migrate!("./migrations");

/// The pool's size and timeouts, from `PG_POOL_MAX`, `PG_ACQUIRE_TIMEOUT_MS` and `PG_STATEMENT_TIMEOUT_MS`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolSettings {
    pub max_connections: u32,
    /// How long a caller waits for a free connection before its query fails.
    pub acquire_timeout: Duration,
    /// Postgres's `statement_timeout` on every connection of the pool; `None` leaves the server's setting.
    pub statement_timeout: Option<Duration>,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            max_connections: 8,
            acquire_timeout: Duration::from_secs(3),
            statement_timeout: None,
        }
    }
}

#[derive(Clone)]
pub struct Store {
    pool: PgPool,
    /// How long after a nudge's view or click an order counts as its conversion (see `conversions`).
    attribution: AttributionWindow,
}

impl Store {
    /// Connects lazily: the pool opens connections on first use, so the process starts while Postgres is down.
    pub fn connect_lazy(url: &str) -> Result<Store, StoreError> {
        Store::connect_with(url, &PoolSettings::default())
    }

    /// [`Store::connect_lazy`] with the pool sized and bounded by `settings`.
    pub fn connect_with(url: &str, settings: &PoolSettings) -> Result<Store, StoreError> {
        let mut options: PgConnectOptions = url.parse()?;
        if let Some(limit) = settings.statement_timeout {
            // Sent in the startup packet, so it holds on every connection the pool opens, reconnects included.
            options = options.options([("statement_timeout", limit.as_millis().to_string())]);
        }
        let pool = PgPoolOptions::new()
            .max_connections(settings.max_connections)
            .acquire_timeout(settings.acquire_timeout)
            .connect_lazy_with(options);
        Ok(Store {
            pool,
            attribution: AttributionWindow::default(),
        })
    }

    /// The store with conversions credited under `window` instead of the default seven days.
    pub fn with_attribution(mut self, window: AttributionWindow) -> Store {
        self.attribution = window;
        self
    }

    pub fn pool(&self) -> &PgPool {
        &self.pool
    }

    pub async fn migrate(&self) -> Result<(), StoreError> {
        MIGRATOR.run(&self.pool).await?;
        Ok(())
    }

    /// The merchant's saved configuration, or `None` for a merchant that never saved one (defaults apply).
    pub async fn load_config(
        &self,
        merchant: &MerchantId,
    ) -> Result<Option<RfmConfig>, StoreError> {
        let row: Option<(serde_json::Value,)> =
            sqlx::query_as("SELECT rfm_thresholds FROM program_settings WHERE merchant_id = $1")
                .bind(merchant.as_str())
                .fetch_optional(&self.pool)
                .await?;
        row.map(|(json,)| {
            RfmConfig::from_json(&json).map_err(|errors| StoreError::InvalidConfig {
                merchant: merchant.to_string(),
                errors,
            })
        })
        .transpose()
    }

    pub async fn save_config(
        &self,
        merchant: &MerchantId,
        config: &RfmConfig,
    ) -> Result<(), StoreError> {
        let json = serde_json::to_value(config).map_err(|e| sqlx::Error::Encode(Box::new(e)))?;
        let mut tx = self.pool.begin().await?;
        sqlx::query("INSERT INTO merchants (merchant_id) VALUES ($1) ON CONFLICT DO NOTHING")
            .bind(merchant.as_str())
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO program_settings (merchant_id, rfm_thresholds, updated_at) VALUES ($1, $2, now())
             ON CONFLICT (merchant_id) DO UPDATE SET rfm_thresholds = EXCLUDED.rfm_thresholds, updated_at = now()",
        )
        .bind(merchant.as_str())
        .bind(json)
        .execute(&mut *tx)
        .await?;
        tx.commit().await?;
        Ok(())
    }

    /// Writes a batch of changes: score history for every change, a delta row for every segment move, the
    /// conversions of the orders they added, and the customer's current row (only if this version is newer than
    /// the stored one). One transaction per batch.
    pub async fn write_changes(&self, changes: &[Change]) -> Result<(), StoreError> {
        if changes.is_empty() {
            return Ok(());
        }
        let rows = Columns::from(changes);
        let mut tx = self.pool.begin().await?;
        let history = sqlx::query(
            "INSERT INTO rfm_score_history
               (merchant_id, customer_id, version, recency, frequency, monetary, score, segment, lifecycle_stage, occurred_at)
             SELECT * FROM UNNEST($1::text[], $2::int8[], $3::int4[], $4::int2[], $5::int2[], $6::int2[],
                                  $7::numeric[], $8::text[], $9::text[], $10::timestamptz[])
             ON CONFLICT DO NOTHING",
        );
        bind_evaluations(history, &rows)
            .bind(&rows.at)
            .execute(&mut *tx)
            .await?;
        sqlx::query(
            "INSERT INTO rfm_segment_deltas (merchant_id, customer_id, version, from_segment, to_segment, occurred_at, trace_id)
             SELECT m, c, v, f, t, a, tr FROM UNNEST($1::text[], $2::int8[], $3::int4[], $4::text[], $5::text[],
                                                    $6::timestamptz[], $7::text[], $8::bool[]) AS x(m, c, v, f, t, a, tr, moved)
             WHERE moved
             ON CONFLICT DO NOTHING",
        )
        .bind(&rows.merchant)
        .bind(&rows.customer)
        .bind(&rows.version)
        .bind(&rows.from_segment)
        .bind(&rows.to_segment)
        .bind(&rows.at)
        .bind(&rows.trace)
        .bind(&rows.moved)
        .execute(&mut *tx)
        .await?;
        conversions::record(&mut tx, changes, self.attribution).await?;
        upsert_customers(&mut tx, &rows).await?;
        tx.commit().await?;
        Ok(())
    }

    /// GDPR: forgets one customer (or, with `None`, the whole merchant) from every table, and records the request
    /// as received. It is marked complete by [`Store::complete_request`] once the other stores are erased too.
    pub async fn redact(
        &self,
        merchant: &MerchantId,
        customer: Option<u64>,
        event_id: &str,
    ) -> Result<(), StoreError> {
        let mut tx = self.pool.begin().await?;
        let id = customer.map(|c| c as i64);
        // Widget events name their customer; older events name only the nudge, so those go before the nudges that
        // tell whose they are. A shop's go whole, including any whose nudge row is missing.
        scoped(
            merchant,
            id,
            "DELETE FROM nudge_events e WHERE e.merchant_id = $1 AND ($2::int8 IS NULL OR e.customer_id = $2
                 OR EXISTS (SELECT 1 FROM nudges n
                            WHERE n.merchant_id = $1 AND n.nudge_id = e.nudge_id AND n.customer_id = $2))",
        )
        .execute(&mut *tx)
        .await?;
        for table in CUSTOMER_TABLES {
            scoped(merchant, id, &format!(
                "DELETE FROM {table} WHERE merchant_id = $1 AND ($2::int8 IS NULL OR customer_id = $2)"
            ))
            .execute(&mut *tx)
            .await?;
        }
        let kind = if customer.is_some() {
            // An export made for an earlier data request holds the same personal data.
            scoped(
                merchant,
                id,
                "UPDATE gdpr_requests SET export = NULL, export_key_id = NULL, status = 'expired'
                 WHERE merchant_id = $1 AND customer_id = $2 AND export IS NOT NULL",
            )
            .execute(&mut *tx)
            .await?;
            "customers_redact"
        } else {
            // The whole shop: its settings, audit trail and every other record of it. Earlier requests of its
            // customers name them and go too; this request's own row is the record that the shop was erased.
            for table in SHOP_TABLES {
                scoped(
                    merchant,
                    id,
                    &format!("DELETE FROM {table} WHERE merchant_id = $1 AND $2::int8 IS NULL"),
                )
                .execute(&mut *tx)
                .await?;
            }
            scoped(
                merchant,
                id,
                "DELETE FROM gdpr_requests WHERE merchant_id = $1 AND $2::int8 IS NULL",
            )
            .execute(&mut *tx)
            .await?;
            "shop_redact"
        };
        record_request(&mut tx, merchant, event_id, kind, id).await?;
        tx.commit().await?;
        Ok(())
    }

    /// Marks a GDPR request done: every store it had to reach has been erased.
    pub async fn complete_request(
        &self,
        merchant: &MerchantId,
        event_id: &str,
    ) -> Result<(), StoreError> {
        sqlx::query(
            "UPDATE gdpr_requests SET completed_at = now(), status = 'completed'
             WHERE merchant_id = $1 AND event_id = $2 AND completed_at IS NULL",
        )
        .bind(merchant.as_str())
        .bind(event_id)
        .execute(&self.pool)
        .await?;
        Ok(())
    }
}

/// A statement over one merchant (`$1`) and, where it matters, one customer (`$2`, NULL for the whole shop).
fn scoped<'q>(
    merchant: &'q MerchantId,
    customer: Option<i64>,
    sql: &'q str,
) -> sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments> {
    sqlx::query(sql).bind(merchant.as_str()).bind(customer)
}

/// Tables whose rows belong to one customer of one merchant.
const CUSTOMER_TABLES: [&str; 5] = [
    "customers",
    "rfm_segment_deltas",
    "rfm_score_history",
    "nudges",
    "shopify_sync_versions",
];

/// Tables whose rows belong to a merchant as a whole; `merchants` last, as the others may reference it.
/// `shop_data_keys` is the crypto-shredding: without it, the shop's sealed values left on Kafka cannot be opened.
/// `shop_access` is the shop's Admin API token (also dropped on app/uninstalled).
/// `point_imports` keeps row errors that may quote what a merchant uploaded; `backfill_runs` would otherwise make a
/// reinstall after an erasure skip the history it must bring in again.
const SHOP_TABLES: [&str; 9] = [
    "shop_data_keys",
    "shop_access",
    "point_imports",
    "backfill_runs",
    "rfm_config_outbox",
    "nudge_experiments",
    "program_settings",
    "audit_logs",
    "merchants",
];

async fn record_request(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    merchant: &MerchantId,
    event_id: &str,
    kind: &str,
    customer: Option<i64>,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO gdpr_requests (merchant_id, event_id, kind, customer_id)
         VALUES ($1, $2, $3, $4) ON CONFLICT DO NOTHING",
    )
    .bind(merchant.as_str())
    .bind(event_id)
    .bind(kind)
    .bind(customer)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

async fn upsert_customers(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    rows: &Columns,
) -> Result<(), StoreError> {
    // A batch can hold several versions of one customer; DISTINCT ON keeps the newest so the upsert touches each
    // row once.
    let upsert = sqlx::query(
        "INSERT INTO customers (merchant_id, customer_id, version, recency, frequency, monetary, score, segment,
                                lifecycle_stage, orders, net_spend, last_order_at, updated_at)
         SELECT DISTINCT ON (m, c) m, c, v, r, f, mo, s, seg, st, o, n, l, now()
         FROM UNNEST($1::text[], $2::int8[], $3::int4[], $4::int2[], $5::int2[], $6::int2[], $7::numeric[],
                     $8::text[], $9::text[], $10::int4[], $11::numeric[], $12::timestamptz[])
              AS x(m, c, v, r, f, mo, s, seg, st, o, n, l)
         ORDER BY m, c, v DESC
         ON CONFLICT (merchant_id, customer_id) DO UPDATE SET
           version = EXCLUDED.version, recency = EXCLUDED.recency, frequency = EXCLUDED.frequency,
           monetary = EXCLUDED.monetary, score = EXCLUDED.score, segment = EXCLUDED.segment,
           lifecycle_stage = EXCLUDED.lifecycle_stage, orders = EXCLUDED.orders, net_spend = EXCLUDED.net_spend,
           last_order_at = EXCLUDED.last_order_at, updated_at = now()
         WHERE customers.version < EXCLUDED.version",
    );
    bind_evaluations(upsert, rows)
        .bind(&rows.orders)
        .bind(&rows.net)
        .bind(&rows.last_order)
        .execute(&mut **tx)
        .await?;
    Ok(())
}

type PgQuery<'q> = sqlx::query::Query<'q, sqlx::Postgres, sqlx::postgres::PgArguments>;

/// Binds the columns both the history and the customers statement start with ($1–$9): who, which version, and the
/// evaluation.
fn bind_evaluations<'q>(query: PgQuery<'q>, rows: &'q Columns) -> PgQuery<'q> {
    query
        .bind(&rows.merchant)
        .bind(&rows.customer)
        .bind(&rows.version)
        .bind(&rows.r)
        .bind(&rows.f)
        .bind(&rows.m)
        .bind(&rows.score)
        .bind(&rows.to_segment)
        .bind(&rows.stage)
}

/// Changes transposed into columns for `UNNEST`, so a batch is one statement per table.
#[derive(Default)]
struct Columns {
    merchant: Vec<String>,
    customer: Vec<i64>,
    version: Vec<i32>,
    r: Vec<i16>,
    f: Vec<i16>,
    m: Vec<i16>,
    score: Vec<String>,
    from_segment: Vec<String>,
    to_segment: Vec<String>,
    stage: Vec<String>,
    orders: Vec<i32>,
    net: Vec<String>,
    last_order: Vec<Option<chrono::DateTime<chrono::Utc>>>,
    at: Vec<chrono::DateTime<chrono::Utc>>,
    trace: Vec<String>,
    moved: Vec<bool>,
}

impl From<&[Change]> for Columns {
    fn from(changes: &[Change]) -> Self {
        let mut c = Columns::default();
        let time = |t: functions::Timestamp| {
            chrono::DateTime::from_timestamp(t.unix(), 0).unwrap_or_default()
        };
        for ch in changes {
            c.merchant.push(ch.merchant.to_string());
            c.customer.push(ch.customer_id as i64);
            c.version.push(ch.version as i32);
            c.r.push(i16::from(ch.rfm.recency));
            c.f.push(i16::from(ch.rfm.frequency));
            c.m.push(i16::from(ch.rfm.monetary));
            c.score
                .push(format!("{}.{}", ch.score_tenths / 10, ch.score_tenths % 10));
            c.from_segment.push(ch.from_segment.clone());
            c.to_segment.push(ch.to_segment.clone());
            c.stage.push(ch.stage.as_str().to_owned());
            c.orders.push(ch.orders as i32);
            c.net
                .push(ch.net_spend.to_decimal_string(ch.currency_exponent));
            c.last_order.push(ch.last_order.map(time));
            c.at.push(time(ch.occurred_at));
            c.trace.push(ch.trace_id.clone());
            c.moved.push(ch.segment_changed());
        }
        c
    }
}

#[cfg(test)]
mod tests {
    use functions::{LifecycleStage, Money, Rfm, Timestamp};
    use streams::MerchantId;

    use super::*;

    fn change(net_minor: i64, exponent: u8) -> Change {
        Change {
            merchant: MerchantId::parse("tokyo.myshopify.com").unwrap(),
            customer_id: 1,
            version: 3,
            from_segment: "new".into(),
            to_segment: "loyal".into(),
            rfm: Rfm::new(5, 3, 4),
            score_tenths: 41,
            stage: LifecycleStage::RepeatBuyer,
            orders: 4,
            net_spend: Money::from_minor(net_minor),
            currency_exponent: exponent,
            last_order: None,
            churn_risk: None,
            occurred_at: Timestamp(1_780_000_000),
            trace_id: "t".into(),
            locale: None,
            event_ms: None,
            traceparent: None,
            order_added: None,
            points: 0,
        }
    }

    #[test]
    fn rows_render_money_in_the_shop_currency_and_the_score_with_one_decimal() {
        let columns = Columns::from(&[change(150_000, 0), change(12_345, 2), change(1_234, 3)][..]);
        assert_eq!(columns.net, ["150000", "123.45", "1.234"]);
        assert_eq!(columns.score[0], "4.1");
        assert_eq!(columns.moved, [true, true, true]);
    }
}
