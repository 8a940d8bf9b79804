//! A load generator for the storefront widget: it holds many widget sockets open against one instance and measures,
//! for the shoppers it then sends orders for, the time from the webhook being accepted to the nudge arriving on the
//! shopper's socket. k6 could not hold even 10,000 sockets on two cores, so this runs the sockets on a few tokio
//! threads with nothing per socket but a read loop.
//!
//! Phases: widget tokens through the App Proxy route (signed as Shopify signs proxy requests), sockets opened at a
//! bounded rate from several loopback source addresses (one address has too few ephemeral ports for 50,000), then
//! signed `orders/create` webhooks at a fixed rate for the first shoppers, one each, and a report. It targets
//! loopback only and stops by itself: every phase has a count and a deadline.

mod orders;
mod proxy;
mod report;
mod sockets;

use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
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
    /// First customer id; runs with distinct ranges do not disturb each other.
    #[arg(long, default_value_t = 1)]
    pub first_customer: u64,
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let host = reqwest::Url::parse(&options.base_url)
        .context("base url")?
        .host_str()
        .unwrap_or_default()
        .to_owned();
    if !(host == "localhost" || host.starts_with("127.") || host == "[::1]") {
        bail!("widget-load only targets loopback, not {host}");
    }
    if options.orders > options.sockets {
        bail!("--orders must not exceed --sockets");
    }
    let started = Instant::now();
    let http = reqwest::Client::builder()
        .pool_max_idle_per_host(options.in_flight)
        .timeout(Duration::from_secs(10))
        .build()?;
    let customers: Vec<u64> =
        (options.first_customer..options.first_customer + options.sockets).collect();
    let tokens = proxy::fetch_tokens(&http, &options, &customers).await?;
    eprintln!(
        "tokens: {} in {:.1} s",
        tokens.len(),
        started.elapsed().as_secs_f64()
    );
    let hub = Arc::new(sockets::Hub::new(&customers));
    let opened = sockets::open_all(&options, &tokens, &hub).await;
    eprintln!(
        "sockets: {} open, {} failed ({:.1} s)",
        opened.open,
        opened.failed,
        started.elapsed().as_secs_f64()
    );
    let sent = orders::send(&http, &options, &customers[..options.orders as usize], &hub).await;
    let deadline = Instant::now() + Duration::from_secs(options.drain_secs);
    hub.wait_for(&sent.accepted, deadline).await;
    let report = report::Report::build(
        &options,
        &opened,
        &sent,
        &hub,
        started.elapsed(),
        options.server_pid,
    );
    println!("{}", serde_json::to_string_pretty(&report.json())?);
    hub.close_all();
    Ok(())
}
