//! The stream processor: a Kafka consumer group feeding partition actors, publishing what changed, and storing
//! offsets only after that (DESIGN.md §6).
//!
//! One loop owns the consumer. It collects a batch (what has arrived, up to a few thousand records; a linger can be
//! set) and hands
//! each partition's share to that partition's actor, which decodes, applies and encodes the outputs (its mailbox is
//! small, so this is where backpressure starts). The outcome's records are enqueued in order and published in the
//! background; up to `MAX_IN_FLIGHT` batches may be publishing, and their offsets are stored strictly in batch order
//! once each completes; when they stop completing, consumption pauses (`flow`). Between batches the loop ticks every
//! partition so recency boundaries fire on time. Assigned partitions are restored in the background (`hydrate`,
//! `recovery`) and handed over with a snapshot when revoked. Records that cannot be decoded go to `rfm.dlq`, and the
//! partition goes on.

mod batch;
mod flow;
mod gauges;
mod hydrate;
mod incarnation;
mod lifecycle;
mod partitions;
pub mod publish;
mod readback;
mod recovery;
mod restore;
mod rows_order;

use std::collections::{HashMap, VecDeque};
use std::sync::atomic::{AtomicBool, AtomicI64, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use actix::{Addr, Arbiter};
use actors::{Clock, Configs, PartitionActor, Tick};
use futures_util::StreamExt;
use streams::{MerchantId, Topics};

use crate::directory::inspect_one;
pub use crate::directory::{inspect_all, Registry};
use crate::store::{Store, StoreError};
use publish::{PublishError, Publisher};
pub use recovery::SnapshotSettings;
pub use streams::source::{ConsumerSettings, Polled};

/// Counters the tests and the benchmark read to know how far the processor got.
#[derive(Debug, Default)]
pub struct ProcessorStats {
    pub events: AtomicU64,
    pub dead_lettered: AtomicU64,
    /// Merchant configurations that could not be read (their records waited).
    pub config_load_failures: AtomicU64,
    /// The clock value of the last completed tick, published included.
    pub last_tick: AtomicI64,
    /// Partitions are assigned and none is restoring: what arrives now is published live.
    pub caught_up: AtomicBool,
    /// How many partitions the group gave this instance.
    pub partitions_owned: std::sync::atomic::AtomicUsize,
    /// Event → published latencies in microseconds, kept only when `sample_latency` is on (the benchmark).
    pub sample_latency: AtomicBool,
    latencies_us: Mutex<Vec<u32>>,
}

impl ProcessorStats {
    fn record_latencies(&self, timestamps_ms: &[i64], churn_ms: &[i64]) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        for ts in churn_ms {
            let seconds = (now_ms - ts).max(0) as f64 / 1e3;
            metrics::histogram!(streams::metric_names::CHURN_LATENCY).record(seconds);
        }
        let sampling = self.sample_latency.load(Ordering::Relaxed);
        let mut samples = self.latencies_us.lock().unwrap_or_else(|p| p.into_inner());
        for ts in timestamps_ms {
            let seconds = (now_ms - ts).max(0) as f64 / 1e3;
            metrics::histogram!(streams::metric_names::EVENT_TO_PUBLISH).record(seconds);
            if sampling && samples.len() < 20_000_000 {
                samples.push((seconds * 1e6) as u32);
            }
        }
    }

    /// How many latencies were sampled so far; `latency_percentiles(from)` leaves out the first `from`.
    pub fn latency_samples(&self) -> usize {
        self.latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .len()
    }

    /// p50 and p99 of the sampled latencies after the first `from`, in milliseconds.
    pub fn latency_percentiles(&self, from: usize) -> (f64, f64) {
        let mut samples: Vec<u32> = self
            .latencies_us
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .iter()
            .skip(from)
            .copied()
            .collect();
        if samples.is_empty() {
            return (0.0, 0.0);
        }
        samples.sort_unstable();
        let at = |q: f64| f64::from(samples[((samples.len() - 1) as f64 * q) as usize]) / 1e3;
        (at(0.5), at(0.99))
    }
}

/// Settings for [`Processor`]; `build()` creates the consumer and the actor threads.
pub struct ProcessorConfig {
    pub consumer: ConsumerSettings,
    pub topics: Topics,
    pub batch_max: usize,
    pub batch_linger: Duration,
    pub tick_every: Duration,
    /// Where and how often partition state is snapshotted; `None` replays every assigned partition from the start.
    pub snapshots: Option<SnapshotSettings>,
    /// How many assigned partitions may be loading their snapshots at once.
    pub restore_concurrency: usize,
}

