//! `GET`/`PUT /api/v1/rfm/nudges/templates`: the merchant's nudge template for each of the seven kinds.
//!
//! `GET` answers every kind, saved or default, with the list of kinds the merchant saved. `PUT` takes
//! `{"templates": {"<kind>": {"enabled": …, "texts": {…}}, …}}` naming any of the kinds (those left out stay as they
//! are), checks everything before writing anything, and answers 422 with every field error at once
//! (`{"errors": [{"field": "templates.at_risk.texts.es.title", "message": "…"}]}`). A body that is not JSON is a 400.
//! Scoped by the session token's shop like every merchant route, and the audit row names the token's subject.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use functions::FieldError;
use serde_json::{json, Value};

use super::api::{authenticate, ApiError, ReadState};
use crate::nudges::templates::{SaveError, TemplateStore};

pub const PATH: &str = "/api/v1/rfm/nudges/templates";

/// The largest `PUT` body: seven kinds of 40 locales at their longest, in four-byte characters, fit.
pub const MAX_BODY_BYTES: usize = 512 * 1024;

/// Registers both methods; the instance's [`TemplateStore`] must be app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route(web::get().to(get))
            .route(web::put().to(put)),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum TemplatesError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the templates are not valid")]
    Invalid(Vec<FieldError>),
}

impl ResponseError for TemplatesError {
    fn status_code(&self) -> StatusCode {
        match self {
            TemplatesError::Api(e) => e.status_code(),
            TemplatesError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
        }
    }

    fn error_response(&self) -> HttpResponse {
        match self {
            TemplatesError::Api(e) => e.error_response(),
            TemplatesError::Invalid(errors) => HttpResponse::UnprocessableEntity()
                .json(json!({ "error": self.to_string(), "errors": errors })),
        }
    }
}

impl From<SaveError> for TemplatesError {
    fn from(e: SaveError) -> Self {
        match e {
            SaveError::NoDatabase => ApiError::Unavailable(e.to_string()).into(),
            SaveError::Store(e) => ApiError::Store(e).into(),
        }
    }
}

pub async fn get(
    req: HttpRequest,
    state: web::Data<ReadState>,
    templates: web::Data<TemplateStore>,
) -> Result<HttpResponse, ApiError> {
    let merchant = authenticate(&state, &req)?.merchant;
    let set = templates.get(&merchant).await?;
    Ok(HttpResponse::Ok().json(set.to_json()))
}

pub async fn put(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReadState>,
    templates: web::Data<TemplateStore>,
) -> Result<HttpResponse, TemplatesError> {
    // Authentication comes before the body is even parsed, so an anonymous client learns nothing from errors.
    let auth = authenticate(&state, &req)?;
    let document: Value = serde_json::from_slice(&body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let updates = functions::nudge::parse_update(&document).map_err(TemplatesError::Invalid)?;
    let changed = templates
        .save(&auth.merchant, &auth.subject, &updates)
        .await?;
    let set = templates
        .get(&auth.merchant)
        .await
        .map_err(ApiError::Store)?;
    let mut answer = set.to_json();
    answer["changed"] = json!(changed.iter().map(|k| k.as_str()).collect::<Vec<_>>());
    Ok(HttpResponse::Ok().json(answer))
}
