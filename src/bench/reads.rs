//! `bench --big-merchant N --readers R`: the paced stream's event → publish latency while a big merchant's
//! churn-risk list is read by many dashboards at once.
//!
//! Before the paced stream starts, one more merchant gets `N` customers, each with one small order 62 to 86 days
//! back (R2 F1 M1 or M2, at risk under the default rules), so its churn-risk list holds every one of them. Once they
//! are applied, `R` reads of the list's first page run at once, round after round, while the paced stream of the
//! other merchants is measured (with `--big-merchant-every`, the big merchant's list changes meanwhile). With
//! `--partitions 1` every merchant shares the big one's partition actor: the case in which a read that works on the
//! actor's thread holds up everyone else's events.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use chrono::Utc;
use functions::Timestamp;
use serde::Serialize;
use streams::events::OrderCreated;
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};
use tokio::sync::oneshot;

use crate::configuration::Settings;
use crate::processor::{ProcessorStats, Registry};
use crate::read_model::ReadModel;

pub const BIG_MERCHANT: &str = "bench-big.myshopify.com";
/// Orders produced at a time while the big merchant is loaded.
const PRELOAD_CHUNK: u64 = 10_000;
/// The page every reader asks for: the API's default page size.
const PAGE: usize = 50;

#[derive(Debug, Serialize)]
pub struct ReadReport {
    pub readers: usize,
    /// The list's length in the last answer: the big merchant's at-risk customers, so a read did the real work.
    pub list_total: u64,
    pub reads: u64,
    pub reads_per_second: f64,
    pub read_p50_ms: f64,
    pub read_p99_ms: f64,
}

fn big_order(i: u64, merchant: &MerchantId) -> InputEvent {
    let cents = 1_000 + (i % 90) * 100;
    InputEvent::OrderCreated(OrderCreated {
        event_id: format!("bench-big-{i}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id: i,
        order_id: i,
        total_price: format!("{}.{:02}", cents / 100, cents % 100),
        currency: "USD".into(),
        created_at: Utc::now() - chrono::Duration::days(62 + (i % 25) as i64),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

/// A new order, today, of one of the big merchant's customers (`--big-merchant-every`): it moves them out of the
/// at-risk list.
pub fn big_reorder(i: u64, customers: u64, merchant: &MerchantId) -> InputEvent {
    let mut event = big_order(i.wrapping_mul(2_654_435_761) % customers, merchant);
    if let InputEvent::OrderCreated(order) = &mut event {
        order.event_id = format!("bench-big-again-{i}");
        order.order_id = customers + i;
        order.created_at = Utc::now();
    }
    event
}

/// Produces the big merchant's `customers` orders in chunks, each once the processor has applied the one before:
/// librdkafka's mock cluster keeps about 5 MB per partition and drops the oldest records past that, so a backlog
/// of 200,000 orders would lose its start before the processor read it.
async fn preload(
    settings: &Settings,
    stats: &ProcessorStats,
    customers: u64,
) -> anyhow::Result<()> {
    let merchant = MerchantId::parse(BIG_MERCHANT)?;
    let applied_before = stats.events.load(Ordering::SeqCst);
    for first in (0..customers).step_by(PRELOAD_CHUNK as usize) {
        let count = PRELOAD_CHUNK.min(customers - first);
        let (settings, merchant) = (settings.clone(), merchant.clone());
        // On a thread of its own, as the throughput stream is produced.
        tokio::task::spawn_blocking(move || -> anyhow::Result<()> {
            let runtime = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            runtime.block_on(super::produce_with(&settings, count, 0, |i| {
                big_order(first + i, &merchant)
            }))
        })
        .await??;
        let applied = applied_before + first + count;
        super::wait_for(stats, applied, Duration::from_secs(600)).await?;
    }
    Ok(())
}

/// Readers running until [`ReadLoad::finish`].
pub struct ReadLoad {
    readers: usize,
    stop: oneshot::Sender<()>,
    task: tokio::task::JoinHandle<Rounds>,
}

impl ReadLoad {
    /// With `--big-merchant`: loads it, then starts the readers (none with `--readers 0`).
    pub async fn prepare(
        settings: &Settings,
        args: &super::BenchArgs,
        stats: &ProcessorStats,
        registry: &Registry,
    ) -> anyhow::Result<Option<ReadLoad>> {
        if args.big_merchant == 0 {
            return Ok(None);
        }
        preload(settings, stats, args.big_merchant).await?;
        Ok((args.readers > 0).then(|| ReadLoad::start(registry.clone(), args.readers)))
    }

    fn start(registry: Registry, readers: usize) -> ReadLoad {
        let (stop, stopped) = oneshot::channel();
        let model = Arc::new(ReadModel::new(Some(registry), None));
        let task = tokio::task::spawn_local(read_rounds(model, readers, stopped));
        ReadLoad {
            readers,
            stop,
            task,
        }
    }

    /// Stops the readers after the round in progress and reports every read's time.
    pub async fn finish(load: Option<ReadLoad>) -> Option<ReadReport> {
        Some(load?.report().await)
    }

    async fn report(self) -> ReadReport {
        let _ = self.stop.send(());
        let Rounds {
            mut times,
            elapsed,
            list_total,
        } = self.task.await.unwrap_or_default();
        times.sort_unstable();
        let at = |q: f64| {
            let i = ((times.len() as f64 * q) as usize).min(times.len().saturating_sub(1));
            times.get(i).map_or(0.0, |d| d.as_secs_f64() * 1e3)
        };
        ReadReport {
            readers: self.readers,
            list_total,
            reads: times.len() as u64,
            reads_per_second: times.len() as f64 / elapsed.as_secs_f64().max(1e-9),
            read_p50_ms: at(0.50),
            read_p99_ms: at(0.99),
        }
    }
}

#[derive(Default)]
struct Rounds {
    times: Vec<Duration>,
    elapsed: Duration,
    list_total: u64,
}

/// Rounds of `readers` concurrent reads of the big merchant's first page until `stop` fires, each read timed.
async fn read_rounds(
    model: Arc<ReadModel>,
    readers: usize,
    mut stop: oneshot::Receiver<()>,
) -> Rounds {
    let Ok(merchant) = MerchantId::parse(BIG_MERCHANT) else {
        return Rounds::default();
    };
    let started = Instant::now();
    let (mut times, mut list_total) = (Vec::new(), 0);
    while stop.try_recv() == Err(oneshot::error::TryRecvError::Empty) {
        let now = Timestamp::from_unix(Utc::now().timestamp());
        let reads = (0..readers).map(|_| async {
            let began = Instant::now();
            let answer = model.churn_risk(&merchant, 0, PAGE, now).await;
            (began.elapsed(), answer.map(|(_, page)| page.total))
        });
        for (took, answer) in futures_util::future::join_all(reads).await {
            match answer {
                Ok(total) => list_total = total,
                Err(e) => tracing::warn!(error = %e, "benchmark read failed"),
            }
            times.push(took);
        }
    }
    Rounds {
        times,
        elapsed: started.elapsed(),
        list_total,
    }
}
