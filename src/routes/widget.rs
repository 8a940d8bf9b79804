//! The shopper widget's HTTP routes (DESIGN.md §5): `GET /proxy/widget-token` through the App Proxy, the current
//! nudge over REST (`GET /api/v1/rfm/nudges`, 204 when there is none) and the shopper's reports
//! (`POST /api/v1/rfm/nudges/{id}/events`). The socket is in `widget_stream`, the script and demo page in
//! `widget_page`.
//!
//! Answers, decided here: a proxy request with no logged-in customer gets `200 {"token": null, "expires_at": null}`
//! (the storefront always gets JSON of one shape; nobody logged in simply has no nudges). An event about a nudge that
//! is not the token's customer's is `404` (it does not say whether such a nudge exists). A new event is `201`, a
//! retried one (same `event_id`) `200`, both with `{"event_id", "duplicate"}`. Every widget route is limited per
//! customer (`WIDGET_RATE_PER_CUSTOMER`), the token route per peer address (`WIDGET_PROXY_RATE_PER_IP`), answering
//! `429` with `Retry-After`. A token request carrying parameters the App Proxy does not add is a `400` naming it. The REST routes allow any origin
//! (CORS): the widget runs on the shop's storefront and authenticates with its bearer token, never a cookie.

use actix_web::http::header::{CacheControl, CacheDirective};
use actix_web::http::{Method, StatusCode};
use actix_web::middleware::DefaultHeaders;
use actix_web::{web, HttpRequest, HttpResponse, ResponseError};
use chrono::{DateTime, Utc};
use serde_json::json;

use super::api::now_unix;
use super::{widget_page, widget_stream};
use crate::auth::AuthError;
use crate::experiments::ledger::Recorded;
use crate::limits::RetryAfter;
use crate::store::StoreError;
use crate::widget::events::{EventError, NudgeEvent};
use crate::widget::proxy::{self, ProxyError};
use crate::widget::render;
use crate::widget::token::WidgetCustomer;
use crate::widget::WidgetState;

/// Largest event body read: an action and a UUID fit many times over.
const MAX_EVENT_BODY: usize = 1024;

