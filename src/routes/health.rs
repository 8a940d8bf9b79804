//! `GET /health` (the process is up), `GET /ready` (its dependencies answer), `GET /metrics` (Prometheus).

use std::sync::Arc;
use std::time::Duration;

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::routes::webhooks::IngressState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// Ready when Kafka and Redis answer. Kubernetes stops routing webhooks to an instance that is not ready, which
/// is better than answering them 503.
pub async fn ready(state: web::Data<IngressState>) -> HttpResponse {
    let sink = state.sink.clone();
    let kafka = tokio::task::spawn_blocking(move || sink.broker_reachable(Duration::from_secs(2)))
        .await
        .unwrap_or(false);
    let redis = match &state.dedupe {
        Some(dedupe) => dedupe.ping().await.is_ok(),
        None => true,
    };
    let body = json!({ "kafka": kafka, "redis": redis });
    if kafka && redis {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

pub async fn metrics(handle: web::Data<Arc<PrometheusHandle>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
