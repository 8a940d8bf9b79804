//! `GET`/`PUT /api/v1/rfm/config` and `POST /api/v1/rfm/config/reset`: the merchant's thresholds, weights and
//! segment rules, with what the engine measured of the shop (AOV, purchase interval) beside them.
//!
//! `GET` answers the configuration (saved, or the medium preset) with an `ETag`. `PUT` takes a whole
//! configuration, requires `If-Match` (428 without it, 412 when another admin saved first or the tag is weak, with
//! the current tag), answers 422 with every field error at once, and saves it for the engine (`merchant_config`). A reset takes
//! `{"preset": "small"|"medium"|"plus"}`, `{"aov": "23.50"}` or `{}` (the measured AOV) and re-derives the
//! thresholds from it, keeping weights and segments; `If-Match` is optional there. Scoped by the token's shop.

use actix_web::http::header::{self, HeaderMap};
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use functions::{FieldError, Measured, Money, RfmConfig, SizePreset};
use serde::Deserialize;
use serde_json::{json, Value};
use streams::MerchantId;

use super::api::{authenticate, ApiError, ReadState};
use crate::merchant_config::{
    ConfigService, Current, SaveError, SaveRequest, AUDIT_RESET, AUDIT_UPDATE,
};
use crate::read_model::Source;

pub const PATH: &str = "/api/v1/rfm/config";
pub const RESET_PATH: &str = "/api/v1/rfm/config/reset";

/// A configuration of 255 segments with names in a dozen languages fits.
pub const MAX_BODY_BYTES: usize = 256 * 1024;

/// Registers the routes; a [`ConfigService`] must be app data.
pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.service(
        web::resource(PATH)
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route(web::get().to(get))
            .route(web::put().to(put)),
    )
    .service(
        web::resource(RESET_PATH)
            .app_data(web::PayloadConfig::new(MAX_BODY_BYTES))
            .route(web::post().to(reset)),
    );
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error(transparent)]
    Api(#[from] ApiError),
    #[error("the configuration is not valid")]
    Invalid(Vec<FieldError>),
    #[error("another change was saved first; reload and apply yours to it")]
    Stale(Box<Current>),
    #[error("If-Match is required: send the ETag of the configuration you edited")]
    PreconditionRequired,
}

impl ResponseError for ConfigError {
    fn status_code(&self) -> StatusCode {
        match self {
            ConfigError::Api(e) => e.status_code(),
            ConfigError::Invalid(_) => StatusCode::UNPROCESSABLE_ENTITY,
            ConfigError::Stale(_) => StatusCode::PRECONDITION_FAILED,
            ConfigError::PreconditionRequired => StatusCode::PRECONDITION_REQUIRED,
        }
    }

    fn error_response(&self) -> HttpResponse {
        let mut response = HttpResponse::build(self.status_code());
        match self {
            ConfigError::Api(e) => e.error_response(),
            ConfigError::Invalid(errors) => {
                response.json(json!({ "error": self.to_string(), "errors": errors }))
            }
            ConfigError::Stale(current) => response
                .insert_header((header::ETAG, current.etag()))
                .json(json!({ "error": self.to_string(), "config": current.config })),
            ConfigError::PreconditionRequired => {
                response.json(json!({ "error": self.to_string() }))
            }
        }
    }
}

impl From<SaveError> for ConfigError {
    fn from(e: SaveError) -> Self {
        match e {
            SaveError::NoDatabase => {
                tracing::warn!(error = %e, "rfm configuration not saved");
                ApiError::Unavailable(e.to_string()).into()
            }
            SaveError::Store(e) => ApiError::Store(e).into(),
            SaveError::Stale(current) => ConfigError::Stale(Box::new(current)),
        }
    }
}

/// What the engine measured of the shop's customers, and where (the live state, or Postgres).
struct MeasuredView {
    measured: Measured,
    exponent: u8,
    source: Source,
}

async fn measure(state: &ReadState, merchant: &MerchantId) -> Result<MeasuredView, ApiError> {
    if let Some(registry) = &state.model.registry {
        let m = merchant.clone();
        let live = crate::directory::inspect_all(registry, move |core| {
            let merchant = core.merchant(&m)?;
            let totals = merchant.customers().map(|(_, c)| c.aggregate.totals());
            let mut measured = Measured::default();
            totals.for_each(|t| measured.add(&t));
            Some((measured, merchant.currency_exponent()))
        })
        .await;
        if let Some((measured, exponent)) = live.into_iter().flatten().next() {
            return Ok(MeasuredView {
                measured,
                exponent,
                source: Source::Live,
            });
        }
    }
    let measured = match &state.model.store {
        Some(store) => crate::merchant_config::measure_from_database(store, merchant).await?,
        None => Measured::default(),
    };
    Ok(MeasuredView {
        measured,
        exponent: 2,
        source: Source::Database,
    })
}

