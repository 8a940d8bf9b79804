//! What the two push sockets (the dashboard's `stream` and the shopper widget's `widget_stream`) share: the step a
//! socket's loop takes next, how a client's own message is answered (pong to a ping, close to a close, nothing else
//! is read), and how a text goes out within a deadline, so a client that cannot keep up is closed, not buffered for.

use std::time::Duration;

use actix_ws::{CloseCode, CloseReason, Message, Session};

/// What a socket's loop does after an event.
pub(crate) enum Step {
    Continue,
    Close(Option<CloseReason>),
}

/// The counters a socket kind reports its sends under.
pub(crate) struct SendMetrics {
    pub sent: &'static str,
    pub too_slow: &'static str,
}

/// Sends `text`, closing the socket (policy, "too slow") when the client does not take it within `timeout`.
pub(crate) async fn send_text(
    session: &mut Session,
    text: String,
    timeout: Duration,
    metrics: &SendMetrics,
) -> Step {
    match tokio::time::timeout(timeout, session.text(text)).await {
        Ok(Ok(())) => {
            metrics::counter!(metrics.sent).increment(1);
            Step::Continue
        }
        Ok(Err(_)) => Step::Close(None),
        Err(_) => {
            metrics::counter!(metrics.too_slow).increment(1);
            Step::Close(Some(CloseReason {
                code: CloseCode::Policy,
                description: Some("too slow".into()),
            }))
        }
    }
}

/// Answers one message of the client (`None` when its side ended); `kind` names the socket in the debug log.
pub(crate) async fn answer(
    session: &mut Session,
    message: Option<Result<Message, actix_ws::ProtocolError>>,
    kind: &'static str,
) -> Step {
    match message {
        Some(Ok(Message::Ping(bytes))) => match session.pong(&bytes).await {
            Ok(()) => Step::Continue,
            Err(_) => Step::Close(None),
        },
        Some(Ok(
            Message::Pong(_)
            | Message::Text(_)
            | Message::Binary(_)
            | Message::Nop
            | Message::Continuation(_),
        )) => Step::Continue,
        Some(Ok(Message::Close(reason))) => Step::Close(reason),
        Some(Err(e)) => {
            tracing::debug!(error = %e, socket = kind, "socket protocol error");
            Step::Close(Some(CloseReason {
                code: CloseCode::Protocol,
                description: None,
            }))
        }
        None => Step::Close(None),
    }
}
