//! Orders becoming conversions. When a batch publishes a change whose event added a valid order
//! (`Change::order_added`, decided by the partition actor from the event stream alone), the order is credited
//! (`functions::nudge::attribution`) to the customer's latest nudge viewed or clicked within the attribution
//! window before it, or to a holdout assignment within the window, and recorded as a `conversion` event of that
//! nudge with the order's amount as it arrived (net of refunds already applied to it) as revenue.
//!
//! This runs in the transaction that writes the batch's changes, so a customer's row and the conversions of the
//! orders it counts are seen together. The event id is derived from the change's version, so a replay stores
//! each conversion once.
//!
//! Limits: an order that changes nothing published (no new score, segment or stage) makes no change, so it is
//! not seen here; nor is an order replayed quietly while a partition restores (the restore publishes one net change
//! per customer). Views and clicks are read from `nudge_events` as the widget stored them, so one not stored yet
//! when the order is processed does not count.

use std::collections::HashMap;

use actors::Change;
use functions::nudge::attribution::{credit, AttributionWindow, Touch};
use functions::{Money, Timestamp};
use sqlx::Row;

use super::StoreError;

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;

type Customer = (String, i64);

/// Records the conversions of `changes` (see the module docs).
pub(crate) async fn record(
    tx: &mut Tx<'_>,
    changes: &[Change],
    window: AttributionWindow,
) -> Result<(), StoreError> {
    let orders: Vec<(&Change, Money)> = changes
        .iter()
        .filter_map(|c| Some((c, c.order_added?)))
        .collect();
    let Some(earliest) = orders.iter().map(|(c, _)| c.occurred_at).min() else {
        return Ok(());
    };
    let since = to_time(Timestamp::from_unix(earliest.unix() - window.seconds));
    let touches = touches(tx, &orders, since).await?;
    let mut rows = Vec::new();
    for (change, revenue) in orders {
        let key = (change.merchant.to_string(), change.customer_id as i64);
        let theirs = candidates(touches.get(&key).map_or(&[], Vec::as_slice), change.version);
        if let Some(touch) = credit(window, change.occurred_at, &theirs) {
            rows.push((change, touch.nudge_id.to_owned(), revenue));
        }
    }
    insert(tx, &rows).await
}

/// A view or click of a shown nudge, or a holdout assignment, with the version of the change that fired the nudge.
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Touched {
    pub nudge_id: String,
    pub version: i32,
    pub at: Timestamp,
}

/// The touches an order of the customer's `version` may be credited to: those of nudges fired by an earlier
/// version. The order that fires a nudge (a first order moves a customer into `new`) is not its conversion, even
/// though a holdout assignment is recorded at the same instant.
pub(crate) fn candidates(touches: &[Touched], version: u32) -> Vec<Touch<'_>> {
    touches
        .iter()
        .filter(|t| i64::from(t.version) < i64::from(version))
        .map(|t| Touch {
            nudge_id: &t.nudge_id,
            at: t.at,
        })
        .collect()
}

/// Views and clicks of shown nudges, and holdout assignments, of the gaining customers since `since`.
async fn touches(
    tx: &mut Tx<'_>,
    orders: &[(&Change, Money)],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<HashMap<Customer, Vec<Touched>>, StoreError> {
    let (merchants, customers) = columns(orders.iter().map(|(c, _)| *c));
    let rows = sqlx::query(
        "WITH x AS (SELECT DISTINCT m, cu FROM UNNEST($1::text[], $2::int8[]) AS x(m, cu))
         SELECT e.merchant_id, e.customer_id, e.nudge_id, n.version, e.occurred_at AS at
         FROM nudge_events e
         JOIN x ON e.merchant_id = x.m AND e.customer_id = x.cu
         JOIN nudges n ON n.merchant_id = e.merchant_id AND n.nudge_id = e.nudge_id
                      AND n.customer_id = e.customer_id AND n.status = 'shown'
         WHERE e.kind IN ('view', 'click') AND e.occurred_at >= $3
         UNION ALL
         SELECT n.merchant_id, n.customer_id, n.nudge_id, n.version, n.created_at
         FROM nudges n JOIN x ON n.merchant_id = x.m AND n.customer_id = x.cu
         WHERE n.status = 'holdout' AND n.created_at >= $3",
    )
    .bind(&merchants)
    .bind(&customers)
    .bind(since)
    .fetch_all(&mut **tx)
    .await?;
    let mut touches: HashMap<Customer, Vec<Touched>> = HashMap::new();
    for row in rows {
        let key = (row.try_get("merchant_id")?, row.try_get("customer_id")?);
        let touch = Touched {
            nudge_id: row.try_get("nudge_id")?,
            version: row.try_get("version")?,
            at: from_time(row.try_get("at")?),
        };
        touches.entry(key).or_default().push(touch);
    }
    Ok(touches)
}

fn columns<'c>(changes: impl Iterator<Item = &'c Change>) -> (Vec<String>, Vec<i64>) {
    changes
        .map(|c| (c.merchant.to_string(), c.customer_id as i64))
        .unzip()
}

