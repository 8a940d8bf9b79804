//! The merchant's view of history brought in (issue 19): `GET /api/v1/backfill/status` (the shop's latest backfill
//! of Shopify order history, which the dashboard shows), `POST /api/v1/imports?source=smile|loyaltylion` (a
//! points export as the raw CSV body, at most 10 MB) and `GET /api/v1/imports/{id}`.

use std::sync::{Arc, Mutex};

use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;
use streams::sink::EventSink;

use super::api::{ApiError, AuthedShop};
use crate::backfill::Backfill;
use crate::configuration::Settings;
use crate::imports::{ImportError, ImportStore, Importer, Source, MAX_IMPORT_BYTES};
use crate::store::Store;

/// Backfills and imports, shared by the workers.
pub struct HistoryState {
    /// Also what the install path hands to `backfill::start_backfill`.
    pub backfill: Arc<Backfill>,
    pub importer: Importer,
}

impl HistoryState {
    pub fn new(settings: &Settings, sink: EventSink, store: Option<&Store>) -> HistoryState {
        static MEMORY: std::sync::OnceLock<ImportStore> = std::sync::OnceLock::new();
        let imports = match store {
            Some(store) => ImportStore::Postgres(store.pool().clone()),
            None => MEMORY
                .get_or_init(|| ImportStore::Memory(Arc::new(Mutex::default())))
                .clone(),
        };
        HistoryState {
            backfill: Arc::new(Backfill::from_settings(settings, sink.clone(), store)),
            importer: Importer {
                sink,
                topics: settings.topics.clone(),
                keys: settings.keys.clone(),
                store: imports,
            },
        }
    }
}

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/backfill/status", web::get().to(backfill_status))
        .service(
            web::resource("/api/v1/imports")
                .app_data(web::PayloadConfig::new(MAX_IMPORT_BYTES))
                .route(web::post().to(import)),
        )
        .route("/api/v1/imports/{id}", web::get().to(import_status));
}

async fn backfill_status(
    shop: AuthedShop,
    state: web::Data<HistoryState>,
) -> Result<HttpResponse, ApiError> {
    let progress = state
        .backfill
        .progress
        .load(&shop.0)
        .await
        .map_err(|e| ApiError::Unavailable(e.to_string()))?;
    let percent = progress.as_ref().and_then(|p| p.percent());
    Ok(HttpResponse::Ok()
        .json(json!({ "merchant": shop.0, "backfill": progress, "percent": percent })))
}

#[derive(Deserialize)]
struct ImportParams {
    source: Option<String>,
}

fn import_error(e: ImportError) -> ApiError {
    match e {
        ImportError::File(e) => ApiError::BadRequest(e.to_string()),
        other => ApiError::Unavailable(other.to_string()),
    }
}

async fn import(
    shop: AuthedShop,
    req: HttpRequest,
    params: web::Query<ImportParams>,
    body: web::Bytes,
    state: web::Data<HistoryState>,
) -> Result<HttpResponse, ApiError> {
    let source = params
        .source
        .as_deref()
        .and_then(Source::parse)
        .ok_or_else(|| ApiError::BadRequest("source is smile or loyaltylion".into()))?;
    let content_type = req
        .headers()
        .get("content-type")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if content_type.starts_with("multipart/") {
        return Err(ApiError::BadRequest(
            "send the CSV file itself as the body (Content-Type: text/csv), not a multipart form"
                .into(),
        ));
    }
    let status = state
        .importer
        .import(&shop.0, source, &body)
        .await
        .map_err(import_error)?;
    Ok(HttpResponse::Created().json(status))
}

async fn import_status(
    shop: AuthedShop,
    id: web::Path<String>,
    state: web::Data<HistoryState>,
) -> Result<HttpResponse, ApiError> {
    match state
        .importer
        .status(&shop.0, &id)
        .await
        .map_err(import_error)?
    {
        Some(status) => Ok(HttpResponse::Ok().json(status)),
        None => Err(ApiError::NotFound("no such import for this shop".into())),
    }
}
