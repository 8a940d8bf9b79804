//! The demo's synthetic shoppers, so the dashboard's A/B panel fills with nothing installed. The demo first saves
//! an experiment on the `new` nudge (two worded arms and a holdout) for its first shop through the real API; then
//! each shopper plays one customer of that shop as a storefront would: it asks the App Proxy route for a widget
//! token (the query signed with the app secret, as Shopify signs what it forwards), holds the widget socket open,
//! and reports views, clicks and dismissals over REST. Some who click buy: a signed `orders/create` webhook
//! through the ingress, which the engine credits to the nudge. Every step goes through the demo's own HTTP server,
//! so the figures on the panel are the engine's, not the demo's.
//!
//! Shoppers in the holdout receive nothing and so report nothing; the synthetic store's orders still reach them,
//! which is what the holdout's conversion rate measures.

use std::time::Duration;

use anyhow::Context;
use chrono::Utc;
use futures_util::StreamExt;
use serde_json::{json, Value};
use streams::MerchantId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::shopify::hmac::sign;
use crate::widget::proxy::signed_query;

/// The experiment the demo runs: the nudge of a customer who became loyal, in two wordings, a fifth of customers
/// held out. Loyal because the demo's shops start from a backfilled year of history, so its live orders mostly move
/// known customers up, rarely bring new ones.
fn experiment() -> Value {
    json!({"id": "demo-loyal", "kind": "loyal", "holdout_percent": 20, "variants": [
        {"name": "A", "weight": 1},
        {"name": "B", "weight": 1, "texts": {"en": {
            "title": "Thank you for coming back, {first_name}!",
            "body": "You have {points} points waiting for your next order."}}}
    ]})
}

/// Saves the demo's experiment through the API with the merchant's session token.
pub async fn start_experiment(base: &str, session_token: &str) -> anyhow::Result<()> {
    let response = reqwest::Client::new()
        .post(format!("{base}/api/v1/rfm/nudges/ab-test"))
        .bearer_auth(session_token)
        .json(&experiment())
        .send()
        .await?;
    let status = response.status();
    anyhow::ensure!(
        status.is_success(),
        "the demo experiment was refused ({status}): {}",
        response.text().await.unwrap_or_default()
    );
    Ok(())
}

/// What every shopper shares.
#[derive(Clone)]
pub struct Storefront {
    pub base: String,
    pub shop: MerchantId,
    pub secret: Vec<u8>,
    /// Webhook ids unique per run.
    pub run: String,
}

/// Runs one shopper for `customer` until the process ends; reconnects with backoff and a fresh token, like the
/// widget.
pub async fn shopper(front: Storefront, customer: u64) {
    let client = reqwest::Client::new();
    let mut dice = Dice(customer.wrapping_mul(0x9e37_79b9_7f4a_7c15) | 1);
    let mut backoff = Duration::from_millis(500);
    loop {
        match visit(&front, &client, customer, &mut dice).await {
            Ok(()) => backoff = Duration::from_millis(500),
            Err(e) => {
                tracing::debug!(customer_id = customer, error = %e, "demo shopper reconnects");
                backoff = (backoff * 2).min(Duration::from_secs(8));
            }
        }
        tokio::time::sleep(backoff).await;
    }
}

/// One widget session: a token, the socket, and a reaction to every nudge until the socket closes.
async fn visit(
    front: &Storefront,
    client: &reqwest::Client,
    customer: u64,
    dice: &mut Dice,
) -> anyhow::Result<()> {
    let token = widget_token(front, client, customer).await?;
    let url = format!(
        "{}/api/v1/widget/stream",
        front.base.replacen("http", "ws", 1)
    );
    let mut request = url.into_client_request()?;
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("bearer, {token}").parse()?,
    );
    let (mut socket, _) = tokio_tungstenite::connect_async(request).await?;
    let mut seen = std::collections::HashSet::new();
    while let Some(message) = socket.next().await {
        let Message::Text(text) = message? else {
            continue;
        };
        let nudge: Value = serde_json::from_str(&text)?;
        let Some(id) = nudge.get("nudge_id").and_then(Value::as_str) else {
            continue;
        };
        if seen.insert(id.to_owned()) {
            react(front, client, &token, id, customer, dice).await?;
        }
    }
    Ok(())
}