fn to_time(t: Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix(), 0).unwrap_or_default()
}

fn from_time(t: chrono::DateTime<chrono::Utc>) -> Timestamp {
    Timestamp::from_unix(t.timestamp())
}

/// The id of the conversion a change records: one per change, so a replay stores it once.
pub fn conversion_id(change: &Change) -> String {
    streams::outputs::output_event_id(
        "conversion",
        &change.merchant,
        change.customer_id,
        change.version,
    )
}

async fn insert(tx: &mut Tx<'_>, rows: &[(&Change, String, Money)]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let merchants: Vec<String> = rows
        .iter()
        .map(|(c, _, _)| c.merchant.to_string())
        .collect();
    let nudges: Vec<&str> = rows.iter().map(|(_, n, _)| n.as_str()).collect();
    let at: Vec<chrono::DateTime<chrono::Utc>> = rows
        .iter()
        .map(|(c, _, _)| to_time(c.occurred_at))
        .collect();
    let customers: Vec<i64> = rows.iter().map(|(c, _, _)| c.customer_id as i64).collect();
    let ids: Vec<String> = rows.iter().map(|(c, _, _)| conversion_id(c)).collect();
    let revenue: Vec<String> = rows
        .iter()
        .map(|(c, _, r)| r.to_decimal_string(c.currency_exponent))
        .collect();
    sqlx::query(
        "INSERT INTO nudge_events (merchant_id, nudge_id, kind, occurred_at, customer_id, event_id, revenue)
         SELECT m, n, 'conversion', a, c, e, r
         FROM UNNEST($1::text[], $2::text[], $3::timestamptz[], $4::int8[], $5::text[], $6::numeric[])
              AS x(m, n, a, c, e, r)
         ON CONFLICT (merchant_id, event_id) DO NOTHING",
    )
    .bind(&merchants)
    .bind(&nudges)
    .bind(&at)
    .bind(&customers)
    .bind(&ids)
    .bind(&revenue)
    .execute(&mut **tx)
    .await?;
    metrics::counter!(streams::metric_names::NUDGE_CONVERSIONS).increment(rows.len() as u64);
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::{LifecycleStage, Rfm};
    use streams::MerchantId;

    fn change(customer_id: u64, version: u32, orders: u32, net_minor: i64) -> Change {
        Change {
            merchant: MerchantId::parse("gains.myshopify.com").unwrap(),
            customer_id,
            version,
            from_segment: "new".into(),
            to_segment: "other".into(),
            rfm: Rfm::new(5, 2, 3),
            score_tenths: 35,
            stage: LifecycleStage::RepeatBuyer,
            orders,
            net_spend: Money::from_minor(net_minor),
            currency_exponent: 2,
            last_order: None,
            churn_risk: None,
            occurred_at: Timestamp(1_800_000_000),
            trace_id: "t".into(),
            locale: None,
            event_ms: None,
            traceparent: None,
            order_added: None,
            points: 0,
        }
    }

    #[test]
    fn an_order_is_never_credited_to_the_nudge_it_fired() {
        let touch = |nudge_id: &str, version, at| Touched {
            nudge_id: nudge_id.into(),
            version,
            at: Timestamp(at),
        };
        let touches = [touch("v1", 1, 100), touch("v3", 3, 100), touch("v4", 4, 90)];
        let ids = |version| -> Vec<String> {
            candidates(&touches, version)
                .iter()
                .map(|t| t.nudge_id.to_owned())
                .collect()
        };
        assert_eq!(ids(1), Vec::<String>::new());
        assert_eq!(ids(3), ["v1"]);
        assert_eq!(ids(5), ["v1", "v3", "v4"]);
    }

    #[test]
    fn conversion_ids_follow_the_change() {
        let id = conversion_id(&change(7, 12, 2, 0));
        assert_eq!(id, "conversion:gains.myshopify.com:7:12");
    }
}
