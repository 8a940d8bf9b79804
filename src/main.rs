//! The `loyalnest-rfm` command line: a thin layer that parses arguments and hands over to the library.

use anyhow::Context;
use clap::{Parser, Subcommand, ValueEnum};
use std::sync::Arc;

use actors::SystemClock;
use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::mock_broker;
use loyalnest_rfm::probes::ProbeServer;
use loyalnest_rfm::runtime::{self, readiness::Readiness, Stop};
use loyalnest_rfm::startup::{self, Application, Engine};
use loyalnest_rfm::store::Store;
use loyalnest_rfm::telemetry;

/// mimalloc rather than glibc's allocator: the engine allocates and frees many small records (Kafka records,
/// decoded events, outputs) across threads, and glibc's malloc and free were about a fifth of the pipeline
/// benchmark's CPU profile (docs/PERFORMANCE.md). Wrapped so freed memory is wiped: personal data must not outlive
/// the request that carried it in freed heap blocks (`ZERO_FREED_MEMORY=false` turns that off).
#[global_allocator]
static ALLOCATOR: loyalnest_rfm::zeroing::ZeroingAllocator =
    loyalnest_rfm::zeroing::ZeroingAllocator::new();

#[derive(Parser)]
#[command(
    name = "loyalnest-rfm",
    version,
    about = "Real-time RFM segmentation for Shopify loyalty programs"
)]
struct Cli {
    #[command(subcommand)]
    command: Command,
}

#[derive(Subcommand)]
enum Command {
    /// Run the service, configured by environment variables (see README).
    Serve {
        /// Which parts to run in this process.
        #[arg(long, value_enum, default_value_t = Role::All)]
        role: Role,
    },
    /// Everything embedded: mock Kafka cluster, processor, ingress and a synthetic store posting signed webhooks.
    Demo(loyalnest_rfm::demo::DemoArgs),
    /// Apply the Postgres migrations in `migrations/` to `DATABASE_URL`.
    Migrate,
    /// Re-inject the records of the dead-letter topic into the topics they came from, then exit.
    ReplayDlq {
        /// Consumer group that remembers what was already replayed.
        #[arg(long, default_value = "loyalnest-rfm-dlq-replay")]
        group: String,
    },
    /// After a key rotation: re-seal everything stored under an older key of `ENCRYPTION_KEYS` under the newest,
    /// in batches, then print a report. Resumable: run it again after an interruption.
    Reseal {
        /// Rows per batch and table.
        #[arg(long, default_value_t = 500)]
        batch: i64,
        /// Pause between batches, in milliseconds, to leave room for live traffic.
        #[arg(long, default_value_t = 50)]
        pause_ms: u64,
    },
    /// Print a development session token for a shop (HS256 with `SHOPIFY_API_SECRET`, audience
    /// `SHOPIFY_API_KEY`), for the read API, the dashboard socket and k6.
    Token {
        /// The shop, as `name.myshopify.com`.
        #[arg(long)]
        shop: String,
        /// Lifetime in seconds.
        #[arg(long, default_value_t = 3600)]
        ttl: i64,
    },
    /// The pipeline benchmark: a synthetic stream through the broker at `KAFKA_BROKERS` into an in-process
    /// processor; prints one JSON report.
    Bench(loyalnest_rfm::bench::BenchArgs),
    /// Write-back throughput against an in-process Admin API stand-in (needs `DATABASE_URL`, `ENCRYPTION_KEYS`);
    /// prints one JSON report.
    BenchSync(loyalnest_rfm::bench::sync::SyncBenchArgs),
    /// Run the local Shopify Admin API stand-in (token exchange, metafields, bulk operations over generated shops,
    /// one cost bucket per shop) for by-hand use; `shopify-bulk-standin` is an older name of it.
    #[command(alias = "shopify-bulk-standin")]
    ShopifyStandin(loyalnest_rfm::history_cli::StandinArgs),
    /// Bring a shop's Shopify order history into the engine (a bulk operation over its orders), with a progress
    /// bar; continues an interrupted run.
    Backfill(loyalnest_rfm::history_cli::BackfillArgs),
    /// Import points balances from a Smile.io or LoyaltyLion customer export (CSV).
    Import(loyalnest_rfm::history_cli::ImportArgs),
    /// The backfill benchmark: a generated shop's JSONL through the stand-in, the backfill and an in-process
    /// processor to final segments; prints one JSON report.
    BenchBackfill(loyalnest_rfm::bench::backfill::BackfillBenchArgs),
}

