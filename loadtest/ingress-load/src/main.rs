//! A load generator for the webhook ingress (`POST /webhooks/shopify`) that is not the bottleneck: signed 6.3 KB
//! `orders/create` bodies prepared and signed before the run, a fresh `X-Shopify-Webhook-Id` per request, N
//! keep-alive connections in a closed loop (or an open loop at a rate), a latency histogram, and at the end a check
//! that every request answered 200 is a record on the input topic. It prints one JSON object; CPU time per request
//! for itself and for any `--watch label=pid` tells whether the generator or the service was the limit.
//!
//! Loopback targets only; the run stops by itself after the warm-up and the duration.

mod bodies;
mod driver;
mod report;
mod verify;

use std::net::ToSocketAddrs;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use clap::Parser;

#[derive(Parser, Debug)]
#[command(name = "ingress-load")]
struct Options {
    /// The webhook endpoint (loopback only).
    #[arg(long, default_value = "http://127.0.0.1:8080/webhooks/shopify")]
    url: String,
    /// The app secret the service verifies webhooks with.
    #[arg(long, env = "SHOPIFY_API_SECRET", default_value = "dev-secret")]
    secret: String,
    /// Keep-alive connections, each with one request in flight.
    #[arg(long, short = 'c', default_value_t = 16)]
    connections: usize,
    /// Measured seconds, after the warm-up.
    #[arg(long, short = 'd', default_value_t = 10.0)]
    duration: f64,
    /// Seconds sent but not measured (connections, the producer's first metadata, caches).
    #[arg(long, default_value_t = 1.0)]
    warmup: f64,
    /// Open loop: requests per second over all connections (latency from the scheduled time). Closed loop if unset.
    #[arg(long)]
    rate: Option<f64>,
    #[arg(long, default_value_t = 50)]
    shops: u32,
    /// Distinct signed bodies, sent in turn under fresh webhook ids.
    #[arg(long, default_value_t = 512)]
    variants: u32,
    /// Exact body size (6.3 KiB by default).
    #[arg(long, default_value_t = 6_451)]
    body_bytes: usize,
    /// Brokers to read the input topic back from; `none` skips the Kafka check.
    #[arg(long, env = "KAFKA_BROKERS", default_value = "127.0.0.1:9092")]
    brokers: String,
    /// The topic `orders/create` events are produced to.
    #[arg(long, default_value = "orders.create")]
    topic: String,
    /// A process to report CPU time for, as `label=pid` (repeatable): the service, the broker, Redis.
    #[arg(long = "watch", value_parser = parse_watch)]
    watch: Vec<(String, u32)>,
    /// A name for this run in the output (e.g. `ours` or `node`).
    #[arg(long, default_value = "ingress")]
    label: String,
}

fn parse_watch(s: &str) -> Result<(String, u32), String> {
    let (label, pid) = s.split_once('=').ok_or("expected label=pid")?;
    let pid = pid.parse().map_err(|e| format!("pid: {e}"))?;
    Ok((label.to_owned(), pid))
}

fn target(url: &str) -> anyhow::Result<(std::net::SocketAddr, String, String)> {
    let rest = url
        .strip_prefix("http://")
        .context("only http:// URLs (loopback)")?;
    let (authority, path) = rest.split_at(rest.find('/').unwrap_or(rest.len()));
    let host = authority.rsplit_once(':').map_or(authority, |(h, _)| h);
    let addr = authority
        .to_socket_addrs()?
        .next()
        .context("no address for the URL")?;
    // Checked on the address it will connect to, so a name that merely starts with `127.` is refused too.
    if !addr.ip().is_loopback() {
        bail!("ingress-load only targets loopback, not {host}");
    }
    let path = if path.is_empty() { "/" } else { path };
    Ok((addr, authority.to_owned(), path.to_owned()))
}

#[tokio::main(flavor = "multi_thread", worker_threads = 1)]
async fn main() -> anyhow::Result<()> {
    let options = Options::parse();
    let (addr, host, path) = target(&options.url)?;
    let seed = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)?
        .as_millis() as u64;
    let plan = bodies::Plan {
        shops: options.shops,
        variants: options.variants,
        body_bytes: options.body_bytes,
        run_seed: seed,
    };
    let variants = bodies::build(&plan, options.secret.as_bytes())?;
    let check = (options.brokers != "none")
        .then(|| verify::Marks::take(&options.brokers, &options.topic))
        .transpose()?;
    let job = Arc::new(driver::Job {
        addr,
        host,
        path,
        variants,
        run_id: format!("load{seed}"),
        warmup: Duration::from_secs_f64(options.warmup),
        duration: Duration::from_secs_f64(options.duration),
        rate: options.rate,
        connections: options.connections.max(1),
    });
    let run = tokio::spawn(driver::run(job.clone()));
    // CPU is counted from the end of the warm-up, as the latencies are.
    tokio::time::sleep(job.warmup).await;
    let measured_from = Instant::now();
    let own_cpu_at_start = report::own_cpu_seconds();
    let watched = report::watch(&options.watch);
    let tally = run.await.context("the run panicked")??;
    let measured = measured_from.elapsed();
    let generator_cpu = report::own_cpu_seconds() - own_cpu_at_start;
    // The watched processes' CPU is read now, before the read-back adds the broker's work to it.
    let mut value = report::build(&report::Inputs {
        label: &options.label,
        connections: job.connections,
        rate: options.rate,
        measured,
        tally: &tally,
        generator_cpu,
        watched: &watched,
    });
    if let Some(marks) = &check {
        let run_prefix = format!("{}-", job.run_id);
        let checked = tokio::task::block_in_place(|| marks.check(&run_prefix, &tally.accepted))?;
        value["kafka_check"] = report::kafka(&checked);
    }
    println!("{}", serde_json::to_string(&value)?);
    let lost = value["kafka_check"]["missing"].as_u64().unwrap_or(0);
    if value["kafka_check"]["timed_out"] == true {
        bail!(
            "the read-back of {} timed out with {lost} accepted webhooks not seen yet",
            options.topic
        );
    }
    if lost > 0 {
        bail!("{lost} webhooks answered 200 are not on {}", options.topic);
    }
    Ok(())
}
