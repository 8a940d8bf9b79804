//! `GET /health` (the process is up; nothing else is asked), `GET /ready` (what the role depends on answers, see
//! `runtime::readiness`), `GET /metrics` (Prometheus).

use std::sync::Arc;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::runtime::readiness::Readiness;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// 200 when every check of the role passes, 503 with the failed ones named otherwise (and from the moment a
/// stop begins). Kubernetes stops routing webhooks to an instance that is not ready, which is better than
/// answering them 503.
pub async fn ready(readiness: web::Data<Readiness>) -> HttpResponse {
    let answer = readiness.answer().await;
    if answer.ready {
        HttpResponse::Ok().json(answer.body)
    } else {
        HttpResponse::ServiceUnavailable().json(answer.body)
    }
}

pub async fn metrics(handle: web::Data<Arc<PrometheusHandle>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
