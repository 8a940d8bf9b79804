//! `loyalnest-rfm demo`: the whole engine in one process with nothing to install. librdkafka's mock cluster is the
//! broker, Redis is used only when `REDIS_URL` is set and Postgres only when `DATABASE_URL` is set, and a synthetic
//! store posts signed Shopify webhooks through the real ingress at a gentle rate. Every few seconds it prints how
//! many events were processed and each demo shop's live segment sizes. Synthetic shoppers of the first shop keep
//! widgets open and answer the nudges of the A/B experiment the demo saves ([`shoppers`]); without `DATABASE_URL`
//! the experiment, the nudges' fates, the shoppers' reports and the conversions are kept in memory
//! (`experiments::memory`). Before the live store starts, each demo shop's year of order history is brought in
//! by the backfill from a local Admin API stand-in, as after an install.

mod shoppers;

use std::collections::BTreeMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use actors::{PartitionCore, SystemClock};
use chrono::Utc;
use serde_json::json;
use streams::MerchantId;

use crate::auth::mint;
use crate::backfill::Backfill;
use crate::configuration::Settings;
use crate::directory::{inspect_all, Registry};
use crate::mock_broker::MockBroker;
use crate::routes::dashboard::Assets;
use crate::shopify::hmac::sign;
use crate::shopify::standin::shop_data::{GeneratedShop, ShopSpec, CUSTOMER_ID_BASE};
use crate::shopify::standin::StandinOptions;
use crate::startup::Engine;
use crate::store::Store;

#[derive(Debug, Clone, clap::Args)]
pub struct DemoArgs {
    /// Webhooks per second from the synthetic store.
    #[arg(long, default_value_t = 20)]
    pub rate: u32,
    /// Customers per demo shop.
    #[arg(long, default_value_t = 200)]
    pub customers: u64,
    /// Demo shops.
    #[arg(long, default_value_t = 3)]
    pub shops: u64,
    /// Stop by itself after this many seconds (0: run until Ctrl-C).
    #[arg(long, default_value_t = 0)]
    pub seconds: u64,
    /// Seconds between status lines.
    #[arg(long, default_value_t = 2)]
    pub every: u64,
    /// Synthetic shoppers of the first shop holding widgets open (at most `--customers`).
    #[arg(long, default_value_t = 40)]
    pub shoppers: u64,
}

/// The first customer id the synthetic store orders for (the store's customers are `FIRST_CUSTOMER..+customers`):
/// the generated shop's, so live orders move customers whose history the backfill brought in.
const FIRST_CUSTOMER: u64 = CUSTOMER_ID_BASE + 1;

/// Settings for the demo: the environment where set, demo defaults elsewhere.
pub fn settings() -> anyhow::Result<Settings> {
    let mut settings = Settings::from_lookup(|k| match k {
        "SHOPIFY_API_SECRET" => Some(std::env::var(k).unwrap_or_else(|_| "demo-secret".to_owned())),
        "KAFKA_BROKERS" => Some("mock".to_owned()),
        // The demo signs App Proxy requests for anyone who reaches it: loopback unless asked otherwise.
        "HTTP_ADDR" => Some(std::env::var(k).unwrap_or_else(|_| "127.0.0.1:8080".to_owned())),
        _ => std::env::var(k).ok(),
    })?;
    settings.redis_enabled = std::env::var("REDIS_URL").is_ok();
    settings.kafka_create_topics = false;
    // The demo storefront page signs its own App Proxy requests; there is no Shopify in front of the demo.
    settings.widget_demo = true;
    // The demo's shoppers and a load generator all ask for widget tokens from loopback.
    if std::env::var("WIDGET_PROXY_RATE_PER_IP").is_err() {
        settings.widget_proxy_rate_per_ip = 0;
    }
    // The mock broker dies with the process, so a snapshot kept anywhere else would describe a log that is gone.
    settings.snapshot_store = Some(crate::snapshots::SnapshotBackend::Memory);
    Ok(settings)
}

