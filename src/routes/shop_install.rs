//! `POST /api/v1/shop/install`: called by the embedded app with its session token when it opens (every time:
//! the call is idempotent). Trades the session token for the shop's offline Admin API token by Shopify's token
//! exchange, stores it sealed, and creates the customer metafield definitions the write-back fills.

use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::api::{authenticate, ReadState};
use crate::backfill::Phase;
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
    /// The history backfill an install starts (issue 19); `None` where the instance has no producer for it.
    pub backfill: Option<std::sync::Arc<crate::backfill::Backfill>>,
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

/// Starts the shop's history backfill unless one finished or is under way: the embedded app calls install each
/// time it opens, and a finished backfill would only be repeated (harmlessly, since its ids are Shopify's, but at
/// the cost of a bulk operation). Answers what happened, for the response.
async fn start_history(state: &InstallState, shop: &MerchantId, token: &str) -> &'static str {
    let Some(backfill) = &state.backfill else {
        return "not_configured";
    };
    match backfill.progress.load(shop).await {
        Ok(Some(p)) if p.phase == Phase::Completed => "completed",
        // `insert` is the check: two install calls at once start one backfill.
        Ok(_) if !IN_FLIGHT.insert(shop.clone()) => "running",
        Ok(_) => {
            let task =
                crate::backfill::start_backfill(backfill.clone(), shop.clone(), token.to_owned());
            let shop = shop.clone();
            tokio::spawn(async move {
                let _ = task.await;
                IN_FLIGHT.remove(&shop);
            });
            "started"
        }
        Err(e) => {
            tracing::warn!(merchant = %shop, error = %e, "backfill progress unreadable; not started");
            "unavailable"
        }
    }
}

/// Shops whose backfill this instance is running, so a second install call does not start another.
static IN_FLIGHT: std::sync::LazyLock<dashmap::DashSet<MerchantId>> =
    std::sync::LazyLock::new(dashmap::DashSet::new);

fn unavailable(message: &str) -> HttpResponse {
    HttpResponse::ServiceUnavailable().json(json!({ "error": "unavailable", "message": message }))
}
