//! `GET /api/v1/widget/stream`: the shopper widget's WebSocket.
//!
//! The widget token is checked before the upgrade (401 otherwise), from `Sec-WebSocket-Protocol: bearer, <token>`
//! as a browser sends it (or `Authorization: Bearer`). The socket watches exactly the customer the token names on
//! this instance's nudge desk: it sends the pending nudge at once, if there is one, then every newer one as it fires,
//! each rendered just before it is sent (the first name is opened then). When the watch ends (the customer was
//! erased, or this socket fell behind) the socket is closed with [`WATCH_ENDED`]; at the token's expiry with
//! [`TOKEN_EXPIRED`], so the widget fetches a fresh token and reconnects. Pings, the idle limit and the send limit
//! are the dashboard socket's; a customer may hold `WIDGET_SOCKETS_PER_CUSTOMER` sockets on one instance.

use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, MessageStream, Session};
use actors::customer::PendingNudge;
use actors::nudges::{WatchError, Watching};

use super::api::now_unix;
use super::socket::{answer, send_text, SendMetrics, Step};
use super::widget::{authenticate, render_for, WidgetError};
use crate::auth::WS_PROTOCOL;
use crate::widget::{WidgetSocketPermit, WidgetState};

const PING_EVERY: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
const NUDGE_METRICS: SendMetrics = SendMetrics {
    sent: streams::metric_names::WIDGET_NUDGES_SENT,
    too_slow: streams::metric_names::WIDGET_SOCKETS_TOO_SLOW,
};
/// Widgets send nothing but pongs and closes.
const MAX_CLIENT_FRAME: usize = 1024;

/// Close code: the token expired; fetch a fresh one and reconnect (the dashboard socket's code too).
pub const TOKEN_EXPIRED: u16 = 4001;
/// Close code: this customer's nudges ended here (erased, or the socket fell behind); reconnect with backoff.
pub const WATCH_ENDED: u16 = 4002;

pub async fn stream(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<WidgetState>,
) -> Result<HttpResponse, WidgetError> {
    let customer = authenticate(&state, &req)?;
    let desk = state
        .desk
        .clone()
        .ok_or(WidgetError::Unavailable("nudges are not served here"))?;
    let permit = state
        .limits
        .socket(&customer.key)
        .ok_or(WidgetError::TooManySockets)?;
    let watching = desk
        .watch(customer.key.clone())
        .await
        .map_err(|e| match e {
            WatchError::Busy => WidgetError::Unavailable("the customer's nudges are busy; retry"),
            WatchError::Stopped => WidgetError::Unavailable("nudges are not served here"),
        })?;
    let (mut response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| WidgetError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    if customer.via_protocol {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(WS_PROTOCOL),
        );
    }
    tracing::debug!(merchant = %customer.key.merchant, customer_id = customer.key.customer_id, "widget socket opened");
    let lifetime =
        Duration::from_secs(customer.expires_at.saturating_sub(now_unix()).max(0) as u64);
    let socket = Socket {
        state: state.clone(),
        session,
        messages: messages.max_frame_size(MAX_CLIENT_FRAME),
        expires: tokio::time::Instant::now() + lifetime,
        last_version: 0,
        _permit: permit,
    };
    actix_web::rt::spawn(socket.serve(watching));
    Ok(response)
}

fn close(code: u16, description: &str) -> Step {
    Step::Close(Some(CloseReason {
        code: CloseCode::Other(code),
        description: Some(description.into()),
    }))
}

/// An open widget socket and what bounds it: the token's expiry and the customer's socket permit.
struct Socket {
    state: web::Data<WidgetState>,
    session: Session,
    messages: MessageStream,
    expires: tokio::time::Instant,
    /// The newest nudge version sent, so a nudge is never sent twice or replaced by an older one.
    last_version: u32,
    _permit: WidgetSocketPermit,
}

impl Socket {
    async fn serve(mut self, watching: Watching) {
        let Watching {
            current,
            mut updates,
        } = watching;
        metrics::gauge!(streams::metric_names::SOCKETS_OPEN, "kind" => "widget").increment(1.0);
        let mut step = match current {
            Some(nudge) => self.send(&nudge).await,
            None => Step::Continue,
        };
        let mut last_heard = Instant::now();
        let mut ping = tokio::time::interval(PING_EVERY);
        ping.tick().await;
        while let Step::Continue = step {
            step = tokio::select! {
                update = updates.recv() => match update {
                    Some(nudge) => self.send(&nudge).await,
                    None => close(WATCH_ENDED, "nudges ended"),
                },
                message = self.messages.recv() => {
                    last_heard = Instant::now();
                    answer(&mut self.session, message, "widget").await
                }
                _ = tokio::time::sleep_until(self.expires) => close(TOKEN_EXPIRED, "token expired"),
                _ = ping.tick() => {
                    if last_heard.elapsed() > IDLE_TIMEOUT {
                        Step::Close(Some(CloseReason { code: CloseCode::Away, description: Some("idle".into()) }))
                    } else if self.session.ping(b"").await.is_err() {
                        Step::Close(None)
                    } else {
                        Step::Continue
                    }
                }
            };
        }
        if let Step::Close(reason) = step {
            let _ = self.session.close(reason).await;
        }
        metrics::gauge!(streams::metric_names::SOCKETS_OPEN, "kind" => "widget").decrement(1.0);
    }

    async fn send(&mut self, nudge: &PendingNudge) -> Step {
        if nudge.version <= self.last_version {
            return Step::Continue;
        }
        self.last_version = nudge.version;
        let Some(message) = render_for(&self.state, nudge).await else {
            return Step::Continue;
        };
        // Strings only: serialising cannot fail.
        let json = serde_json::to_string(&message).unwrap_or_default();
        let step = send_text(&mut self.session, json, SEND_TIMEOUT, &NUDGE_METRICS).await;
        if matches!(step, Step::Continue) {
            super::widget::nudge_shown();
        }
        step
    }
}