fn answer(current: &Current, view: &MeasuredView) -> HttpResponse {
    let money = |m: Money| m.to_decimal_string(view.exponent);
    let presets: serde_json::Map<String, Value> = [
        ("small", SizePreset::Small),
        ("medium", SizePreset::Medium),
        ("plus", SizePreset::Plus),
    ]
    .into_iter()
    .map(|(name, preset)| (name.to_owned(), json!(money(preset.aov()))))
    .collect();
    HttpResponse::Ok()
        .insert_header((header::ETAG, current.etag()))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .json(json!({
            "config": current.config,
            "saved": current.saved,
            "updated_at": current.updated_at,
            "measured": {
                "source": view.source,
                "buyers": view.measured.buyers,
                "orders": view.measured.orders,
                "aov": view.measured.aov().map(money),
                "purchase_interval_days": view.measured.purchase_interval_days(),
            },
            "presets": presets,
        }))
}

pub async fn get(
    req: HttpRequest,
    state: web::Data<ReadState>,
    service: web::Data<ConfigService>,
) -> Result<HttpResponse, ApiError> {
    let merchant = authenticate(&state, &req)?.merchant;
    let current = service.current(&merchant).await?;
    let view = measure(&state, &merchant).await?;
    Ok(answer(&current, &view))
}

/// A configuration from a request body: `{"config": {...}}` (what GET answers) or the configuration itself.
pub(super) fn config_body(body: &[u8]) -> Result<RfmConfig, ConfigError> {
    let document: Value = serde_json::from_slice(body)
        .map_err(|e| ApiError::BadRequest(format!("the body is not JSON: {e}")))?;
    let document = document.get("config").cloned().unwrap_or(document);
    RfmConfig::from_json(&document).map_err(ConfigError::Invalid)
}

fn if_match(headers: &HeaderMap) -> Option<&str> {
    headers.get(header::IF_MATCH).and_then(|v| v.to_str().ok())
}

pub async fn put(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReadState>,
    service: web::Data<ConfigService>,
) -> Result<HttpResponse, ConfigError> {
    let auth = authenticate(&state, &req)?;
    let config = config_body(&body)?;
    let if_match = if_match(req.headers()).ok_or(ConfigError::PreconditionRequired)?;
    let request = SaveRequest {
        merchant: &auth.merchant,
        actor: &auth.subject,
        if_match: Some(if_match),
        config: &config,
        action: AUDIT_UPDATE,
    };
    let current = service.save(request).await?;
    let view = measure(&state, &auth.merchant).await?;
    Ok(answer(&current, &view))
}

/// A reset's body: at most one of the two.
#[derive(Debug, Default, Deserialize)]
#[serde(deny_unknown_fields)]
struct ResetBody {
    preset: Option<SizePreset>,
    aov: Option<String>,
}

pub async fn reset(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<ReadState>,
    service: web::Data<ConfigService>,
) -> Result<HttpResponse, ConfigError> {
    let auth = authenticate(&state, &req)?;
    let reset: ResetBody = if body.iter().all(u8::is_ascii_whitespace) {
        ResetBody::default()
    } else {
        serde_json::from_slice(&body).map_err(|e| {
            ConfigError::Invalid(vec![FieldError::new("", format!("invalid reset: {e}"))])
        })?
    };
    let view = measure(&state, &auth.merchant).await?;
    let aov = reset_aov(&reset, &view)?;
    let current = service
        .current(&auth.merchant)
        .await
        .map_err(ApiError::Store)?;
    let config = current.config.reset_thresholds(aov);
    config.validate().map_err(ConfigError::Invalid)?;
    let request = SaveRequest {
        merchant: &auth.merchant,
        actor: &auth.subject,
        if_match: if_match(req.headers()),
        config: &config,
        action: AUDIT_RESET,
    };
    let saved = service.save(request).await?;
    let view = measure(&state, &auth.merchant).await?;
    Ok(answer(&saved, &view))
}

fn reset_aov(reset: &ResetBody, view: &MeasuredView) -> Result<Money, ConfigError> {
    let invalid =
        |field: &str, message: &str| ConfigError::Invalid(vec![FieldError::new(field, message)]);
    match (reset.preset, &reset.aov) {
        (Some(_), Some(_)) => Err(invalid("", "give a preset or an aov, not both")),
        (Some(preset), None) => Ok(preset.aov()),
        (None, Some(raw)) => Money::parse(raw, view.exponent)
            .ok()
            .filter(|m| *m > Money::ZERO)
            .ok_or_else(|| {
                invalid(
                    "aov",
                    "must be a positive amount in the shop currency, like \"23.50\"",
                )
            }),
        (None, None) => view.measured.aov().ok_or_else(|| {
            invalid(
                "aov",
                "no average order value measured yet; choose a preset or give an aov",
            )
        }),
    }
}
