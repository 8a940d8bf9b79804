//! `loyalnest-rfm bench`: the pipeline benchmark. Produces a synthetic order stream to a Kafka-protocol broker
//! while an in-process processor consumes it, and reports sustained events/s, event → publish latency and resident
//! memory per customer. Every run uses fresh topics (a random prefix) and a fresh consumer group.

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::{PartitionCore, SystemClock};
use chrono::Utc;
use rdkafka::producer::FutureRecord;
use serde::Serialize;
use streams::events::OrderCreated;
use streams::{InputEvent, MerchantId, Topics, SCHEMA_VERSION};

use crate::configuration::Settings;
use crate::directory::{inspect_all, Registry};
use crate::processor::ProcessorStats;

pub mod backfill;
mod live;
mod reads;
pub mod sync;

#[derive(Debug, Clone, clap::Args)]
pub struct BenchArgs {
    /// Distinct customers in the stream.
    #[arg(long, default_value_t = 1_000_000)]
    pub customers: u64,
    /// Events to produce (orders).
    #[arg(long, default_value_t = 3_000_000)]
    pub events: u64,
    /// Merchants the customers are spread over.
    #[arg(long, default_value_t = 200)]
    pub merchants: u64,
    /// Partitions of each input topic.
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
    /// Produce at this many events/s (0: as fast as the broker takes them). Latency figures are meaningful only
    /// below the processor's capacity; throughput is measured at 0.
    #[arg(long, default_value_t = 0)]
    pub rate: u64,
    /// Only read the produced stream back with a plain consumer, without processing it: what the broker delivers
    /// on this machine, the ceiling for the throughput figure.
    #[arg(long)]
    pub read_only: bool,
    /// Start the processor on the empty topics first and produce while its partitions are live, so every changing
    /// event is published (with `--rate 0`: the live pipeline's sustained rate; docs/PERFORMANCE.md).
    #[arg(long)]
    pub live: bool,
    /// Latency under reads (with `--rate`): first load one more merchant with this many customers, all at risk,
    /// then read its churn-risk list `--readers` times at once, again and again, while the paced stream runs.
    #[arg(long, default_value_t = 0)]
    pub big_merchant: u64,
    /// Concurrent churn-risk reads of the big merchant (0: none, the figure to compare with).
    #[arg(long, default_value_t = 50)]
    pub readers: usize,
    /// Every this many events of the paced stream, one is a new order of a big merchant's customer (who leaves the
    /// at-risk list), so the list changes while it is read (0: it does not).
    #[arg(long, default_value_t = 0)]
    pub big_merchant_every: u64,
}

#[derive(Debug, Serialize)]
pub struct BenchReport {
    /// The run's topic prefix; its group is `{prefix}group` and its snapshots stay in Redis (loadtest/restart.sh).
    pub topic_prefix: String,
    pub events: u64,
    pub customers_resident: u64,
    pub produce_seconds: f64,
    pub process_seconds: f64,
    pub events_per_second: f64,
    pub latency_p50_ms: f64,
    pub latency_p99_ms: f64,
    /// The same, over the events published after every partition was caught up (restored and live): without the
    /// events that waited for the assignment and the restore at the start.
    pub steady_latency_p50_ms: f64,
    pub steady_latency_p99_ms: f64,
    /// Resident-set growth from after the produce phase to caught up, divided by the customers: includes buffers
    /// that do not grow with the customers (consumer fetch queues, producer queue, snapshots in flight).
    pub rss_bytes_per_customer: f64,
    /// The process's resident set when caught up; two runs with different customer counts give the marginal cost
    /// of a customer (docs/PERFORMANCE.md).
    pub rss_bytes: u64,
    /// Customers, order index and timer queue, at capacity.
    pub state_bytes_per_customer: f64,
    /// The timer queue's share of `state_bytes_per_customer`.
    pub timer_bytes_per_customer: f64,
    /// The big merchant's reads, with `--big-merchant`.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub reads: Option<reads::ReadReport>,
    /// What a `--live` run published.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub live: Option<live::LiveReport>,
}

fn rss_bytes() -> u64 {
    let statm = std::fs::read_to_string("/proc/self/statm").unwrap_or_default();
    let pages: u64 = statm
        .split_whitespace()
        .nth(1)
        .and_then(|p| p.parse().ok())
        .unwrap_or(0);
    pages * 4096
}

