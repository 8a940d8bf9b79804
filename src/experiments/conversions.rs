//! Orders becoming conversions. When a batch publishes a change whose order count rose, the order is credited
//! (`functions::nudge::attribution`) to the customer's latest nudge viewed or clicked within the attribution
//! window before it, or to a holdout assignment within the window, and recorded as a `conversion` event of that
//! nudge with the revenue the change added.
//!
//! This runs inside the transaction that writes the batch's customer rows, because "the order count rose" is read
//! against the stored row that transaction replaces (or an earlier change of the same batch). A replay finds the
//! row at its own version, sees no rise and records nothing new; the event id is derived from the change's
//! version in any case, so a conversion is stored once. Only customers nudged within the window are looked up,
//! which keeps the cost off batches of customers no nudge can be credited for.
//!
//! Limits: an order that changes nothing published (no new score, segment or stage) makes no change, so it is
//! not seen here; the revenue is the net spend added since the previous published version (the order's net
//! amount, unless a refund or another order came in between).

use std::collections::HashMap;

use actors::Change;
use functions::nudge::attribution::{credit, AttributionWindow, Touch};
use functions::{Money, Timestamp};
use sqlx::Row;

use super::{from_time, to_time};
use crate::store::StoreError;

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;
type Customer = (String, i64);

/// A customer's stored row: version, orders, net spend (as Postgres renders it).
#[derive(Debug, Clone, PartialEq)]
pub(crate) struct Stored {
    pub version: u32,
    pub orders: u32,
    pub net: String,
}

/// Records the conversions of `changes` (see the module docs).
pub(crate) async fn record(
    tx: &mut Tx<'_>,
    changes: &[Change],
    window: AttributionWindow,
) -> Result<(), StoreError> {
    let Some(earliest) = changes.iter().map(|c| c.occurred_at).min() else {
        return Ok(());
    };
    let since = to_time(Timestamp::from_unix(earliest.unix() - window.seconds));
    let stored = stored_rows(tx, changes, since).await?;
    let gains = gains(changes, &stored);
    if gains.is_empty() {
        return Ok(());
    }
    let touches = touches(tx, &gains, since).await?;
    let mut rows = Vec::new();
    for (change, revenue) in gains {
        let key = (change.merchant.to_string(), change.customer_id as i64);
        let theirs: Vec<Touch<'_>> = touches
            .get(&key)
            .map(|t| {
                t.iter()
                    .map(|(id, at)| Touch {
                        nudge_id: id,
                        at: *at,
                    })
                    .collect()
            })
            .unwrap_or_default();
        if let Some(touch) = credit(window, change.occurred_at, &theirs) {
            rows.push((change, touch.nudge_id.to_owned(), revenue));
        }
    }
    insert(tx, &rows).await
}

/// The changes whose order count rose, with the net spend they added (`None` when it did not grow). The
/// previous state is the customer's earlier change in the batch, else its stored row when that is older; a
/// stored row at or past the change's version means the change was written before (a replay).
pub(crate) fn gains<'c>(
    changes: &'c [Change],
    stored: &HashMap<Customer, Stored>,
) -> Vec<(&'c Change, Option<Money>)> {
    let mut previous: HashMap<Customer, (u32, Option<Money>)> = HashMap::new();
    let mut gains = Vec::new();
    for change in changes {
        let key = (change.merchant.to_string(), change.customer_id as i64);
        let before = match previous.get(&key) {
            Some(&(orders, net)) => Some((orders, net)),
            None => stored
                .get(&key)
                .filter(|s| s.version < change.version)
                .map(|s| {
                    (
                        s.orders,
                        Money::parse(&s.net, change.currency_exponent).ok(),
                    )
                }),
        };
        previous.insert(key, (change.orders, Some(change.net_spend)));
        let Some((orders, net)) = before else {
            continue;
        };
        if change.orders > orders {
            let added = net
                .map(|n| change.net_spend.saturating_sub(n))
                .filter(|m| *m > Money::ZERO);
            gains.push((change, added));
        }
    }
    gains
}

/// Stored rows of the batch's customers that have a nudge since `since`.
async fn stored_rows(
    tx: &mut Tx<'_>,
    changes: &[Change],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<HashMap<Customer, Stored>, StoreError> {
    let (merchants, customers) = columns(changes.iter());
    let rows = sqlx::query(
        "SELECT c.merchant_id, c.customer_id, c.version, c.orders, c.net_spend::text AS net
         FROM (SELECT DISTINCT m, cu FROM UNNEST($1::text[], $2::int8[]) AS x(m, cu)) AS x
         JOIN customers c ON c.merchant_id = x.m AND c.customer_id = x.cu
         WHERE EXISTS (SELECT 1 FROM nudges n
                       WHERE n.merchant_id = x.m AND n.customer_id = x.cu AND n.created_at >= $3)",
    )
    .bind(&merchants)
    .bind(&customers)
    .bind(since)
    .fetch_all(&mut **tx)
    .await?;
    let mut stored = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = (row.try_get("merchant_id")?, row.try_get("customer_id")?);
        let (version, orders): (i32, i32) = (row.try_get("version")?, row.try_get("orders")?);
        let net: Option<String> = row.try_get("net")?;
        stored.insert(
            key,
            Stored {
                version: version.max(0) as u32,
                orders: orders.max(0) as u32,
                net: net.unwrap_or_default(),
            },
        );
    }
    Ok(stored)
}

