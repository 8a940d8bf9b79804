//! Keeping a processor's [`NudgePlans`] in step with `nudge_experiments`. The plans are loaded before the
//! processor starts (a failure stops the start, like the migrations before it) and refreshed every
//! `NUDGE_PLAN_REFRESH_SECS` after that. A save through this instance's API installs its plan at once; one saved
//! through another instance is picked up here at the next refresh, so the bound is the refresh interval. A
//! periodic reload rather than pub/sub because it needs nothing but Postgres, and a missed message could leave an
//! instance on an old plan for good.
//!
//! A refresh reads only ids and revisions; definitions are fetched for the plans that changed. Refreshes never go
//! backwards (see [`sync`]).

use std::collections::{HashMap, HashSet};
use std::sync::{Arc, Weak};
use std::time::Duration;

use actors::experiments::{end, install};
use actors::{ExperimentPlan, NudgePlans};
use dashmap::DashMap;
use functions::NudgeKind;
use sqlx::Row;
use streams::MerchantId;

use super::store::parse;
use crate::store::{Store, StoreError};

/// (merchant, kind) → (experiment id, revision)
type Running = HashMap<(MerchantId, NudgeKind), (String, i64)>;

/// Brings `plans` up to date with the running experiments in Postgres, never backwards: revisions come from a
/// sequence when a save starts, so saves can commit out of revision order, and a read can miss a save that
/// committed just after it while seeing a later-numbered one. A plan is installed only over an older revision
/// (`install`), and ended only on evidence from the snapshot: its own row is visible and ended (a save that
/// replaces it ends it in the same transaction). A plan whose row is not visible yet is kept: the save through this
/// instance installed it first. (A row deleted outright leaves its plan until the restart.)
pub async fn sync(store: &Store, plans: &NudgePlans) -> Result<(), StoreError> {
    let held: Vec<(MerchantId, NudgeKind, String)> = plans
        .iter()
        .flat_map(|entry| {
            let merchant = entry.key().clone();
            entry
                .value()
                .iter()
                .map(|p| (merchant.clone(), p.experiment.kind, p.id.to_string()))
                .collect::<Vec<_>>()
        })
        .collect();
    let (running, ended) = read(store, &held).await?;
    for (merchant, kind, id) in held {
        if ended.contains(&(merchant.clone(), id.clone())) {
            end(plans, &merchant, kind, &id);
        }
    }
    let changed: Vec<(MerchantId, String)> = running
        .iter()
        .filter(|((merchant, kind), (_, revision))| {
            installed_revision(plans, merchant, *kind).is_none_or(|held| held < *revision)
        })
        .map(|((merchant, _), (id, _))| (merchant.clone(), id.clone()))
        .collect();
    if !changed.is_empty() {
        for (merchant, plan) in definitions(store, &changed).await? {
            install(plans, &merchant, Arc::new(plan));
        }
    }
    Ok(())
}

/// Refreshes `plans` every `every` until the processor that owns them is gone.
pub fn spawn_refresh(store: Store, plans: &NudgePlans, every: Duration) {
    let plans: Weak<DashMap<MerchantId, Vec<Arc<ExperimentPlan>>>> = Arc::downgrade(plans);
    tokio::spawn(async move {
        let mut ticker = tokio::time::interval(every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        ticker.tick().await;
        loop {
            ticker.tick().await;
            let Some(plans) = plans.upgrade() else {
                return;
            };
            if let Err(e) = sync(&store, &plans).await {
                tracing::warn!(error = %e, "nudge experiments not refreshed; keeping the plans held");
                metrics::counter!(streams::metric_names::NUDGE_PLAN_REFRESH_FAILURES).increment(1);
                streams::metric_names::error("nudges", "plan_refresh");
            }
        }
    });
}

fn installed_revision(plans: &NudgePlans, merchant: &MerchantId, kind: NudgeKind) -> Option<i64> {
    let running = plans.get(merchant)?;
    let plan = running.iter().find(|p| p.experiment.kind == kind)?;
    Some(plan.revision)
}

/// From one snapshot: the running experiments' ids and revisions, and which of the `held` plans' rows are
/// visible and ended.
async fn read(
    store: &Store,
    held: &[(MerchantId, NudgeKind, String)],
) -> Result<(Running, HashSet<(MerchantId, String)>), StoreError> {
    let mut tx = store.pool().begin().await?;
    sqlx::query("SET TRANSACTION ISOLATION LEVEL REPEATABLE READ READ ONLY")
        .execute(&mut *tx)
        .await?;
    let rows = sqlx::query(
        "SELECT merchant_id, kind, experiment_id, revision FROM nudge_experiments WHERE ended_at IS NULL",
    )
    .fetch_all(&mut *tx)
    .await?;
    let merchants: Vec<&str> = held.iter().map(|(m, ..)| m.as_str()).collect();
    let ids: Vec<&str> = held.iter().map(|(_, _, id)| id.as_str()).collect();
    let ended_rows = sqlx::query(
        "SELECT e.merchant_id, e.experiment_id FROM nudge_experiments e
         JOIN UNNEST($1::text[], $2::text[]) AS h(m, id) ON e.merchant_id = h.m AND e.experiment_id = h.id
         WHERE e.ended_at IS NOT NULL",
    )
    .bind(&merchants)
    .bind(&ids)
    .fetch_all(&mut *tx)
    .await?;
    tx.commit().await?;
    let mut running = Running::new();
    for row in rows {
        let (merchant, kind): (String, String) =
            (row.try_get("merchant_id")?, row.try_get("kind")?);
        let (Ok(merchant), Some(kind)) = (MerchantId::parse(&merchant), NudgeKind::parse(&kind))
        else {
            continue;
        };
        running.insert(
            (merchant, kind),
            (row.try_get("experiment_id")?, row.try_get("revision")?),
        );
    }
    let mut ended = HashSet::new();
    for row in ended_rows {
        if let Ok(merchant) = MerchantId::parse(&row.try_get::<String, _>("merchant_id")?) {
            ended.insert((merchant, row.try_get("experiment_id")?));
        }
    }
    Ok((running, ended))
}

/// The plans of the named running experiments.
async fn definitions(
    store: &Store,
    wanted: &[(MerchantId, String)],
) -> Result<Vec<(MerchantId, ExperimentPlan)>, StoreError> {
    let merchants: Vec<&str> = wanted.iter().map(|(m, _)| m.as_str()).collect();
    let ids: Vec<&str> = wanted.iter().map(|(_, id)| id.as_str()).collect();
    let rows = sqlx::query(
        "SELECT e.merchant_id, e.experiment_id, e.definition, e.revision
         FROM nudge_experiments e JOIN UNNEST($1::text[], $2::text[]) AS w(m, id)
           ON e.merchant_id = w.m AND e.experiment_id = w.id
         WHERE e.ended_at IS NULL",
    )
    .bind(&merchants)
    .bind(&ids)
    .fetch_all(store.pool())
    .await?;
    let mut plans = Vec::with_capacity(rows.len());
    for row in rows {
        let (merchant, id): (String, String) =
            (row.try_get("merchant_id")?, row.try_get("experiment_id")?);
        let Ok(shop) = MerchantId::parse(&merchant) else {
            continue;
        };
        if let Some(experiment) = parse(&merchant, &id, &row.try_get("definition")?) {
            plans.push((
                shop,
                ExperimentPlan::new(experiment, row.try_get("revision")?),
            ));
        }
    }
    Ok(plans)
}
