//! The stand-in's HTTP side: `POST /admin/oauth/access_token` (token exchange),
//! `POST /admin/api/{version}/graphql.json`, which authenticates the access token, charges the shop's bucket and
//! dispatches by operation (metafields, definitions, a customer's metafields, bulk operations), and the bulk
//! results at `GET /standin/bulk/{id}.jsonl` (unauthenticated, like the signed download URLs Shopify hands out).
//!
//! The shop of a GraphQL call is its token's. The endpoint is also served under `/shops/{shop}/…`, so
//! `SHOPIFY_ADMIN_URL=http://127.0.0.1:P/shops/{shop}` works too; there the token must be the named shop's.

use std::net::TcpListener;
use std::sync::atomic::Ordering;
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::{bulk, metafields, token_exchange, StandinOptions, StandinState};

/// A running stand-in.
pub struct Standin {
    /// `http://127.0.0.1:port`: the `SHOPIFY_ADMIN_URL` that points the client at it.
    pub address: String,
    pub state: Arc<StandinState>,
    pub handle: ServerHandle,
}

impl Standin {
    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

/// Starts the stand-in on `addr` (port 0 picks a free one). Call from within an actix or tokio runtime.
pub fn start(options: StandinOptions, addr: &str) -> std::io::Result<Standin> {
    let listener = TcpListener::bind(addr)?;
    let port = listener.local_addr()?.port();
    let address = format!("http://127.0.0.1:{port}");
    let state = StandinState::new(options);
    *state
        .bulk
        .public_base
        .lock()
        .unwrap_or_else(|p| p.into_inner()) = address.clone();
    let data = web::Data::from(state.clone());
    let server = HttpServer::new(move || {
        App::new()
            .app_data(data.clone())
            .app_data(web::PayloadConfig::new(4 * 1024 * 1024))
            .route(
                "/admin/oauth/access_token",
                web::post().to(token_exchange::access_token),
            )
            .route("/admin/api/{version}/graphql.json", web::post().to(graphql))
            .route(
                "/shops/{shop}/admin/api/{version}/graphql.json",
                web::post().to(graphql),
            )
            .route("/standin/bulk/{file}", web::get().to(bulk_result))
    })
    .workers(2)
    .listen(listener)?
    .run();
    let handle = server.handle();
    tokio::spawn(server);
    Ok(Standin {
        address,
        state,
        handle,
    })
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Operation {
    BulkRun,
    BulkStatus,
    MetafieldsSet,
    DefinitionCreate,
    Customer,
    Unknown,
}

fn operation(query: &str) -> Operation {
    if query.contains("bulkOperationRunQuery") {
        Operation::BulkRun
    } else if bulk::is_bulk(query) {
        Operation::BulkStatus
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
/// and charged for what it returned; a bulk operation's status, one object, costs 1.
fn cost(op: Operation) -> (f64, f64) {
    match op {
        Operation::MetafieldsSet | Operation::DefinitionCreate | Operation::BulkRun => (10.0, 10.0),
        Operation::BulkStatus => (1.0, 1.0),
        Operation::Customer => (13.0, 4.0),
        Operation::Unknown => (1.0, 1.0),
    }
}

/// The shop whose access token the call carries (and, under `/shops/{shop}/`, that shop's only).
fn authenticate(req: &HttpRequest, state: &StandinState) -> Option<String> {
    let token = req
        .headers()
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    let named = req.match_info().get("shop");
    state
        .shop_of_token(token)
        .filter(|shop| named.is_none_or(|named| named == shop))
}

async fn graphql(
    req: HttpRequest,
    body: web::Bytes,
    state: web::Data<StandinState>,
) -> HttpResponse {
    let Some(shop) = authenticate(&req, &state) else {
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
        Operation::BulkRun | Operation::BulkStatus => bulk::handle(&state.bulk, &shop, &request),
        Operation::Unknown => json!({ "errors": [{
            "message": "this operation is not part of the stand-in",
            "extensions": { "code": "undefinedField" } }] }),
    };
    if let Some(object) = answer.as_object_mut() {
        object.insert("extensions".into(), charged.extensions());
    }
    HttpResponse::Ok().json(answer)
}

async fn bulk_result(path: web::Path<String>, state: web::Data<StandinState>) -> HttpResponse {
    let id = path
        .strip_suffix(".jsonl")
        .and_then(|id| id.parse::<u64>().ok());
    let Some(bytes) = id.and_then(|id| state.bulk.result(id)) else {
        return HttpResponse::NotFound().finish();
    };
    let cut = *state
        .bulk
        .cut_after
        .lock()
        .unwrap_or_else(|p| p.into_inner());
    match cut {
        None => HttpResponse::Ok()
            .content_type("application/jsonl")
            .body(bytes),
        Some(at) => {
            // Sent as a stream that fails part-way: the connection drops before the body is complete.
            let head = bytes.slice(..at.min(bytes.len()));
            let broken = futures_util::stream::iter([
                Ok::<_, std::io::Error>(head),
                Err(std::io::Error::other("connection cut by the stand-in")),
            ]);
            HttpResponse::Ok()
                .content_type("application/jsonl")
                .streaming(broken)
        }
    }
}