pub async fn run(mut settings: Settings, args: &DemoArgs) -> anyhow::Result<()> {
    // Leaked on purpose: the broker must outlive every client in the process, including tasks still running
    // while the process exits; it goes away with the process.
    let broker: &'static MockBroker = Box::leak(Box::new(MockBroker::start(&settings.topics, 4)?));
    settings.kafka_brokers = broker.bootstrap_servers();
    let engine = Engine::start(&settings, Arc::new(SystemClock), std::future::pending()).await?;
    let (stats, registry) = (engine.stats.clone(), engine.registry.clone());
    let base = format!("http://{}:{}", settings.http_addr.ip(), engine.port);
    let shop = MerchantId::parse("demo-1.myshopify.com")?;
    let now = Utc::now().timestamp();
    let token = mint(
        &shop,
        &settings.shopify_api_key,
        settings.webhook_secrets.current(),
        now,
        86_400,
    );
    println!("LoyalNest RFM demo: ingress {base}/webhooks/shopify, metrics {base}/metrics");
    println!("Dashboard for {shop}: {base}/dashboard#token={token}");
    println!("Read API: curl -H 'Authorization: Bearer {token}' {base}/api/v1/rfm/segments");
    println!(
        "Shopper widget (customer {FIRST_CUSTOMER} of {shop}): {base}/widget/demo?shop={shop}&customer={FIRST_CUSTOMER}"
    );
    println!(
        "A/B results: curl -H 'Authorization: Bearer {token}' {base}/api/v1/rfm/nudges/ab-test"
    );
    if !Assets::default().has_chart_js() {
        println!("(Chart.js is not installed, so the dashboard shows its table only: run `npm ci --prefix web`.)");
    }
    history(&settings, args, &stats).await?;
    println!("Status every {}s:", args.every);
    // Saved before the first order, so every `new` nudge of the first shop is in the experiment.
    shoppers::start_experiment(&base, &token).await?;
    let run = uuid::Uuid::new_v4().simple().to_string();
    let front = shoppers::Storefront {
        base: base.clone(),
        shop: shop.clone(),
        secret: settings.webhook_secrets.current().to_vec(),
        run: run.clone(),
    };
    for customer in FIRST_CUSTOMER..FIRST_CUSTOMER + args.shoppers.min(args.customers) {
        actix_web::rt::spawn(shoppers::shopper(front.clone(), customer));
    }
    actix_web::rt::spawn(store(
        base,
        settings.webhook_secrets.current().to_vec(),
        args.clone(),
        run,
    ));
    let mut ticker = tokio::time::interval(Duration::from_secs(args.every.max(1)));
    let started = std::time::Instant::now();
    let stop = crate::startup::shutdown_signal();
    tokio::pin!(stop);
    loop {
        tokio::select! {
            _ = &mut stop => break,
            _ = ticker.tick() => {}
        }
        let counts = segment_counts(&registry).await;
        println!(
            "events={} segments={}",
            stats.events.load(Ordering::SeqCst),
            json!(counts)
        );
        if args.seconds > 0 && started.elapsed() >= Duration::from_secs(args.seconds) {
            break;
        }
    }
    Ok(())
}

/// The access token the demo's shops hold at the stand-in, as if installed.
/// The offline token the demo's stand-in holds for `shop`: one per shop, as Shopify issues them.
fn demo_token(shop: &MerchantId) -> String {
    format!("demo-offline-token-{shop}")
}