#[derive(Debug, thiserror::Error)]
pub enum WidgetError {
    #[error(transparent)]
    Proxy(#[from] ProxyError),
    #[error(transparent)]
    Auth(#[from] AuthError),
    #[error(transparent)]
    Event(#[from] EventError),
    #[error("too many requests for this customer")]
    RateLimited(RetryAfter),
    #[error("too many widgets open for this customer")]
    TooManySockets,
    #[error("{0}")]
    BadRequest(String),
    #[error("{0}")]
    Unavailable(&'static str),
    #[error("the database could not answer")]
    Store(#[from] StoreError),
}

impl ResponseError for WidgetError {
    fn status_code(&self) -> StatusCode {
        match self {
            WidgetError::Proxy(e) if e.is_unauthenticated() => StatusCode::UNAUTHORIZED,
            WidgetError::Proxy(_) | WidgetError::BadRequest(_) => StatusCode::BAD_REQUEST,
            WidgetError::Auth(_) => StatusCode::UNAUTHORIZED,
            WidgetError::Event(EventError::NotYours) => StatusCode::NOT_FOUND,
            WidgetError::Event(_) => StatusCode::BAD_REQUEST,
            WidgetError::RateLimited(_) | WidgetError::TooManySockets => {
                StatusCode::TOO_MANY_REQUESTS
            }
            WidgetError::Unavailable(_) | WidgetError::Store(_) => StatusCode::SERVICE_UNAVAILABLE,
        }
    }

    fn error_response(&self) -> HttpResponse {
        if let WidgetError::Store(e) = self {
            tracing::warn!(error = %e, "widget query failed");
        }
        let mut response = HttpResponse::build(self.status_code());
        match self {
            WidgetError::Auth(_) => {
                response.insert_header(("WWW-Authenticate", "Bearer error=\"invalid_token\""));
            }
            WidgetError::RateLimited(RetryAfter(seconds)) => {
                response.insert_header(("Retry-After", seconds.to_string()));
            }
            WidgetError::TooManySockets | WidgetError::Unavailable(_) => {
                response.insert_header(("Retry-After", "5"));
            }
            _ => {}
        }
        response.json(json!({ "error": self.to_string() }))
    }
}

/// Registers every widget route.
pub fn routes(cfg: &mut web::ServiceConfig) {
    let cors = || {
        DefaultHeaders::new()
            .add(("Access-Control-Allow-Origin", "*"))
            .add(("Access-Control-Expose-Headers", "Retry-After"))
    };
    cfg.route("/proxy/widget-token", web::get().to(widget_token))
        .route(
            "/api/v1/widget/stream",
            web::get().to(widget_stream::stream),
        )
        .service(
            web::resource("/api/v1/rfm/nudges")
                .wrap(cors())
                .route(web::get().to(current))
                .route(web::method(Method::OPTIONS).to(preflight)),
        )
        .service(
            web::resource("/api/v1/rfm/nudges/{id}/events")
                // An event is a few dozen bytes: refuse more before reading it, not after.
                .app_data(web::PayloadConfig::new(MAX_EVENT_BODY))
                .wrap(cors())
                .route(web::post().to(event))
                .route(web::method(Method::OPTIONS).to(preflight)),
        )
        .route("/widget/widget.js", web::get().to(widget_page::script))
        .route("/widget/widget.css", web::get().to(widget_page::style))
        .route("/widget/demo.css", web::get().to(widget_page::demo_style))
        .route("/widget/demo", web::get().to(widget_page::demo))
        .route("/widget/demo/proxy-query", web::get().to(widget_page::sign));
}

fn no_store() -> CacheControl {
    CacheControl(vec![CacheDirective::NoStore, CacheDirective::Private])
}

/// `GET /proxy/widget-token`: a widget token for the logged-in customer of a verified App Proxy request.
pub async fn widget_token(
    req: HttpRequest,
    state: web::Data<WidgetState>,
) -> Result<HttpResponse, WidgetError> {
    // Before the signature: a flood from one address costs a bucket lookup, not an HMAC.
    let peer = req.peer_addr().map(|a| a.ip());
    state.limits.proxy(peer).map_err(WidgetError::RateLimited)?;
    let request =
        proxy::verify(req.query_string(), &state.proxy_secrets, now_unix()).inspect_err(|e| {
            metrics::counter!(streams::metric_names::WIDGET_PROXY_REFUSED, "reason" => e.reason())
                .increment(1);
        })?;
    let Some(customer_id) = request.customer_id else {
        return Ok(HttpResponse::Ok()
            .insert_header(no_store())
            .json(json!({ "token": null, "expires_at": null })));
    };
    let customer = actors::customer::CustomerKey {
        merchant: request.shop,
        customer_id,
    };
    let (token, expires) = state.keys.mint(&customer, now_unix());
    let expires_at = DateTime::<Utc>::from_timestamp(expires, 0)
        .unwrap_or_default()
        .to_rfc3339();
    Ok(HttpResponse::Ok()
        .insert_header(no_store())
        .json(json!({ "token": token, "expires_at": expires_at })))
}

/// Verifies the request's widget token; counts failures by reason (never logging the token).
pub(crate) fn authenticate(
    state: &WidgetState,
    req: &HttpRequest,
) -> Result<WidgetCustomer, WidgetError> {
    state
        .keys
        .verify_request(req.headers(), now_unix())
        .map_err(|e| {
            let reason = match e {
                AuthError::Missing => "missing",
                AuthError::Expired | AuthError::NotYetValid => "lifetime",
                AuthError::Signature | AuthError::Algorithm => "signature",
                _ => "claims",
            };
            metrics::counter!(streams::metric_names::WIDGET_AUTH_FAILURES, "reason" => reason)
                .increment(1);
            WidgetError::Auth(e)
        })
}

/// `GET /api/v1/rfm/nudges`: the customer's pending nudge, rendered, or 204.
pub async fn current(
    req: HttpRequest,
    state: web::Data<WidgetState>,
) -> Result<HttpResponse, WidgetError> {
    let customer = authenticate(&state, &req)?;
    state
        .limits
        .read(&customer.key)
        .map_err(WidgetError::RateLimited)?;
    let desk = state
        .desk
        .as_ref()
        .ok_or(WidgetError::Unavailable("nudges are not served here"))?;
    let nudge = desk.current(customer.key.clone()).await;
    let message = match nudge {
        Some(nudge) => render_for(&state, &nudge).await,
        None => None,
    };
    Ok(match message {
        Some(message) => {
            nudge_shown();
            HttpResponse::Ok().insert_header(no_store()).json(message)
        }
        None => HttpResponse::NoContent().insert_header(no_store()).finish(),
    })
}

/// A nudge's message reached a shopper's widget (answered to its fetch, or sent on its socket).
pub(crate) fn nudge_shown() {
    metrics::counter!(streams::metric_names::NUDGES, "outcome" => "shown").increment(1);
}

/// The nudge's message, with the customer's first name opened just for it; `None` when there is nothing to show.
pub(crate) async fn render_for(
    state: &WidgetState,
    nudge: &actors::customer::PendingNudge,
) -> Option<render::NudgeMessage> {
    let first_name = match &state.names {
        Some(names) => names.first_name(&nudge.key).await,
        None => None,
    };
    let text = match state
        .renderer
        .render(
            nudge,
            render::greeting_name(first_name.as_deref()).as_deref(),
            Some(nudge.points),
        )
        .await
    {
        Ok(text) => text?,
        Err(error) => {
            // The merchant's templates could not be read: the nudge waits for the next render, rather than going
            // out in words the merchant may have turned off.
            tracing::warn!(merchant = %nudge.key.merchant, %error, "nudge not rendered: templates unavailable");
            return None;
        }
    };
    Some(render::message(nudge, text))
}

/// `POST /api/v1/rfm/nudges/{id}/events`: stores one report of the shopper, once per event id.
pub async fn event(
    req: HttpRequest,
    path: web::Path<String>,
    body: web::Bytes,
    state: web::Data<WidgetState>,
) -> Result<HttpResponse, WidgetError> {
    let customer = authenticate(&state, &req)?;
    state
        .limits
        .event(&customer.key)
        .map_err(WidgetError::RateLimited)?;
    if body.len() > MAX_EVENT_BODY {
        return Err(WidgetError::Event(EventError::Body));
    }
    let event = NudgeEvent::parse(&customer.key, &path, &body)?;
    let ledger = state.ledger.as_ref().ok_or(WidgetError::Unavailable(
        "events are kept in Postgres, and DATABASE_URL is not set",
    ))?;
    let new = match ledger.record_event(&customer.key, event.report()).await? {
        Recorded::New => true,
        Recorded::Duplicate => false,
        Recorded::NotShown => return Err(WidgetError::Event(EventError::NotYours)),
    };
    metrics::counter!(streams::metric_names::NUDGE_INTERACTIONS, "action" => event.action.as_str())
        .increment(u64::from(new));
    let status = if new {
        StatusCode::CREATED
    } else {
        StatusCode::OK
    };
    Ok(HttpResponse::build(status).json(json!({
        "event_id": event.event_id.to_string(), "duplicate": !new,
    })))
}

/// CORS preflight of the REST routes: the widget sends `Authorization` and a JSON body from the shop's origin.
pub async fn preflight() -> HttpResponse {
    HttpResponse::NoContent()
        .insert_header(("Access-Control-Allow-Methods", "GET, POST, OPTIONS"))
        .insert_header((
            "Access-Control-Allow-Headers",
            "Authorization, Content-Type",
        ))
        .insert_header(("Access-Control-Max-Age", "600"))
        .finish()
}
