//! `POST /webhooks/shopify`: verify, deduplicate, normalise, produce, and only then answer 200.
//!
//! The order matters. The signature is checked before anything is parsed, so unsigned input costs only a hash.
//! The 200 is sent after Kafka acknowledged the event, so a 200 always means "durable"; anything else makes
//! Shopify retry. The dedupe key is written after the acknowledgement, so a crash in between can only cause a
//! duplicate record, which the consumer absorbs, never a lost one.

use std::sync::Arc;
use std::time::Instant;

use actix_web::http::header::HeaderMap;
use actix_web::http::StatusCode;
use actix_web::{web, HttpRequest, HttpResponse};
use bytes::BytesMut;
use futures_util::future::OptionFuture;
use futures_util::StreamExt;
use serde_json::json;
use streams::sink::{EventSink, Outgoing};
use streams::{MerchantId, Topics};

use crate::dedupe::{Claim, DedupeStore};
use crate::limits::Limits;
use crate::otel::{ingress_trace, IngressTrace};
use crate::pii::KeyRing;
use crate::shop_keys::ShopKeys;
use crate::shopify::hmac::WebhookSecrets;
use crate::shopify::normalize::{
    check_unhandled, normalize, Envelope, NormalizeError, Normalized, WebhookTopic,
};
use crate::telemetry::events::{DedupeUnavailable, ProduceFailed, WebhookHandled};
use streams::traceparent::{TraceParent, HEADER};
use tracing::Instrument;

/// What the webhook route needs, shared by all workers.
pub struct IngressState {
    pub secrets: WebhookSecrets,
    pub sink: EventSink,
    pub dedupe: Option<DedupeStore>,
    pub topics: Topics,
    pub keys: KeyRing,
    pub max_body_bytes: usize,
    pub limits: Arc<Limits>,
    /// Per-shop data keys, when Postgres and sealing keys are configured.
    pub shop_keys: Option<ShopKeys>,
    /// Where shops' Admin API tokens are kept (`DATABASE_URL`), dropped on `app/uninstalled`.
    pub access: Option<sqlx::PgPool>,
}

/// A finished answer: status, a machine-readable outcome for metrics, and the JSON body.
struct Answer {
    status: StatusCode,
    outcome: &'static str,
    body: serde_json::Value,
    retry_after: Option<u64>,
}

impl Answer {
    fn ok(outcome: &'static str, body: serde_json::Value) -> Self {
        Answer {
            status: StatusCode::OK,
            outcome,
            body,
            retry_after: None,
        }
    }

    fn error(status: StatusCode, outcome: &'static str, message: impl Into<String>) -> Self {
        Answer {
            status,
            outcome,
            body: json!({ "error": outcome, "message": message.into() }),
            retry_after: None,
        }
    }
}

/// Shopify's headers, case-insensitive by HTTP, with or without the `X-` prefix (newer event delivery drops it).
fn shopify_header<'a>(headers: &'a HeaderMap, name: &str) -> Option<&'a str> {
    [format!("x-shopify-{name}"), format!("shopify-{name}")]
        .iter()
        .find_map(|n| headers.get(n.as_str()))
        .and_then(|v| v.to_str().ok())
        .map(str::trim)
        .filter(|v| !v.is_empty())
}

pub async fn receive(
    req: HttpRequest,
    payload: web::Payload,
    state: web::Data<IngressState>,
) -> HttpResponse {
    let started = Instant::now();
    // The label is the parsed topic, never the raw header: unsigned requests must not grow `/metrics`.
    let topic_label = shopify_header(req.headers(), "topic")
        .and_then(WebhookTopic::parse)
        .map_or("other", WebhookTopic::as_str);
    // Checked before the body is read or hashed, so a flood costs us as little as possible.
    let limited = state.limits.webhook(req.peer_addr().map(|a| a.ip()));
    let answer = match limited {
        Ok(()) => handle(&req, payload, &state).await,
        Err(wait) => Answer {
            retry_after: Some(wait.0),
            ..Answer::error(
                StatusCode::TOO_MANY_REQUESTS,
                "rate_limited",
                "too many requests from this address",
            )
        },
    };
    WebhookHandled {
        topic: topic_label,
        outcome: answer.outcome,
        status: answer.status.as_u16(),
        elapsed: started.elapsed(),
    }
    .emit();
    let mut response = HttpResponse::build(answer.status);
    if let Some(seconds) = answer.retry_after {
        response.insert_header(("Retry-After", seconds.to_string()));
    }
    response.json(answer.body)
}

