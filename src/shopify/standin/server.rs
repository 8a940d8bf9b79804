//! The stand-in's HTTP side: `POST /admin/oauth/access_token` (token exchange) and
//! `POST /admin/api/{version}/graphql.json`, which authenticates the access token, charges the shop's bucket, and
//! dispatches by operation. Bulk operations (`bulkOperationRunQuery`, `currentBulkOperation`, `node` of a
//! `BulkOperation`) are answered by `bulk` when the options carry generated shops (`StandinOptions::bulk`, their
//! results at `GET /standin/bulk/{id}.jsonl`), charged to the same bucket; otherwise with a GraphQL error.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::{metafields, token_exchange, StandinOptions, StandinState};

/// A running stand-in.
pub struct Standin {
    pub address: String,
    pub state: Arc<StandinState>,
    pub handle: ServerHandle,
}

/// Starts the stand-in on `addr` (port 0 picks a free one). Call from within an actix or tokio runtime.
pub fn start(options: StandinOptions, addr: &str) -> std::io::Result<Standin> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    let bulk = options.bulk.clone();
    if let Some(bulk) = &bulk {
        *bulk.public_base.lock().unwrap_or_else(|p| p.into_inner()) =
            format!("http://127.0.0.1:{port}");
    }
    let state = StandinState::new(options);
    let data = web::Data::from(state.clone());
    let server = HttpServer::new(move || {
        let app = match &bulk {
            Some(bulk) => App::new().app_data(web::Data::from(bulk.clone())).route(
                "/standin/bulk/{file}",
                web::get().to(super::bulk_server::result),
            ),
            None => App::new(),
        };
        app.app_data(data.clone())
            .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
            .route(
                "/admin/oauth/access_token",
                web::post().to(token_exchange::access_token),
            )
            .route("/admin/api/{version}/graphql.json", web::post().to(graphql))
    })
    .workers(2)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Standin {
        address: format!("http://127.0.0.1:{port}"),
        state,
        handle,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    Bulk,
    MetafieldsSet,
    DefinitionCreate,
    Customer,
    Unknown,
}

fn operation(query: &str) -> Operation {
    if super::bulk::is_bulk(query) {
        Operation::Bulk
    } else if query.contains("metafieldsSet(") {
        Operation::MetafieldsSet
    } else if query.contains("metafieldDefinitionCreate(") {
        Operation::DefinitionCreate
    } else if query.contains("customer(") {
        Operation::Customer
    } else {
        Operation::Unknown
    }
}

/// (requested, actual) points: mutations cost 10; a customer with a connection of 10 is requested at 1 + 2 + 10
/// and charged for what it returned.
fn cost(op: Operation) -> (f64, f64) {
    match op {
        Operation::MetafieldsSet | Operation::DefinitionCreate | Operation::Bulk => (10.0, 10.0),
        Operation::Customer => (13.0, 4.0),
        Operation::Unknown => (1.0, 1.0),
    }
}

async fn graphql(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<StandinState>,
) -> HttpResponse {
    let token = req
        .headers()
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let Some(shop) = state.shop_of_token(token) else {
        state.counters.unauthorized.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::Unauthorized().json(json!({
            "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
        }));
    };
    let call = state.counters.calls.fetch_add(1, Ordering::Relaxed) + 1;
    let every = state.options.fail_every;
    if every > 0 && call % every == 0 {
        state.counters.failed.fetch_add(1, Ordering::Relaxed);
        return HttpResponse::BadGateway().body("<html><body>502 Bad Gateway</body></html>");
    }
    let Ok(request) = serde_json::from_slice::<Value>(&body) else {
        return HttpResponse::BadRequest()
            .json(json!({ "errors": { "query": "Required parameter missing or invalid" } }));
    };
    let query = request.get("query").and_then(Value::as_str).unwrap_or("");
    let variables = request.get("variables").cloned().unwrap_or(Value::Null);
    let op = operation(query);
    let (requested, actual) = cost(op);
    let charged = match state.charge(&shop, requested, actual) {
        Ok(charged) => charged,
        Err(status) => {
            state.counters.throttled.fetch_add(1, Ordering::Relaxed);
            return HttpResponse::Ok().json(json!({
                "errors": [{ "message": "Throttled", "extensions": {
                    "code": "THROTTLED",
                    "documentation": "https://shopify.dev/api/usage/rate-limits" } }],
                "extensions": status.extensions(),
            }));
        }
    };
    let refused = &state.options.refuse_customers;
    let mut answer = match op {
        Operation::MetafieldsSet => state.with_shop(&shop, |s| {
            metafields::metafields_set(s, refused, &variables)
        }),
        Operation::DefinitionCreate => {
            state.with_shop(&shop, |s| metafields::definition_create(s, &variables))
        }
        Operation::Customer => state.with_shop(&shop, |s| metafields::customer(s, &variables)),
        Operation::Bulk => match &state.options.bulk {
            Some(bulk) => super::bulk::handle(bulk, &shop, &request),
            None => json!({ "errors": [{
                "message": "bulk operations are served by `shopify-bulk-standin`, not this stand-in" }] }),
        },
        Operation::Unknown => json!({ "errors": [{
            "message": "this operation is not part of the stand-in",
            "extensions": { "code": "undefinedField" } }] }),
    };
    if let Some(object) = answer.as_object_mut() {
        object.insert("extensions".into(), charged.extensions());
    }
    HttpResponse::Ok().json(answer)
}
