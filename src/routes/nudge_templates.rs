//! `GET`/`PUT /api/v1/rfm/nudges/templates`: the merchant's nudge template for each of the seven kinds.
//!
//! `GET` answers every kind, saved or default, with the list of kinds the merchant saved. `PUT` takes
//! `{"templates": {"<kind>": {"enabled": …, "texts": {…}}, …}}` naming any of the kinds (those left out stay as they
//! are), checks everything before writing anything, and answers 422 with every field error at once
//! (`{"errors": [{"field": "templates.at_risk.texts.es.title", "message": "…"}]}`). A body that is not JSON is a 400.
//! `default_locale` (optional) sets the shop's default locale, the locale chain's step between the customer's
//! language and `en`; `null` clears it, leaving it out keeps it.
//! Scoped by the session token's shop like every merchant route, and the audit row names the token's subject.

use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use functions::nudge::Locale;
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

/// The document's `default_locale`: absent leaves the shop's as it is (`None`), `null` clears it, a tag sets it.
fn default_locale(document: &Value) -> Result<Option<Option<Locale>>, FieldError> {
    match document.get("default_locale") {
        None => Ok(None),
        Some(Value::Null) => Ok(Some(None)),
        Some(Value::String(raw)) => Locale::parse(raw)
            .map(|l| Some(Some(l)))
            .map_err(|e| FieldError::new("default_locale", e.to_string())),
        Some(_) => Err(FieldError::new(
            "default_locale",
            "must be a locale tag such as \"fr\" or \"pt-BR\", or null",
        )),
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
    let updates = functions::nudge::parse_update(&document);
    let default_locale = default_locale(&document);
    let (updates, default_locale) = match (updates, default_locale) {
        (Ok(updates), Ok(locale)) => (updates, locale),
        (updates, locale) => {
            let errors = updates
                .err()
                .into_iter()
                .chain(locale.err().map(|e| vec![e]));
            return Err(TemplatesError::Invalid(errors.flatten().collect()));
        }
    };
    let changed = templates
        .save(
            &auth.merchant,
            &auth.subject,
            &updates,
            default_locale.as_ref().map(Option::as_ref),
        )
        .await?;
    let set = templates
        .get(&auth.merchant)
        .await
        .map_err(ApiError::Store)?;
    let mut answer = set.to_json();
    answer["changed"] = json!(changed.iter().map(|k| k.as_str()).collect::<Vec<_>>());
    Ok(HttpResponse::Ok().json(answer))
}
