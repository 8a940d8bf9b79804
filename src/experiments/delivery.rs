//! What becomes of the nudges an outcome fired, decided by the publisher once the outcome's records are
//! acknowledged and before the desk sees any of them: each is recorded in `nudges` as `shown`, `holdout` or
//! `capped` (the frequency cap), and only the shown ones go on to the desk.
//!
//! The decision is made in one transaction holding an advisory lock per customer, reading the customer's last
//! shown nudge from `nudges`: that table is what every instance and every restart sees, and the lock orders two
//! in-flight batches (or two instances during a partition hand-over) deciding for one customer. The rows are
//! keyed by nudge id, so a replay inserts nothing and keeps the statuses decided the first time. Writing them here,
//! inside the outcome's publishing, also keeps them before any later erasure of the customer (see `rows_order`).

use std::collections::{HashMap, HashSet};
use std::time::Duration;

use actors::customer::PendingNudge;
use actors::Outcome;
use functions::nudge::cap::{CapDecision, FrequencyCap};
use functions::Timestamp;
use sqlx::Row;

use super::ledger::NudgeLedger;
use super::{from_time, to_time};
use crate::store::{Store, StoreError};

/// A nudge's fate, as the `nudges.status` column spells it.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Status {
    Shown,
    Holdout,
    Capped,
}

impl Status {
    pub fn as_str(self) -> &'static str {
        match self {
            Status::Shown => "shown",
            Status::Holdout => "holdout",
            Status::Capped => "capped",
        }
    }

    fn parse(raw: &str) -> Option<Status> {
        [Status::Shown, Status::Holdout, Status::Capped]
            .into_iter()
            .find(|s| s.as_str() == raw)
    }
}

/// Records the outcome's fired nudges and leaves in `outcome.nudges` only those to be shown. Without a ledger
/// nothing is recorded and nothing capped (the cap needs a place to remember); held-out nudges are dropped either
/// way. Retries until the ledger answers: the consumer waits on this like on the batch's other rows.
pub async fn settle(ledger: Option<&dyn NudgeLedger>, cap: FrequencyCap, outcome: &mut Outcome) {
    if outcome.nudges.is_empty() && outcome.held_out.is_empty() {
        return;
    }
    let Some(ledger) = ledger else {
        outcome.held_out.clear();
        return;
    };
    let mut delay = Duration::from_millis(50);
    let shown = loop {
        match ledger
            .record_fates(cap, &outcome.nudges, &outcome.held_out)
            .await
        {
            Ok(shown) => break shown,
            Err(e) => {
                tracing::warn!(error = %e, retry_in_ms = delay.as_millis() as u64, "nudge rows not written; retrying");
                metrics::counter!(streams::metric_names::STORE_RETRIES).increment(1);
                streams::metric_names::error("processor", "store");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(5));
            }
        }
    };
    let before = outcome.nudges.len();
    outcome.nudges.retain(|n| shown.contains(&n.nudge_id()));
    let capped = (before - outcome.nudges.len()) as u64;
    metrics::counter!(streams::metric_names::NUDGES, "outcome" => "capped").increment(capped);
    metrics::counter!(streams::metric_names::NUDGES, "outcome" => "held_out")
        .increment(outcome.held_out.len() as u64);
    outcome.held_out.clear();
}

