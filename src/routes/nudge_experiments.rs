//! `POST /api/v1/rfm/nudges/ab-test` (create or replace the A/B experiment of one nudge kind) and
//! `GET /api/v1/rfm/nudges/ab-test` (every experiment's results, computed at most every two seconds per shop and
//! instance: `experiments::results::ResultsCache`). Both are scoped by the session token's shop.
//!
//! A save is validated whole (422 with every field error), stored with its audit row in one transaction, and
//! installed in this instance's plans at once; other instances pick it up at their next refresh
//! (`experiments::plans`).

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use functions::nudge::experiment::Experiment;
use functions::FieldError;
use serde_json::json;

use crate::experiments::ledger::{Ledger, NudgeLedger};
use crate::experiments::results::ResultsCache;
use crate::experiments::store::Saved;
use crate::experiments::NudgeRules;
use crate::routes::api::{authenticate, ApiError, AuthedShop, ReadState};

/// What the experiment routes need besides the read API's state.
pub struct ExperimentState {
    pub ledger: Option<Ledger>,
    /// The results as the REST route and the dashboard's frames serve them (`None` without a ledger).
    pub results: Option<ResultsCache>,
    /// This instance's processor's plans, when it runs one.
    pub plans: Option<actors::NudgePlans>,
    pub rules: NudgeRules,
}

impl ExperimentState {
    pub fn new(
        ledger: Option<Ledger>,
        plans: Option<actors::NudgePlans>,
        rules: NudgeRules,
    ) -> ExperimentState {
        let results = ledger
            .clone()
            .map(|l| ResultsCache::new(l, rules.attribution.seconds));
        ExperimentState {
            ledger,
            results,
            plans,
            rules,
        }
    }

    fn ledger(&self) -> Result<&dyn NudgeLedger, ApiError> {
        self.ledger.as_deref().ok_or_else(|| {
            ApiError::Unavailable(
                "experiments are kept in Postgres, and DATABASE_URL is not set".into(),
            )
        })
    }
}

fn unprocessable(errors: &[FieldError]) -> HttpResponse {
    HttpResponse::UnprocessableEntity().json(json!({ "errors": errors }))
}

pub async fn save_experiment(
    req: HttpRequest,
    body: web::Bytes,
    reads: web::Data<ReadState>,
    state: web::Data<ExperimentState>,
) -> Result<HttpResponse, ApiError> {
    let auth = authenticate(&reads, &req)?;
    let ledger = state.ledger()?;
    let Ok(document) = serde_json::from_slice::<serde_json::Value>(&body) else {
        return Ok(unprocessable(&[FieldError::new(
            "",
            "the body must be a JSON object",
        )]));
    };
    let fallback_id = format!(
        "{}-{}",
        kind_hint(&document),
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let experiment = match Experiment::from_json(&document, &fallback_id) {
        Ok(experiment) => experiment,
        Err(errors) => return Ok(unprocessable(&errors)),
    };
    let (revision, replaced) = match ledger
        .save_experiment(&auth.merchant, &experiment, &auth.subject)
        .await?
    {
        Saved::Running { revision, replaced } => (revision, replaced),
        Saved::IdOfAnotherKind(kind) => {
            let message = format!("names this shop's experiment of kind {kind}");
            return Ok(unprocessable(&[FieldError::new("id", message)]));
        }
    };
    if let Some(results) = &state.results {
        results.invalidate(&auth.merchant);
    }
    if let Some(plans) = &state.plans {
        let plan = Arc::new(actors::ExperimentPlan::new(experiment.clone(), revision));
        actors::experiments::install(plans, &auth.merchant, plan);
    }
    tracing::info!(
        merchant = %auth.merchant,
        experiment_id = %experiment.id,
        kind = experiment.kind.as_str(),
        arms = experiment.arms.len(),
        holdout_bps = experiment.holdout_bps,
        replaced = replaced.as_deref(),
        "nudge experiment saved"
    );
    let mut body = experiment.to_json();
    body["running"] = json!(true);
    body["replaced"] = json!(replaced);
    Ok(HttpResponse::Ok().json(body))
}

/// The kind a document names, for a generated id; a placeholder when it names none (the document is refused then).
fn kind_hint(document: &serde_json::Value) -> &str {
    document
        .get("kind")
        .and_then(|k| k.as_str())
        .and_then(functions::NudgeKind::parse)
        .map_or("experiment", |k| k.as_str())
}

pub async fn experiment_results(
    shop: AuthedShop,
    state: web::Data<ExperimentState>,
) -> Result<HttpResponse, ApiError> {
    state.ledger()?;
    let Some(results) = &state.results else {
        return Err(ApiError::Unavailable("no nudge ledger".into()));
    };
    Ok(HttpResponse::Ok().json(&*results.get(&shop.0).await?))
}
