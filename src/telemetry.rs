//! Logging and metrics set-up, and the ingress's internal events.
//!
//! Each internal event owns both its log line and its metric, so what an SRE greps for and what Prometheus counts
//! can never drift apart. Events never carry tokens, secrets or personal data.

use std::sync::OnceLock;

use metrics_exporter_prometheus::{PrometheusBuilder, PrometheusHandle};
use tracing_subscriber::EnvFilter;

/// Logs to stderr: JSON when `LOG_FORMAT=json`, human-readable otherwise; level from `RUST_LOG` (default `info`).
/// Spans also go to an OTLP collector when `OTEL_EXPORTER_OTLP_ENDPOINT` is set (see `otel`).
pub fn init_tracing() {
    use tracing_subscriber::layer::SubscriberExt;
    use tracing_subscriber::util::SubscriberInitExt;
    use tracing_subscriber::Layer;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt::layer()
        .with_target(false)
        // Logs go to stderr so commands that print a result (`bench`) keep stdout clean.
        .with_writer(std::io::stderr);
    let fmt = if std::env::var("LOG_FORMAT").is_ok_and(|v| v == "json") {
        fmt.json().boxed()
    } else {
        fmt.boxed()
    };
    let (otel, otel_error) = match crate::otel::layer() {
        Ok(layer) => (layer, None),
        Err(e) => (None, Some(e)),
    };
    let result = tracing_subscriber::registry()
        .with(fmt)
        .with(otel)
        .with(filter)
        .try_init();
    // A second init (tests start several apps in one process) keeps the first subscriber.
    drop(result);
    if let Some(e) = otel_error {
        tracing::error!(error = %e, "OTLP export not started; traces stay in the Kafka headers only");
    }
}

/// The process-wide Prometheus recorder; installed once, shared by every app started in this process.
pub fn prometheus() -> PrometheusHandle {
    static HANDLE: OnceLock<PrometheusHandle> = OnceLock::new();
    HANDLE
        .get_or_init(|| {
            const BUCKETS: &[f64] = &[
                0.0005, 0.001, 0.0025, 0.005, 0.01, 0.02, 0.05, 0.1, 0.25, 0.5, 1.0, 2.5, 5.0,
            ];
            let builder = PrometheusBuilder::new();
            // Fixed buckets give real histograms (p99 in Grafana); only an empty list is rejected.
            let builder = builder
                .set_buckets(BUCKETS)
                .unwrap_or_else(|_| PrometheusBuilder::new());
            match builder.install_recorder() {
                Ok(handle) => handle,
                // Another recorder is installed (an embedding process); export ours without installing it.
                Err(_) => PrometheusBuilder::new().build_recorder().handle(),
            }
        })
        .clone()
}

/// Describes every metric family and creates the series known at start (see `streams::metric_names`), so
/// `/metrics` lists them before the first event. Idempotent: counters are only incremented by zero.
pub fn describe_metrics(topics: &streams::Topics) {
    use streams::metric_names as names;
    let inputs = topics.inputs();
    let builtin = functions::RfmConfig::default();
    let segments: Vec<&str> = builtin.segments.iter().map(|s| s.key.as_str()).collect();
    names::describe_all(names::Known {
        input_topics: &inputs,
        segments: &segments,
    });
    let topics = crate::shopify::normalize::WebhookTopic::ALL.map(|t| t.as_str());
    for topic in topics.into_iter().chain(["other"]) {
        metrics::counter!(names::INGRESS_WEBHOOKS, "topic" => topic, "outcome" => "accepted")
            .increment(0);
    }
}

pub mod events {
    //! The ingress's internal events.

    use std::time::Duration;

    use streams::metric_names as names;

    /// A webhook was answered; one per request.
    /// `topic` is `'static` so only a parsed topic name (or "other") can become a label, never a raw header.
    pub struct WebhookHandled {
        pub topic: &'static str,
        pub outcome: &'static str,
        pub status: u16,
        pub elapsed: Duration,
    }

    impl WebhookHandled {
        pub fn emit(&self) {
            tracing::debug!(
                topic = self.topic,
                outcome = self.outcome,
                status = self.status,
                elapsed_ms = self.elapsed.as_secs_f64() * 1e3,
                "webhook handled"
            );
            metrics::counter!(names::INGRESS_WEBHOOKS, "topic" => self.topic, "outcome" => self.outcome)
                .increment(1);
            metrics::histogram!(names::INGRESS_WEBHOOK_DURATION, "outcome" => self.outcome)
                .record(self.elapsed.as_secs_f64());
        }
    }

    /// Redis could not be asked or told about a webhook id; we went on without dedupe.
    pub struct DedupeUnavailable<'a> {
        pub operation: &'static str,
        pub error: &'a dyn std::fmt::Display,
    }

    impl DedupeUnavailable<'_> {
        pub fn emit(&self) {
            tracing::warn!(operation = self.operation, error = %self.error,
                "webhook dedupe unavailable; continuing without it");
            names::error("ingress", "dedupe_unavailable");
        }
    }

    /// Kafka did not acknowledge in time; the webhook was answered 503 so Shopify retries.
    pub struct ProduceFailed<'a> {
        pub topic: &'a str,
        pub error: &'a dyn std::fmt::Display,
    }

    impl ProduceFailed<'_> {
        pub fn emit(&self) {
            tracing::error!(topic = self.topic, error = %self.error, "event not acknowledged by Kafka; answering 503");
            metrics::counter!(names::INGRESS_PRODUCE_ERRORS).increment(1);
            names::error("ingress", "produce");
        }
    }
}