/// Each demo shop's year of order history, generated, served by the Admin API stand-in and brought in by the
/// backfill exactly as after an install, so every segment has members before the first live order.
async fn history(
    settings: &Settings,
    args: &DemoArgs,
    stats: &crate::processor::ProcessorStats,
) -> anyhow::Result<()> {
    let secret = String::from_utf8_lossy(settings.webhook_secrets.current()).into_owned();
    let options = StandinOptions::new(&settings.shopify_api_key, &secret);
    // Leaked like the broker: it serves until the process exits.
    let standin = Box::leak(Box::new(crate::shopify::standin::start(
        options,
        "127.0.0.1:0",
    )?));
    let now = Utc::now().timestamp();
    let shops: Vec<MerchantId> = (1..=args.shops.max(1))
        .map(|n| MerchantId::parse(&format!("demo-{n}.myshopify.com")))
        .collect::<Result<_, _>>()?;
    for (n, shop) in shops.iter().enumerate() {
        let spec = ShopSpec {
            customers: args.customers.max(1),
            orders: args.customers.max(1) * 3,
            now,
            seed: n as u64 + 1,
        };
        standin
            .state
            .bulk
            .add_shop(shop.as_str(), GeneratedShop::generate(spec));
        standin
            .state
            .register_token(shop.as_str(), &demo_token(shop))
            .map_err(anyhow::Error::msg)?;
    }
    let mut settings = settings.clone();
    settings.shopify_admin.base_url = standin.address.clone();
    settings.backfill_poll_interval = Duration::from_millis(100);
    let store = settings
        .database_url
        .as_deref()
        .map(Store::connect_lazy)
        .transpose()?;
    let sink = streams::SinkConfig::new(settings.kafka_brokers.clone()).build()?;
    let backfill = Backfill::from_settings(&settings, sink, store.as_ref());
    let mut produced = 0;
    for shop in &shops {
        let progress = backfill.run(shop, &demo_token(shop), &|_| {}).await?;
        println!(
            "Backfilled {shop} from the Shopify stand-in: {} orders, {} events",
            progress.lines_done, progress.events_produced
        );
        produced += progress.events_produced;
    }
    // The live store starts once the history is applied, so the first status line already shows it.
    let deadline = std::time::Instant::now() + Duration::from_secs(60);
    while stats.events.load(Ordering::SeqCst) < produced && std::time::Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    Ok(())
}

/// Live segment sizes per shop, read from the partition actors.
async fn segment_counts(registry: &Registry) -> BTreeMap<String, BTreeMap<String, u64>> {
    let read = |core: &PartitionCore| {
        core.merchants()
            .map(|m| {
                let counts = m.config.segments.iter().zip(m.segment_counts());
                let named = counts
                    .map(|(rule, n)| (rule.key.clone(), *n))
                    .filter(|(_, n)| *n > 0);
                (m.id.to_string(), named.collect::<BTreeMap<_, _>>())
            })
            .collect::<Vec<_>>()
    };
    inspect_all(registry, read)
        .await
        .into_iter()
        .flatten()
        .collect()
}

/// The synthetic store: signed `orders/create` webhooks for random customers, a refund now and then, posted
/// through the real ingress exactly as Shopify would.
async fn store(base: String, secret: Vec<u8>, args: DemoArgs, run: String) {
    let client = reqwest::Client::new();
    let mut ticker =
        tokio::time::interval(Duration::from_secs_f64(1.0 / f64::from(args.rate.max(1))));
    let mut seed: u64 = 0x1057_4e57;
    // Webhook ids are unique per run, so a Redis that remembers an earlier demo does not drop these as duplicates.
    for n in 1u64.. {
        ticker.tick().await;
        seed = seed
            .wrapping_mul(6_364_136_223_846_793_005)
            .wrapping_add(1_442_695_040_888_963_407);
        let shop = format!(
            "demo-{}.myshopify.com",
            (seed >> 20) % args.shops.max(1) + 1
        );
        // The backfilled customers: live orders move the customers whose history is already in.
        let customer = FIRST_CUSTOMER + (seed >> 33) % args.customers.max(1);
        let cents = 1_500 + (seed >> 40) % 30_000;
        let (topic, body) = if n % 10 == 0 {
            let refund = json!({"id": n, "order_id": n - 1, "created_at": Utc::now().to_rfc3339(),
                "transactions": [{"amount": "10.00", "kind": "refund", "status": "success", "currency": "USD"}]});
            ("refunds/create", refund)
        } else {
            let order = json!({"id": n, "customer": {"id": customer}, "created_at": Utc::now().to_rfc3339(),
                "total_price": format!("{}.{:02}", cents / 100, cents % 100), "currency": "USD",
                "financial_status": "paid", "test": false});
            ("orders/create", order)
        };
        let body = body.to_string();
        let request = client
            .post(format!("{base}/webhooks/shopify"))
            .header("X-Shopify-Topic", topic)
            .header("X-Shopify-Hmac-Sha256", sign(&secret, body.as_bytes()))
            .header("X-Shopify-Shop-Domain", shop)
            .header("X-Shopify-Webhook-Id", format!("demo-{run}-{n}"))
            .body(body);
        if let Err(e) = request.send().await {
            tracing::warn!(error = %e, "synthetic store could not post a webhook");
        }
    }
}
