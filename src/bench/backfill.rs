//! `loyalnest-rfm bench-backfill`: history on install, timed. A generated shop (default 50,000 customers and
//! 150,000 orders over a year) is served by the Admin API stand-in as a bulk operation's JSONL; the backfill reads
//! it by streaming and produces its events to the broker at `KAFKA_BROKERS` on fresh topics, while an in-process
//! processor applies them. The clock stops when the processor has applied every event and reports itself caught up,
//! i.e. when the final segments are in place.

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::{PartitionCore, SystemClock};
use serde::Serialize;
use streams::{MerchantId, SinkConfig, Topics};

use crate::backfill::{Backfill, ProgressStore};
use crate::configuration::Settings;
use crate::directory::inspect_all;
use crate::shopify::standin::shop_data::{GeneratedShop, ShopSpec};
use crate::shopify::standin::StandinOptions;

/// The shop's access token at the stand-in, registered as if installed.
const TOKEN: &str = "bench-token";

#[derive(Debug, Clone, clap::Args)]
pub struct BackfillBenchArgs {
    #[arg(long, default_value_t = 50_000)]
    pub customers: u64,
    #[arg(long, default_value_t = 150_000)]
    pub orders: u64,
    /// Partitions of each input topic (the shop's records all go to one: they are keyed by shop).
    #[arg(long, default_value_t = 4)]
    pub partitions: i32,
}

#[derive(Debug, Serialize)]
pub struct BackfillBenchReport {
    pub customers: u64,
    pub orders: u64,
    pub jsonl_lines: u64,
    pub events: u64,
    /// Bulk query started to the last batch acknowledged by the broker.
    pub backfill_seconds: f64,
    /// Bulk query started to every event applied and the processor caught up: JSONL to final segments.
    pub total_seconds: f64,
    pub customers_resident: u64,
    pub segments: BTreeMap<String, u64>,
}

pub async fn run(
    settings: &Settings,
    args: &BackfillBenchArgs,
) -> anyhow::Result<BackfillBenchReport> {
    let prefix = format!(
        "bfbench{}.",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut settings = settings.clone();
    settings.topics = Topics::with_prefix(&prefix);
    settings.kafka_group_id = format!("{prefix}group");
    streams::admin::ensure_topics(
        &settings.kafka_brokers,
        &settings.topics,
        args.partitions,
        1,
    )
    .await?;
    let shop = MerchantId::parse("bench-history.myshopify.com")?;
    let secret = String::from_utf8_lossy(settings.webhook_secrets.current()).into_owned();
    let options = StandinOptions::new(&settings.shopify_api_key, &secret);
    let standin = crate::shopify::standin::start(options, "127.0.0.1:0")?;
    let spec = ShopSpec {
        customers: args.customers,
        orders: args.orders,
        now: chrono::Utc::now().timestamp(),
        seed: 19,
    };
    standin
        .state
        .bulk
        .add_shop(shop.as_str(), GeneratedShop::generate(spec));
    standin
        .state
        .register_token(shop.as_str(), TOKEN)
        .map_err(anyhow::Error::msg)?;
    settings.shopify_admin.base_url = standin.address.clone();
    settings.backfill_poll_interval = Duration::from_millis(50);

    let processor = crate::startup::build_processor(&settings, Arc::new(SystemClock)).await?;
    let (stats, registry) = (processor.stats(), processor.registry());
    let (stop, stopped) = tokio::sync::oneshot::channel::<()>();
    let task = actix_web::rt::spawn(processor.run(async {
        let _ = stopped.await;
    }));

    let sink = SinkConfig::new(settings.kafka_brokers.clone()).build()?;
    let mut backfill = Backfill::from_settings(&settings, sink, None);
    backfill.progress = ProgressStore::Memory(Arc::default());
    let started = Instant::now();
    let progress = backfill.run(&shop, TOKEN, &|_| {}).await?;
    let backfill_seconds = started.elapsed().as_secs_f64();
    super::wait_for(&stats, progress.events_produced, Duration::from_secs(600)).await?;
    let total_seconds = started.elapsed().as_secs_f64();

    let read = |core: &PartitionCore| {
        core.merchants()
            .flat_map(|m| {
                let counts = m.config.segments.iter().zip(m.segment_counts());
                counts
                    .map(|(rule, n)| (rule.key.clone(), *n))
                    .collect::<Vec<_>>()
            })
            .collect::<Vec<_>>()
    };
    let mut segments = BTreeMap::new();
    for (key, n) in inspect_all(&registry, read).await.into_iter().flatten() {
        *segments.entry(key).or_insert(0) += n;
    }
    let _ = stop.send(());
    let _ = task.await;
    standin.stop().await;
    Ok(BackfillBenchReport {
        customers: args.customers,
        orders: args.orders,
        jsonl_lines: progress.lines_done,
        events: progress.events_produced,
        backfill_seconds,
        total_seconds,
        customers_resident: segments.values().sum(),
        segments,
    })
}
