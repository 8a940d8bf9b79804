//! `segment-reads`: bursts of concurrent `GET /api/v1/rfm/segments` against one instance (the seeds' figure:
//! 5,000 at once, each answered within a second), with signed `orders/create` webhooks flowing at a fixed rate
//! before and during the bursts, so the run shows whether the reads slow ingestion.
//!
//! Each burst holds its readers on a barrier until every one has its connection open (the first burst opens them;
//! keep-alive keeps them), then releases them together; a read's time runs from the release to its last body byte.
//! Webhook times run from sending to the 200. The generator reports its own CPU time beside the wall time. It
//! targets loopback only and stops by itself (a count of bursts, a fixed webhook phase).
//!
//! The instance limits API requests per shop (`API_RATE_PER_SHOP`); a burst of 5,000 for one shop needs that off
//! (`API_RATE_PER_SHOP=0`) or every read past the burst allowance is a 429, which is counted and reported.

#[path = "../loopback.rs"]
mod loopback;

use std::sync::Arc;
use std::time::{Duration, Instant};

use base64::Engine;
use clap::Parser;
use futures_util::{stream, StreamExt};
use hmac::{Hmac, Mac};
use serde_json::{json, Value};
use sha2::Sha256;
use tokio::sync::Barrier;

const FIXTURE: &str = include_str!("../../../../tests/fixtures/shopify/orders_create.json");

#[derive(Parser, Debug, Clone)]
#[command(name = "segment-reads")]
struct Options {
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    base_url: String,
    /// A session token for the shop (`loyalnest-rfm token --shop …`).
    #[arg(long, env = "TOKEN")]
    token: String,
    #[arg(long, default_value = "segment-reads.myshopify.com")]
    shop: String,
    #[arg(long, env = "SHOPIFY_API_SECRET", default_value = "dev-secret")]
    secret: String,
    /// Reads in flight at once in each burst.
    #[arg(long, default_value_t = 5_000)]
    readers: usize,
    /// Bursts; the first also opens the connections.
    #[arg(long, default_value_t = 4)]
    bursts: usize,
    /// Webhooks per second, before and during the bursts (0: none).
    #[arg(long, default_value_t = 200)]
    order_rate: u64,
    /// Seconds of webhooks alone before the bursts.
    #[arg(long, default_value_t = 5)]
    baseline_secs: u64,
}

/// The value at quantile `q` of sorted milliseconds (nearest rank).
fn quantile(sorted: &[f64], q: f64) -> Option<f64> {
    let rank = ((q * sorted.len() as f64).ceil() as usize).clamp(1, sorted.len().max(1));
    sorted.get(rank - 1).map(|v| (v * 100.0).round() / 100.0)
}

fn summary(mut ms: Vec<f64>) -> Value {
    ms.sort_by(f64::total_cmp);
    json!({
        "count": ms.len(),
        "p50_ms": quantile(&ms, 0.50),
        "p99_ms": quantile(&ms, 0.99),
        "max_ms": ms.last(),
    })
}

fn own_cpu_seconds() -> Option<f64> {
    let stat = std::fs::read_to_string("/proc/self/stat").ok()?;
    let fields: Vec<&str> = stat.rsplit_once(')')?.1.split_whitespace().collect();
    let ticks: f64 = fields.get(11)?.parse::<f64>().ok()? + fields.get(12)?.parse::<f64>().ok()?;
    Some(ticks / 100.0)
}

/// One burst: every reader waits at the barrier, then all read at once. Milliseconds of the 200s, and the rest.
async fn burst(http: &reqwest::Client, options: &Options) -> (Vec<f64>, u64, Option<String>) {
    let url = format!("{}/api/v1/rfm/segments", options.base_url);
    let barrier = Arc::new(Barrier::new(options.readers));
    let mut tasks = tokio::task::JoinSet::new();
    for _ in 0..options.readers {
        let (http, url, token, barrier) = (
            http.clone(),
            url.clone(),
            options.token.clone(),
            barrier.clone(),
        );
        tasks.spawn(async move {
            barrier.wait().await;
            let started = Instant::now();
            let response = http.get(&url).bearer_auth(token).send().await;
            let response = response.map_err(|e| e.to_string())?;
            let status = response.status();
            response.bytes().await.map_err(|e| e.to_string())?;
            if !status.is_success() {
                return Err(format!("segments answered {status}"));
            }
            Ok(started.elapsed().as_secs_f64() * 1e3)
        });
    }
    let (mut ok, mut failed, mut first_error) = (Vec::new(), 0, None);
    while let Some(joined) = tasks.join_next().await {
        match joined.map_err(|e| e.to_string()).and_then(|r| r) {
            Ok(ms) => ok.push(ms),
            Err(e) => {
                failed += 1;
                first_error.get_or_insert(e);
            }
        }
    }
    (ok, failed, first_error)
}