/// The statuses of `nudges` (decided now, or read back when a replay finds them) and `held_out`, written to
/// Postgres in one transaction; returns the ids of the shown ones.
pub(crate) async fn record(
    store: &Store,
    cap: FrequencyCap,
    nudges: &[PendingNudge],
    held_out: &[PendingNudge],
) -> Result<HashSet<String>, StoreError> {
    let mut tx = store.pool().begin().await?;
    let (merchants, customers): (Vec<&str>, Vec<i64>) = nudges
        .iter()
        .map(|n| (n.key.merchant.as_str(), n.key.customer_id as i64))
        .unzip();
    // In one order everywhere, so two transactions locking overlapping customers cannot deadlock.
    sqlx::query(
        "SELECT pg_advisory_xact_lock(k) FROM (
             SELECT DISTINCT hashtextextended('nudge-cap:' || m || ':' || c::text, 0) AS k
             FROM UNNEST($1::text[], $2::int8[]) AS x(m, c) ORDER BY k) AS locks",
    )
    .bind(&merchants)
    .bind(&customers)
    .execute(&mut *tx)
    .await?;
    let known = known_statuses(&mut tx, nudges).await?;
    let last = last_shown(&mut tx, &merchants, &customers).await?;
    let decided = decide(cap, nudges, &known, last);
    let rows: Vec<(&PendingNudge, Status)> = decided
        .iter()
        .filter(|(n, _)| !known.contains_key(&n.nudge_id()))
        .map(|(n, s)| (*n, *s))
        .chain(held_out.iter().map(|n| (n, Status::Holdout)))
        .collect();
    insert(&mut tx, &rows).await?;
    tx.commit().await?;
    Ok(decided
        .into_iter()
        .filter(|(_, s)| *s == Status::Shown)
        .map(|(n, _)| n.nudge_id())
        .collect())
}

type Tx<'a> = sqlx::Transaction<'a, sqlx::Postgres>;
pub(crate) type Customer = (String, i64);

/// Statuses already recorded for these nudges (a replay).
async fn known_statuses(
    tx: &mut Tx<'_>,
    nudges: &[PendingNudge],
) -> Result<HashMap<String, Status>, StoreError> {
    let merchants: Vec<&str> = nudges.iter().map(|n| n.key.merchant.as_str()).collect();
    let ids: Vec<String> = nudges.iter().map(PendingNudge::nudge_id).collect();
    let rows = sqlx::query(
        "SELECT n.nudge_id, n.status FROM nudges n
         JOIN UNNEST($1::text[], $2::text[]) AS x(m, id) ON n.merchant_id = x.m AND n.nudge_id = x.id",
    )
    .bind(&merchants)
    .bind(&ids)
    .fetch_all(&mut **tx)
    .await?;
    let mut known = HashMap::with_capacity(rows.len());
    for row in rows {
        let status: String = row.try_get("status")?;
        if let Some(status) = Status::parse(&status) {
            known.insert(row.try_get("nudge_id")?, status);
        }
    }
    Ok(known)
}

/// When each customer was last shown a nudge.
async fn last_shown(
    tx: &mut Tx<'_>,
    merchants: &[&str],
    customers: &[i64],
) -> Result<HashMap<Customer, Timestamp>, StoreError> {
    let rows = sqlx::query(
        "SELECT n.merchant_id, n.customer_id, max(n.created_at) AS at FROM nudges n
         JOIN (SELECT DISTINCT m, c FROM UNNEST($1::text[], $2::int8[]) AS x(m, c)) AS x
           ON n.merchant_id = x.m AND n.customer_id = x.c
         WHERE n.status = 'shown' GROUP BY 1, 2",
    )
    .bind(merchants)
    .bind(customers)
    .fetch_all(&mut **tx)
    .await?;
    let mut last = HashMap::with_capacity(rows.len());
    for row in rows {
        let key = (row.try_get("merchant_id")?, row.try_get("customer_id")?);
        last.insert(key, from_time(row.try_get("at")?));
    }
    Ok(last)
}

/// Each nudge's status: as recorded when a replay finds it, else the cap's decision in the order the nudges
/// fired, each shown nudge moving its customer's window.
pub(crate) fn decide<'n>(
    cap: FrequencyCap,
    nudges: &'n [PendingNudge],
    known: &HashMap<String, Status>,
    mut last: HashMap<Customer, Timestamp>,
) -> Vec<(&'n PendingNudge, Status)> {
    nudges
        .iter()
        .map(|n| {
            let customer = (n.key.merchant.to_string(), n.key.customer_id as i64);
            let status = match known.get(&n.nudge_id()) {
                Some(status) => *status,
                None => match cap.decide(last.get(&customer).copied(), n.fired_at) {
                    CapDecision::Show => Status::Shown,
                    CapDecision::Capped => Status::Capped,
                },
            };
            if status == Status::Shown {
                let at = last.entry(customer).or_insert(n.fired_at);
                *at = (*at).max(n.fired_at);
            }
            (n, status)
        })
        .collect()
}