impl ProcessorConfig {
    pub fn new(brokers: &str, group_id: &str, topics: Topics) -> Self {
        ProcessorConfig {
            consumer: ConsumerSettings {
                brokers: brokers.to_owned(),
                group_id: group_id.to_owned(),
                session_timeout: Duration::from_secs(45),
                max_poll_interval: Duration::from_secs(300),
                debug: None,
                group_instance_id: None,
            },
            topics,
            batch_max: 5_000,
            batch_linger: Duration::ZERO,
            tick_every: Duration::from_millis(250),
            snapshots: None,
            // Half the cores: a big rebalance leaves the rest to the partitions that are live.
            restore_concurrency: std::thread::available_parallelism()
                .map_or(1, |n| (n.get() / 2).max(1)),
        }
    }

    pub fn with_session_timeout(mut self, timeout: Duration) -> Self {
        self.consumer.session_timeout = timeout;
        self
    }

    pub fn with_max_poll_interval(mut self, interval: Duration) -> Self {
        self.consumer.max_poll_interval = interval;
        self
    }

    pub fn with_group_instance_id(mut self, id: Option<String>) -> Self {
        self.consumer.group_instance_id = id;
        self
    }

    pub fn with_kafka_debug(mut self, contexts: Option<String>) -> Self {
        self.consumer.debug = contexts;
        self
    }

    pub fn build(self, publisher: Publisher, clock: Arc<dyn Clock>) -> anyhow::Result<Processor> {
        let consumer = Arc::new(streams::source::Source::new(&self.consumer, &self.topics)?);
        let partitions = consumer.input_partitions()?;
        tracing::info!(partitions, "input topics co-partitioned");
        let threads = std::thread::available_parallelism().map_or(2, |n| n.get());
        Ok(Processor {
            source: consumer,
            publisher,
            clock,
            configs: Configs::default(),
            plans: Default::default(),
            partitions: Registry::default(),
            arbiters: (0..threads).map(|_| Arbiter::new()).collect(),
            stats: Arc::new(ProcessorStats::default()),
            in_flight: VecDeque::new(),
            live: None,
            positions: HashMap::new(),
            lifecycles: HashMap::new(),
            attempts: lifecycle::Attempts::default(),
            chunks: futures_util::stream::FuturesUnordered::new(),
            prefetched: Vec::new(),
            restore_permits: Arc::new(tokio::sync::Semaphore::new(self.restore_concurrency.max(1))),
            decode_spread: (threads / self.restore_concurrency.max(1)).max(1),
            steps: tokio::sync::mpsc::unbounded_channel(),
            paused: false,
            config_wait: HashMap::new(),
            idle_since: None,
            session_timeout: self.consumer.session_timeout,
            brokers: self.consumer.brokers.clone(),
            snapshots: self.snapshots,
            last_snapshot: Instant::now(),
            saving: None,
            batch_max: self.batch_max,
            batch_linger: self.batch_linger,
            tick_every: self.tick_every,
            partition_clocks: Default::default(),
        })
    }
}

/// A batch being published. Its offsets are covered by the next snapshot taken after `done` completes.
struct InFlight {
    done: tokio::task::JoinHandle<()>,
    events: u64,
    /// Records of the batch that went to the dead-letter topic (counted once acknowledged).
    dead_letters: u64,
    /// The clock value of a tick whose last outcome this is: recorded as the last completed tick once it retires.
    tick: Option<i64>,
}

/// How many batches may be publishing at once before the consumer waits: enough to overlap broker round trips,
/// few enough that a stalled Postgres or broker stops consumption quickly (backpressure, nothing dropped).
const MAX_IN_FLIGHT: usize = 8;

