//! `GET /health` (the process is up), `GET /ready` (its dependencies answer), `GET /metrics` (Prometheus).

use std::sync::Arc;
use std::time::{Duration, Instant};

use actix_web::{web, HttpResponse};
use metrics_exporter_prometheus::PrometheusHandle;
use serde_json::json;

use crate::routes::webhooks::IngressState;

pub async fn health() -> HttpResponse {
    HttpResponse::Ok().json(json!({ "status": "ok" }))
}

/// How long a readiness answer is reused. Probes and anyone else may call `/ready` as often as they like; the
/// checks behind it run at most once per interval, and concurrent callers share one run.
pub const READY_CACHE: Duration = Duration::from_secs(1);

/// The last readiness answer and when it was computed.
#[derive(Default)]
pub struct ReadyCache {
    last: tokio::sync::Mutex<Option<(Instant, bool, serde_json::Value)>>,
}

/// Ready when Kafka and Redis answer. Kubernetes stops routing webhooks to an instance that is not ready, which
/// is better than answering them 503. Kafka is asked for the metadata of one input topic, not the whole cluster.
pub async fn ready(state: web::Data<IngressState>, cache: web::Data<ReadyCache>) -> HttpResponse {
    let mut last = cache.last.lock().await;
    let fresh = last
        .as_ref()
        .filter(|(at, _, _)| at.elapsed() < READY_CACHE)
        .map(|(_, ok, body)| (*ok, body.clone()));
    let (ok, body) = match fresh {
        Some(answer) => answer,
        None => {
            let answer = check(&state).await;
            *last = Some((Instant::now(), answer.0, answer.1.clone()));
            answer
        }
    };
    drop(last);
    if ok {
        HttpResponse::Ok().json(body)
    } else {
        HttpResponse::ServiceUnavailable().json(body)
    }
}

async fn check(state: &IngressState) -> (bool, serde_json::Value) {
    metrics::counter!(streams::metric_names::READY_CHECKS).increment(1);
    let sink = state.sink.clone();
    let topic = state.topics.orders_create.clone();
    let kafka =
        tokio::task::spawn_blocking(move || sink.broker_reachable(&topic, Duration::from_secs(2)))
            .await
            .unwrap_or(false);
    let redis = match &state.dedupe {
        Some(dedupe) => dedupe.ping().await.is_ok(),
        None => true,
    };
    (kafka && redis, json!({ "kafka": kafka, "redis": redis }))
}

pub async fn metrics(handle: web::Data<Arc<PrometheusHandle>>) -> HttpResponse {
    HttpResponse::Ok()
        .content_type("text/plain; version=0.0.4")
        .body(handle.render())
}
