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
use crate::live::Channels;
use crate::nudges::templates::TemplateStore;
use crate::processor::ProcessorStats;
use crate::read_model::ReadModel;
use crate::redis_link::{RedisLink, RedisTarget};
use crate::routes::{
    api, dashboard, gdpr, health, nudge_experiments, nudge_templates, stream, webhooks, widget,
};
use crate::runtime::checks;
use crate::runtime::readiness::Readiness;
use crate::shop_keys::ShopKeys;
use crate::store::Store;
use crate::telemetry;

mod workers;
pub use workers::{admin_client, build_live_processor, build_processor, build_sync_worker};

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
        let (data, backfills) = app_data(settings, shared, ingress, &readiness, limits)?;
        // actix counts connections per worker; the setting is for the whole instance.
        let workers = std::thread::available_parallelism().map_or(1, usize::from);
        let per_worker = settings.limits.max_connections.div_ceil(workers).max(1);
        let server = HttpServer::new(move || {
            App::new()
                .configure(|cfg| data.register(cfg))
                .configure(routes)
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
/// Builds what the handlers share: stores, services, and the install backfills this instance owns (resumed
/// here when it has a database).
fn app_data(
    settings: &Settings,
    shared: Shared,
    ingress: web::Data<webhooks::IngressState>,
    readiness: &Readiness,
    limits: Arc<crate::limits::Limits>,
) -> anyhow::Result<(AppData, Arc<crate::backfill::Backfills>)> {
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
    let rfm_configs = web::Data::new(config_service(settings, store.clone(), &ingress));
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
    let leases = store
        .as_ref()
        .map(|s| crate::backfill::lease::Leases::new(s.pool().clone(), settings.backfill_lease));
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
    let registry = shared.registry.clone();
    let reads = web::Data::new(read_state(
        settings,
        registry,
        shared.channels,
        store,
        limits,
    )?);
    let assets = web::Data::new(dashboard::Assets::default());
    let ready = web::Data::new(readiness.clone());
    let prometheus = web::Data::new(Arc::new(telemetry::prometheus()));
    telemetry::describe_metrics(&settings.topics);
    let data = AppData {
        ingress,
        reads,
        experiments,
        assets,
        ready,
        prometheus,
        widgets,
        templates,
        rfm_configs,
        install,
        previews,
        exports,
        history,
    };
    Ok((data, backfills))
}

/// Saved configurations, and the relay that sends what a save could not (its task runs until the process ends).
fn config_service(
    settings: &Settings,
    store: Option<Store>,
    ingress: &webhooks::IngressState,
) -> crate::merchant_config::ConfigService {
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
    crate::merchant_config::ConfigService { store, relay }
}

/// What the read API needs: the token verifier, live state or Postgres, dashboards' channels, limits.
fn read_state(
    settings: &Settings,
    registry: Option<Registry>,
    channels: Arc<Channels>,
    store: Option<Store>,
    limits: Arc<crate::limits::Limits>,
) -> anyhow::Result<api::ReadState> {
    Ok(api::ReadState {
        verifier: Verifier {
            api_key: settings.shopify_api_key.clone(),
            secrets: settings.webhook_secrets.clone(),
        },
        gdpr: store
            .clone()
            .map(|store| crate::gdpr::Gdpr::new(store, settings)),
        model: ReadModel::new(registry, store),
        channels,
        redis: settings
            .redis_enabled
            .then(|| RedisLink::new(&settings.redis_url, settings.redis_timeout))
            .transpose()?,
        redis_timeout: settings.redis_timeout,
        limits,
    })
}

/// What every worker's app shares, by type (a handler asks for its own `web::Data<T>`).
#[derive(Clone)]
struct AppData {
    ingress: web::Data<webhooks::IngressState>,
    reads: web::Data<api::ReadState>,
    experiments: web::Data<nudge_experiments::ExperimentState>,
    assets: web::Data<dashboard::Assets>,
    ready: web::Data<Readiness>,
    prometheus: web::Data<Arc<metrics_exporter_prometheus::PrometheusHandle>>,
    widgets: web::Data<crate::widget::WidgetState>,
    templates: web::Data<TemplateStore>,
    rfm_configs: web::Data<crate::merchant_config::ConfigService>,
    install: web::Data<crate::routes::shop_install::InstallState>,
    previews: web::Data<crate::preview::PreviewService>,
    exports: web::Data<crate::customer_list::ExportGate>,
    history: web::Data<crate::routes::history::HistoryState>,
}

impl AppData {
    fn register(&self, cfg: &mut web::ServiceConfig) {
        cfg.app_data(self.ingress.clone())
            .app_data(self.reads.clone())
            .app_data(self.experiments.clone())
            .app_data(self.assets.clone())
            .app_data(self.ready.clone())
            .app_data(self.prometheus.clone())
            .app_data(self.widgets.clone())
            .app_data(self.templates.clone())
            .app_data(self.rfm_configs.clone())
            .app_data(self.install.clone())
            .app_data(self.previews.clone())
            .app_data(self.exports.clone())
            .app_data(self.history.clone());
    }
}

/// Every route the HTTP side serves.
fn routes(cfg: &mut web::ServiceConfig) {
    cfg.configure(widget::routes)
        .configure(nudge_templates::configure)
        .configure(crate::routes::rfm_config::configure)
        .configure(crate::routes::shop_install::configure)
        .configure(crate::routes::rfm_preview::configure)
        .configure(crate::routes::rfm_lists::configure)
        .configure(crate::routes::rfm_movements::configure)
        .configure(crate::routes::settings_page::configure)
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
        .route("/metrics", web::get().to(health::metrics));
}

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
        // Every webhook waits for its own acknowledgement, so a linger is paid by each request at low concurrency
        // (2 ms: 340/s on one connection, 1,678/s without); under load librdkafka still batches what arrives while a
        // request is in flight (docs/PERFORMANCE.md, "The linger").
        linger: std::time::Duration::ZERO,
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