/// A widget token as the storefront gets one through the App Proxy.
async fn widget_token(
    front: &Storefront,
    client: &reqwest::Client,
    customer: u64,
) -> anyhow::Result<String> {
    let (id, now) = (customer.to_string(), Utc::now().timestamp().to_string());
    let query = signed_query(
        &[
            ("shop", front.shop.as_str()),
            ("logged_in_customer_id", &id),
            ("path_prefix", "/apps/loyalnest"),
            ("timestamp", &now),
        ],
        &front.secret,
    );
    let answer: Value = client
        .get(format!("{}/proxy/widget-token?{query}", front.base))
        .send()
        .await?
        .error_for_status()?
        .json()
        .await?;
    answer["token"]
        .as_str()
        .map(str::to_owned)
        .context("the proxy answered no token")
}

/// What a shopper does with a nudge: looks at it, then clicks (and sometimes buys) or dismisses it, or neither.
async fn react(
    front: &Storefront,
    client: &reqwest::Client,
    token: &str,
    nudge_id: &str,
    customer: u64,
    dice: &mut Dice,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(200 + dice.below(800))).await;
    report(front, client, token, nudge_id, "view").await?;
    let roll = dice.below(100);
    if roll < 55 {
        report(front, client, token, nudge_id, "click").await?;
        if dice.below(100) < 60 {
            buy(front, client, customer, dice).await?;
        }
    } else if roll < 85 {
        report(front, client, token, nudge_id, "dismiss").await?;
    }
    Ok(())
}

async fn report(
    front: &Storefront,
    client: &reqwest::Client,
    token: &str,
    nudge_id: &str,
    action: &str,
) -> anyhow::Result<()> {
    let path = format!(
        "{}/api/v1/rfm/nudges/{}/events",
        front.base,
        urlencode(nudge_id)
    );
    client
        .post(path)
        .bearer_auth(token)
        .json(&json!({"action": action, "event_id": uuid::Uuid::new_v4().to_string()}))
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// A signed `orders/create` webhook for the shopper, a moment after the click.
async fn buy(
    front: &Storefront,
    client: &reqwest::Client,
    customer: u64,
    dice: &mut Dice,
) -> anyhow::Result<()> {
    tokio::time::sleep(Duration::from_millis(500 + dice.below(1_500))).await;
    let cents = 2_000 + dice.below(20_000);
    let order_id = 9_000_000_000 + dice.below(1_000_000_000);
    let body =
        json!({"id": order_id, "customer": {"id": customer}, "created_at": Utc::now().to_rfc3339(),
        "total_price": format!("{}.{:02}", cents / 100, cents % 100), "currency": "USD",
        "financial_status": "paid", "test": false})
        .to_string();
    client
        .post(format!("{}/webhooks/shopify", front.base))
        .header("X-Shopify-Topic", "orders/create")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign(&front.secret, body.as_bytes()),
        )
        .header("X-Shopify-Shop-Domain", front.shop.as_str())
        .header(
            "X-Shopify-Webhook-Id",
            format!("demo-{}-buy-{order_id}", front.run),
        )
        .body(body)
        .send()
        .await?
        .error_for_status()?;
    Ok(())
}

/// Nudge ids hold `:` and `.`, which are fine in a path segment; anything else is escaped.
fn urlencode(segment: &str) -> String {
    segment
        .bytes()
        .map(|b| match b {
            b'a'..=b'z' | b'A'..=b'Z' | b'0'..=b'9' | b'-' | b'.' | b'_' | b'~' | b':' => {
                char::from(b).to_string()
            }
            _ => format!("%{b:02X}"),
        })
        .collect()
}

/// A small deterministic generator per shopper, so a demo run behaves the same each time.
struct Dice(u64);

impl Dice {
    fn below(&mut self, n: u64) -> u64 {
        self.0 = self
            .0
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        (self.0 >> 33) % n.max(1)
    }
}
