//! Merchants' dashboard sockets (`--dashboards`): `--sockets` sockets on `GET /api/v1/rfm/stream`, spread round-robin
//! over `--shops` shops, each presenting a session token signed as Shopify's App Bridge signs them (HS256 under the
//! app secret, `dest` the shop, `aud` the app's API key). Every frame lists the merchant's latest deltas; the first
//! time a socket sees a delta of one of this run's orders, it records the time since that order's webhook was
//! accepted (and since it was sent). So one order seen by ten sockets of its shop gives ten samples, as ten
//! merchants' screens would. Each socket remembers what it recorded rather than trusting the frame's `fresh` count:
//! the server skips a slow socket to the newest frame, and a delta first listed in a skipped frame is still seen (late,
//! and counted late) in the next one.
//!
//! The k6 script (`loadtest/dashboard.js`) measures the same thing from the broker timestamp, but k6 could not read
//! 10,000 sockets while posting 5,000 webhooks/s on this machine; this reader parses only the fields it needs.

use std::collections::HashSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use hdrhistogram::Histogram;
use serde::Deserialize;
use serde_json::{json, Value};

use crate::sockets::{Hub, Planned, Reader};
use crate::Options;

/// The path of the dashboard socket.
pub const PATH: &str = "/api/v1/rfm/stream";
/// How long the generated session tokens live; a run is far shorter.
const TOKEN_LIFETIME_S: i64 = 3_600;

/// Every shop of the run, `dashboard-load-<n>.myshopify.com` with n from 1: order `i` and dashboard `i` both go to
/// `shops[i % len]`.
pub fn shops(options: &Options) -> Vec<String> {
    (1..=options.shops.max(1))
        .map(|n| format!("dashboard-load-{n}.myshopify.com"))
        .collect()
}

#[derive(serde::Serialize)]
struct Claims<'a> {
    iss: String,
    dest: String,
    aud: &'a str,
    sub: &'a str,
    exp: i64,
    nbf: i64,
    iat: i64,
    jti: String,
    sid: &'a str,
}

/// A session token for `shop`, as the embedded admin would send it.
pub fn token(secret: &str, api_key: &str, shop: &str, now_unix: i64) -> anyhow::Result<String> {
    let claims = Claims {
        iss: format!("https://{shop}/admin"),
        dest: format!("https://{shop}"),
        aud: api_key,
        sub: "dashboard-load",
        exp: now_unix + TOKEN_LIFETIME_S,
        nbf: now_unix - 5,
        iat: now_unix,
        jti: format!("{shop}-{now_unix}"),
        sid: "dashboard-load",
    };
    let key = jsonwebtoken::EncodingKey::from_secret(secret.as_bytes());
    Ok(jsonwebtoken::encode(
        &jsonwebtoken::Header::default(),
        &claims,
        &key,
    )?)
}

/// What the dashboards saw: latency samples in microseconds, frames and deltas counted.
pub struct Frames {
    from_accepted: Mutex<Histogram<u64>>,
    from_sent: Mutex<Histogram<u64>>,
    frames: AtomicU64,
    samples: AtomicU64,
    before_answer: AtomicU64,
    unreadable: AtomicU64,
}

/// The part of a frame the reader needs; serde skips the rest.
#[derive(Deserialize)]
struct FrameView {
    deltas: Vec<DeltaView>,
}

#[derive(Deserialize)]
struct DeltaView {
    customer_id: u64,
}

impl Frames {
    pub fn new() -> Arc<Frames> {
        // Up to an hour in microseconds, three significant digits.
        let histogram =
            || Mutex::new(Histogram::new_with_max(3_600_000_000, 3).expect("valid bounds"));
        Arc::new(Frames {
            from_accepted: histogram(),
            from_sent: histogram(),
            frames: AtomicU64::new(0),
            samples: AtomicU64::new(0),
            before_answer: AtomicU64::new(0),
            unreadable: AtomicU64::new(0),
        })
    }

    /// Records one frame as read by one socket, which has already recorded the orders in `seen` (a frame sent
    /// again, when the nudge results move, adds nothing).
    fn on_frame(&self, hub: &Hub, text: &str, seen: &mut HashSet<usize>) {
        let now = hub.now();
        let Ok(frame) = serde_json::from_str::<FrameView>(text) else {
            self.unreadable.fetch_add(1, Ordering::Relaxed);
            return;
        };
        self.frames.fetch_add(1, Ordering::Relaxed);
        for delta in &frame.deltas {
            let Some(slot) = hub.slot_of(delta.customer_id) else {
                continue;
            };
            let sent = hub.sent_at[slot].load(Ordering::Acquire);
            if sent == 0 || !seen.insert(slot) {
                continue;
            }
            let accepted = hub.accepted_at[slot].load(Ordering::Acquire);
            let micros = |since: u64| now.saturating_sub(since) / 1_000;
            // The frame can beat the HTTP answer to this process; such a sample counts as zero from acceptance.
            let from_accepted = if accepted == 0 || now < accepted {
                self.before_answer.fetch_add(1, Ordering::Relaxed);
                0
            } else {
                micros(accepted)
            };
            record(&self.from_accepted, from_accepted);
            record(&self.from_sent, micros(sent));
            self.samples.fetch_add(1, Ordering::Relaxed);
            hub.arrived(slot);
        }
    }

