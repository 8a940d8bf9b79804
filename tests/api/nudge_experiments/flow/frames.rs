//! The flow's dashboard side: the socket's frames carry the experiment's counters, and a shopper's click moves
//! them.

use std::collections::HashMap;

use serde_json::{json, Value};
use streams::MerchantId;

use super::{Running, WAIT};
use crate::live::{open_socket, token};
use crate::widget::{post_event, widget_token};

/// The dashboard socket's frames carry the per-arm counters, and a shopper's click moves them on the socket
/// with no customer changing segment (the socket looks at the results again on its own).
pub(super) async fn the_dashboard_frames_carry_the_counters(
    app: &Running,
    m: &MerchantId,
    blue: u64,
    nudge_of: &HashMap<u64, String>,
) {
    let (mut socket, _) = open_socket(&app.address, &token(m))
        .await
        .expect("dashboard socket");
    let blue_arm = |frame: &Value| {
        frame["nudges"]["experiments"]
            .as_array()
            .and_then(|s| s.iter().find(|e| e["experiment_id"] == "first-order"))
            .map(|e| e["arms"][1].clone())
    };
    let first = raw_frames_until(&mut socket, |f| blue_arm(f).is_some()).await;
    let arm = blue_arm(&first).unwrap();
    assert_eq!(
        (
            &arm["variant"],
            &arm["viewed"],
            &arm["clicked"],
            &arm["converted"]
        ),
        (&json!("blue"), &json!(1), &json!(0), &json!(1)),
        "{first}"
    );
    let widget = widget_token(&app.address, m, blue).await;
    let click = json!({"action": "click", "event_id": uuid::Uuid::new_v4().to_string()});
    let (status, _, body) = post_event(&app.address, &widget, &nudge_of[&blue], click).await;
    assert_eq!(status, 201, "{body}");
    let moved = raw_frames_until(&mut socket, |f| {
        blue_arm(f).is_some_and(|a| a["clicked"] == 1)
    })
    .await;
    assert_eq!(moved["merchant"], m.as_str(), "still a dashboard frame");
}

/// The first frame on the socket `done` accepts, as JSON; panics after `WAIT`.
async fn raw_frames_until(
    socket: &mut crate::live::Socket,
    done: impl Fn(&Value) -> bool,
) -> Value {
    use futures_util::StreamExt;
    let deadline = tokio::time::Instant::now() + WAIT;
    loop {
        let message = tokio::time::timeout_at(deadline, socket.next())
            .await
            .expect("a matching frame within a minute")
            .expect("socket open")
            .expect("socket message");
        if let tokio_tungstenite::tungstenite::Message::Text(text) = message {
            let frame: Value = serde_json::from_str(text.as_str()).expect("JSON frame");
            if done(&frame) {
                return frame;
            }
        }
    }
}