#[derive(Clone, Copy, PartialEq, Eq, ValueEnum)]
enum Role {
    /// The webhook ingress only.
    Ingress,
    /// The stream processor (consumer group member).
    Processor,
    /// The Shopify write-back worker (its own consumer group on `rfm.updated`).
    Sync,
    /// Ingress, processor and (with `DATABASE_URL`) the write-back worker in one process.
    All,
}

fn main() -> anyhow::Result<()> {
    // Before the runtime starts any thread (see `memory`).
    let lean = loyalnest_rfm::memory::keep_lean();
    actix_web::rt::System::new().block_on(run(lean))
}

async fn run(lean: loyalnest_rfm::memory::Applied) -> anyhow::Result<()> {
    let wipe = std::env::var("ZERO_FREED_MEMORY").map_or(true, |v| v.trim() != "false");
    ALLOCATOR.set_enabled(wipe);
    telemetry::init_tracing();
    tracing::debug!(
        huge_pages_off = lean.huge_pages_off,
        one_arena = lean.one_arena,
        fixed_thresholds = lean.fixed_thresholds,
        "memory settings"
    );
    let cli = Cli::parse();
    match cli.command {
        Command::Serve { role } => {
            let served = serve(role).await;
            // Spans still batched go out before the process ends.
            loyalnest_rfm::otel::shutdown();
            served
        }
        Command::Migrate => migrate().await,
        Command::Demo(args) => {
            loyalnest_rfm::demo::run(loyalnest_rfm::demo::settings()?, &args).await
        }
        Command::ReplayDlq { group } => {
            let settings = Settings::from_env()?;
            install_client_props(&settings)?;
            let sink = streams::SinkConfig::new(settings.kafka_brokers.clone()).build()?;
            let idle = std::time::Duration::from_secs(3);
            let report = streams::replay::replay_dlq(
                &settings.kafka_brokers,
                &group,
                &settings.topics,
                &sink,
                idle,
            )
            .await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Reseal { batch, pause_ms } => {
            let settings =
                Settings::from_env().context("reading configuration from the environment")?;
            let url = settings
                .database_url
                .as_deref()
                .context("DATABASE_URL is required for reseal")?;
            let store = Store::connect_with(url, &settings.postgres)?;
            store.migrate().await.context("applying migrations")?;
            let report = loyalnest_rfm::reseal::Resealer {
                pool: store.pool(),
                keys: &settings.keys,
                batch: batch.max(1),
                pause: std::time::Duration::from_millis(pause_ms),
            }
            .run()
            .await?;
            println!("{}", serde_json::to_string(&report)?);
            Ok(())
        }
        Command::Token { shop, ttl } => {
            let settings = loyalnest_rfm::demo::settings()?;
            let shop = streams::MerchantId::parse(&shop)?;
            let now = chrono::Utc::now().timestamp();
            let secret = settings.webhook_secrets.current();
            println!(
                "{}",
                loyalnest_rfm::auth::mint(&shop, &settings.shopify_api_key, secret, now, ttl)
            );
            Ok(())
        }
        Command::BenchSync(args) => {
            let settings = Settings::from_env()?;
            install_client_props(&settings)?;
            let report = loyalnest_rfm::bench::sync::run(&settings, &args).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::ShopifyStandin(args) => {
            let settings = Settings::from_env()?;
            loyalnest_rfm::history_cli::standin(&settings, &args).await
        }
        Command::Backfill(args) => loyalnest_rfm::history_cli::backfill(&args).await,
        Command::Import(args) => loyalnest_rfm::history_cli::import(&args).await,
        Command::BenchBackfill(args) => {
            let settings = Settings::from_lookup(|k| match k {
                "SHOPIFY_API_SECRET" => {
                    Some(std::env::var(k).unwrap_or_else(|_| "bench".to_owned()))
                }
                _ => std::env::var(k).ok(),
            })?;
            install_client_props(&settings)?;
            let report = loyalnest_rfm::bench::backfill::run(&settings, &args).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
        Command::Bench(args) => {
            let settings = Settings::from_lookup(|k| match k {
                "SHOPIFY_API_SECRET" => {
                    Some(std::env::var(k).unwrap_or_else(|_| "bench".to_owned()))
                }
                _ => std::env::var(k).ok(),
            })?;
            install_client_props(&settings)?;
            let report = loyalnest_rfm::bench::run(&settings, &args).await?;
            println!("{}", serde_json::to_string_pretty(&report)?);
            Ok(())
        }
    }
}

async fn migrate() -> anyhow::Result<()> {
    let url = std::env::var("DATABASE_URL").context("DATABASE_URL is required for migrate")?;
    let store = Store::connect_lazy(&url)?;
    store.migrate().await.context("applying migrations")?;
    tracing::info!("migrations applied");
    Ok(())
}

/// Installs the `KAFKA_CONFIG_*` pass-through properties for every client this process creates; the benchmarks
/// take them too, so a figure measured with a broker-specific setting is the service's with that setting.
fn install_client_props(settings: &Settings) -> anyhow::Result<()> {
    streams::client_props::install(settings.kafka_client_props.clone())
        .context("KAFKA_CONFIG_* (librdkafka properties)")
}

async fn serve(role: Role) -> anyhow::Result<()> {
    let mut settings =
        Settings::from_env().context("reading configuration from the environment")?;
    install_client_props(&settings)?;
    // Kept alive until `serve` returns: the mock broker stops when dropped.
    let _mock = if mock_broker::is_mock(&settings.kafka_brokers) {
        let broker = mock_broker::MockBroker::start(&settings.topics, settings.kafka_partitions)?;
        settings.kafka_brokers = broker.bootstrap_servers();
        tracing::warn!(brokers = %settings.kafka_brokers, "using the in-process mock Kafka cluster: nothing is durable");
        settings.kafka_create_topics = false;
        Some(broker)
    } else {
        None
    };
    if settings.kafka_create_topics {
        let (partitions, replicas) = (settings.kafka_partitions, settings.kafka_replication);
        streams::admin::ensure_topics(
            &settings.kafka_brokers,
            &settings.topics,
            partitions,
            replicas,
        )
        .await
        .context("creating Kafka topics (set KAFKA_CREATE_TOPICS=false to skip)")?;
    }
    let stop = Stop::default();
    let (work, readiness) = match role {
        Role::All => run_all(&settings, &stop).await?,
        Role::Processor => run_processor(&settings, &stop).await?,
        Role::Ingress => run_ingress(&settings, &stop)?,
        Role::Sync => run_sync(&settings, &stop).await?,
    };
    tokio::spawn(runtime::stop_on_signal(
        stop.clone(),
        readiness,
        settings.shutdown.delay,
    ));
    match stop.bounded(settings.shutdown.grace, work).await {
        Ok(result) => {
            result?;
            tracing::info!("stopped");
            Ok(())
        }
        Err(overrun) => {
            // Whatever is still running (a snapshot write, a commit) is abandoned: the next owner restores from
            // the previous snapshot. Exiting here beats being killed mid-write by the orchestrator.
            tracing::error!(error = %overrun, "exiting before the stop finished");
            std::process::exit(1);
        }
    }
}

type Work = std::pin::Pin<Box<dyn std::future::Future<Output = anyhow::Result<()>>>>;

/// Ingress, processor and dashboards in one process (and the Shopify write-back when there is a database, since
/// without one there are no tokens to write with): the processor stops first (hand-over snapshot and commit), then
/// the write-back finishes its batch, then the HTTP server.
async fn run_all(settings: &Settings, stop: &Stop) -> anyhow::Result<(Work, Readiness)> {
    let sync = match settings.database_url {
        Some(_) => Some(tokio::spawn(
            startup::build_sync_worker(settings)
                .await?
                .run(stop.stopping()),
        )),
        None => None,
    };
    let engine = Engine::start(settings, Arc::new(SystemClock), stop.stopping()).await?;
    tracing::info!(port = engine.port, brokers = %settings.kafka_brokers, group = %settings.kafka_group_id, "ingress, processor and dashboards running");
    let readiness = engine.readiness.clone();
    let (stop, ready) = (stop.clone(), readiness.clone());
    let work = async move {
        let outcome = engine.processor.await;
        // However the processor ended (a stop, or an error that needs a restart), the write-back stops with it,
        // so the process exits rather than serving a `/ready` of an instance that no longer processes.
        stop.begin(&ready, std::time::Duration::ZERO).await;
        if let Some(sync) = sync {
            if let Err(e) = sync.await? {
                tracing::error!(error = %e, "the Shopify write-back worker stopped");
            }
        }
        engine.backfills.shutdown().await;
        engine.server.stop(true).await;
        outcome?.context("processor failed")
    };
    Ok((Box::pin(work), readiness))
}

/// The Shopify write-back worker with the probe routes on `HTTP_ADDR`.
async fn run_sync(settings: &Settings, stop: &Stop) -> anyhow::Result<(Work, Readiness)> {
    let worker = startup::build_sync_worker(settings).await?;
    let readiness = Readiness::default();
    readiness.add(runtime::checks::postgres(worker.pool.clone()));
    let probes = ProbeServer::build(settings, readiness.clone()).context("binding HTTP_ADDR")?;
    tracing::info!(group = %settings.sync.group_id, port = probes.port(), "Shopify write-back consuming");
    let server = probes.handle();
    tokio::spawn(probes.run_until_stopped());
    let stopping = stop.stopping();
    let work = async move {
        let outcome = worker.run(stopping).await;
        server.stop(true).await;
        outcome.context("write-back worker failed")
    };
    Ok((Box::pin(work), readiness))
}

/// The processor with the probe routes on `HTTP_ADDR`.
async fn run_processor(settings: &Settings, stop: &Stop) -> anyhow::Result<(Work, Readiness)> {
    let (processor, _channels) =
        startup::build_live_processor(settings, Arc::new(SystemClock)).await?;
    let readiness = Readiness::default();
    startup::add_processor_checks(settings, &readiness, &processor)?;
    let probes = ProbeServer::build(settings, readiness.clone()).context("binding HTTP_ADDR")?;
    tracing::info!(group = %settings.kafka_group_id, port = probes.port(), "processor consuming");
    let server = probes.handle();
    tokio::spawn(probes.run_until_stopped());
    let stopping = stop.stopping();
    let work = async move {
        let outcome = processor.run(stopping).await;
        server.stop(true).await;
        outcome.context("processor failed")
    };
    Ok((Box::pin(work), readiness))
}

/// The HTTP side alone: on a stop it refuses new connections and finishes the requests it has.
fn run_ingress(settings: &Settings, stop: &Stop) -> anyhow::Result<(Work, Readiness)> {
    let app = Application::build(settings).context("starting the HTTP server")?;
    tracing::info!(port = app.port(), brokers = %settings.kafka_brokers, "ingress listening");
    let (readiness, server, backfills) = (app.readiness(), app.handle(), app.backfills());
    let stopping = stop.stopping();
    tokio::spawn(async move {
        stopping.await;
        // Backfills pause at their last acknowledged batch and give their leases up for the next instance; the
        // server (and so `work`) ends only after they were joined.
        backfills.shutdown().await;
        server.stop(true).await;
    });
    let work = async move { app.run_until_stopped().await.context("HTTP server failed") };
    Ok((Box::pin(work), readiness))
}