    /// The report's `frames` section.
    pub fn json(&self) -> Value {
        json!({
            "frames_read": self.frames.load(Ordering::Relaxed),
            "samples": self.samples.load(Ordering::Relaxed),
            "before_http_answer": self.before_answer.load(Ordering::Relaxed),
            "unreadable": self.unreadable.load(Ordering::Relaxed),
            "from_accepted": summary(&self.from_accepted),
            "from_sent": summary(&self.from_sent),
        })
    }
}

fn record(histogram: &Mutex<Histogram<u64>>, micros: u64) {
    let mut histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
    histogram.saturating_record(micros);
}

fn summary(histogram: &Mutex<Histogram<u64>>) -> Value {
    let histogram = histogram.lock().unwrap_or_else(|p| p.into_inner());
    if histogram.is_empty() {
        return json!({ "count": 0 });
    }
    let ms = |micros: u64| (micros as f64 / 10.0).round() / 100.0;
    json!({
        "count": histogram.len(),
        "p50_ms": ms(histogram.value_at_quantile(0.50)),
        "p90_ms": ms(histogram.value_at_quantile(0.90)),
        "p99_ms": ms(histogram.value_at_quantile(0.99)),
        "max_ms": ms(histogram.max()),
    })
}

/// The dashboard sockets: socket `i` watches `shops[i % len]` with a fresh token and reads into `frames`.
pub fn plan(
    options: &Options,
    shops: &[String],
    hub: &Arc<Hub>,
    frames: &Arc<Frames>,
) -> anyhow::Result<Vec<Planned>> {
    let now = chrono::Utc::now().timestamp();
    let tokens: Vec<String> = shops
        .iter()
        .map(|shop| token(&options.secret, &options.api_key, shop, now))
        .collect::<anyhow::Result<_>>()?;
    anyhow::ensure!(!tokens.is_empty(), "no shop to open dashboards for");
    Ok((0..options.sockets as usize)
        .map(|i| {
            let (hub, frames) = (hub.clone(), frames.clone());
            let mut seen = HashSet::new();
            let reader: Reader = Box::new(move |text: &str| frames.on_frame(&hub, text, &mut seen));
            Planned {
                token: tokens[i % tokens.len()].clone(),
                reader,
            }
        })
        .collect())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn frame(customers: &[u64]) -> String {
        let deltas: Vec<Value> = customers
            .iter()
            .map(|c| json!({ "customer_id": c, "to": "new" }))
            .collect();
        json!({ "merchant": "m", "seq": 1, "fresh": 1, "deltas": deltas, "segments": [] })
            .to_string()
    }

    #[test]
    fn each_sent_order_is_counted_once_per_socket_whichever_frame_shows_it() {
        let hub = Hub::new(&[100, 101, 102]);
        let frames = Frames::new();
        for slot in 0..2 {
            hub.sent_at[slot].store(1, Ordering::Release);
            hub.accepted_at[slot].store(2, Ordering::Release);
        }
        let mut seen = HashSet::new();
        // 102 was never sent, 7 is not this run's.
        frames.on_frame(&hub, &frame(&[101, 102, 7]), &mut seen);
        // The same frame again (results moved) adds nothing; 100 first shows in a later frame.
        frames.on_frame(&hub, &frame(&[101, 102, 7]), &mut seen);
        frames.on_frame(&hub, "not json", &mut seen);
        assert_eq!(frames.samples.load(Ordering::Relaxed), 1);
        assert_eq!(frames.frames.load(Ordering::Relaxed), 2);
        assert_eq!(frames.unreadable.load(Ordering::Relaxed), 1);
        assert_ne!(hub.arrived_at[1].load(Ordering::Acquire), 0);
        assert_eq!(hub.arrived_at[0].load(Ordering::Acquire), 0);
        frames.on_frame(&hub, &frame(&[100, 101]), &mut seen);
        assert_eq!(frames.samples.load(Ordering::Relaxed), 2);
        assert_ne!(hub.arrived_at[0].load(Ordering::Acquire), 0);
        // Another socket of the same shop counts the order again: one sample per screen.
        frames.on_frame(&hub, &frame(&[101]), &mut HashSet::new());
        assert_eq!(frames.samples.load(Ordering::Relaxed), 3);
    }

    #[test]
    fn a_frame_before_the_http_answer_counts_as_zero_from_acceptance() {
        let hub = Hub::new(&[100]);
        let frames = Frames::new();
        hub.sent_at[0].store(1, Ordering::Release);
        frames.on_frame(&hub, &frame(&[100]), &mut HashSet::new());
        assert_eq!(frames.before_answer.load(Ordering::Relaxed), 1);
        assert_eq!(frames.from_accepted.lock().unwrap().max(), 0);
    }

    #[test]
    fn a_token_names_its_shop_for_the_service() {
        let token = token(
            "s3cret",
            "key",
            "dashboard-load-1.myshopify.com",
            1_700_000_000,
        )
        .unwrap();
        let mut validation = jsonwebtoken::Validation::new(jsonwebtoken::Algorithm::HS256);
        validation.set_audience(&["key"]);
        validation.validate_exp = false;
        let data = jsonwebtoken::decode::<Value>(
            &token,
            &jsonwebtoken::DecodingKey::from_secret(b"s3cret"),
            &validation,
        )
        .unwrap();
        assert_eq!(
            data.claims["dest"],
            "https://dashboard-load-1.myshopify.com"
        );
        assert_eq!(
            data.claims["iss"],
            "https://dashboard-load-1.myshopify.com/admin"
        );
    }
}
