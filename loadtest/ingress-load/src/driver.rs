//! The connections: each one is a single HTTP/1.1 keep-alive connection (hyper's low-level client, no pool) that
//! sends one webhook at a time. Closed loop by default (the next request leaves when the answer arrives); with a
//! rate, each connection keeps its share of a fixed schedule and latency is counted from the scheduled send time,
//! so a stall is charged to every request it delayed (no coordinated omission).

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};

use anyhow::Context;
use bytes::Bytes;
use hdrhistogram::Histogram;
use http_body_util::{BodyExt, Full};
use hyper::client::conn::http1::SendRequest;
use hyper::Request;
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::bodies::Variant;

/// What every connection shares.
pub struct Job {
    pub addr: SocketAddr,
    pub host: String,
    pub path: String,
    pub variants: Vec<Variant>,
    /// Prefix of every webhook id of this run, so the Kafka check can tell this run's records from others'.
    pub run_id: String,
    pub warmup: Duration,
    pub duration: Duration,
    /// Requests per second over all connections; `None` is a closed loop.
    pub rate: Option<f64>,
    pub connections: usize,
}

/// One connection's tally; merged into the run's at the end.
pub struct Tally {
    /// Microseconds, requests sent after the warm-up only.
    pub latency: Histogram<u64>,
    /// Worst latency (µs) per second of the run, warm-up included, to see whether the tail comes in bursts.
    pub worst_per_second: Vec<u64>,
    /// Webhook ids answered 200 "accepted", warm-up included (all of them must be on Kafka).
    pub accepted: Vec<String>,
    pub measured_ok: u64,
    pub other_status: Vec<(u16, u64)>,
    pub transport_errors: u64,
    pub first_error: Option<String>,
}

impl Tally {
    fn new() -> anyhow::Result<Self> {
        Ok(Tally {
            latency: Histogram::new_with_bounds(1, 120_000_000, 3)?,
            worst_per_second: Vec::new(),
            accepted: Vec::new(),
            measured_ok: 0,
            other_status: Vec::new(),
            transport_errors: 0,
            first_error: None,
        })
    }

    pub fn merge(&mut self, other: Tally) -> anyhow::Result<()> {
        self.latency.add(&other.latency)?;
        if self.worst_per_second.len() < other.worst_per_second.len() {
            self.worst_per_second
                .resize(other.worst_per_second.len(), 0);
        }
        for (mine, theirs) in self
            .worst_per_second
            .iter_mut()
            .zip(&other.worst_per_second)
        {
            *mine = (*mine).max(*theirs);
        }
        self.accepted.extend(other.accepted);
        self.measured_ok += other.measured_ok;
        for (status, n) in other.other_status {
            self.count_status(status, n);
        }
        self.transport_errors += other.transport_errors;
        if self.first_error.is_none() {
            self.first_error = other.first_error;
        }
        Ok(())
    }

    fn count_status(&mut self, status: u16, n: u64) {
        match self.other_status.iter_mut().find(|(s, _)| *s == status) {
            Some((_, count)) => *count += n,
            None => self.other_status.push((status, n)),
        }
    }

    /// Counts one request sent at `from`; only those sent after `measured_from` go into the histogram.
    fn record(
        &mut self,
        outcome: anyhow::Result<(u16, bool)>,
        id: String,
        from: Instant,
        started: Instant,
        measured_from: Instant,
    ) {
        let micros = from.elapsed().as_micros().max(1) as u64;
        let second = from.saturating_duration_since(started).as_secs() as usize;
        if self.worst_per_second.len() <= second {
            self.worst_per_second.resize(second + 1, 0);
        }
        self.worst_per_second[second] = self.worst_per_second[second].max(micros);
        match outcome {
            Ok((200, true)) => {
                self.accepted.push(id);
                if from >= measured_from {
                    self.measured_ok += 1;
                    self.latency.saturating_record(micros);
                }
            }
            Ok((status, _)) => self.count_status(status, 1),
            Err(e) => self.error(e),
        }
    }

    fn error(&mut self, e: impl std::fmt::Display) {
        self.transport_errors += 1;
        self.first_error.get_or_insert_with(|| e.to_string());
    }
}

/// Runs every connection to the end of the run and returns their merged tally.
pub async fn run(job: Arc<Job>) -> anyhow::Result<Tally> {
    let started = Instant::now();
    let tasks: Vec<_> = (0..job.connections)
        .map(|n| tokio::spawn(connection(job.clone(), n, started)))
        .collect();
    let mut total = Tally::new()?;
    for task in tasks {
        total.merge(task.await.context("a connection task panicked")??)?;
    }
    Ok(total)
}

async fn connect(job: &Job) -> anyhow::Result<SendRequest<Full<Bytes>>> {
    let stream = TcpStream::connect(job.addr).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await?;
    tokio::spawn(conn);
    Ok(sender)
}

async fn connection(job: Arc<Job>, n: usize, started: Instant) -> anyhow::Result<Tally> {
    let mut tally = Tally::new()?;
    let end = started + job.warmup + job.duration;
    // Each connection owns every `connections`-th slot of the schedule, offset by its number.
    let period = job
        .rate
        .map(|r| Duration::from_secs_f64(job.connections as f64 / r.max(0.001)));
    let mut next = started
        + period.map_or(Duration::ZERO, |p| {
            p.mul_f64(n as f64 / job.connections as f64)
        });
    let mut sender: Option<SendRequest<Full<Bytes>>> = None;
    let mut seq = 0u64;
    while Instant::now() < end {
        if period.is_some() {
            tokio::time::sleep_until(next.into()).await;
            if Instant::now() >= end {
                break;
            }
        }
        let from = if period.is_some() {
            next
        } else {
            Instant::now()
        };
        next += period.unwrap_or(Duration::ZERO);
        if sender.as_ref().is_none_or(|s| s.is_closed()) {
            match connect(&job).await {
                Ok(s) => sender = Some(s),
                Err(e) => {
                    tally.error(format!("connect: {e}"));
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            }
        }
        let Some(s) = sender.as_mut() else { continue };
        let variant = &job.variants[(n + seq as usize * job.connections) % job.variants.len()];
        let id = format!("{}-{n}-{seq}", job.run_id);
        seq += 1;
        let outcome = send(s, &job, variant, &id).await;
        if outcome.is_err() {
            sender = None;
        }
        tally.record(outcome, id, from, started, started + job.warmup);
    }
    Ok(tally)
}

/// Sends one webhook; the status and whether the body says the event was accepted (stored on Kafka).
async fn send(
    sender: &mut SendRequest<Full<Bytes>>,
    job: &Job,
    variant: &Variant,
    webhook_id: &str,
) -> anyhow::Result<(u16, bool)> {
    let request = Request::post(job.path.as_str())
        .header("host", job.host.as_str())
        .header("content-type", "application/json")
        .header("x-shopify-topic", "orders/create")
        .header("x-shopify-hmac-sha256", variant.signature.as_str())
        .header("x-shopify-shop-domain", variant.shop.as_str())
        .header("x-shopify-webhook-id", webhook_id)
        .header("x-shopify-api-version", "2025-10")
        .body(Full::new(variant.body.clone()))?;
    sender.ready().await?;
    let response = sender.send_request(request).await?;
    let status = response.status().as_u16();
    let body = response.into_body().collect().await?.to_bytes();
    // `"accepted"` and not `"duplicate"`: only an accepted event was produced by this request.
    let accepted = says_accepted(&body);
    Ok((status, accepted))
}

fn says_accepted(body: &[u8]) -> bool {
    body.windows(b"\"accepted\"".len())
        .any(|w| w == b"\"accepted\"")
}
