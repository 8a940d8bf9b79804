//! A limit on every door, against the real HTTP server: floods get 429 with `Retry-After`, slow bodies 408,
//! dashboard sockets are capped per shop and closed when their token expires.

use std::time::Duration;

use futures_util::StreamExt;
use loyalnest_rfm::auth::mint;
use loyalnest_rfm::startup::Application;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_tungstenite::tungstenite::protocol::frame::coding::CloseCode;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{brokers, spawn_app_with, Webhook, SECRET};
use crate::live::{open_socket, shop, test_settings, token, API_KEY};

/// An HTTP-only instance with `extra` settings, running on the test's actix system.
fn instance(extra: &[(&str, &str)]) -> String {
    let extra: Vec<(&str, String)> = extra.iter().map(|(k, v)| (*k, v.to_string())).collect();
    let app = Application::build(&test_settings(&extra)).expect("instance starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    actix_web::rt::spawn(app.run_until_stopped());
    address
}

#[tokio::test]
async fn a_webhook_flood_from_one_address_gets_429_with_retry_after() {
    let app = spawn_app_with(&brokers(), &[("WEBHOOK_RATE_PER_IP", "1")]).await;
    let mut statuses = Vec::new();
    for _ in 0..6 {
        let mut unsigned = Webhook::new("orders/create", b"{}".to_vec());
        unsigned.secret = "not-the-secret";
        let response = app.post(&unsigned).await;
        let retry_after = response.headers().get("retry-after").cloned();
        statuses.push(response.status().as_u16());
        if response.status() == 429 {
            let seconds: u64 = retry_after.unwrap().to_str().unwrap().parse().unwrap();
            assert!((1..=2).contains(&seconds), "Retry-After {seconds}");
        }
    }
    // One token a second comes back, so on a slow machine one of the later requests may find one.
    assert_eq!(&statuses[..2], &[401; 2], "the burst is twice the rate");
    assert!(
        statuses[2..].iter().filter(|s| **s == 429).count() >= 3,
        "then the address waits: {statuses:?}"
    );
}

#[tokio::test]
async fn a_body_that_does_not_arrive_in_time_gets_408() {
    let app = spawn_app_with(&brokers(), &[("WEBHOOK_BODY_TIMEOUT_MS", "300")]).await;
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = "POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nContent-Length: 1000\r\n\
                X-Shopify-Topic: orders/create\r\nContent-Type: application/json\r\n\r\n{\"id\":";
    stream.write_all(head.as_bytes()).await.unwrap();
    // The rest of the body never comes; the server must answer on its own.
    let mut response = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .expect("the server answers a stalled body")
        .unwrap();
    let status_line = String::from_utf8_lossy(&response[..n]);
    assert!(status_line.starts_with("HTTP/1.1 408"), "{status_line}");
}

#[actix_web::test]
async fn each_shop_has_its_own_read_budget() {
    let address = instance(&[("API_RATE_PER_SHOP", "1")]);
    let client = reqwest::Client::new();
    let (a, b) = (shop(), shop());
    let get = |token: String| {
        client
            .get(format!("{address}/api/v1/rfm/segments"))
            .bearer_auth(token)
            .send()
    };
    let mut statuses = Vec::new();
    for _ in 0..2 {
        statuses.push(get(token(&a)).await.unwrap().status().as_u16());
    }
    assert!(
        !statuses.contains(&429),
        "the burst is twice the rate: {statuses:?}"
    );
    let limited = get(token(&a)).await.unwrap();
    assert_eq!(limited.status(), 429, "after {statuses:?}");
    assert!(limited.headers().contains_key("retry-after"));
    assert_ne!(
        get(token(&b)).await.unwrap().status(),
        429,
        "shop B is not charged for A"
    );
    // A bad token is refused before it can spend anybody's budget.
    let forged = mint(
        &b,
        API_KEY,
        b"not-the-secret",
        chrono::Utc::now().timestamp(),
        60,
    );
    assert_eq!(get(forged).await.unwrap().status(), 401);
}

#[actix_web::test]
async fn dashboard_sockets_are_capped_per_shop() {
    let address = instance(&[
        ("API_RATE_PER_SHOP", "0"),
        ("DASHBOARD_SOCKETS_PER_SHOP", "2"),
    ]);
    let (a, b) = (shop(), shop());
    let first = open_socket(&address, &token(&a)).await.expect("first");
    let _second = open_socket(&address, &token(&a)).await.expect("second");
    assert_eq!(open_socket(&address, &token(&a)).await.err(), Some(429));
    assert!(
        open_socket(&address, &token(&b)).await.is_ok(),
        "another shop"
    );
    // Closing one gives its place back.
    let (mut socket, _) = first;
    socket.close(None).await.unwrap();
    while socket.next().await.is_some() {}
    crate::helpers::eventually(
        "a freed socket place",
        Duration::from_secs(10),
        async || open_socket(&address, &token(&a)).await.is_ok(),
    )
    .await;
}

#[actix_web::test]
async fn a_socket_is_closed_when_its_token_expires() {
    let address = instance(&[]);
    let a = shop();
    // Valid for about one more second (with the verifier's five seconds of leeway for clock skew).
    let now = chrono::Utc::now().timestamp();
    let short = mint(&a, API_KEY, SECRET.as_bytes(), now - 3, 4);
    let (mut socket, _) = open_socket(&address, &short).await.expect("handshake");
    let closed = tokio::time::timeout(Duration::from_secs(15), async {
        while let Some(message) = socket.next().await {
            if let Ok(Message::Close(frame)) = message {
                return frame;
            }
        }
        None
    })
    .await
    .expect("the server closes the socket by itself")
    .expect("with a close frame");
    assert_eq!(closed.code, CloseCode::from(4001));
    assert_eq!(closed.reason.as_str(), "token expired");
}

/// The value of an unlabelled counter in the Prometheus text, 0 when it has not been exported yet.
fn counter(metrics: &str, name: &str) -> u64 {
    metrics
        .lines()
        .find_map(|l| l.strip_prefix(name)?.strip_prefix(' ')?.trim().parse().ok())
        .unwrap_or(0)
}

#[tokio::test]
async fn readiness_is_cached_so_a_flood_of_probes_costs_one_check() {
    let app = crate::helpers::spawn_app().await;
    let metrics = || async {
        let url = format!("{}/metrics", app.address);
        app.client
            .get(url)
            .send()
            .await
            .unwrap()
            .text()
            .await
            .unwrap()
    };
    let first = app
        .client
        .get(format!("{}/ready", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(first.status(), 200);
    let before = counter(&metrics().await, "ready_checks_total");
    assert!(before >= 1);
    let probes = (0..50).map(|_| app.client.get(format!("{}/ready", app.address)).send());
    let answers = futures_util::future::join_all(probes).await;
    assert!(answers.iter().all(|r| r.as_ref().unwrap().status() == 200));
    let after = counter(&metrics().await, "ready_checks_total");
    // One more check at most when the 50 probes straddle the end of the cached answer's second.
    assert!(
        after - before <= 1,
        "{} checks for 50 probes",
        after - before
    );
}
