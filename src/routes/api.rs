//! The merchant read API (`/api/v1/rfm/...`): segment sizes, one customer and its history, the churn-risk list.
//!
//! Every handler takes an [`AuthedShop`], which only a verified session token produces, and scopes every read by
//! it; there is no path parameter naming a shop, so a token for shop A has no way to ask about shop B.

use std::future::{ready, Ready};
use std::sync::Arc;

use actix_web::http::StatusCode;
use actix_web::{web, FromRequest, HttpRequest, HttpResponse, ResponseError};
use functions::Timestamp;
use serde::Deserialize;
use serde_json::json;
use streams::MerchantId;

use crate::auth::{AuthError, Authenticated, Verifier};
use crate::limits::{Limits, RetryAfter};
use crate::live::Channels;
use crate::read_model::ReadModel;
use crate::store::StoreError;

/// Everything the read API and the dashboard socket need.
pub struct ReadState {
    pub verifier: Verifier,
    pub model: ReadModel,
    pub channels: Arc<Channels>,
    /// For the latest frame of a merchant this instance has not seen yet (fan-out through Redis).
    pub redis: Option<crate::redis_link::RedisLink>,
    pub redis_timeout: std::time::Duration,
    pub limits: Arc<Limits>,
    /// GDPR requests and their exports; with the store.
    pub gdpr: Option<crate::gdpr::Gdpr>,
}

#[derive(Debug, thiserror::Error)]
pub enum ApiError {
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error("{0}")]
    NotFound(String),
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(String),
    #[error("the database could not answer")]
    Store(#[from] StoreError),
    #[error("too many requests for this shop")]
    RateLimited(RetryAfter),
    #[error("too many dashboards open for this shop")]
    TooManySockets,
    /// A bounded resource (exports at once) is taken; the client should come back later.
    #[error("{0}")]
    Busy(String, RetryAfter),
}

impl ResponseError for ApiError {
    fn status_code(&self) -> StatusCode {
        match self {
            ApiError::Auth(_) => StatusCode::UNAUTHORIZED,
            ApiError::NotFound(_) => StatusCode::NOT_FOUND,
            ApiError::BadRequest(_) => StatusCode::BAD_REQUEST,
            ApiError::Unavailable(_) | ApiError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
            ApiError::RateLimited(_) | ApiError::TooManySockets | ApiError::Busy(..) => {
                StatusCode::TOO_MANY_REQUESTS
            }
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let ApiError::Store(e) = self {
            tracing::warn!(error = %e, "read API query failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ApiError::Auth(_) => {
                response.insert_header(("WWW-Authenticate", "Bearer error=\"invalid_token\""));
            }
            ApiError::RateLimited(RetryAfter(seconds)) | ApiError::Busy(_, RetryAfter(seconds)) => {
                response.insert_header(("Retry-After", seconds.to_string()));
            }
            ApiError::TooManySockets => {
                response.insert_header(("Retry-After", "5"));
            }
            _ => {}
        }
        response.json(json!({ "error": self.to_string() }))
    }
}

pub fn now_unix() -> i64 {
    chrono::Utc::now().timestamp()
}

/// The shop a verified session token names. Extracting it is the authentication.
pub struct AuthedShop(pub MerchantId);

impl FromRequest for AuthedShop {
    type Error = ApiError;
    type Future = Ready<Result<Self, ApiError>>;

    fn from_request(req: &HttpRequest, _: &mut actix_web::dev::Payload) -> Self::Future {
        let Some(state) = req.app_data::<web::Data<ReadState>>() else {
            return ready(Err(ApiError::Unavailable("read API not configured".into())));
        };
        ready(authenticate(state, req).map(|a| AuthedShop(a.merchant)))
    }
}

/// Verifies the request's session token, then spends one request of the shop's budget.
pub fn authenticate(state: &ReadState, req: &HttpRequest) -> Result<Authenticated, ApiError> {
    let auth = state
        .verifier
        .verify_request(req.headers(), now_unix())
        .map_err(|e| {
            metrics::counter!(streams::metric_names::API_AUTH_FAILURES, "reason" => auth_reason(&e)).increment(1);
            ApiError::Auth(e)
        })?;
    state
        .limits
        .api(&auth.merchant)
        .map_err(ApiError::RateLimited)?;
    Ok(auth)
}

fn auth_reason(e: &AuthError) -> &'static str {
    match e {
        AuthError::Missing => "missing",
        AuthError::Expired | AuthError::NotYetValid => "lifetime",
        AuthError::Signature | AuthError::Algorithm => "signature",
        _ => "claims",
    }
}