pub struct Processor {
    source: Arc<streams::source::Source>,
    publisher: Publisher,
    clock: Arc<dyn Clock>,
    configs: Configs,
    /// The merchants' running nudge experiments, for the partition actors (see `experiments::plans`).
    plans: actors::NudgePlans,
    partitions: Registry,
    arbiters: Vec<Arbiter>,
    stats: Arc<ProcessorStats>,
    /// Batches whose effects are being published, oldest first; their offsets are stored in this order.
    in_flight: VecDeque<InFlight>,
    /// Dashboards' feed; sees each outcome before it is published, since showing a change early is harmless
    /// (a replay after a crash reproduces the same state).
    live: Option<Arc<crate::live::LiveFeed>>,
    /// Where each installed partition's input stands (see `recovery`).
    positions: HashMap<i32, recovery::Position>,
    /// Every partition the group gave this instance, and where it is in its life (see `lifecycle`).
    lifecycles: HashMap<i32, lifecycle::Lifecycle>,
    attempts: lifecycle::Attempts,
    /// Records received while the previous batch was applied, not admitted yet (see `batch`).
    prefetched: Vec<Polled>,
    /// The next chunk of each restore that is publishing its net changes (see `hydrate`).
    chunks: futures_util::stream::FuturesUnordered<restore::ChunkRequest>,
    restore_permits: Arc<tokio::sync::Semaphore>,
    /// Cores per restore permit: the threads a decode may use while no partition is live.
    decode_spread: usize,
    /// Background work reporting back to the loop (see `hydrate`).
    steps: (
        tokio::sync::mpsc::UnboundedSender<hydrate::Step>,
        tokio::sync::mpsc::UnboundedReceiver<hydrate::Step>,
    ),
    /// Every owned partition is paused because outputs are not completing (see `flow`).
    paused: bool,
    /// Partitions paused until these merchants' configurations can be read (see `batch`).
    config_wait: HashMap<i32, Vec<MerchantId>>,
    /// Since when this member has owned no partition, and the group's session timeout (see `flow`).
    idle_since: Option<Instant>,
    session_timeout: Duration,
    brokers: String,
    snapshots: Option<SnapshotSettings>,
    last_snapshot: Instant,
    /// The snapshot round being written: per partition, the offsets it covers and the outcome.
    saving: Option<tokio::task::JoinHandle<Vec<recovery::Written>>>,
    batch_max: usize,
    batch_linger: Duration,
    tick_every: Duration,
    /// Restore and snapshot times per owned partition, for the operator's gauges (see `gauges`).
    partition_clocks: gauges::PartitionClocks,
}

impl Processor {
    pub fn stats(&self) -> Arc<ProcessorStats> {
        self.stats.clone()
    }

    pub fn attach_live(&mut self, feed: Arc<crate::live::LiveFeed>) {
        self.live = Some(feed);
    }

    /// The actor of each partition this instance currently owns, for the read API.
    pub fn registry(&self) -> Registry {
        self.partitions.clone()
    }

    /// The Postgres store the processor writes to, when it has one.
    pub fn store(&self) -> Option<Store> {
        self.publisher.store.clone()
    }

    /// The running nudge experiments the partition actors assign by; kept up to date by the caller.
    pub fn plans(&self) -> actors::NudgePlans {
        self.plans.clone()
    }

    /// Where this instance's published nudges wait for their shoppers, and their customers' actors.
    pub fn nudges(&self) -> Option<actors::nudges::NudgeDesk> {
        self.publisher.nudges.clone()
    }

    /// Where this processor keeps its nudges' fates and conversions.
    pub fn ledger(&self) -> Option<crate::experiments::ledger::Ledger> {
        self.publisher.ledger.clone()
    }

    /// Runs until `shutdown` resolves; returns an error only for failures that need a restart.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), PublishError> {
        let mut ticker = tokio::time::interval(self.tick_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tokio::pin!(shutdown);
        let census = gauges::spawn_census(self.partitions.clone(), self.clock.clone());
        loop {
            let wake = tokio::select! {
                _ = &mut shutdown => break,
                _ = ticker.tick() => Wake::Tick,
                Some(step) = self.steps.1.recv() => Wake::Step(step),
                Some(chunk) = self.chunks.next(), if !self.chunks.is_empty() => Wake::Chunk(chunk),
                // Records received while the last batch was being applied go first (see `batch`).
                _ = std::future::ready(()), if !self.prefetched.is_empty() => Wake::Records(None),
                first = self.source.next() => Wake::Records(first),
            };
            match wake {
                Wake::Tick => {
                    self.settle(MAX_IN_FLIGHT).await?;
                    self.take_assignments().await?;
                    self.snapshot_if_due(false).await?;
                    self.retry_configs().await;
                    self.tick_lifecycles().await?;
                    self.tick().await?;
                    self.update_partition_gauges();
                }
                Wake::Step(step) => self.on_step(step).await?,
                Wake::Chunk(chunk) => self.on_chunk(chunk).await?,
                Wake::Records(first) => {
                    let mut batch = std::mem::take(&mut self.prefetched);
                    batch.extend(first);
                    self.source
                        .fill(&mut batch, self.batch_max, self.batch_linger)
                        .await;
                    self.take_assignments().await?;
                    self.process(batch).await?;
                }
            }
        }
        tracing::info!("processor stopping");
        drop(census);
        self.drain_chunks(|_| true).await?;
        self.settle(0).await?;
        self.snapshot_if_due(true).await?;
        self.source.closing();
        match self.source.take_revoked() {
            Some(revocation) if revocation.lost => self.source.release_lost(),
            Some(_) => self.source.release(),
            None => self.source.commit_stored(),
        }
        Ok(())
    }

