//! `loyalnest-rfm bench-sync`: write-back throughput against the Admin API stand-in. Installs one shop through the
//! real token exchange, puts one `rfm.updated` record per customer on a fresh topic, then runs the sync worker
//! in-process until the stand-in holds every customer's metafields, and reports how close to the plan's bucket
//! it ran: points spent per second beyond the initial bucket, against the restore rate.

use std::time::{Duration, Instant};

use rdkafka::producer::{FutureProducer, FutureRecord};
use serde::Serialize;
use serde_json::json;
use streams::{MerchantId, Topics};

use crate::configuration::Settings;
use crate::shopify::admin::paced::MUTATION_COST;
use crate::shopify::admin::throttle::ThrottlePlan;
use crate::shopify::standin::{server, StandinOptions};
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct SyncBenchArgs {
    /// The stand-in's plan (and the client's assumption): standard, advanced or plus.
    #[arg(long, default_value = "standard")]
    pub plan: String,
    /// Customers to write (one change each, so none coalesce).
    #[arg(long, default_value_t = 4_000)]
    pub customers: u64,
}

#[derive(Debug, Serialize)]
pub struct SyncBenchReport {
    pub plan: String,
    pub customers: u64,
    pub seconds: f64,
    pub customers_per_second: f64,
    pub calls: u64,
    /// Bucket size and restore rate, points.
    pub bucket: f64,
    pub restore_rate: f64,
    /// Points spent per second beyond what the bucket absorbed (its deepest draw): the sustained rate.
    pub sustained_points_per_second: f64,
    /// `sustained_points_per_second / restore_rate`.
    pub utilisation: f64,
    /// The deepest the stand-in's bucket was drawn, points; and calls it had to refuse (should be 0).
    pub peak_used: f64,
    pub throttled: u64,
}

pub async fn run(settings: &Settings, args: &SyncBenchArgs) -> anyhow::Result<SyncBenchReport> {
    let plan: ThrottlePlan = args.plan.parse().map_err(anyhow::Error::msg)?;
    let secret = String::from_utf8_lossy(settings.webhook_secrets.current()).into_owned();
    let standin = server::start(
        StandinOptions {
            plan,
            ..StandinOptions::new(&settings.shopify_api_key, &secret)
        },
        "127.0.0.1:0",
    )?;
    let prefix = format!(
        "benchsync{}.",
        &uuid::Uuid::new_v4().simple().to_string()[..8]
    );
    let mut settings = settings.clone();
    settings.topics = Topics::with_prefix(&prefix);
    settings.sync.group_id = format!("{prefix}sync");
    settings.shopify_admin.base_url = standin.address.clone();
    settings.shopify_throttle_plan = plan;
    streams::admin::ensure_topics(&settings.kafka_brokers, &settings.topics, 1, 1).await?;
    let url = settings
        .database_url
        .clone()
        .ok_or_else(|| anyhow::anyhow!("bench-sync needs DATABASE_URL"))?;
    let store = Store::connect_lazy(&url)?;
    store.migrate().await?;
    let shop = MerchantId::parse(&format!("{}.myshopify.com", prefix.trim_end_matches('.')))?;
    let now = chrono::Utc::now().timestamp();
    let session = crate::auth::mint(
        &shop,
        &settings.shopify_api_key,
        secret.as_bytes(),
        now,
        300,
    );
    let admin = crate::startup::admin_client(&settings);
    let app = (settings.shopify_api_key.as_str(), secret.as_str());
    crate::shopify::access::install(&admin, store.pool(), &settings.keys, &shop, &session, app)
        .await?;
    produce(&settings, &shop, args.customers).await?;

    let worker = crate::startup::build_sync_worker(&settings).await?;
    let started = Instant::now();
    let running = tokio::spawn(worker.run(std::future::pending()));
    // The definitions' three calls came before; only the metafield writes are timed.
    let calls_before = standin.state.count(&standin.state.counters.calls);
    while (standin.state.customers_written(shop.as_str()) as u64) < args.customers {
        anyhow::ensure!(!running.is_finished(), "the sync worker stopped");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let seconds = started.elapsed().as_secs_f64();
    running.abort();
    let calls = standin.state.count(&standin.state.counters.calls) - calls_before;
    let (peak_used, bucket) = standin.state.peak_used(shop.as_str()).unwrap_or_default();
    let sustained = ((calls as f64 * MUTATION_COST) - peak_used).max(0.0) / seconds;
    standin.handle.stop(false).await;
    Ok(SyncBenchReport {
        plan: args.plan.clone(),
        customers: args.customers,
        seconds,
        customers_per_second: args.customers as f64 / seconds,
        calls,
        bucket,
        restore_rate: plan.restore_rate(),
        sustained_points_per_second: sustained,
        utilisation: sustained / plan.restore_rate(),
        peak_used,
        throttled: standin.state.count(&standin.state.counters.throttled),
    })
}

async fn produce(settings: &Settings, shop: &MerchantId, customers: u64) -> anyhow::Result<()> {
    let producer: FutureProducer = rdkafka::ClientConfig::new()
        .set("bootstrap.servers", &settings.kafka_brokers)
        .set("linger.ms", "20")
        .set("queue.buffering.max.messages", "1000000")
        .create()?;
    let mut waiting = Vec::new();
    for customer in 1..=customers {
        let payload = json!({
            "event_id": format!("rfm.updated:{shop}:{customer}:1"), "schema_version": 1,
            "merchant_id": shop.as_str(), "customer_id": customer, "version": 1,
            "segment": {"from": "other", "to": "loyal"},
            "score": {"recency": 3, "frequency": 3, "monetary": 3, "score": 3.0},
            "lifecycle_stage": "active", "occurred_at": chrono::Utc::now(), "trace_id": "bench",
        })
        .to_string();
        let record = FutureRecord::to(&settings.topics.rfm_updated)
            .key(shop.as_str())
            .payload(&payload);
        waiting.push(producer.send_result(record).map_err(|(e, _)| e)?);
    }
    for delivery in waiting {
        delivery
            .await
            .map_err(|_| anyhow::anyhow!("producer cancelled"))?
            .map_err(|(e, _)| e)?;
    }
    Ok(())
}
