//! `POST /api/v1/rfm/nudges/ab-test` (create or replace the A/B experiment of one nudge kind) and
//! `GET /api/v1/rfm/nudges/ab-test` (every experiment's results). Both are scoped by the session token's shop.
//!
//! A save is validated whole (422 with every field error), stored with its audit row in one transaction, and
//! installed in this instance's plans at once; other instances pick it up at their next refresh
//! (`experiments::plans`).

use std::sync::Arc;

use actix_web::{web, HttpRequest, HttpResponse};
use functions::nudge::experiment::Experiment;
use functions::FieldError;
use serde_json::json;

use crate::experiments::results::results;
use crate::experiments::store::{save, Saved};
use crate::experiments::NudgeRules;
use crate::routes::api::{authenticate, ApiError, AuthedShop, ReadState};
use crate::store::Store;

/// What the experiment routes need besides the read API's state.
pub struct ExperimentState {
    pub store: Option<Store>,
    /// This instance's processor's plans, when it runs one.
    pub plans: Option<actors::NudgePlans>,
    pub rules: NudgeRules,
}

impl ExperimentState {
    fn store(&self) -> Result<&Store, ApiError> {
        self.store.as_ref().ok_or_else(|| {
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
    let store = state.store()?;
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
    let (revision, replaced) = match save(store, &auth.merchant, &experiment, &auth.subject).await?
    {
        Saved::Running { revision, replaced } => (revision, replaced),
        Saved::IdOfAnotherKind(kind) => {
            let message = format!("names this shop's experiment of kind {kind}");
            return Ok(unprocessable(&[FieldError::new("id", message)]));
        }
    };
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
    let store = state.store()?;
    let window = state.rules.attribution.seconds;
    Ok(HttpResponse::Ok().json(results(store, &shop.0, window).await?))
}