fn sign(secret: &str, body: &[u8]) -> String {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret.as_bytes()).expect("any key length");
    mac.update(body);
    base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes())
}

/// Webhooks at `order_rate` until `stop` is set; milliseconds of each accepted one, and the count refused.
async fn webhooks(
    http: reqwest::Client,
    options: Options,
    first_customer: u64,
    stop: Arc<std::sync::atomic::AtomicBool>,
) -> (Vec<f64>, u64) {
    let template: Value = serde_json::from_str(FIXTURE).expect("the fixture is JSON");
    let url = format!("{}/webhooks/shopify", options.base_url);
    let mut ticks = tokio::time::interval(Duration::from_secs_f64(1.0 / options.order_rate as f64));
    ticks.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Burst);
    let customers = first_customer..;
    let paced = stream::unfold(
        (ticks, customers, stop),
        |(mut ticks, mut rest, stop)| async move {
            ticks.tick().await;
            if stop.load(std::sync::atomic::Ordering::Acquire) {
                return None;
            }
            Some((rest.next()?, (ticks, rest, stop)))
        },
    );
    let results: Vec<Option<f64>> = paced
        .map(|customer| {
            let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Millis, true);
            let mut order = template.clone();
            order["id"] = customer.into();
            order["created_at"] = now.clone().into();
            order["customer"]["id"] = customer.into();
            let body = serde_json::to_vec(&order).expect("a JSON value serializes");
            let request = http
                .post(&url)
                .header("Content-Type", "application/json")
                .header("X-Shopify-Topic", "orders/create")
                .header("X-Shopify-Hmac-Sha256", sign(&options.secret, &body))
                .header("X-Shopify-Shop-Domain", options.shop.as_str())
                .header("X-Shopify-Webhook-Id", format!("segment-reads-{customer}"))
                .header("X-Shopify-API-Version", "2025-01")
                .body(body);
            async move {
                let started = Instant::now();
                let response = request.send().await.ok()?;
                response
                    .status()
                    .is_success()
                    .then(|| started.elapsed().as_secs_f64() * 1e3)
            }
        })
        .buffer_unordered(256)
        .collect()
        .await;
    let refused = results.iter().filter(|r| r.is_none()).count() as u64;
    (results.into_iter().flatten().collect(), refused)
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    loopback::require_loopback(&options.base_url, "segment-reads")?;
    let wall = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.readers + 256)
        .timeout(Duration::from_secs(30))
        .build()?;
    let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
    let first_customer = (now.as_secs() % 1_000_000_000) * 1_000_000 + 1;
    let run_webhooks = |first: u64| {
        let stop = Arc::new(std::sync::atomic::AtomicBool::new(false));
        let task = (options.order_rate > 0)
            .then(|| tokio::spawn(webhooks(http.clone(), options.clone(), first, stop.clone())));
        (stop, task)
    };
    type Webhooks = Option<tokio::task::JoinHandle<(Vec<f64>, u64)>>;
    let finish = |stop: Arc<std::sync::atomic::AtomicBool>, task: Webhooks| async move {
        stop.store(true, std::sync::atomic::Ordering::Release);
        match task {
            Some(task) => task.await.unwrap_or_default(),
            None => (Vec::new(), 0),
        }
    };

    let (stop, task) = run_webhooks(first_customer);
    tokio::time::sleep(Duration::from_secs(options.baseline_secs)).await;
    let (baseline, baseline_refused) = finish(stop, task).await;

    let (stop, task) = run_webhooks(first_customer + 500_000);
    let mut bursts = Vec::new();
    for n in 0..options.bursts {
        let started = Instant::now();
        let (ok, failed, first_error) = burst(&http, &options).await;
        let mut figures = summary(ok);
        figures["failed"] = failed.into();
        figures["first_error"] = first_error.into();
        figures["burst_ms"] = (started.elapsed().as_secs_f64() * 1e3).round().into();
        figures["opens_connections"] = (n == 0).into();
        eprintln!("burst {n}: {figures}");
        bursts.push(figures);
    }
    let (during, during_refused) = finish(stop, task).await;
    let mut baseline = summary(baseline);
    baseline["refused"] = baseline_refused.into();
    let mut during = summary(during);
    during["refused"] = during_refused.into();
    let report = json!({
        "readers": options.readers,
        "bursts": bursts,
        "webhooks_before": baseline,
        "webhooks_during": during,
        "order_rate": options.order_rate,
        "generator_cpu_s": own_cpu_seconds(),
        "wall_s": wall.elapsed().as_secs_f64(),
    });
    println!("{}", serde_json::to_string_pretty(&report)?);
    Ok(())
}
