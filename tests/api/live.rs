//! The whole engine in-process (ingress, processor, dashboards) and a WebSocket client, for the read API,
//! dashboard and browser tests.

use std::collections::HashMap;
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::SystemClock;
use futures_util::StreamExt;
use loyalnest_rfm::auth::mint;
use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::live::Frame;
use loyalnest_rfm::shopify::hmac::sign;
use loyalnest_rfm::startup::Engine;
use serde_json::json;
use streams::MerchantId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{brokers, fresh_database, unique, SECRET};

pub const API_KEY: &str = "test-api-key";
pub const DAY: i64 = 86_400;

pub struct LiveApp {
    pub address: String,
    pub settings: Settings,
    pub client: reqwest::Client,
    /// Held only to keep the app alive for the test: a whole engine, or a second HTTP-only instance.
    _engine: Option<Engine>,
    _server: Option<actix_web::dev::ServerHandle>,
}

impl LiveApp {
    /// Wraps a started HTTP-only instance (its server runs on the current actix system).
    pub fn at(address: String, app: loyalnest_rfm::startup::Application) -> LiveApp {
        let handle = app.handle();
        actix_web::rt::spawn(app.run_until_stopped());
        LiveApp {
            address,
            settings: test_settings(&[]),
            client: reqwest::Client::new(),
            _engine: None,
            _server: Some(handle),
        }
    }
}

pub fn test_settings(extra: &[(&str, String)]) -> Settings {
    let mut env: HashMap<String, String> = HashMap::from([
        ("HTTP_ADDR".into(), "127.0.0.1:0".into()),
        ("KAFKA_BROKERS".into(), brokers()),
        ("KAFKA_TOPIC_PREFIX".into(), format!("{}.", unique("d"))),
        ("KAFKA_GROUP_ID".into(), unique("g-")),
        ("SHOPIFY_API_SECRET".into(), SECRET.into()),
        ("SHOPIFY_API_KEY".into(), API_KEY.into()),
    ]);
    if let Ok(url) = std::env::var("REDIS_URL") {
        env.insert("REDIS_URL".into(), url);
    }
    for (k, v) in extra {
        env.insert((*k).to_owned(), v.clone());
    }
    Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings")
}

/// Ingress, processor and dashboards on port 0, with fresh topics, group and database. Call inside an actix
/// system (`#[actix_web::test]`).
pub async fn spawn_engine() -> LiveApp {
    spawn_engine_with(&[]).await
}

/// [`spawn_engine`] with sealing keys configured, and a pool on its database.
pub async fn spawn_sealing_engine() -> (LiveApp, sqlx::PgPool) {
    spawn_sealing_engine_with(&[]).await
}

/// [`spawn_sealing_engine`] with extra settings.
pub async fn spawn_sealing_engine_with(extra: &[(&str, String)]) -> (LiveApp, sqlx::PgPool) {
    use crate::helpers::{ENCRYPTION_KEYS, PII_INDEX_KEY};
    let mut settings = vec![
        ("ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
        ("PII_INDEX_KEY", PII_INDEX_KEY.to_owned()),
    ];
    settings.extend_from_slice(extra);
    let app = spawn_engine_with(&settings).await;
    let url = app
        .settings
        .database_url
        .clone()
        .expect("the engine's database");
    let pool = sqlx::PgPool::connect(&url).await.expect("postgres");
    (app, pool)
}

/// [`spawn_engine`] with extra settings.
pub async fn spawn_engine_with(extra: &[(&str, String)]) -> LiveApp {
    crate::helpers::init_test_logs();
    let mut extra = extra.to_vec();
    extra.push(("DATABASE_URL", fresh_database().await));
    let settings = test_settings(&extra);
    streams::admin::ensure_topics(&settings.kafka_brokers, &settings.topics, 1, 1)
        .await
        .expect("topics");
    let engine = Engine::start(&settings, Arc::new(SystemClock), std::future::pending())
        .await
        .expect("engine starts");
    // Orders sent before the partitions are assigned would be replayed quietly and published as one net change.
    let stats = engine.stats.clone();
    crate::helpers::eventually(
        "the engine to own its partitions",
        Duration::from_secs(60),
        async || stats.caught_up.load(Ordering::SeqCst),
    )
    .await;
    LiveApp {
        address: format!("http://127.0.0.1:{}", engine.port),
        settings,
        client: reqwest::Client::new(),
        _engine: Some(engine),
        _server: None,
    }
}

pub fn shop() -> MerchantId {
    MerchantId::parse(&format!("{}.myshopify.com", unique("shop-"))).unwrap()
}

pub fn token(shop: &MerchantId) -> String {
    mint(
        shop,
        API_KEY,
        SECRET.as_bytes(),
        chrono::Utc::now().timestamp(),
        300,
    )
}

/// A signed `orders/create` webhook posted through the ingress `address`.
pub async fn post_order(
    address: &str,
    shop: &MerchantId,
    order: u64,
    customer: u64,
    total: &str,
    days_ago: i64,
) {
    let created = chrono::Utc::now() - chrono::Duration::seconds(days_ago * DAY);
    let body =
        json!({"id": order, "customer": {"id": customer}, "created_at": created.to_rfc3339(),
        "total_price": total, "currency": "USD", "financial_status": "paid", "test": false})
        .to_string();
    let response = reqwest::Client::new()
        .post(format!("{address}/webhooks/shopify"))
        .header("X-Shopify-Topic", "orders/create")
        .header(
            "X-Shopify-Hmac-Sha256",
            sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", unique("wh-"))
        .body(body)
        .send()
        .await
        .expect("ingress reachable");
    assert_eq!(response.status(), 200, "order {order} accepted");
}

pub type Socket =
    tokio_tungstenite::WebSocketStream<tokio_tungstenite::MaybeTlsStream<tokio::net::TcpStream>>;

/// Opens the dashboard socket the way a browser does (token as a sub-protocol); returns the socket and the
/// protocol the server chose.
pub async fn open_socket(address: &str, token: &str) -> Result<(Socket, Option<String>), u16> {
    let url = format!("{}/api/v1/rfm/stream", address.replace("http://", "ws://"));
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let protocol = response
                .headers()
                .get("sec-websocket-protocol")
                .map(|v| v.to_str().unwrap().to_owned());
            Ok((socket, protocol))
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("socket failed: {e}"),
    }
}

/// Reads frames until `done` accepts one; every frame read is returned. Panics after `timeout`.
pub async fn frames_until(
    socket: &mut Socket,
    timeout: Duration,
    done: impl Fn(&Frame) -> bool,
) -> Vec<Frame> {
    let deadline = Instant::now() + timeout;
    let mut frames = Vec::new();
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .unwrap_or_else(|_| {
                panic!(
                    "no matching frame within {timeout:?}; last: {:?}",
                    frames.last()
                )
            })
            .expect("socket open")
            .expect("socket message");
        if let Message::Text(text) = message {
            let frame: Frame = serde_json::from_str(text.as_str()).expect("frame is JSON");
            let finished = done(&frame);
            frames.push(frame);
            if finished {
                return frames;
            }
        }
    }
}

pub fn count(frame: &Frame, segment: &str) -> u64 {
    frame
        .segments
        .iter()
        .find(|s| s.key == segment)
        .map_or(0, |s| s.count)
}