/// Views and clicks of shown nudges, and holdout assignments, of the gaining customers since `since`.
async fn touches(
    tx: &mut Tx<'_>,
    gains: &[(&Change, Option<Money>)],
    since: chrono::DateTime<chrono::Utc>,
) -> Result<HashMap<Customer, Vec<(String, Timestamp)>>, StoreError> {
    let (merchants, customers) = columns(gains.iter().map(|(c, _)| *c));
    let rows = sqlx::query(
        "WITH x AS (SELECT DISTINCT m, cu FROM UNNEST($1::text[], $2::int8[]) AS x(m, cu))
         SELECT e.merchant_id, e.customer_id, e.nudge_id, e.occurred_at AS at
         FROM nudge_events e
         JOIN x ON e.merchant_id = x.m AND e.customer_id = x.cu
         JOIN nudges n ON n.merchant_id = e.merchant_id AND n.nudge_id = e.nudge_id
                      AND n.customer_id = e.customer_id AND n.status = 'shown'
         WHERE e.kind IN ('view', 'click') AND e.occurred_at >= $3
         UNION ALL
         SELECT n.merchant_id, n.customer_id, n.nudge_id, n.created_at
         FROM nudges n JOIN x ON n.merchant_id = x.m AND n.customer_id = x.cu
         WHERE n.status = 'holdout' AND n.created_at >= $3",
    )
    .bind(&merchants)
    .bind(&customers)
    .bind(since)
    .fetch_all(&mut **tx)
    .await?;
    let mut touches: HashMap<Customer, Vec<(String, Timestamp)>> = HashMap::new();
    for row in rows {
        let key = (row.try_get("merchant_id")?, row.try_get("customer_id")?);
        let touch = (row.try_get("nudge_id")?, from_time(row.try_get("at")?));
        touches.entry(key).or_default().push(touch);
    }
    Ok(touches)
}

fn columns<'c>(changes: impl Iterator<Item = &'c Change>) -> (Vec<String>, Vec<i64>) {
    changes
        .map(|c| (c.merchant.to_string(), c.customer_id as i64))
        .unzip()
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

async fn insert(
    tx: &mut Tx<'_>,
    rows: &[(&Change, String, Option<Money>)],
) -> Result<(), StoreError> {
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
    let revenue: Vec<Option<String>> = rows
        .iter()
        .map(|(c, _, r)| r.map(|m| m.to_decimal_string(c.currency_exponent)))
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
    metrics::counter!("nudge_conversions_total").increment(rows.len() as u64);
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
        }
    }

    fn stored(version: u32, orders: u32, net: &str) -> Stored {
        Stored {
            version,
            orders,
            net: net.into(),
        }
    }

    #[test]
    fn a_rise_is_read_against_the_batch_then_the_stored_row_and_never_on_a_replay() {
        let shop = "gains.myshopify.com".to_owned();
        let rows = HashMap::from([
            ((shop.clone(), 1), stored(3, 1, "80.00")),
            ((shop.clone(), 2), stored(9, 2, "50.00")),
            ((shop.clone(), 3), stored(4, 2, "100.00")),
        ]);
        let changes = [
            change(1, 4, 2, 16_000), // one more order: $80 added
            change(1, 5, 2, 15_000), // a refund: no rise
            change(1, 6, 3, 20_000), // another order, against the batch's own change: $50
            change(2, 9, 3, 9_000),  // the stored row is this version already: a replay
            change(3, 5, 3, 9_000),  // an order and a larger refund: a rise with no revenue
            change(4, 1, 1, 3_000),  // no stored row (nudged nobody): not looked at
        ];
        let found: Vec<(u64, u32, Option<i64>)> = gains(&changes, &rows)
            .into_iter()
            .map(|(c, r)| (c.customer_id, c.version, r.map(Money::minor)))
            .collect();
        assert_eq!(
            found,
            [(1, 4, Some(8_000)), (1, 6, Some(5_000)), (3, 5, None)]
        );
    }

    #[test]
    fn conversion_ids_follow_the_change() {
        let id = conversion_id(&change(7, 12, 2, 0));
        assert_eq!(id, "conversion:gains.myshopify.com:7:12");
    }
}