async fn handle(req: &HttpRequest, payload: web::Payload, state: &IngressState) -> Answer {
    let read = read_body(req, payload, state.max_body_bytes);
    let body = match tokio::time::timeout(state.limits.body_deadline, read)
        .await
        .unwrap_or_else(|_| {
            Err(Answer::error(
                StatusCode::REQUEST_TIMEOUT,
                "body_timeout",
                "the body did not arrive in time",
            ))
        }) {
        Ok(body) => body,
        Err(answer) => return answer,
    };
    let headers = req.headers();
    let signature = shopify_header(headers, "hmac-sha256").unwrap_or("");
    if !state.secrets.verify(&body, signature) {
        return Answer::error(
            StatusCode::UNAUTHORIZED,
            "invalid_signature",
            "HMAC signature missing or wrong",
        );
    }
    let Some(raw_topic) = shopify_header(headers, "topic") else {
        return Answer::error(
            StatusCode::BAD_REQUEST,
            "missing_topic",
            "X-Shopify-Topic header is required",
        );
    };
    let Some(topic) = WebhookTopic::parse(raw_topic) else {
        if let Err(e) = check_unhandled(&body) {
            return Answer::error(StatusCode::BAD_REQUEST, "malformed", e.to_string());
        }
        // Signed by Shopify but not one we subscribe to: acknowledge so Shopify stops retrying, produce nothing.
        tracing::info!(
            topic = %raw_topic.chars().take(64).collect::<String>(),
            "ignoring webhook topic we do not handle"
        );
        return Answer::ok(
            "unknown_topic",
            json!({ "status": "ignored", "reason": "unknown_topic" }),
        );
    };
    let (merchant, webhook_id) = match delivery_headers(headers) {
        Ok(ids) => ids,
        Err(answer) => return answer,
    };
    let shop_key = match (&state.shop_keys, topic.carries_pii()) {
        (Some(shop_keys), true) => match shop_keys.for_sealing(&merchant).await {
            Ok(key) => Some(key),
            Err(e) => {
                tracing::warn!(merchant = %merchant, error = %e, "no data key for the shop; refusing for now");
                return Answer::error(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "pii_key_unavailable",
                    "personal data cannot be sealed right now; retry later",
                );
            }
        },
        _ => None,
    };
    let env = Envelope {
        event_id: &webhook_id,
        merchant_id: &merchant,
        keys: &state.keys,
        shop_key: shop_key.as_ref(),
    };
    match normalize(topic, &body, &env) {
        Err(e @ NormalizeError::ShopMismatch { .. }) => {
            Answer::error(StatusCode::UNAUTHORIZED, "shop_mismatch", e.to_string())
        }
        Err(e) => Answer::error(StatusCode::BAD_REQUEST, "malformed", e.to_string()),
        Ok(_) if topic == WebhookTopic::AppUninstalled => {
            let triggered_at = shopify_header(headers, "triggered-at")
                .and_then(|t| chrono::DateTime::parse_from_rfc3339(t).ok())
                .map(|t| t.with_timezone(&chrono::Utc));
            uninstalled(state, &merchant, triggered_at).await
        }
        Ok(normalized) => {
            if topic == WebhookTopic::BulkOperationsFinish {
                crate::backfill::bulk_operation_finished(&merchant);
            }
            let IngressTrace { span, parent } =
                ingress_trace(headers.get(HEADER).and_then(|v| v.to_str().ok()));
            tracing::debug!(trace_id = parent.trace_id(), merchant = %merchant, "webhook traced");
            deliver(state, normalized, &merchant, &webhook_id, (topic, &parent))
                .instrument(span)
                .await
        }
    }
}

/// `app/uninstalled`: the shop's token goes at once (it no longer works anyway); its data stays until
/// `shop/redact`. Idempotent, so a retried delivery needs no dedupe; a database failure answers 503 for a retry.
/// A token stored after the uninstall was triggered (a reinstall that overtook a retried delivery) is kept.
async fn uninstalled(
    state: &IngressState,
    merchant: &MerchantId,
    triggered_at: Option<chrono::DateTime<chrono::Utc>>,
) -> Answer {
    let Some(pool) = &state.access else {
        return Answer::ok(
            "no_database",
            json!({ "status": "ignored", "reason": "no_database" }),
        );
    };
    match crate::shopify::access::drop_token(pool, merchant, triggered_at).await {
        Ok(dropped) => {
            tracing::info!(merchant = %merchant, dropped, "app uninstalled: Admin API token dropped");
            Answer::ok("uninstalled", json!({ "status": "uninstalled" }))
        }
        Err(e) => {
            tracing::warn!(merchant = %merchant, error = %e, "app/uninstalled: token not dropped; asking for a retry");
            Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "store_unavailable",
                "retry later",
            )
        }
    }
}