fn parse_customer(raw: &str) -> Result<u64, ApiError> {
    raw.parse()
        .map_err(|_| ApiError::BadRequest(format!("customer id must be a number, got {raw:?}")))
}

pub async fn segments(
    shop: AuthedShop,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let (source, counts) = state.model.segments(&shop.0).await?;
    let total: u64 = counts.iter().map(|c| c.count).sum();
    let segments: Vec<_> = counts
        .iter()
        .map(|c| {
            let share = if total == 0 {
                0.0
            } else {
                c.count as f64 / total as f64
            };
            json!({ "key": c.key, "name": c.name, "count": c.count, "share": share })
        })
        .collect();
    Ok(HttpResponse::Ok().json(json!({
        "merchant": shop.0, "source": source, "customers": total, "segments": segments,
    })))
}

pub async fn customer(
    shop: AuthedShop,
    path: web::Path<String>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_customer(&path)?;
    let now = Timestamp::from_unix(now_unix());
    match state.model.customer(&shop.0, id, now).await? {
        Some((source, view)) => {
            let mut body = serde_json::to_value(view).unwrap_or_default();
            body["source"] = json!(source);
            Ok(HttpResponse::Ok().json(body))
        }
        None => Err(ApiError::NotFound(format!("customer {id} not found"))),
    }
}

/// `/history` is keyset-paginated by version: `?after=<version>&limit=<1..=MAX_PER_PAGE>`.
#[derive(Debug, Deserialize)]
pub struct HistoryQuery {
    pub after: Option<i32>,
    pub limit: Option<usize>,
}

pub async fn history(
    shop: AuthedShop,
    path: web::Path<String>,
    query: web::Query<HistoryQuery>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let id = parse_customer(&path)?;
    let limit = query.limit.unwrap_or(100);
    if limit == 0 || limit > MAX_PER_PAGE {
        return Err(ApiError::BadRequest(format!(
            "limit is 1 to {MAX_PER_PAGE}"
        )));
    }
    let after = query.after.unwrap_or(0);
    let Some(entries) = state.model.history(&shop.0, id, after, limit).await? else {
        return Err(ApiError::Unavailable(
            "history is kept in Postgres, and DATABASE_URL is not set".into(),
        ));
    };
    if entries.is_empty() {
        let now = Timestamp::from_unix(now_unix());
        if state.model.customer(&shop.0, id, now).await?.is_none() {
            return Err(ApiError::NotFound(format!("customer {id} not found")));
        }
    }
    let next_after = (entries.len() == limit)
        .then(|| entries.last().map(|e| e.version))
        .flatten();
    Ok(HttpResponse::Ok().json(json!({
        "customer_id": id, "history": entries, "next_after": next_after,
    })))
}

#[derive(Debug, Deserialize)]
pub struct PageQuery {
    pub page: Option<usize>,
    pub per_page: Option<usize>,
}

pub const MAX_PER_PAGE: usize = 200;

/// The row offset of a 1-based page; a page whose offset does not fit is a client error, not an overflow.
fn page_offset(page: usize, per_page: usize) -> Result<usize, ApiError> {
    let bad = || {
        ApiError::BadRequest(format!(
            "page starts at 1 and per_page is 1 to {MAX_PER_PAGE}"
        ))
    };
    if page == 0 || per_page == 0 || per_page > MAX_PER_PAGE {
        return Err(bad());
    }
    (page - 1).checked_mul(per_page).ok_or_else(bad)
}

pub async fn churn_risk(
    shop: AuthedShop,
    query: web::Query<PageQuery>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let page = query.page.unwrap_or(1);
    let per_page = query.per_page.unwrap_or(50);
    let offset = page_offset(page, per_page)?;
    let now = Timestamp::from_unix(now_unix());
    let (source, result) = state
        .model
        .churn_risk(&shop.0, offset, per_page, now)
        .await?;
    let next_page = (offset.saturating_add(result.customers.len()) as u64) < result.total;
    let next_page = next_page.then(|| page.checked_add(1)).flatten();
    Ok(HttpResponse::Ok().json(json!({
        "merchant": shop.0, "source": source, "page": page, "per_page": per_page,
        "total": result.total, "next_page": next_page, "customers": result.customers,
    })))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn page_offsets_never_overflow() {
        assert_eq!(page_offset(1, 50).unwrap(), 0);
        assert_eq!(page_offset(3, 50).unwrap(), 100);
        assert!(page_offset(0, 50).is_err());
        assert!(page_offset(1, 0).is_err());
        assert!(page_offset(1, MAX_PER_PAGE + 1).is_err());
        assert!(page_offset(usize::MAX, 50).is_err());
        assert_eq!(page_offset(usize::MAX, 1).unwrap(), usize::MAX - 1);
    }
}
