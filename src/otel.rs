//! Optional OTLP trace export, the span the ingress opens per webhook so an exported trace and the
//! `traceparent` carried on Kafka agree, and the processor's spans that continue those traces.
//!
//! Off unless `OTEL_EXPORTER_OTLP_ENDPOINT` is set: then spans go over OTLP/HTTP (protobuf) to
//! `$OTEL_EXPORTER_OTLP_ENDPOINT/v1/traces` (or `OTEL_EXPORTER_OTLP_TRACES_ENDPOINT`), batched on the SDK's own
//! thread. Unset, no exporter, thread or connection exists, the ingress makes its span ids itself and the processor
//! opens no span.

use std::sync::OnceLock;

use opentelemetry::trace::{TraceContextExt, TracerProvider as _};
use opentelemetry_sdk::trace::SdkTracerProvider;
use streams::traceparent::TraceParent;
use tracing_opentelemetry::OpenTelemetrySpanExt;

/// The setting that switches export on.
pub const ENDPOINT: &str = "OTEL_EXPORTER_OTLP_ENDPOINT";

static PROVIDER: OnceLock<SdkTracerProvider> = OnceLock::new();

/// Why OTLP export could not start (the process goes on without it).
#[derive(Debug, thiserror::Error)]
#[error("OTLP exporter: {0}")]
pub struct OtelError(#[from] opentelemetry_otlp::ExporterBuildError);

/// The layer that exports spans, when `OTEL_EXPORTER_OTLP_ENDPOINT` is set; `None` otherwise.
pub fn layer<S>() -> Result<
    Option<tracing_opentelemetry::OpenTelemetryLayer<S, opentelemetry_sdk::trace::SdkTracer>>,
    OtelError,
>
where
    S: tracing::Subscriber + for<'span> tracing_subscriber::registry::LookupSpan<'span>,
{
    if std::env::var(ENDPOINT).map_or(true, |v| v.trim().is_empty()) {
        return Ok(None);
    }
    let exporter = opentelemetry_otlp::SpanExporter::builder()
        .with_http()
        .build()?;
    let resource = opentelemetry_sdk::Resource::builder()
        .with_service_name("loyalnest-rfm")
        .build();
    let provider = SdkTracerProvider::builder()
        .with_batch_exporter(exporter)
        .with_resource(resource)
        .build();
    let tracer = provider.tracer("loyalnest-rfm");
    // A second init (tests start several apps in one process) keeps the first provider.
    drop(PROVIDER.set(provider));
    Ok(Some(tracing_opentelemetry::layer().with_tracer(tracer)))
}

/// Flushes spans not exported yet; part of an orderly shutdown.
pub fn shutdown() {
    if let Some(provider) = PROVIDER.get() {
        if let Err(e) = provider.shutdown() {
            tracing::warn!(error = %e, "OTLP exporter did not shut down cleanly");
        }
    }
}

/// The span a webhook is handled in, and the trace context its input record carries on.
pub struct IngressTrace {
    pub span: tracing::Span,
    pub parent: TraceParent,
}

/// Opens the webhook's span under the caller's `traceparent` when it is valid (a new trace otherwise, as W3C
/// Trace Context asks of an invalid one). With export on, the forwarded context is the span's own ids, so the
/// exported span is the parent of whatever reads the record; with export off the ids are made here.
pub fn ingress_trace(incoming: Option<&str>) -> IngressTrace {
    let caller = incoming.and_then(|v| TraceParent::parse(v).ok());
    let span = tracing::info_span!("webhook", otel.kind = "server");
    if PROVIDER.get().is_some() {
        if let Some(caller) = &caller {
            let _ = span.set_parent(remote_context(caller));
        }
        let cx = span.context();
        let ids = cx.span().span_context().clone();
        if ids.is_valid() {
            let exported = format!(
                "00-{}-{}-{:02x}",
                ids.trace_id(),
                ids.span_id(),
                ids.trace_flags().to_u8()
            );
            if let Ok(parent) = TraceParent::parse(&exported) {
                return IngressTrace { span, parent };
            }
        }
    }
    let own_span = uuid::Uuid::new_v4().as_u64_pair().0;
    let parent = match caller {
        Some(caller) => caller.child(own_span),
        None => TraceParent::start(uuid::Uuid::new_v4().as_u128(), own_span),
    };
    IngressTrace { span, parent }
}

/// One `process` span per distinct trace context among a partition's records, each a child of the span that put
/// its record on Kafka (the ingress's `webhook`), so a trace shows webhook → processor. The caller drops them once
/// the records' outputs are published, which ends them. Empty, at the cost of one check, without export.
pub fn record_spans<'a>(
    partition: i32,
    contexts: impl Iterator<Item = &'a TraceParent>,
) -> Vec<tracing::Span> {
    if PROVIDER.get().is_none() {
        return Vec::new();
    }
    let mut seen = std::collections::HashSet::new();
    contexts
        .filter(|context| seen.insert(context.as_str()))
        .map(|context| {
            let span = tracing::info_span!("process", otel.kind = "consumer", partition);
            let _ = span.set_parent(remote_context(context));
            span
        })
        .collect()
}

/// The caller's context as OpenTelemetry's parent of our span.
fn remote_context(caller: &TraceParent) -> opentelemetry::Context {
    use opentelemetry::propagation::TextMapPropagator;
    let carrier = std::collections::HashMap::from([(
        streams::traceparent::HEADER.to_owned(),
        caller.as_str().to_owned(),
    )]);
    opentelemetry_sdk::propagation::TraceContextPropagator::new().extract(&carrier)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn without_an_endpoint_the_caller_trace_is_continued_with_a_span_of_our_own() {
        let caller = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";
        let traced = ingress_trace(Some(caller));
        assert_eq!(traced.parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(traced.parent.parent_id(), "00f067aa0ba902b7");
        let fresh = ingress_trace(Some("garbage"));
        assert_ne!(fresh.parent.trace_id(), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_ne!(
            fresh.parent.trace_id(),
            ingress_trace(None).parent.trace_id()
        );
    }
}
