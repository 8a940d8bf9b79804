//! A load generator for the storefront widget: it holds many widget sockets open against one instance and measures,
//! for the shoppers it then sends orders for, the time from the webhook being accepted to the nudge arriving on the
//! shopper's socket. k6 could not hold even 10,000 sockets on two cores, so this runs the sockets on a few tokio
//! threads with nothing per socket but a read loop.
//!
//! Phases: widget tokens through the App Proxy route (signed as Shopify signs proxy requests), sockets opened at a
//! bounded rate from several loopback source addresses (one address has too few ephemeral ports for 50,000), then
//! signed `orders/create` webhooks at a fixed rate for the first shoppers, one each, and a report. It targets
//! loopback only and stops by itself: every phase has a count and a deadline.
//!
//! With `--dashboards` it measures webhook accepted → merchant dashboard frame instead (see `dashboards`): the
//! sockets are merchants' dashboards over `--shops` shops, and the orders, for fresh customers of those shops, are
//! independent of the sockets.

mod dashboards;
mod loopback;
mod orders;
mod proxy;
mod report;
mod sockets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::bail;
use clap::Parser;

/// Options; the defaults are a small smoke run.
#[derive(Parser, Debug, Clone)]
#[command(name = "widget-load")]
pub struct Options {
    /// The instance under test (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080")]
    pub base_url: String,
    /// The app secret the instance verifies webhooks and proxy signatures with.
    #[arg(long, env = "SHOPIFY_API_SECRET", default_value = "dev-secret")]
    pub secret: String,
    #[arg(long, default_value = "widget-load.myshopify.com")]
    pub shop: String,
    /// Shoppers holding a widget socket open.
    #[arg(long, default_value_t = 1_000)]
    pub sockets: u64,
    /// Sockets opened per second.
    #[arg(long, default_value_t = 2_000)]
    pub connect_rate: u64,
    /// Loopback source addresses to spread the sockets over (127.0.0.1 … 127.0.0.N).
    #[arg(long, default_value_t = 4)]
    pub source_ips: u8,
    /// Shoppers (the first of those holding sockets) who then place an order.
    #[arg(long, default_value_t = 500)]
    pub orders: u64,
    /// Orders per second.
    #[arg(long, default_value_t = 500)]
    pub order_rate: u64,
    /// Webhook requests in flight at most.
    #[arg(long, default_value_t = 256)]
    pub in_flight: usize,
    /// How long to wait for the last nudge after the last order.
    #[arg(long, default_value_t = 30)]
    pub drain_secs: u64,
    /// The server's process id, to report its resident and peak memory.
    #[arg(long)]
    pub server_pid: Option<u32>,
    /// First customer id (0: from the clock). Runs need distinct ranges: an order id the engine already counted is
    /// a duplicate, which moves nobody and fires no nudge.
    #[arg(long, default_value_t = 0)]
    pub first_customer: u64,
    /// Hold merchants' dashboard sockets and time webhook accepted → dashboard frame, not → widget nudge.
    #[arg(long)]
    pub dashboards: bool,
    /// With `--dashboards`: the shops the sockets and orders are spread over (round-robin).
    #[arg(long, default_value_t = 1_000)]
    pub shops: u64,
    /// With `--dashboards`: the app's API key, the audience of the session tokens.
    #[arg(long, env = "SHOPIFY_API_KEY", default_value = "loyalnest-dev")]
    pub api_key: String,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let mut options = Options::parse();
    if options.first_customer == 0 {
        let now = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH)?;
        // A fresh block of a million ids per second of the clock, far below Shopify's 2^53.
        options.first_customer = (now.as_secs() % 1_000_000_000) * 1_000_000 + 1;
    }
    loopback::require_loopback(&options.base_url, "widget-load")?;
    if !options.dashboards && options.orders > options.sockets {
        bail!("--orders must not exceed --sockets");
    }
    // Every shop that gets orders needs a socket, or its orders can only be reported missing.
    if options.dashboards && options.shops.max(1) > options.sockets {
        bail!("--shops must not exceed --sockets with --dashboards");
    }
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.in_flight)
        .timeout(Duration::from_secs(10))
        .build()?;
    let Ready {
        customers,
        shops,
        frames,
        opened,
        hub,
    } = if options.dashboards {
        open_dashboards(&options).await?
    } else {
        open_widgets(&http, &options, started).await?
    };
    eprintln!(
        "sockets: {} open, {} failed ({:.1} s)",
        opened.open,
        opened.failed,
        started.elapsed().as_secs_f64()
    );
    let orders = &customers[..options.orders as usize];
    let sent = orders::send(&http, &options, orders, &shops, &hub).await;
    let deadline = Instant::now() + Duration::from_secs(options.drain_secs);
    hub.wait_for(&sent.accepted, deadline).await;
    let report = report::Report::build(
        &options,
        &opened,
        &sent,
        &hub,
        frames.as_deref(),
        started.elapsed(),
        options.server_pid,
    );
    println!("{}", serde_json::to_string_pretty(&report.json())?);
    hub.close_all();
    Ok(())
}

/// What the socket phase leaves for the orders and the report.
struct Ready {
    /// Order `n` is for `customers[n]`.
    customers: Vec<u64>,
    /// Order `n` goes to `shops[n % len]`.
    shops: Vec<String>,
    /// What the dashboards saw (with `--dashboards`).
    frames: Option<Arc<dashboards::Frames>>,
    opened: sockets::Opened,
    hub: Arc<sockets::Hub>,
}

/// One widget socket per shopper of `--shop`, each with a token from the App Proxy.
async fn open_widgets(
    http: &reqwest::Client,
    options: &Options,
    started: Instant,
) -> anyhow::Result<Ready> {
    let customers: Vec<u64> =
        (options.first_customer..options.first_customer + options.sockets).collect();
    let tokens = proxy::fetch_tokens(http, options, &customers).await?;
    eprintln!(
        "tokens: {} in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    let hub = Arc::new(sockets::Hub::new(&customers));
    let planned = sockets::widget_sockets(&tokens, &hub);
    let opened = sockets::open_all(options, "/api/v1/widget/stream", planned, &hub).await;
    Ok(Ready {
        customers,
        shops: vec![options.shop.clone()],
        frames: None,
        opened,
        hub,
    })
}

/// `--sockets` dashboard sockets over `--shops` shops; the orders are for fresh customers of those shops.
async fn open_dashboards(options: &Options) -> anyhow::Result<Ready> {
    if options.sockets.div_ceil(options.shops.max(1)) > 50 {
        eprintln!("note: more than 50 sockets per shop are refused unless DASHBOARD_SOCKETS_PER_SHOP is raised");
    }
    let customers: Vec<u64> =
        (options.first_customer..options.first_customer + options.orders).collect();
    let hub = Arc::new(sockets::Hub::new(&customers));
    let frames = dashboards::Frames::new();
    let shops = dashboards::shops(options);
    let planned = dashboards::plan(options, &shops, &hub, &frames)?;
    let opened = sockets::open_all(options, dashboards::PATH, planned, &hub).await;
    Ok(Ready {
        customers,
        shops,
        frames: Some(frames),
        opened,
        hub,
    })
}