    /// Loads the configurations of `merchants` not loaded yet; those that could not be read are returned (see
    /// [`load_configs_of`]).
    async fn load_configs_of(&self, merchants: Vec<MerchantId>) -> Vec<MerchantId> {
        let failed = load_configs_of(&self.configs, self.publisher.store.as_ref(), merchants).await;
        if !failed.is_empty() {
            self.stats
                .config_load_failures
                .fetch_add(failed.len() as u64, Ordering::SeqCst);
        }
        failed
    }

    /// Recency boundaries of every settled partition. Their outcomes join the in-flight window like a batch's, so
    /// a boundary inside a Postgres or broker outage pauses consumption and keeps the loop polling (and the member
    /// in its group) instead of blocking it on the writes.
    async fn tick(&mut self) -> Result<(), PublishError> {
        let now = self.clock.now();
        // Restoring partitions fire their boundaries in the restore's reconciliation instead.
        let actors: Vec<Addr<PartitionActor>> = self
            .partitions
            .iter()
            .filter(|e| {
                self.lifecycles
                    .get(e.key())
                    .is_some_and(lifecycle::Lifecycle::live)
            })
            .map(|e| e.value().clone())
            .collect();
        for addr in actors {
            let waiting = crate::directory::InMailbox::enter();
            let sent = addr.send(Tick { now }).await;
            drop(waiting);
            if let Ok(outcome) = sent {
                self.publish(outcome, Vec::new(), 0).await?;
            }
        }
        // Completed once everything it published is out: the window retires in order.
        match self.in_flight.back_mut() {
            Some(last) => last.tick = Some(now.unix()),
            None => self.stats.last_tick.store(now.unix(), Ordering::SeqCst),
        }
        Ok(())
    }
}

/// What woke the processing loop.
enum Wake {
    Tick,
    Step(hydrate::Step),
    Chunk(restore::Chunk),
    Records(Option<Polled>),
}

/// Loads the configuration of each merchant not loaded yet: from Postgres when there is a store, the default
/// (medium preset) without one or without a row. A row that cannot be read now (Postgres down) is not replaced by
/// the default: a merchant's state keeps the configuration it was created with, so scoring it under the wrong
/// thresholds would last until a restart, and a snapshot checked against the default would be refused. Those
/// merchants are returned; their records wait (see `batch`) and their snapshots are loaded later (see `hydrate`).
async fn load_configs_of(
    configs: &Configs,
    store: Option<&Store>,
    merchants: Vec<MerchantId>,
) -> Vec<MerchantId> {
    let mut failed = Vec::new();
    for merchant in merchants.into_iter().filter(|m| !configs.contains_key(m)) {
        // One unreachable Postgres answers every load with the same timeout: after the first failure the rest wait
        // too, so a batch or tick costs the loop one timeout, not one per merchant.
        if !failed.is_empty() {
            failed.push(merchant);
            continue;
        }
        let config = match store {
            Some(store) => match load_config(store, &merchant).await {
                Ok(config) => config.unwrap_or_default(),
                // A row that will never parse is not retried: the merchant gets the default, as without a row.
                Err(StoreError::InvalidConfig { errors, .. }) => {
                    tracing::error!(merchant = %merchant, ?errors, "stored RFM configuration is invalid; using the default");
                    metrics::counter!(streams::metric_names::CONFIG_INVALID).increment(1);
                    Default::default()
                }
                Err(e) => {
                    tracing::warn!(merchant = %merchant, error = %e, "RFM configuration unavailable; the merchant's records wait");
                    metrics::counter!(streams::metric_names::CONFIG_LOAD_FAILURES).increment(1);
                    streams::metric_names::error("processor", "config_load");
                    failed.push(merchant);
                    continue;
                }
            },
            None => Default::default(),
        };
        configs.insert(merchant, config);
    }
    failed
}

/// How long one configuration load may take before the merchant's records wait for the next try.
const CONFIG_LOAD_TIMEOUT: Duration = Duration::from_secs(2);

async fn load_config(
    store: &Store,
    merchant: &MerchantId,
) -> Result<Option<functions::RfmConfig>, StoreError> {
    tokio::time::timeout(CONFIG_LOAD_TIMEOUT, store.load_config(merchant))
        .await
        .unwrap_or(Err(StoreError::Db(sqlx::Error::PoolTimedOut)))
}
