//! `POST /api/v1/rfm/preview`: segment sizes and the from → to move matrix a proposed configuration would give the
//! shop's customers now, beside today's; nothing is saved. The body is a configuration (or `{"config": …}`, what
//! `GET /api/v1/rfm/config` answers), checked like a `PUT` (422 with every field error). See `crate::preview` for
//! where the answer is computed and cached.

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde_json::json;

use super::api::{authenticate, ApiError, ReadState};
use super::rfm_config::ConfigError;
use crate::preview::{config_hash, PreviewService};

pub const PATH: &str = "/api/v1/rfm/preview";

/// Registers the route; a [`PreviewService`] must be app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .app_data(web::PayloadConfig::new(super::rfm_config::MAX_BODY_BYTES))
            .route(web::post().to(post)),
    );
}

pub async fn post(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReadState>,
    previews: web::Data<PreviewService>,
) -> Result<HttpResponse, ConfigError> {
    let auth = authenticate(&state, &req)?;
    let config = super::rfm_config::config_body(&body)?;
    let (answer, cached) = previews
        .preview(&auth.merchant, &config)
        .await
        .map_err(ApiError::Store)?;
    let mut body = serde_json::to_value(&answer).unwrap_or_default();
    body["cached"] = json!(cached);
    body["config_hash"] = json!(config_hash(&config));
    Ok(HttpResponse::Ok()
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(body))
}
