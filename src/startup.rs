//! Wiring: builds the HTTP server and the stream processor from settings and connects them.
//!
//! `Application::build` binds (port 0 works, for tests) and serves the webhook ingress, the read API, the
//! dashboard and its socket. `build_processor` creates the consumer group member. `Engine::start` runs both in one
//! process, with the processor's live feed wired to the dashboards (through Redis when it is enabled, so
//! dashboards on other instances see these merchants too); `serve --role all`, the demo and the end-to-end tests
//! use it.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use streams::SinkConfig;

use crate::auth::Verifier;
use crate::configuration::Settings;
use crate::dedupe::DedupeConfig;
use crate::directory::Registry;
use crate::live::fanout::subscribe_forever;
use crate::live::{Channels, FrameSink, LiveConfig, LiveFeed};
use crate::nudges::templates::TemplateStore;
use crate::processor::ProcessorStats;
use crate::read_model::ReadModel;
use crate::redis_link::{RedisLink, RedisTarget};
use crate::routes::{
    api, dashboard, gdpr, health, nudge_experiments, nudge_templates, stream, webhooks, widget,
};
use crate::runtime::checks;
use crate::runtime::readiness::Readiness;
use crate::score_cache::ScoreCache;
use crate::shop_keys::ShopKeys;
use crate::shopify::admin::paced::PacedClient;
use crate::shopify::admin::throttle::CostThrottle;
use crate::shopify::admin::AdminClient;
use crate::snapshots::{PgSnapshots, SnapshotBackend, SnapshotStore};
use crate::store::Store;
use crate::sync::SyncWorker;
use crate::telemetry;

/// What the HTTP side shares with a processor in the same process, if there is one.
#[derive(Clone, Default)]
pub struct Shared {
    /// The processor's partition actors, for reads of merchants this instance owns.
    pub registry: Option<Registry>,
    pub channels: Arc<Channels>,
    /// The processor's running nudge experiments, so a save through this instance applies at once.
    pub plans: Option<actors::NudgePlans>,
    /// The processor's nudge desk, for the widgets this instance serves.
    pub nudges: Option<actors::nudges::NudgeDesk>,
    /// The processor's nudge ledger, so the routes and the processor keep one (the in-memory one especially).
    pub ledger: Option<crate::experiments::ledger::Ledger>,
    /// What `/ready` checks; the HTTP side adds its own conditions to those already there.
    pub readiness: Readiness,
}

pub struct Application {
    port: u16,
    server: Server,
    readiness: Readiness,
    backfills: Arc<crate::backfill::Backfills>,
}

impl Application {
    /// The HTTP side alone (`--role ingress`): reads come from Postgres, frames from Redis.
    pub fn build(settings: &Settings) -> anyhow::Result<Application> {
        let shared = Shared {
            nudges: crate::widget::standalone_desk(settings)?,
            ..Shared::default()
        };
        if settings.redis_enabled {
            let client = RedisTarget::open(&settings.redis_url)?;
            tokio::spawn(subscribe_forever(client, shared.channels.clone()));
        }
        Application::build_with(settings, shared)
    }

