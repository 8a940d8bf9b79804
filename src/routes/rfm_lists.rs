//! `GET /api/v1/rfm/customers?segment=&sort=&cursor=&limit=` (a page of at most 100, with the cursor of the next)
//! and `GET /api/v1/rfm/export?format=csv|json|ndjson&segment=` (all of them, streamed, audited as `rfm_export`).
//! Both read the customer rows in Postgres that the owning instance keeps current, so every instance answers the
//! same, and an export is the concatenation of the pages in the default order (`sort=id`).

use actix_web::http::header;
use actix_web::{web, HttpRequest, HttpResponse};
use serde::Deserialize;
use serde_json::json;

use super::api::{authenticate, ApiError, ReadState};
use crate::customer_list::{
    self, Cursor, ExportGate, ExportJob, Format, PageQuery, SegmentKey, Sort, PAGE,
};
use crate::limits::RetryAfter;
use crate::store::Store;

/// The audit row's action for an export.
pub const AUDIT_EXPORT: &str = "rfm_export";

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/rfm/customers", web::get().to(customers))
        .route("/api/v1/rfm/export", web::get().to(export));
}

#[derive(Debug, Deserialize)]
pub struct ListParams {
    pub segment: Option<String>,
    pub sort: Option<String>,
    pub cursor: Option<String>,
    pub limit: Option<usize>,
}

fn segment(raw: Option<&str>) -> Result<Option<SegmentKey>, ApiError> {
    raw.filter(|s| !s.is_empty())
        .map(|s| {
            SegmentKey::parse(s)
                .ok_or_else(|| ApiError::BadRequest(format!("not a segment key: {s:?}")))
        })
        .transpose()
}

fn store(state: &ReadState) -> Result<&Store, ApiError> {
    state.model.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "customer lists are read from Postgres, and DATABASE_URL is not set".into(),
        )
    })
}

pub async fn customers(
    req: HttpRequest,
    params: web::Query<ListParams>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = authenticate(&state, &req)?.merchant;
    let sort = match params.sort.as_deref() {
        None | Some("") => Sort::Id,
        Some(raw) => Sort::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("sort is one of id, score, spend; got {raw:?}"))
        })?,
    };
    let after = params
        .cursor
        .as_deref()
        .filter(|c| !c.is_empty())
        .map(|c| {
            Cursor::decode(c)
                .ok_or_else(|| ApiError::BadRequest("not a cursor this API handed out".into()))
        })
        .transpose()?;
    if let Some(cursor) = after.as_ref().filter(|c| c.sort() != sort) {
        return Err(ApiError::BadRequest(format!(
            "this cursor continues a list sorted by {}, not by {}; start again without a cursor",
            cursor.sort().name(),
            sort.name()
        )));
    }
    let limit = params.limit.unwrap_or(PAGE);
    if !(1..=PAGE).contains(&limit) {
        return Err(ApiError::BadRequest(format!("limit is 1 to {PAGE}")));
    }
    let query = PageQuery {
        segment: segment(params.segment.as_deref())?,
        sort,
        after,
        limit,
    };
    let (rows, next) = customer_list::page(store(&state)?, &merchant, &query).await?;
    Ok(HttpResponse::Ok().json(json!({
        "merchant": merchant,
        "customers": rows,
        "next_cursor": next.map(|c| c.encode()),
    })))
}

#[derive(Debug, Deserialize)]
pub struct ExportParams {
    pub format: Option<String>,
    pub segment: Option<String>,
}

/// How long a refused export is asked to wait: exports of big shops take seconds to minutes.
const EXPORT_RETRY_AFTER: RetryAfter = RetryAfter(10);

pub async fn export(
    req: HttpRequest,
    params: web::Query<ExportParams>,
    state: web::Data<ReadState>,
    gate: web::Data<ExportGate>,
) -> Result<HttpResponse, ApiError> {
    let auth = authenticate(&state, &req)?;
    let format = match params.format.as_deref() {
        None | Some("") => Format::Csv,
        Some(raw) => Format::parse(raw).ok_or_else(|| {
            ApiError::BadRequest(format!("format is one of csv, json, ndjson; got {raw:?}"))
        })?,
    };
    let segment = segment(params.segment.as_deref())?;
    let store = store(&state)?.clone();
    let permit = gate.admit(&auth.merchant).map_err(|refused| {
        tracing::info!(merchant = %auth.merchant, reason = ?refused, "rfm export refused");
        ApiError::Busy(refused.to_string(), EXPORT_RETRY_AFTER)
    })?;
    // Audited before the first byte: an export that fails half-way was still asked for.
    sqlx::query(
        "INSERT INTO audit_logs (merchant_id, actor, action, detail) VALUES ($1, $2, $3, $4)",
    )
    .bind(auth.merchant.as_str())
    .bind(&auth.subject)
    .bind(AUDIT_EXPORT)
    .bind(json!({
        "format": format.extension(),
        "segment": segment.as_ref().map(SegmentKey::as_str),
    }))
    .execute(store.pool())
    .await
    .map_err(|e| ApiError::Store(e.into()))?;
    tracing::info!(merchant = %auth.merchant, format = format.extension(), "rfm export started");
    let filename = format!(
        "rfm-{}-{}.{}",
        auth.merchant.as_str().trim_end_matches(".myshopify.com"),
        segment.as_ref().map_or("all", SegmentKey::as_str),
        format.extension()
    );
    let body = customer_list::export(ExportJob {
        store,
        merchant: auth.merchant,
        segment,
        format,
        permit,
        time_limit: gate.time_limit(),
    });
    Ok(HttpResponse::Ok()
        .content_type(format.content_type())
        .insert_header((
            header::CONTENT_DISPOSITION,
            format!("attachment; filename=\"{filename}\""),
        ))
        .insert_header((header::CACHE_CONTROL, "no-store"))
        .streaming(body))
}