fn synthetic(i: u64, args: &BenchArgs, merchants: &[MerchantId]) -> InputEvent {
    let customer = i.wrapping_mul(2_654_435_761) % args.customers;
    let merchant = &merchants[(customer % args.merchants) as usize];
    let cents = 1_000 + (i % 97) * 311;
    InputEvent::OrderCreated(OrderCreated {
        event_id: format!("bench-{i}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id: customer,
        order_id: i,
        total_price: format!("{}.{:02}", cents / 100, cents % 100),
        currency: "USD".into(),
        created_at: Utc::now() - chrono::Duration::days((i % 40) as i64),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

/// The run's settings with fresh topics (a random prefix, created with `args.partitions` each) and a fresh group;
/// with `KAFKA_BROKERS=mock`, librdkafka's in-process cluster (kept alive by the returned handle) instead, to tell
/// the broker's share of a figure from ours.
async fn fresh_topics(
    settings: &Settings,
    args: &BenchArgs,
) -> anyhow::Result<(Settings, String, Option<crate::mock_broker::MockBroker>)> {
    let prefix = format!("bench{}.", &uuid::Uuid::new_v4().simple().to_string()[..8]);
    let mut settings = settings.clone();
    settings.topics = Topics::with_prefix(&prefix);
    settings.kafka_group_id = format!("{prefix}group");
    let mock = match crate::mock_broker::is_mock(&settings.kafka_brokers) {
        true => {
            let mock = crate::mock_broker::MockBroker::start(&settings.topics, args.partitions)?;
            settings.kafka_brokers = mock.bootstrap_servers();
            Some(mock)
        }
        false => {
            streams::admin::ensure_topics(
                &settings.kafka_brokers,
                &settings.topics,
                args.partitions,
                1,
            )
            .await?;
            None
        }
    };
    Ok((settings, prefix, mock))
}

/// The producer as a job for a thread of its own (with its own runtime); it returns the seconds it took.
fn producer_job(
    settings: &Settings,
    args: &BenchArgs,
    merchants: &[MerchantId],
) -> impl FnOnce() -> anyhow::Result<f64> + Send + 'static {
    let (settings, args, merchants) = (settings.clone(), args.clone(), merchants.to_vec());
    move || {
        let runtime = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        let started = Instant::now();
        runtime.block_on(produce(&settings, &args, &merchants))?;
        Ok(started.elapsed().as_secs_f64())
    }
}

/// Runs the benchmark against the broker in `settings`; Postgres is used only when `DATABASE_URL` is set.
pub async fn run(settings: &Settings, args: &BenchArgs) -> anyhow::Result<BenchReport> {
    let (settings, prefix, _mock) = fresh_topics(settings, args).await?;
    let mut rss_before = rss_bytes();

    let merchants: Vec<MerchantId> = (0..args.merchants)
        .map(|m| MerchantId::parse(&format!("bench-{m}.myshopify.com")))
        .collect::<Result<_, _>>()?;
    // Throughput: the whole stream is on the broker first and the processor catches up from it, so the figure is
    // the processor's, not the producer's. Latency (`--rate`) and `--live`: the producer runs on its own thread while
    // the processor consumes (`--live` starts it only once the partitions are live).
    let mut producer = Some(producer_job(&settings, args, &merchants));
    let mut produce_seconds = 0.0;
    if let Some(producer) = producer.take_if(|_| args.rate == 0 && !args.live) {
        produce_seconds = tokio::task::spawn_blocking(producer).await??;
        // What the producer allocated and freed stays in the allocator's arenas; it is not the processor's.
        rss_before = rss_bytes();
    }
    if args.read_only {
        anyhow::ensure!(
            args.rate == 0 && !args.live,
            "--read-only reads a stream produced at full speed before it (not with --rate or --live)"
        );
        return read_only(&settings, args, prefix, produce_seconds).await;
    }
    anyhow::ensure!(
        args.big_merchant == 0 || args.rate > 0,
        "--big-merchant measures latency: give a --rate"
    );
    let processor = crate::startup::build_processor(&settings, Arc::new(SystemClock)).await?;
    let (stats, registry) = (processor.stats(), processor.registry());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = actix_web::rt::spawn(processor.run(async {
        let _ = stopped.await;
    }));
    let mut started = Instant::now();
    if args.live {
        live::until_live(&stats, Duration::from_secs(60)).await?;
        started = Instant::now();
    }
    // The big merchant is applied before the measured stream starts, and its events are not measured.
    let load = reads::ReadLoad::prepare(&settings, args, &stats, &registry).await?;
    stats
        .sample_latency
        .store(args.rate > 0 || args.live, Ordering::SeqCst);
    let paced = producer.take().map(std::thread::spawn);
    let steady_from = tokio::task::spawn_local(samples_once_caught_up(stats.clone()));
    // Ten minutes, or longer for a stream that would need more at 20,000 events/s (10 M customers: 30 M events).
    let limit = Duration::from_secs(600.max(args.events / 20_000));
    wait_for(&stats, args.events + args.big_merchant, limit).await?;
    let reads = reads::ReadLoad::finish(load).await;
    let process_seconds = started.elapsed().as_secs_f64();
    if let Some(thread) = paced {
        produce_seconds = thread
            .join()
            .map_err(|_| anyhow::anyhow!("producer thread panicked"))??;
    }

    let (customers, state_bytes, timer_bytes) = state_size(&registry).await;
    let rss_after = rss_bytes();
    let (p50, p99) = stats.latency_percentiles(0);
    let (steady_p50, steady_p99) = match steady_from.await {
        Ok(from) => stats.latency_percentiles(from),
        Err(_) => (0.0, 0.0),
    };
    let _ = stop.send(());
    let _ = task.await;
    let live = match args.live {
        true => Some(live::published(&settings, args.events).await?),
        false => None,
    };
    Ok(BenchReport {
        topic_prefix: prefix,
        events: args.events,
        customers_resident: customers,
        produce_seconds,
        process_seconds,
        events_per_second: args.events as f64 / process_seconds,
        latency_p50_ms: p50,
        latency_p99_ms: p99,
        steady_latency_p50_ms: steady_p50,
        steady_latency_p99_ms: steady_p99,
        rss_bytes_per_customer: rss_after.saturating_sub(rss_before) as f64
            / customers.max(1) as f64,
        rss_bytes: rss_after,
        state_bytes_per_customer: state_bytes as f64 / customers.max(1) as f64,
        timer_bytes_per_customer: timer_bytes as f64 / customers.max(1) as f64,
        reads,
        live,
    })
}

/// Reads the produced stream back with a plain consumer group on the processor's topics and fetch settings, and
/// nothing else.
async fn read_only(
    settings: &Settings,
    args: &BenchArgs,
    topic_prefix: String,
    produce_seconds: f64,
) -> anyhow::Result<BenchReport> {
    use rdkafka::consumer::{Consumer, StreamConsumer};
    let mut config = rdkafka::ClientConfig::new();
    config
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("group.id", format!("{topic_prefix}raw"))
        .set("auto.offset.reset", "earliest")
        .set("enable.auto.commit", "false");
    let consumer: StreamConsumer =
        streams::client_props::apply(streams::source::fetch_settings(&mut config)).create()?;
    // Every input topic, as the processor subscribes; only the orders topic holds records.
    let topics = settings.topics.inputs();
    consumer.subscribe(&topics)?;
    let limit = Duration::from_secs(600);
    let started = Instant::now();
    let mut read = 0u64;
    while read < args.events {
        anyhow::ensure!(
            started.elapsed() < limit,
            "read {read} records within {limit:?}"
        );
        match tokio::time::timeout(Duration::from_secs(1), consumer.recv()).await {
            Ok(Ok(_)) => read += 1,
            Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
            Err(_) => {}
        }
    }
    let seconds = started.elapsed().as_secs_f64();
    Ok(BenchReport {
        topic_prefix,
        events: read,
        customers_resident: 0,
        produce_seconds,
        process_seconds: seconds,
        events_per_second: read as f64 / seconds,
        latency_p50_ms: 0.0,
        latency_p99_ms: 0.0,
        steady_latency_p50_ms: 0.0,
        steady_latency_p99_ms: 0.0,
        rss_bytes_per_customer: 0.0,
        rss_bytes: rss_bytes(),
        state_bytes_per_customer: 0.0,
        timer_bytes_per_customer: 0.0,
        reads: None,
        live: None,
    })
}

/// Produces the stream as fast as the broker takes it, a bounded window of deliveries in flight.
async fn produce(
    settings: &Settings,
    args: &BenchArgs,
    merchants: &[MerchantId],
) -> anyhow::Result<()> {
    let big = MerchantId::parse(reads::BIG_MERCHANT)?;
    let every = args.big_merchant_every;
    produce_with(settings, args.events, args.rate, |i| {
        match every > 0 && args.big_merchant > 0 && i % every == 0 {
            true => reads::big_reorder(i, args.big_merchant, &big),
            false => synthetic(i, args, merchants),
        }
    })
    .await
}

/// Produces `events` events made by `event`, at `rate` per second (0: as fast as the broker takes them).
async fn produce_with(
    settings: &Settings,
    events: u64,
    rate: u64,
    event: impl Fn(u64) -> InputEvent,
) -> anyhow::Result<()> {
    let producer: rdkafka::producer::FutureProducer = streams::SinkConfig {
        // Paced events stand for webhooks, which the ingress produces with no linger; a linger here would be
        // counted in every event → published figure although no webhook waits for it.
        linger: if rate > 0 {
            Duration::ZERO
        } else {
            Duration::from_millis(10)
        },
        delivery_timeout: Duration::from_secs(60),
        ..streams::SinkConfig::new(settings.kafka_brokers.clone())
    }
    .client_config()
    .set("batch.size", "1000000")
    .create()?;
    let topic = settings.topics.orders_create.clone();
    let mut in_flight = Vec::with_capacity(50_000);
    let started = Instant::now();
    for i in 0..events {
        if rate > 0 && i % 100 == 0 {
            // Pace in steps of 100 events so the schedule stays exact without a timer per record.
            let due = started + Duration::from_secs_f64(i as f64 / rate as f64);
            tokio::time::sleep_until(due.into()).await;
        }
        let event = event(i);
        let payload = event.encode();
        let key = event.merchant_id().as_str().to_owned();
        loop {
            match producer.send_result(FutureRecord::to(&topic).key(&key).payload(&payload)) {
                Ok(delivery) => {
                    in_flight.push(delivery);
                    break;
                }
                // Local queue full: wait for what is in flight, then try again.
                Err((_, _)) => drain(&mut in_flight).await?,
            }
        }
        if in_flight.len() >= 50_000 {
            drain(&mut in_flight).await?;
        }
    }
    drain(&mut in_flight).await
}

async fn drain(in_flight: &mut Vec<rdkafka::producer::DeliveryFuture>) -> anyhow::Result<()> {
    for delivery in in_flight.drain(..) {
        match delivery.await {
            Ok(Ok(_)) => {}
            Ok(Err((e, _))) => anyhow::bail!("benchmark record not delivered: {e}"),
            Err(_) => anyhow::bail!("producer dropped a delivery"),
        }
    }
    Ok(())
}

pub(crate) async fn wait_for(
    stats: &ProcessorStats,
    events: u64,
    limit: Duration,
) -> anyhow::Result<()> {
    let started = Instant::now();
    let mut ticker = tokio::time::interval(Duration::from_millis(20));
    // Caught up too: a backlog is applied quietly and each partition ends with one net change per customer, which
    // is part of the work (and what the snapshot taken at the stop must include).
    while stats.events.load(Ordering::SeqCst) < events || !stats.caught_up.load(Ordering::SeqCst) {
        anyhow::ensure!(
            started.elapsed() < limit,
            "processor did not catch up within {limit:?}"
        );
        ticker.tick().await;
    }
    Ok(())
}

/// The number of latency samples when the processor first reports every partition caught up.
async fn samples_once_caught_up(stats: Arc<ProcessorStats>) -> usize {
    // Unbounded, as before: `wait_for` bounds the run, and it too waits for every partition caught up.
    let _ = live::until_live(&stats, Duration::MAX).await;
    stats.latency_samples()
}

/// Customers resident, the bytes their state occupies (entries, table overhead, heap and timers) and the timers'
/// share of it.
async fn state_size(registry: &Registry) -> (u64, u64, u64) {
    let measure = |core: &PartitionCore| {
        let timers = core.timers().heap_bytes() as u64;
        core.merchants()
            .fold((0u64, timers, timers), |(n, bytes, timers), m| {
                (n + m.len() as u64, bytes + m.state_bytes() as u64, timers)
            })
    };
    inspect_all(registry, measure)
        .await
        .into_iter()
        .fold((0, 0, 0), |(n, bytes, timers), (pn, pb, pt)| {
            (n + pn, bytes + pb, timers + pt)
        })
}
