//! Experiments in Postgres (`nudge_experiments`): saving one (ending the kind's running experiment, in one
//! transaction with its audit row) and reading them back for the plans and the results. Stored definitions are
//! the API's documents and are parsed again on the way out, so a row that no longer validates is skipped loudly
//! rather than trusted.

use functions::nudge::experiment::Experiment;
use serde_json::json;
use sqlx::Row;
use streams::MerchantId;

use crate::store::{Store, StoreError};

/// What a save did.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Saved {
    /// Saved and running, under this revision; `replaced` names the experiment of the kind it ended.
    Running {
        revision: i64,
        replaced: Option<String>,
    },
    /// The id already names the merchant's experiment of another kind; nothing was saved.
    IdOfAnotherKind(String),
}

/// An experiment as stored.
#[derive(Debug, Clone)]
pub struct StoredExperiment {
    pub experiment: Experiment,
    pub running: bool,
    pub revision: i64,
    pub created_at: chrono::DateTime<chrono::Utc>,
}

/// Saves `experiment` as the merchant's running experiment of its kind, ending the one running before (unless it
/// is the same id, which is updated in place), and writes the audit row, all in one transaction. Saves for one
/// merchant and kind are serialised by an advisory lock, so two at once cannot both end up running.
pub async fn save(
    store: &Store,
    merchant: &MerchantId,
    experiment: &Experiment,
    actor: &str,
) -> Result<Saved, StoreError> {
    let (id, kind) = (experiment.id.as_str(), experiment.kind.as_str());
    let mut tx = store.pool().begin().await?;
    sqlx::query(
        "SELECT pg_advisory_xact_lock(hashtextextended('nudge-experiment:' || $1 || ':' || $2, 0))",
    )
    .bind(merchant.as_str())
    .bind(kind)
    .execute(&mut *tx)
    .await?;
    let other_kind: Option<String> = sqlx::query_scalar(
        "SELECT kind FROM nudge_experiments WHERE merchant_id = $1 AND experiment_id = $2 AND kind <> $3",
    )
    .bind(merchant.as_str())
    .bind(id)
    .bind(kind)
    .fetch_optional(&mut *tx)
    .await?;
    if let Some(other) = other_kind {
        return Ok(Saved::IdOfAnotherKind(other));
    }
    let replaced: Option<String> = sqlx::query_scalar(
        "UPDATE nudge_experiments SET ended_at = now()
         WHERE merchant_id = $1 AND kind = $2 AND ended_at IS NULL AND experiment_id <> $3
         RETURNING experiment_id",
    )
    .bind(merchant.as_str())
    .bind(kind)
    .bind(id)
    .fetch_optional(&mut *tx)
    .await?;
    let revision: i64 = sqlx::query_scalar(
        "INSERT INTO nudge_experiments (merchant_id, experiment_id, kind, definition) VALUES ($1, $2, $3, $4)
         ON CONFLICT (merchant_id, experiment_id) DO UPDATE SET definition = EXCLUDED.definition,
             ended_at = NULL, revision = nextval('nudge_experiment_revision')
         RETURNING revision",
    )
    .bind(merchant.as_str())
    .bind(id)
    .bind(kind)
    .bind(experiment.to_json())
    .fetch_one(&mut *tx)
    .await?;
    let detail =
        json!({ "experiment": experiment.to_json(), "replaced": replaced, "revision": revision });
    audit(&mut tx, merchant, actor, detail).await?;
    tx.commit().await?;
    Ok(Saved::Running { revision, replaced })
}

async fn audit(
    tx: &mut sqlx::Transaction<'_, sqlx::Postgres>,
    merchant: &MerchantId,
    actor: &str,
    detail: serde_json::Value,
) -> Result<(), StoreError> {
    sqlx::query(
        "INSERT INTO audit_logs (merchant_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(merchant.as_str())
    .bind(actor)
    .bind(AUDIT_ACTION)
    .bind(detail)
    .execute(&mut **tx)
    .await?;
    Ok(())
}

/// The `audit_logs.action` of a save.
pub const AUDIT_ACTION: &str = "nudge_ab_test_saved";

/// Every experiment of the merchant, running or ended, newest first.
pub async fn of_merchant(
    store: &Store,
    merchant: &MerchantId,
) -> Result<Vec<StoredExperiment>, StoreError> {
    let rows = sqlx::query(
        "SELECT experiment_id, definition, revision, ended_at IS NULL AS running, created_at
         FROM nudge_experiments WHERE merchant_id = $1 ORDER BY created_at DESC, experiment_id",
    )
    .bind(merchant.as_str())
    .fetch_all(store.pool())
    .await?;
    let mut stored = Vec::with_capacity(rows.len());
    for row in rows {
        let id: String = row.try_get("experiment_id")?;
        let Some(experiment) = parse(merchant.as_str(), &id, &row.try_get("definition")?) else {
            continue;
        };
        stored.push(StoredExperiment {
            experiment,
            running: row.try_get("running")?,
            revision: row.try_get("revision")?,
            created_at: row.try_get("created_at")?,
        });
    }
    Ok(stored)
}

/// A stored definition, or `None` (logged) when it no longer validates.
pub(crate) fn parse(
    merchant: &str,
    id: &str,
    definition: &serde_json::Value,
) -> Option<Experiment> {
    match Experiment::from_json(definition, id) {
        Ok(experiment) => Some(experiment),
        Err(errors) => {
            tracing::error!(
                merchant,
                experiment_id = id,
                ?errors,
                "stored nudge experiment is invalid; ignored"
            );
            None
        }
    }
}
