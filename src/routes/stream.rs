//! `GET /api/v1/rfm/stream`: the merchant dashboard's WebSocket.
//!
//! The token is checked before the upgrade (401 otherwise), from `Authorization: Bearer` or, for browsers, the
//! `Sec-WebSocket-Protocol: bearer, <token>` pair, which the handshake answers with `bearer`. The socket then gets
//! the merchant's current frame and every newer one, but never a backlog: it waits on the merchant's latest-frame
//! slot, so a client that reads slowly skips to the newest state. Pings go out every `PING_EVERY`; a client silent
//! for `IDLE_TIMEOUT` is closed, and so is one that cannot take a frame within `SEND_TIMEOUT`. A socket is closed
//! with code 4001 when its token expires (the page then asks for a fresh token), and a shop may hold at most
//! `DASHBOARD_SOCKETS_PER_SHOP` sockets on one instance (429 past that).
//!
//! Every frame also carries the shop's nudge results as `nudges` (the `GET /api/v1/rfm/nudges/ab-test` document:
//! per kind, experiment and arm the shown, viewed, clicked, dismissed and converted counters, revenue, rates and
//! lift). They are added here, at the socket, from the instance's results cache (computed at most every
//! `RESULTS_FRESH_FOR` per shop), because shoppers' views and clicks change them without any change of the
//! processor's: every `RESULTS_FRESH_FOR` the socket looks again and, when the results moved, sends the latest
//! frame again with them, so the panel follows at that pace even while no customer changes segment.

use std::time::{Duration, Instant};

use actix_web::http::header::{HeaderValue, SEC_WEBSOCKET_PROTOCOL};
use actix_web::{web, HttpRequest, HttpResponse};
use actix_ws::{CloseCode, CloseReason, MessageStream, Session};
use streams::MerchantId;

use super::api::{authenticate, now_unix, ApiError, ReadState};
use super::nudge_experiments::ExperimentState;
use super::socket::{answer, send_text, SendMetrics, Step};
use crate::auth::WS_PROTOCOL;
use crate::experiments::results::{ResultsCache, RESULTS_FRESH_FOR};
use crate::limits::SocketPermit;
use crate::live::fanout::{last_frame, Slot};
use crate::live::{Board, LiveFrame};

const PING_EVERY: Duration = Duration::from_secs(10);
const IDLE_TIMEOUT: Duration = Duration::from_secs(30);
const SEND_TIMEOUT: Duration = Duration::from_secs(5);
/// Dashboards send nothing but pongs and closes; anything large is not a dashboard.
const MAX_CLIENT_FRAME: usize = 4 * 1024;

pub async fn stream(
    req: HttpRequest,
    body: web::Payload,
    state: web::Data<ReadState>,
    experiments: Option<web::Data<ExperimentState>>,
) -> Result<HttpResponse, ApiError> {
    let auth = authenticate(&state, &req)?;
    let permit = state
        .limits
        .dashboard_socket(&auth.merchant)
        .ok_or(ApiError::TooManySockets)?;
    let (mut response, session, messages) = actix_ws::handle(&req, body)
        .map_err(|e| ApiError::BadRequest(format!("not a WebSocket handshake: {e}")))?;
    if auth.via_protocol {
        response.headers_mut().insert(
            SEC_WEBSOCKET_PROTOCOL,
            HeaderValue::from_static(WS_PROTOCOL),
        );
    }
    let slot = state.channels.subscribe(&auth.merchant);
    let first = first_frame(&state, &auth.merchant, &slot).await;
    tracing::debug!(merchant = %auth.merchant, "dashboard socket opened");
    // The socket lives no longer than the token that opened it; the page then reconnects with a fresh one.
    let lifetime = Duration::from_secs(auth.expires_at.saturating_sub(now_unix()).max(0) as u64);
    let results = experiments.and_then(|e| e.results.clone());
    let socket = Socket {
        session,
        messages: messages.max_frame_size(MAX_CLIENT_FRAME),
        slot,
        expires: tokio::time::Instant::now() + lifetime,
        nudges: NudgeCounters::new(results, auth.merchant.clone()),
        _permit: permit,
    };
    actix_web::rt::spawn(serve(socket, first));
    Ok(response)
}

/// The frame a new socket starts with: the latest this instance has, else the latest Redis has, else one built
/// from the live segment sizes (or zeros) so the page never waits for the next change to draw.
async fn first_frame(state: &ReadState, merchant: &MerchantId, slot: &Slot) -> LiveFrame {
    if let Some(frame) = slot.borrow().clone() {
        return frame;
    }
    if let Some(link) = &state.redis {
        if let Some(frame) = last_frame(link, merchant).await {
            return frame;
        }
    }
    let counts = match state.model.segments(merchant).await {
        Ok((_, counts)) => counts,
        Err(e) => {
            tracing::warn!(merchant = %merchant, error = %e, "no segment sizes for a new dashboard");
            Vec::new()
        }
    };
    let live = actors::LiveCounts {
        merchant: merchant.clone(),
        segments: counts
            .into_iter()
            .map(|c| (c.key, c.name, c.count))
            .collect(),
        events: 0,
    };
    let now_ms = chrono::Utc::now().timestamp_millis();
    let mut board = Board::default();
    board.counts(&live, now_ms);
    let mut frame = board.frame(merchant.as_str(), now_ms);
    // Not part of the publisher's sequence: the next published frame must not look like a gap.
    frame.seq = 0;
    LiveFrame::render(&frame)
}

