//! Wiring: builds the HTTP server from settings. `Application::build` binds (port 0 works, for tests) and
//! `run_until_stopped` serves until the server is stopped or the process receives a signal.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};
use streams::SinkConfig;

use crate::configuration::Settings;
use crate::dedupe::DedupeConfig;
use crate::routes::{health, webhooks};
use crate::telemetry;

pub struct Application {
    port: u16,
    server: Server,
}

impl Application {
    pub fn build(settings: &Settings) -> anyhow::Result<Application> {
        let listener = TcpListener::bind(settings.http_addr)?;
        let port = listener.local_addr()?.port();
        let sink = SinkConfig {
            delivery_timeout: settings.kafka_delivery_timeout,
            ..SinkConfig::new(settings.kafka_brokers.clone())
        }
        .build()?;
        let dedupe = DedupeConfig {
            redis_url: settings.redis_url.clone(),
            ttl: settings.dedupe_ttl,
            timeout: settings.redis_timeout,
        };
        let dedupe = settings
            .dedupe_enabled
            .then(|| dedupe.build())
            .transpose()?;
        let ingress = web::Data::new(webhooks::IngressState {
            secrets: settings.webhook_secrets.clone(),
            sink,
            dedupe,
            topics: settings.topics.clone(),
            keys: settings.keys.clone(),
            max_body_bytes: settings.webhook_max_body_bytes,
        });
        if settings.keys.is_empty() {
            tracing::warn!(
                "ENCRYPTION_KEYS is not set: customer email and names are dropped at the ingress"
            );
        }
        let prometheus = web::Data::new(Arc::new(telemetry::prometheus()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(ingress.clone())
                .app_data(prometheus.clone())
                .route("/webhooks/shopify", web::post().to(webhooks::receive))
                .route("/health", web::get().to(health::health))
                .route("/ready", web::get().to(health::ready))
                .route("/metrics", web::get().to(health::metrics))
        })
        .listen(listener)?
        .run();
        Ok(Application { port, server })
    }

    pub fn port(&self) -> u16 {
        self.port
    }

    pub fn handle(&self) -> ServerHandle {
        self.server.handle()
    }

    pub async fn run_until_stopped(self) -> std::io::Result<()> {
        self.server.await
    }
}

/// Builds the stream processor from settings: Postgres (when `DATABASE_URL` is set, migrated first), the output
/// producer, and the consumer group member.
pub async fn build_processor(
    settings: &Settings,
    clock: std::sync::Arc<dyn actors::Clock>,
) -> anyhow::Result<crate::processor::Processor> {
    use crate::processor::{publish::Publisher, ProcessorConfig};
    let store = match &settings.database_url {
        Some(url) => {
            let store = crate::store::Store::connect_lazy(url)?;
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
    let sink = SinkConfig {
        linger: std::time::Duration::from_millis(5),
        ..SinkConfig::new(settings.kafka_brokers.clone())
    }
    .build()?;
    let publisher = Publisher {
        sink,
        topics: settings.topics.clone(),
        store,
    };
    ProcessorConfig::new(
        &settings.kafka_brokers,
        &settings.kafka_group_id,
        settings.topics.clone(),
    )
    .build(publisher, clock)
}
