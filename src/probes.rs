//! The HTTP server of roles without the public API (`serve --role processor`): `/health`, `/ready` and
//! `/metrics` only, on `HTTP_ADDR`, so probes and Prometheus see a processor as they see an ingress.

use std::net::TcpListener;
use std::sync::Arc;

use actix_web::dev::{Server, ServerHandle};
use actix_web::{web, App, HttpServer};

use crate::configuration::Settings;
use crate::routes::health;
use crate::runtime::readiness::Readiness;
use crate::telemetry;

pub struct ProbeServer {
    port: u16,
    server: Server,
}

impl ProbeServer {
    /// Binds `HTTP_ADDR` (port 0 works, for tests) and serves the three routes. Signals are left to the caller,
    /// which turns `/ready` to 503 before it stops the server (see `runtime`).
    pub fn build(settings: &Settings, readiness: Readiness) -> std::io::Result<ProbeServer> {
        let listener = TcpListener::bind(settings.http_addr)?;
        let port = listener.local_addr()?.port();
        let readiness = web::Data::new(readiness);
        let prometheus = web::Data::new(Arc::new(telemetry::prometheus()));
        let server = HttpServer::new(move || {
            App::new()
                .app_data(readiness.clone())
                .app_data(prometheus.clone())
                .route("/health", web::get().to(health::health))
                .route("/ready", web::get().to(health::ready))
                .route("/metrics", web::get().to(health::metrics))
        })
        // Probes and one scraper: no need for a worker per core next to the processor's threads.
        .workers(1)
        .disable_signals()
        .shutdown_timeout(settings.shutdown.grace.as_secs())
        .listen(listener)?
        .run();
        Ok(ProbeServer { port, server })
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