/// The shop and the delivery id, both required: the shop scopes everything, the id deduplicates.
fn delivery_headers(headers: &HeaderMap) -> Result<(MerchantId, String), Answer> {
    let Some(Ok(merchant)) = shopify_header(headers, "shop-domain").map(MerchantId::parse) else {
        return Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "bad_shop_domain",
            "X-Shopify-Shop-Domain is missing or invalid",
        ));
    };
    match shopify_header(headers, "webhook-id").filter(|id| id.len() <= 128) {
        Some(id) => Ok((merchant, id.to_owned())),
        None => Err(Answer::error(
            StatusCode::BAD_REQUEST,
            "missing_webhook_id",
            "X-Shopify-Webhook-Id is required",
        )),
    }
}

/// Claims the delivery id, produces (unless there is nothing to produce), then records it as done; a failed
/// produce gives the claim back so Shopify's retry is not mistaken for a duplicate.
async fn deliver(
    state: &IngressState,
    normalized: Normalized,
    merchant: &MerchantId,
    webhook_id: &str,
    (topic, trace): (WebhookTopic, &TraceParent),
) -> Answer {
    let dedupe = state.dedupe.as_ref();
    if let Some(dedupe) = dedupe {
        match dedupe.claim(merchant, webhook_id).await {
            Ok(Claim::Fresh) => {}
            Ok(Claim::Done) => return Answer::ok("duplicate", json!({ "status": "duplicate" })),
            Ok(Claim::InFlight) => {
                return Answer::error(
                    StatusCode::CONFLICT,
                    "in_flight",
                    "the same webhook id is being stored right now; retry later",
                )
            }
            Err(e) => DedupeUnavailable {
                operation: "claim",
                error: &e,
            }
            .emit(),
        }
    }
    let answer = match normalized {
        Normalized::Ignored(reason) => {
            Answer::ok(reason, json!({ "status": "ignored", "reason": reason }))
        }
        Normalized::Event(event) => {
            match produce(state, &event, merchant, webhook_id, (topic, trace)).await {
                Ok(()) => Answer::ok(
                    "accepted",
                    json!({ "status": "accepted", "event_id": webhook_id }),
                ),
                Err(answer) => {
                    if let Some(Err(e)) =
                        OptionFuture::from(dedupe.map(|d| d.release(merchant, webhook_id))).await
                    {
                        DedupeUnavailable {
                            operation: "release",
                            error: &e,
                        }
                        .emit();
                    }
                    return answer;
                }
            }
        }
    };
    if let Some(Err(e)) =
        OptionFuture::from(dedupe.map(|d| d.mark_processed(merchant, webhook_id))).await
    {
        DedupeUnavailable {
            operation: "record",
            error: &e,
        }
        .emit();
    }
    answer
}

async fn produce(
    state: &IngressState,
    event: &streams::InputEvent,
    merchant: &MerchantId,
    webhook_id: &str,
    (topic, trace): (WebhookTopic, &TraceParent),
) -> Result<(), Answer> {
    let payload = event.encode();
    let record = Outgoing {
        topic: event.kind().topic(&state.topics),
        key: merchant.as_str(),
        payload: &payload,
        headers: &[
            ("webhook_id", webhook_id),
            ("shopify_topic", topic.as_str()),
            ("trace_id", trace.trace_id()),
            (HEADER, trace.as_str()),
        ],
    };
    match state.sink.send(record).await {
        Ok(_) => Ok(()),
        Err(e) => {
            ProduceFailed {
                topic: topic.as_str(),
                error: &e,
            }
            .emit();
            Err(Answer::error(
                StatusCode::SERVICE_UNAVAILABLE,
                "kafka_unavailable",
                "the event could not be stored; retry later",
            ))
        }
    }
}

/// Reads the body up to `limit` bytes. A declared length over the limit is refused before reading anything; a
/// chunked body is refused as soon as it crosses the limit, so an oversized body is never buffered whole.
async fn read_body(
    req: &HttpRequest,
    mut payload: web::Payload,
    limit: usize,
) -> Result<BytesMut, Answer> {
    let too_large = || {
        Answer::error(
            StatusCode::PAYLOAD_TOO_LARGE,
            "payload_too_large",
            format!("body exceeds {limit} bytes"),
        )
    };
    let declared = req
        .headers()
        .get("content-length")
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if declared.is_some_and(|len| len > limit as u64) {
        return Err(too_large());
    }
    let mut body = BytesMut::with_capacity(declared.map_or(8 * 1024, |l| l as usize));
    while let Some(chunk) = payload.next().await {
        let chunk = chunk.map_err(|e| {
            Answer::error(StatusCode::BAD_REQUEST, "unreadable_body", e.to_string())
        })?;
        if body.len() + chunk.len() > limit {
            return Err(too_large());
        }
        body.extend_from_slice(&chunk);
    }
    Ok(body)
}
