//! OTLP export of the real binary (`serve --role all` against Tansu, Redis and Postgres) to a receiver this test
//! runs: a webhook sent with a caller's `traceparent` yields the ingress's `webhook` span, a child of the caller's,
//! and the processor's `process` span for its record, a child of the `webhook` span, all in the caller's trace:
//! in Jaeger or Tempo, webhook → processor → `rfm.updated` is one trace.

use std::sync::{Arc, Mutex};
use std::time::Duration;

use actix_web::{web, App, HttpResponse, HttpServer};
use opentelemetry_proto::tonic::collector::trace::v1::ExportTraceServiceRequest;
use prost::Message;
use streams::Topics;

use crate::helpers::{brokers, eventually, free_port, fresh_database, unique};
use crate::live::shop;
use crate::telemetry::{post_order, until_live, Binary, CALLER, TRACE_ID};

/// One exported span, its ids in hex.
#[derive(Debug, Clone)]
struct Exported {
    trace_id: String,
    span_id: String,
    parent: String,
    name: String,
}

type Received = Arc<Mutex<Vec<Exported>>>;

fn hex(bytes: &[u8]) -> String {
    bytes.iter().map(|b| format!("{b:02x}")).collect()
}

/// Takes in one OTLP/HTTP export (protobuf) and keeps its spans.
async fn export(received: web::Data<Received>, body: web::Bytes) -> HttpResponse {
    let Ok(request) = ExportTraceServiceRequest::decode(body.as_ref()) else {
        return HttpResponse::BadRequest().finish();
    };
    let spans = request
        .resource_spans
        .into_iter()
        .flat_map(|r| r.scope_spans)
        .flat_map(|s| s.spans);
    let mut found = received.lock().unwrap();
    for span in spans {
        found.push(Exported {
            trace_id: hex(&span.trace_id),
            span_id: hex(&span.span_id),
            parent: hex(&span.parent_span_id),
            name: span.name,
        });
    }
    HttpResponse::Ok()
        .content_type("application/x-protobuf")
        .finish()
}

/// An OTLP/HTTP trace receiver on a free port: its base URL and what it received.
fn receiver() -> (String, Received) {
    let received = Received::default();
    let data = web::Data::new(received.clone());
    let port = free_port();
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(16 << 20))
            .route("/v1/traces", web::post().to(export))
    })
    .workers(1)
    .bind(("127.0.0.1", port))
    .expect("receiver port")
    .run();
    actix_web::rt::spawn(server);
    (format!("http://127.0.0.1:{port}"), received)
}

#[actix_web::test]
async fn the_processor_exports_a_span_in_the_webhooks_trace() {
    let prefix = format!("{}.", unique("otlp"));
    let database = fresh_database().await;
    let topics = Topics::with_prefix(&prefix);
    streams::admin::ensure_topics(&brokers(), &topics, 1, 1)
        .await
        .expect("topics");
    let (endpoint, received) = receiver();
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let extra = [
        ("OTEL_EXPORTER_OTLP_ENDPOINT", endpoint),
        // Export each batch of spans soon after it ends, rather than every 5 s.
        ("OTEL_BSP_SCHEDULE_DELAY", "200".to_owned()),
    ];
    let _binary = Binary::start_with(port, &prefix, &database, &extra);
    until_live(&address).await;

    post_order(&address, &shop(), 1, Some(CALLER)).await;

    let in_trace = |name: &str| -> Vec<Exported> {
        received
            .lock()
            .unwrap()
            .iter()
            .filter(|s| s.trace_id == TRACE_ID && s.name == name)
            .cloned()
            .collect()
    };
    eventually(
        "the webhook's and the processor's spans exported",
        Duration::from_secs(60),
        async || !in_trace("webhook").is_empty() && !in_trace("process").is_empty(),
    )
    .await;
    let webhook = in_trace("webhook");
    let process = in_trace("process");
    assert_eq!(webhook.len(), 1, "one webhook span: {webhook:?}");
    assert_eq!(
        webhook[0].parent, "00f067aa0ba902b7",
        "the ingress's span is the caller's child"
    );
    assert_eq!(process.len(), 1, "one span for the record: {process:?}");
    assert_eq!(
        process[0].parent, webhook[0].span_id,
        "the processor's span is the webhook span's child"
    );
}