    pub fn build_with(settings: &Settings, shared: Shared) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.http_addr)?;
        // Listening again only resizes the accept queue, which `bind` left at std's 128.
        socket2::SockRef::from(&listener).listen(settings.limits.listen_backlog)?;
        let port = listener.local_addr()?.port();
        let limits = Arc::new(settings.limits.build());
        let ingress = web::Data::new(ingress_state(settings, limits.clone())?);
        let readiness = shared.readiness.clone();
        add_ingress_checks(settings, &readiness, &ingress)?;
        let store = settings
            .database_url
            .as_deref()
            .map(|url| Store::connect_with(url, &settings.postgres))
            .transpose()?;
        let ledger = shared.ledger.clone().or_else(|| {
            crate::experiments::ledger::ledger(store.as_ref(), false, settings.nudge_rules)
        });
        let experiments = web::Data::new(nudge_experiments::ExperimentState::new(
            ledger.clone(),
            shared.plans,
            settings.nudge_rules,
        ));
        let templates = web::Data::new(TemplateStore::new(store.clone()));
        let previews = web::Data::new(crate::preview::service(
            settings,
            shared.registry.clone(),
            store.clone(),
        )?);
        let relay = store.clone().map(|store| {
            Arc::new(crate::merchant_config::ConfigRelay::new(
                store,
                ingress.sink.clone(),
                settings.topics.rfm_config.clone(),
            ))
        });
        if let Some(relay) = &relay {
            tokio::spawn(relay.clone().run(settings.config_relay_interval));
        }
        let rfm_configs = web::Data::new(crate::merchant_config::ConfigService {
            store: store.clone(),
            relay,
        });
        let exports = web::Data::new(settings.exports.build());
        let widgets = web::Data::new(crate::widget::WidgetState::new(
            settings,
            shared.nudges.clone(),
            store.clone(),
            ledger,
            templates.get_ref().clone(),
        ));
        let history = web::Data::new(crate::routes::history::HistoryState::new(
            settings,
            ingress.sink.clone(),
            store.as_ref(),
        ));
        let leases = store.as_ref().map(|s| {
            crate::backfill::lease::Leases::new(s.pool().clone(), settings.backfill_lease)
        });
        let backfills = crate::backfill::Backfills::new(history.backfill.clone(), leases);
        backfills.resume_unfinished();
        let install = web::Data::new(crate::routes::shop_install::InstallState {
            admin: admin_client(settings),
            pool: store.as_ref().map(|s| s.pool().clone()),
            keys: settings.keys.clone(),
            client_id: settings.shopify_api_key.clone(),
            client_secret: String::from_utf8_lossy(settings.webhook_secrets.current()).into_owned(),
            backfill: Some(backfills.clone()),
        });
        let reads = web::Data::new(api::ReadState {
            verifier: Verifier {
                api_key: settings.shopify_api_key.clone(),
                secrets: settings.webhook_secrets.clone(),
            },
            gdpr: store
                .clone()
                .map(|store| crate::gdpr::Gdpr::new(store, settings)),
            model: ReadModel::new(shared.registry, store),
            channels: shared.channels,
            redis: settings
                .redis_enabled
                .then(|| RedisLink::new(&settings.redis_url, settings.redis_timeout))
                .transpose()?,
            redis_timeout: settings.redis_timeout,
            limits,
        });
        // actix counts connections per worker; the setting is for the whole instance.
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let per_worker = settings.limits.max_connections.div_ceil(workers).max(1);
        let assets = web::Data::new(dashboard::Assets::default());
        let ready = web::Data::new(readiness.clone());
        let prometheus = web::Data::new(Arc::new(telemetry::prometheus()));
        telemetry::describe_metrics(&settings.topics);
        let server = HttpServer::new(move || {
            App::new()
                .app_data(ingress.clone())
                .app_data(reads.clone())
                .app_data(experiments.clone())
                .app_data(assets.clone())
                .app_data(ready.clone())
                .app_data(prometheus.clone())
                .app_data(widgets.clone())
                .configure(widget::routes)
                .app_data(templates.clone())
                .configure(nudge_templates::configure)
                .app_data(rfm_configs.clone())
                .configure(crate::routes::rfm_config::configure)
                .app_data(install.clone())
                .configure(crate::routes::shop_install::configure)
                .app_data(previews.clone())
                .configure(crate::routes::rfm_preview::configure)
                .app_data(exports.clone())
                .configure(crate::routes::rfm_lists::configure)
                .configure(crate::routes::rfm_movements::configure)
                .configure(crate::routes::settings_page::configure)
                .app_data(history.clone())
                .configure(crate::routes::history::configure)
                .route("/webhooks/shopify", web::post().to(webhooks::receive))
                .route("/api/v1/rfm/segments", web::get().to(api::segments))
                .route("/api/v1/rfm/customers/{id}", web::get().to(api::customer))
                .route(
                    "/api/v1/rfm/customers/{id}/history",
                    web::get().to(api::history),
                )
                .route("/api/v1/rfm/churn-risk", web::get().to(api::churn_risk))
                .route("/api/v1/rfm/stream", web::get().to(stream::stream))
                .route(
                    "/api/v1/rfm/nudges/ab-test",
                    web::post().to(nudge_experiments::save_experiment),
                )
                .route(
                    "/api/v1/rfm/nudges/ab-test",
                    web::get().to(nudge_experiments::experiment_results),
                )
                .route("/api/v1/gdpr/requests", web::get().to(gdpr::list))
                .route("/api/v1/gdpr/requests/{id}", web::get().to(gdpr::one))
                .route("/dashboard", web::get().to(dashboard::page))
                .route("/dashboard/dashboard.js", web::get().to(dashboard::script))
                .route("/dashboard/dashboard.css", web::get().to(dashboard::style))
                .route(
                    "/dashboard/abtest.js",
                    web::get().to(dashboard::results_script),
                )
                .route(
                    "/dashboard/vendor/chart.umd.js",
                    web::get().to(dashboard::chart_js),
                )
                .route("/health", web::get().to(health::health))
                .route("/ready", web::get().to(health::ready))
                .route("/metrics", web::get().to(health::metrics))
        })
        .workers(workers)
        .max_connections(per_worker)
        // The process stops the server itself, after `/ready` has turned 503 (see `runtime`).
        .disable_signals()
        .shutdown_timeout(settings.shutdown.grace.as_secs())
        .listen(listener)?
        .run();
        Ok(Application {
            port,
            server,
            readiness,
            backfills,
        })
    }

    /// What this instance's `/ready` checks.
    pub fn readiness(&self) -> Readiness {
        self.readiness.clone()
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    /// The history backfills this instance runs; a stop must `shutdown` them (they are joined, not abandoned).
    pub fn backfills(&self) -> Arc<crate::backfill::Backfills> {
        self.backfills.clone()
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// The ingress is ready when its producer reaches a broker and, when Redis is used, Redis answers (webhook
/// dedupe needs it).
fn add_ingress_checks(
    settings: &Settings,
    readiness: &Readiness,
    ingress: &webhooks::IngressState,
) -> anyhow::Result<()> {
    let topic = settings.topics.orders_create.clone();
    readiness.add(checks::kafka_producer(ingress.sink.clone(), topic));
    if settings.redis_enabled {
        let link = crate::redis_link::RedisLink::new(&settings.redis_url, settings.redis_timeout)?;
        readiness.add(checks::redis(link));
    }
    Ok(())
}

fn ingress_state(
    settings: &Settings,
    limits: Arc<crate::limits::Limits>,
) -> anyhow::Result<webhooks::IngressState> {
    let sink = SinkConfig {
        delivery_timeout: settings.kafka_delivery_timeout,
        ..SinkConfig::new(settings.kafka_brokers.clone())
    }
    .build()?;
    let dedupe = DedupeConfig {
        redis_url: settings.redis_url.clone(),
        ttl: settings.dedupe_ttl,
        timeout: settings.redis_timeout,
        // A produce is given up after the delivery timeout; the margin covers the answer and clock steps.
        claim: settings.kafka_delivery_timeout + std::time::Duration::from_secs(2),
    };
    let dedupe = settings.redis_enabled.then(|| dedupe.build()).transpose()?;
    // Crypto-shredding needs somewhere to keep the shops' wrapped keys; without Postgres the configured key seals.
    let shop_keys = match (&settings.database_url, settings.keys.is_empty()) {
        (Some(url), false) => Some(ShopKeys::new(
            Store::connect_with(url, &settings.postgres)?,
            settings.keys.clone(),
        )),
        (None, false) => {
            tracing::warn!(
                "ENCRYPTION_KEYS is set but DATABASE_URL is not: personal data on Kafka is sealed under the \
                 configured key, not per shop, so shop/redact cannot crypto-shred it; set DATABASE_URL on the ingress"
            );
            None
        }
        _ => None,
    };
    if settings.keys.is_empty() {
        tracing::warn!(
            "ENCRYPTION_KEYS is not set: customer email and names are dropped at the ingress"
        );
    }
    Ok(webhooks::IngressState {
        secrets: settings.webhook_secrets.clone(),
        sink,
        dedupe,
        topics: settings.topics.clone(),
        keys: settings.keys.clone(),
        max_body_bytes: settings.webhook_max_body_bytes,
        limits,
        shop_keys,
        access: settings
            .database_url
            .as_deref()
            .map(|url| Store::connect_with(url, &settings.postgres).map(|s| s.pool().clone()))
            .transpose()?,
    })
}

/// Builds the stream processor from settings: Postgres (when `DATABASE_URL` is set, migrated first), the output
/// producer, and the consumer group member.
pub async fn build_processor(
    settings: &Settings,
    clock: std::sync::Arc<dyn actors::Clock>,
) -> anyhow::Result<crate::processor::Processor> {
    use crate::processor::{publish::Publisher, ProcessorConfig, SnapshotSettings};
    // The recorder first, so the families described here land in the exporter `/metrics` renders.
    drop(crate::telemetry::prometheus());
    crate::telemetry::describe_metrics(&settings.topics);
    let store = match &settings.database_url {
        Some(url) => {
            let store = Store::connect_with(url, &settings.postgres)?
                .with_attribution(settings.nudge_rules.attribution);
            store.migrate().await?;
            Some(store)
        }
        None => {
            tracing::warn!(
                "DATABASE_URL is not set: deltas and history are not written to Postgres"
            );
            None
        }
    };
    let sink = crate::processor::publish::output_sink(
        &settings.kafka_brokers,
        settings.processor_delivery_timeout,
    )
    .build()?;
    let cache = settings
        .redis_enabled
        .then(|| ScoreCache::new(&settings.redis_url, settings.redis_timeout))
        .transpose()?;
    let nudges = crate::widget::desk_config(settings).build(clock.clone());
    // Nudges and erasures go to every instance's desk, so a widget on any instance gets its customer's nudges.
    let relay = settings
        .redis_enabled
        .then(|| crate::widget::relay::NudgeRelay::start(settings, nudges.clone()))
        .transpose()?;
    let gdpr = store
        .clone()
        .map(|store| crate::gdpr::Gdpr::new(store, settings));
    // In memory only for the demo (`WIDGET_DEMO`) without Postgres: a real deployment without Postgres keeps no
    // experiments rather than ones each instance would see differently.
    let ledger = crate::experiments::ledger::ledger(
        store.as_ref(),
        settings.widget_demo,
        settings.nudge_rules,
    );
    let publisher = Publisher {
        sink,
        topics: settings.topics.clone(),
        gdpr,
        rows_order: Default::default(),
        store,
        cache,
        nudges: Some(nudges),
        relay,
        desk_turn: Default::default(),
        nudge_rules: settings.nudge_rules,
        ledger,
    };
    let experiments = publisher.store.clone();
    // In memory (the demo), snapshots serve a partition that comes back to this process, and offsets are never
    // committed, so a restart replays from the start.
    let store = snapshot_store(settings, publisher.store.as_ref())?;
    let processor = ProcessorConfig {
        snapshots: Some(SnapshotSettings {
            store,
            every: settings.snapshot_interval,
        }),
        ..ProcessorConfig::new(
            &settings.kafka_brokers,
            &settings.kafka_group_id,
            settings.topics.clone(),
        )
    }
    .with_session_timeout(settings.kafka_session_timeout)
    .with_group_instance_id(settings.kafka_group_instance_id.clone())
    .with_max_poll_interval(settings.kafka_max_poll_interval)
    .with_kafka_debug(settings.kafka_debug.clone())
    .build(publisher, clock)?;
    // Nudges fired before the experiments are known would be outside them, so they are loaded before the start.
    if let Some(store) = experiments {
        crate::experiments::plans::sync(&store, &processor.plans()).await?;
        let every = settings.nudge_rules.plan_refresh;
        crate::experiments::plans::spawn_refresh(store, &processor.plans(), every);
    }
    Ok(processor)
}

/// The processor with its live feed attached, as every role that consumes runs it (`all` and `processor`): frames
/// go through Redis when it is enabled, so dashboards served by any instance (an `ingress` one included) see the
/// merchants this one owns. Returns the channels local dashboards subscribe to.
pub async fn build_live_processor(
    settings: &Settings,
    clock: Arc<dyn actors::Clock>,
) -> anyhow::Result<(crate::processor::Processor, Arc<Channels>)> {
    let mut processor = build_processor(settings, clock).await?;
    let channels = Arc::new(Channels::default());
    let sink = if settings.redis_enabled {
        let client = RedisTarget::open(&settings.redis_url)?;
        tokio::spawn(subscribe_forever(client, channels.clone()));
        FrameSink::redis(
            &settings.redis_url,
            channels.clone(),
            settings.redis_timeout,
        )?
    } else {
        FrameSink::local(channels.clone())
    };
    let live = LiveConfig {
        min_interval: settings.live_frame_interval,
        ..LiveConfig::default()
    };
    let feed = LiveFeed::new(sink, live);
    processor.attach_live(feed.clone());
    tokio::spawn(feed.run(std::future::pending()));
    Ok((processor, channels))
}

/// The store `SNAPSHOT_STORE` names, or Postgres when there is a database, Redis when Redis is enabled, memory
/// otherwise.
fn snapshot_store(settings: &Settings, database: Option<&Store>) -> anyhow::Result<SnapshotStore> {
    let backend = settings.snapshot_store.unwrap_or(match database {
        Some(_) => SnapshotBackend::Postgres,
        None if settings.redis_enabled => SnapshotBackend::Redis,
        None => SnapshotBackend::Memory,
    });
    let group = &settings.kafka_group_id;
    Ok(match (backend, database) {
        (SnapshotBackend::Postgres, Some(db)) => {
            SnapshotStore::Postgres(PgSnapshots::new(db.pool().clone(), group))
        }
        (SnapshotBackend::Postgres, None) => {
            anyhow::bail!("SNAPSHOT_STORE=postgres needs DATABASE_URL")
        }
        (SnapshotBackend::Redis, _) => SnapshotStore::redis(
            &settings.redis_url,
            group,
            std::time::Duration::from_secs(10),
        )?,
        (SnapshotBackend::Memory, _) => SnapshotStore::memory(),
    })
}

/// The Admin API client every role shares: pinned version, paced by the plan's bucket until Shopify reports one.
pub fn admin_client(settings: &Settings) -> PacedClient {
    let throttle = Arc::new(CostThrottle::new(settings.shopify_throttle_plan));
    PacedClient::new(AdminClient::new(settings.shopify_admin.clone()), throttle)
}

/// The write-back worker (`--role sync`): Postgres (migrated), the sealed tokens' keys, its consumer group.
pub async fn build_sync_worker(settings: &Settings) -> anyhow::Result<SyncWorker> {
    let url = settings.database_url.as_deref().ok_or_else(|| {
        anyhow::anyhow!("the sync role needs DATABASE_URL (tokens and written versions)")
    })?;
    let store = Store::connect_with(url, &settings.postgres)?;
    store.migrate().await?;
    let topic = &settings.topics.rfm_updated;
    Ok(SyncWorker {
        consumer: crate::sync::consumer(&settings.kafka_brokers, &settings.sync, topic)?,
        brokers: settings.kafka_brokers.clone(),
        pool: store.pool().clone(),
        keys: settings.keys.clone(),
        admin: admin_client(settings),
        sink: SinkConfig::new(settings.kafka_brokers.clone()).build()?,
        topics: settings.topics.clone(),
        settings: settings.sync.clone(),
    })
}

/// Ingress, processor and dashboards in one process.
pub struct Engine {
    pub port: u16,
    pub stats: Arc<ProcessorStats>,
    pub registry: Registry,
    /// Fired nudges and the customer actors that deliver them (the widget socket's source).
    pub nudges: Option<actors::nudges::NudgeDesk>,
    pub server: ServerHandle,
    /// What `/ready` checks: the ingress's conditions and the processor's.
    pub readiness: Readiness,
    /// The history backfills this instance runs (see `Application::backfills`).
    pub backfills: Arc<crate::backfill::Backfills>,
    /// Resolves when the processor stops; an error means it needs a restart.
    pub processor: tokio::task::JoinHandle<Result<(), crate::processor::publish::PublishError>>,
}

impl Engine {
    /// Starts everything; the processor runs until `shutdown` resolves. Call from within an actix system.
    pub async fn start(
        settings: &Settings,
        clock: Arc<dyn actors::Clock>,
        shutdown: impl std::future::Future<Output = ()> + 'static,
    ) -> anyhow::Result<Engine> {
        let (processor, channels) = build_live_processor(settings, clock).await?;
        let (stats, registry, nudges) =
            (processor.stats(), processor.registry(), processor.nudges());
        let readiness = Readiness::default();
        add_processor_checks(settings, &readiness, &processor)?;
        let shared = Shared {
            registry: Some(registry.clone()),
            channels,
            plans: Some(processor.plans()),
            nudges: nudges.clone(),
            ledger: processor.ledger(),
            readiness: readiness.clone(),
        };
        let app = Application::build_with(settings, shared)?;
        let (port, server, backfills) = (app.port(), app.handle(), app.backfills());
        actix_web::rt::spawn(app.run_until_stopped());
        let processor = actix_web::rt::spawn(processor.run(shutdown));
        Ok(Engine {
            port,
            stats,
            registry,
            nudges,
            server,
            readiness,
            backfills,
            processor,
        })
    }
}

/// The processor is ready when it owns partitions and has restored them, and Redis and Postgres (those it is
/// configured with) answer.
pub fn add_processor_checks(
    settings: &Settings,
    readiness: &Readiness,
    processor: &crate::processor::Processor,
) -> anyhow::Result<()> {
    readiness.add(checks::partitions(processor.stats()));
    if settings.redis_enabled {
        let link = crate::redis_link::RedisLink::new(&settings.redis_url, settings.redis_timeout)?;
        readiness.add(checks::redis(link));
    }
    if let Some(store) = processor.store() {
        readiness.add(checks::postgres(store.pool().clone()));
    }
    Ok(())
}

/// Ctrl-C or SIGTERM (what orchestrators send): the processor then snapshots its partitions and commits before
/// exiting, so the next owner replays nothing.
pub use crate::runtime::shutdown_signal;
