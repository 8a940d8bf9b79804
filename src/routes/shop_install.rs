//! `POST /api/v1/shop/install`: called by the embedded app with its session token when it opens (every time:
//! the call is idempotent). Trades the session token for the shop's offline Admin API token by Shopify's token
//! exchange, stores it sealed, and creates the customer metafield definitions the write-back fills.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::api::{authenticate, ReadState};
use crate::backfill::{Phase, Start};
use crate::pii::KeyRing;
use crate::shopify::access::{self, AccessError};
use crate::shopify::admin::paced::PacedClient;
use streams::ids::MerchantId;

pub const PATH: &str = "/api/v1/shop/install";

pub struct InstallState {
    pub admin: PacedClient,
    pub pool: Option<sqlx::PgPool>,
    pub keys: KeyRing,
    /// The app's client id and secret, which the token exchange presents.
    pub client_id: String,
    pub client_secret: String,
    /// The instance's backfills, which an install adds to (issue 19); `None` where there is no producer for it.
    pub backfill: Option<std::sync::Arc<crate::backfill::Backfills>>,
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route(PATH, web::post().to(install));
}

async fn install(
    req: HttpRequest,
    reads: web::Data<ReadState>,
    state: web::Data<InstallState>,
) -> HttpResponse {
    let auth = match authenticate(&reads, &req) {
        Ok(auth) => auth,
        Err(e) => return actix_web::ResponseError::error_response(&e),
    };
    let Some((session_token, _)) = crate::auth::bearer(req.headers()) else {
        return HttpResponse::Unauthorized().json(json!({ "error": "missing_token" }));
    };
    let Some(pool) = &state.pool else {
        return unavailable("no database is configured (DATABASE_URL): tokens cannot be stored");
    };
    let app = (state.client_id.as_str(), state.client_secret.as_str());
    match access::install(
        &state.admin,
        pool,
        &state.keys,
        &auth.merchant,
        session_token,
        app,
    )
    .await
    {
        Ok(done) => {
            let backfill = start_history(&state, &auth.merchant, &done.access_token).await;
            HttpResponse::Ok().json(json!({
                "status": "installed",
                "scope": done.scope,
                "definitions_created": done.definitions_created,
                "backfill": backfill,
            }))
        }
        Err(e) => {
            tracing::warn!(merchant = %auth.merchant, error = %e, "install failed");
            match e {
                AccessError::NoKey | AccessError::Store(_) => unavailable(&e.to_string()),
                AccessError::Refused { status: 400, .. } => HttpResponse::Unauthorized()
                    .json(json!({ "error": "token_exchange_refused", "message": e.to_string() })),
                _ => HttpResponse::BadGateway()
                    .json(json!({ "error": "shopify_unavailable", "message": e.to_string() })),
            }
        }
    }
}

/// Starts the shop's history backfill unless one finished or is under way (here or on another instance): the
/// embedded app calls install each time it opens, and a finished backfill would only be repeated (harmlessly,
/// since its ids are Shopify's, but at the cost of a bulk operation). Answers what happened, for the response.
async fn start_history(state: &InstallState, shop: &MerchantId, token: &str) -> &'static str {
    let Some(backfills) = &state.backfill else {
        return "not_configured";
    };
    let started = match backfills.backfill.progress.load(shop).await {
        Ok(Some(p)) if p.phase == Phase::Completed => return "completed",
        Ok(_) => backfills.start(shop, token.to_owned()).await,
        Err(e) => Err(e),
    };
    match started {
        Ok(Start::Started) => "started",
        Ok(Start::Running) => "running",
        Ok(Start::Stopping) => "stopping",
        Err(e) => {
            tracing::warn!(merchant = %shop, error = %e, "backfill progress unreadable; not started");
            "unavailable"
        }
    }
}

fn unavailable(message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": "unavailable", "message": message }))
}