async fn insert(tx: &mut Tx<'_>, rows: &[(&PendingNudge, Status)]) -> Result<(), StoreError> {
    if rows.is_empty() {
        return Ok(());
    }
    let column = |f: fn(&PendingNudge) -> String| -> Vec<String> {
        rows.iter().map(|(n, _)| f(n)).collect()
    };
    let customers: Vec<i64> = rows.iter().map(|(n, _)| n.key.customer_id as i64).collect();
    let versions: Vec<i32> = rows.iter().map(|(n, _)| n.version as i32).collect();
    let locales: Vec<Option<String>> = rows.iter().map(|(n, _)| n.locale.clone()).collect();
    let experiments: Vec<Option<String>> = rows
        .iter()
        .map(|(n, _)| n.experiment_id.as_deref().map(str::to_owned))
        .collect();
    let statuses: Vec<&str> = rows.iter().map(|(_, s)| s.as_str()).collect();
    let fired: Vec<chrono::DateTime<chrono::Utc>> =
        rows.iter().map(|(n, _)| to_time(n.fired_at)).collect();
    sqlx::query(
        "INSERT INTO nudges (merchant_id, nudge_id, customer_id, version, segment, variant, locale, created_at,
                             kind, experiment_id, status)
         SELECT * FROM UNNEST($1::text[], $2::text[], $3::int8[], $4::int4[], $5::text[], $6::text[], $7::text[],
                              $8::timestamptz[], $9::text[], $10::text[], $11::text[])
         ON CONFLICT DO NOTHING",
    )
    .bind(column(|n| n.key.merchant.to_string()))
    .bind(column(PendingNudge::nudge_id))
    .bind(&customers)
    .bind(&versions)
    .bind(column(|n| n.segment.clone()))
    .bind(column(|n| n.variant.to_string()))
    .bind(&locales)
    .bind(&fired)
    .bind(column(|n| n.kind.as_str().to_owned()))
    .bind(&experiments)
    .bind(&statuses)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::customer::CustomerKey;
    use functions::NudgeKind;
    use streams::MerchantId;

    fn nudge(customer_id: u64, version: u32, at: i64) -> PendingNudge {
        PendingNudge {
            key: CustomerKey {
                merchant: MerchantId::parse("cap.myshopify.com").unwrap(),
                customer_id,
            },
            version,
            segment: "loyal".into(),
            kind: NudgeKind::Loyal,
            experiment_id: None,
            variant: "A".into(),
            locale: None,
            trace_id: "t".into(),
            fired_at: Timestamp(at),
            points: 0,
        }
    }

    #[test]
    fn replays_keep_their_statuses_and_new_nudges_are_capped_against_them() {
        let cap = FrequencyCap::default();
        let nudges = [
            nudge(1, 2, 1_000),
            nudge(1, 3, 2_000),
            nudge(2, 2, 1_000),
            nudge(3, 4, 90_000),
        ];
        let known = HashMap::from([(nudges[0].nudge_id(), Status::Shown)]);
        let last = HashMap::from([(("cap.myshopify.com".to_owned(), 3), Timestamp(0))]);
        let statuses: Vec<Status> = decide(cap, &nudges, &known, last)
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            statuses,
            [Status::Shown, Status::Capped, Status::Shown, Status::Shown]
        );
        let known = HashMap::from([(nudges[0].nudge_id(), Status::Capped)]);
        let statuses: Vec<Status> = decide(cap, &nudges[..2], &known, HashMap::new())
            .into_iter()
            .map(|(_, s)| s)
            .collect();
        assert_eq!(
            statuses,
            [Status::Capped, Status::Shown],
            "a capped nudge does not move the window"
        );
    }
}
