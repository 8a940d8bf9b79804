//! The stand-in's HTTP server: `POST /admin/api/{version}/graphql.json` dispatched by operation, and the bulk
//! results at `GET /standin/bulk/{id}.jsonl`. The shop is the `Host` of the request, as at Shopify, or the path
//! prefix `/shops/{shop}` so one loopback server can be every shop (`SHOPIFY_ADMIN_URL=http://127.0.0.1:P/shops/{shop}`).
//!
//! It runs apart from `server` (token exchange, metafields, the shared cost bucket): a bulk stand-in accepts any
//! access token and charges a fixed cost, which is all the backfill's tests, benchmark and demo need.

use std::net::{SocketAddr, TcpListener};
use std::sync::Arc;

use actix_web::dev::ServerHandle;
use actix_web::{web, App, HttpRequest, HttpResponse, HttpServer};
use serde_json::{json, Value};

use super::bulk::{self, BulkState};

/// A running stand-in; stops when `stop` is called or the runtime ends.
pub struct StandIn {
    /// `http://127.0.0.1:port`.
    pub base_url: String,
    pub bulk: Arc<BulkState>,
    handle: ServerHandle,
}

impl StandIn {
    /// Listens on `addr` (port 0 picks one) and serves until stopped. Call inside a Tokio runtime.
    pub fn start(addr: SocketAddr, bulk: Arc<BulkState>) -> std::io::Result<StandIn> {
        let listener = TcpListener::bind(addr)?;
        let local = listener.local_addr()?;
        let base_url = format!("http://{local}");
        *bulk.public_base.lock().unwrap_or_else(|p| p.into_inner()) = base_url.clone();
        let data = web::Data::from(bulk.clone());
        let server = HttpServer::new(move || {
            App::new()
                .app_data(data.clone())
                .app_data(web::JsonConfig::default().limit(1 << 20))
                .route("/admin/api/{version}/graphql.json", web::post().to(graphql))
                .route(
                    "/shops/{shop}/admin/api/{version}/graphql.json",
                    web::post().to(graphql),
                )
                .route("/standin/bulk/{file}", web::get().to(result))
        })
        .workers(1)
        .listen(listener)?
        .run();
        let handle = server.handle();
        tokio::spawn(server);
        Ok(StandIn {
            base_url,
            bulk,
            handle,
        })
    }

    /// The `SHOPIFY_ADMIN_URL` that points the client at this stand-in.
    pub fn admin_url(&self) -> String {
        format!("{}/shops/{{shop}}", self.base_url)
    }

    pub async fn stop(&self) {
        self.handle.stop(false).await;
    }
}

fn shop_of(req: &HttpRequest) -> String {
    match req.match_info().get("shop") {
        Some(shop) => shop.to_owned(),
        None => req.connection_info().host().to_owned(),
    }
}

async fn graphql(
    req: HttpRequest,
    body: web::Json<Value>,
    state: web::Data<BulkState>,
) -> HttpResponse {
    let token = req
        .headers()
        .get("X-Shopify-Access-Token")
        .and_then(|v| v.to_str().ok())
        .unwrap_or("");
    if token.trim().is_empty() {
        return HttpResponse::Unauthorized().json(json!({
            "errors": "[API] Invalid API key or access token (unrecognized login or wrong password)"
        }));
    }
    let query = body.get("query").and_then(Value::as_str).unwrap_or("");
    if bulk::is_bulk(query) {
        return HttpResponse::Ok().json(bulk::handle(&state, &shop_of(&req), &body));
    }
    HttpResponse::Ok().json(
        json!({"errors": [{"message": "this stand-in serves bulk operations only",
        "extensions": {"code": "NOT_IMPLEMENTED"}}]}),
    )
}

/// A bulk operation's JSONL result (also served by `server` when it carries bulk shops).
pub(super) async fn result(path: web::Path<String>, state: web::Data<BulkState>) -> HttpResponse {
    let id = path
        .strip_suffix(".jsonl")
        .and_then(|id| id.parse::<u64>().ok());
    let Some(bytes) = id.and_then(|id| state.result(id)) else {
        return HttpResponse::NotFound().finish();
    };
    let cut = *state.cut_after.lock().unwrap_or_else(|p| p.into_inner());
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
