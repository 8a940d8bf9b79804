//! `GET /api/v1/rfm/movements?from=&to=`: how customers moved between segments in a window (the from → to
//! matrix of the delta rows and each segment's net flow), with each segment's revenue and repeat-purchase rate
//! beside it, the figures Klaviyo and Omnisend show. `from` and `to` are RFC 3339 times or `YYYY-MM-DD` dates
//! (midnight UTC); the window is `[from, to)`, by default the last 30 days. Revenue is the lifetime net spend of
//! the segment's members now, and the repeat-purchase rate the share of its buyers with two orders or more: the
//! rows hold customers' totals, not their orders by date.

use std::collections::BTreeMap;

use actix_web::{web, HttpRequest, HttpResponse};
use chrono::{DateTime, NaiveDate, Utc};
use serde::Deserialize;
use serde_json::json;

use super::api::{authenticate, ApiError, ReadState};

pub fn configure(cfg: &mut web::ServiceConfig) {
    cfg.route("/api/v1/rfm/movements", web::get().to(movements));
}

#[derive(Debug, Deserialize)]
pub struct Window {
    pub from: Option<String>,
    pub to: Option<String>,
}

fn instant(field: &str, raw: &str) -> Result<DateTime<Utc>, ApiError> {
    if let Ok(t) = DateTime::parse_from_rfc3339(raw) {
        return Ok(t.with_timezone(&Utc));
    }
    NaiveDate::parse_from_str(raw, "%Y-%m-%d")
        .ok()
        .and_then(|d| d.and_hms_opt(0, 0, 0))
        .map(|t| t.and_utc())
        .ok_or_else(|| {
            ApiError::BadRequest(format!("{field} is an RFC 3339 time or a YYYY-MM-DD date"))
        })
}

fn window(params: &Window) -> Result<(DateTime<Utc>, DateTime<Utc>), ApiError> {
    let to = match params.to.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => instant("to", raw)?,
        None => Utc::now(),
    };
    let from = match params.from.as_deref().filter(|s| !s.is_empty()) {
        Some(raw) => instant("from", raw)?,
        None => to - chrono::Duration::days(30),
    };
    if from >= to {
        return Err(ApiError::BadRequest("from must be before to".into()));
    }
    Ok((from, to))
}

pub async fn movements(
    req: HttpRequest,
    params: web::Query<Window>,
    state: web::Data<ReadState>,
) -> Result<HttpResponse, ApiError> {
    let merchant = authenticate(&state, &req)?.merchant;
    let (from, to) = window(&params)?;
    let store = state.model.store.as_ref().ok_or_else(|| {
        ApiError::Unavailable(
            "movements are read from Postgres, and DATABASE_URL is not set".into(),
        )
    })?;
    let cells: Vec<(String, String, i64)> = sqlx::query_as(
        "SELECT from_segment, to_segment, count(*) FROM rfm_segment_deltas
         WHERE merchant_id = $1 AND occurred_at >= $2 AND occurred_at < $3
         GROUP BY 1, 2 ORDER BY 1, 2",
    )
    .bind(merchant.as_str())
    .bind(from)
    .bind(to)
    .fetch_all(store.pool())
    .await
    .map_err(|e| ApiError::Store(e.into()))?;
    let segments: Vec<(String, i64, String, i64, i64)> = sqlx::query_as(
        "SELECT segment, count(*), COALESCE(sum(net_spend), 0)::text,
                count(*) FILTER (WHERE orders >= 2), count(*) FILTER (WHERE orders >= 1)
         FROM customers WHERE merchant_id = $1 GROUP BY segment ORDER BY segment",
    )
    .bind(merchant.as_str())
    .fetch_all(store.pool())
    .await
    .map_err(|e| ApiError::Store(e.into()))?;
    let mut flows: BTreeMap<&str, (i64, i64)> = BTreeMap::new();
    for (f, t, n) in &cells {
        flows.entry(f).or_default().1 += n;
        flows.entry(t).or_default().0 += n;
    }
    Ok(HttpResponse::Ok().json(json!({
        "merchant": merchant,
        "from": from,
        "to": to,
        "transitions": cells.iter().map(|(f, t, n)| json!({"from": f, "to": t, "customers": n})).collect::<Vec<_>>(),
        "flows": flows.iter().map(|(s, (i, o))| json!({"segment": s, "in": i, "out": o, "net": i - o})).collect::<Vec<_>>(),
        "segments": segments.iter().map(|(s, n, revenue, repeat, buyers)| json!({
            "segment": s,
            "customers": n,
            "revenue": revenue,
            "repeat_purchase_rate": (*buyers > 0).then(|| *repeat as f64 / *buyers as f64),
        })).collect::<Vec<_>>(),
    })))
}
