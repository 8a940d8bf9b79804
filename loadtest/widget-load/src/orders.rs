//! Signed `orders/create` webhooks for the shoppers whose nudges are timed: one order each, at a fixed rate, with at
//! most `in_flight` requests open. The body is the repository's Shopify fixture with the order, the customer and the
//! times made the shopper's own, signed as Shopify signs webhooks (base64 HMAC-SHA256 of the raw body).

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use base64::Engine;
use futures_util::{stream, StreamExt};
use hmac::{Hmac, Mac};
use sha2::Sha256;

use crate::sockets::Hub;
use crate::Options;

const FIXTURE: &str = include_str!("../../../tests/fixtures/shopify/orders_create.json");

/// What the sending phase did.
pub struct Sent {
    /// Hub slots whose webhook was accepted (200).
    pub accepted: Vec<usize>,
    pub refused: u64,
    pub first_error: Option<String>,
    pub seconds: f64,
}

/// The fixture as this customer's first order, placed now.
fn body(template: &serde_json::Value, customer: u64, now: &str) -> Vec<u8> {
    let mut order = template.clone();
    // Customer ids are fresh per run, so an order id made from one is too.
    let order_id = customer;
    order["id"] = order_id.into();
    order["created_at"] = now.into();
    order["processed_at"] = now.into();
    order["customer"]["id"] = customer.into();
    order["email"] = format!("shopper-{customer}@example.com").into();
    order["customer"]["email"] = order["email"].clone();
    serde_json::to_vec(&order).expect("a JSON value serializes")
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Sends one order per customer at `order_rate` per second, stamping each slot's send and acceptance times. The
/// `n`th order goes to `shops[n % shops.len()]`.
pub async fn send(
    http: &reqwest::Client,
    options: &Options,
    customers: &[u64],
    shops: &[String],
    hub: &Arc<Hub>,
) -> Sent {
    let started = std::time::Instant::now();
    let template: serde_json::Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    let url = format!("{}/webhooks/shopify", options.base_url);
    let period = Duration::from_secs_f64(1.0 / options.order_rate.max(1) as f64);
    // An interval that bursts to catch up keeps the mean rate right although timers tick by the millisecond.
    let mut ticks = tokio::time::interval(period);
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let paced = stream::unfold(
        (ticks, customers.iter().copied().enumerate()),
        |(mut ticks, mut rest)| async move {
            let customer = rest.next()?;
            ticks.tick().await;
            Some((customer, (ticks, rest)))
        },
    );
    let outcomes: Vec<Result<usize, String>> = paced
        .map(|(n, customer)| {
            let shop = shops
                .get(n % shops.len().max(1))
                .map_or(options.shop.as_str(), String::as_str);
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let body = body(&template, customer, &now);
            let request = http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Hmac-Sha256", sign(&options.secret, &body))
                .header("X-Shopify-Shop-Domain", shop)
                .header(
                    "X-Shopify-Webhook-Id",
                    format!("widget-load-{customer}-{now}"),
                )
                .header("X-Shopify-API-Version", "2025-01")
                .body(body);
            let hub = hub.clone();
            async move {
                let slot = hub.slot(customer);
                hub.sent_at[slot].store(hub.now(), Ordering::Release);
                let response = request.send().await.map_err(|e| e.to_string())?;
                if !response.status().is_success() {
                    return Err(format!("webhook answered {}", response.status()));
                }
                hub.accepted_at[slot].store(hub.now(), Ordering::Release);
                Ok(slot)
            }
        })
        .buffer_unordered(options.in_flight.max(1))
        .collect()
        .await;
    let mut sent = Sent {
        accepted: Vec::with_capacity(outcomes.len()),
        refused: 0,
        first_error: None,
        seconds: started.elapsed().as_secs_f64(),
    };
    for outcome in outcomes {
        match outcome {
            Ok(slot) => sent.accepted.push(slot),
            Err(e) => {
                sent.refused += 1;
                sent.first_error.get_or_insert(e);
            }
        }
    }
    sent
}