/// An open dashboard socket and what bounds it: the token's expiry and the shop's socket permit.
struct Socket {
    session: Session,
    messages: MessageStream,
    slot: Slot,
    expires: tokio::time::Instant,
    nudges: NudgeCounters,
    _permit: SocketPermit,
}

/// The shop's nudge results as the socket last sent them (see the module docs).
struct NudgeCounters {
    results: Option<ResultsCache>,
    merchant: MerchantId,
    /// The `nudges` value, rendered; `None` before the first read or without a ledger.
    current: Option<String>,
}

impl NudgeCounters {
    fn new(results: Option<ResultsCache>, merchant: MerchantId) -> NudgeCounters {
        NudgeCounters {
            results,
            merchant,
            current: None,
        }
    }

    /// Reads the results again; true when they differ from what the socket has.
    async fn refresh(&mut self) -> bool {
        let Some(results) = &self.results else {
            return false;
        };
        let fresh = match results.get(&self.merchant).await {
            Ok(r) => serde_json::to_string(&*r).ok(),
            Err(e) => {
                tracing::debug!(merchant = %self.merchant, error = %e, "nudge results not read for a frame");
                return false;
            }
        };
        let moved = fresh.is_some() && fresh != self.current;
        if moved {
            self.current = fresh;
        }
        moved
    }

    /// The frame's JSON with `nudges` added (a frame is a JSON object, so it goes before the closing brace).
    fn attach(&self, frame: &LiveFrame) -> String {
        let json: &str = &frame.json;
        match (&self.current, json.strip_suffix('}')) {
            (Some(nudges), Some(open)) => format!("{open},\"nudges\":{nudges}}}"),
            _ => json.to_owned(),
        }
    }
}

/// The close code a page reads as "get a fresh token and reconnect" (4000–4999 are the application's).
const TOKEN_EXPIRED: u16 = 4001;

async fn serve(socket: Socket, first: LiveFrame) {
    let Socket {
        mut session,
        mut messages,
        mut slot,
        expires,
        mut nudges,
        _permit,
    } = socket;
    metrics::gauge!(streams::metric_names::SOCKETS_OPEN, "kind" => "dashboard").increment(1.0);
    let mut last_seq = first.seq;
    nudges.refresh().await;
    let mut last_frame = first;
    let mut step = send_frame(
        &mut session,
        nudges.attach(&last_frame),
        &last_frame.fresh_event_ms,
    )
    .await;
    let mut last_heard = Instant::now();
    let mut ping = tokio::time::interval(PING_EVERY);
    ping.tick().await;
    let mut results_tick = tokio::time::interval(RESULTS_FRESH_FOR);
    results_tick.tick().await;
    while let Step::Continue = step {
        step = tokio::select! {
            changed = slot.changed() => match changed {
                Ok(()) => {
                    let frame = slot.borrow_and_update().clone();
                    match frame {
                        Some(frame) if frame.seq != last_seq => {
                            let skipped = frame.seq.saturating_sub(last_seq + 1);
                            if last_seq > 0 && skipped > 0 {
                                metrics::counter!(streams::metric_names::DASHBOARD_FRAMES_SKIPPED).increment(skipped);
                            }
                            last_seq = frame.seq;
                            last_frame = frame;
                            send_frame(&mut session, nudges.attach(&last_frame), &last_frame.fresh_event_ms).await
                        }
                        _ => Step::Continue,
                    }
                }
                Err(_) => Step::Close(None),
            },
            message = messages.recv() => {
                last_heard = Instant::now();
                answer(&mut session, message, "dashboard").await
            }
            _ = results_tick.tick() => {
                if nudges.refresh().await {
                    send_frame(&mut session, nudges.attach(&last_frame), &[]).await
                } else {
                    Step::Continue
                }
            }
            _ = tokio::time::sleep_until(expires) => Step::Close(Some(CloseReason {
                code: CloseCode::Other(TOKEN_EXPIRED),
                description: Some("token expired".into()),
            })),
            _ = ping.tick() => {
                if last_heard.elapsed() > IDLE_TIMEOUT {
                    Step::Close(Some(CloseReason { code: CloseCode::Away, description: Some("idle".into()) }))
                } else if session.ping(b"").await.is_err() {
                    Step::Close(None)
                } else {
                    Step::Continue
                }
            }
        };
    }
    if let Step::Close(reason) = step {
        let _ = session.close(reason).await;
    }
    metrics::gauge!(streams::metric_names::SOCKETS_OPEN, "kind" => "dashboard").decrement(1.0);
}

const FRAME_METRICS: SendMetrics = SendMetrics {
    sent: streams::metric_names::DASHBOARD_FRAMES_SENT,
    too_slow: streams::metric_names::DASHBOARD_SOCKETS_TOO_SLOW,
};

/// Sends a frame; once it is out, each change new in it (`fresh_event_ms`, empty when a frame is only re-sent with
/// new nudge results) records how long after its webhook it reached this socket.
async fn send_frame(session: &mut Session, json: String, fresh_event_ms: &[i64]) -> Step {
    let step = send_text(session, json, SEND_TIMEOUT, &FRAME_METRICS).await;
    if matches!(step, Step::Continue) && !fresh_event_ms.is_empty() {
        let now_ms = chrono::Utc::now().timestamp_millis();
        for event_ms in fresh_event_ms {
            let seconds = (now_ms - event_ms).max(0) as f64 / 1e3;
            metrics::histogram!(streams::metric_names::WEBHOOK_TO_FRAME).record(seconds);
        }
    }
    step
}
