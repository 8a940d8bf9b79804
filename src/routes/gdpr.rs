//! `GET /api/v1/gdpr/requests` and `GET /api/v1/gdpr/requests/{id}`: the merchant's GDPR requests, and the export
//! a `customers/data_request` produced, for the merchant to hand to the customer (DESIGN.md §5).
//!
//! Scoped by the session token's shop like every merchant route. `{id}` is the webhook id or Shopify's data
//! request id. An export is opened only here, on the merchant's authenticated request, and only while it is kept;
//! after that the request still shows, with status `expired` and no export.

use actix_web::{web, HttpResponse};
use serde_json::json;

use super::api::{ApiError, AuthedShop, ReadState};
use crate::gdpr::Gdpr;

fn gdpr(state: &ReadState) -> Result<&Gdpr, ApiError> {
    state.gdpr.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "GDPR requests are kept in Postgres, and DATABASE_URL is not set".into(),
        )
    })
}

pub async fn list(shop: AuthedShop, state: web::Data<ReadState>) -> Result<HttpResponse, ApiError> {
    let requests = gdpr(&state)?.requests(&shop.0, None).await?;
    Ok(HttpResponse::Ok().json(json!({ "merchant": shop.0, "requests": requests })))
}

pub async fn one(
    shop: AuthedShop,
    path: web::Path<String>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let id = path.into_inner();
    if id.is_empty() || id.len() > 128 {
        return Err(ApiError::BadRequest(
            "request id is 1 to 128 characters".into(),
        ));
    }
    let mut requests = gdpr(&state)?.requests(&shop.0, Some(&id)).await?;
    match requests.pop() {
        Some(request) => Ok(HttpResponse::Ok().json(request)),
        None => Err(ApiError::NotFound(format!("no GDPR request {id:?}"))),
    }
}
