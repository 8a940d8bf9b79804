//! Bad input and a broker outage: clear errors, nothing lost, nothing produced that should not be.

use std::time::{Duration, Instant};

use tokio::io::{AsyncReadExt, AsyncWriteExt};

use crate::helpers::{
    create_topics, fixture, free_port, read_records, spawn_app, spawn_app_with, PrivateBroker,
    Webhook,
};

#[tokio::test]
async fn oversized_bodies_are_413_and_a_one_mebibyte_order_is_accepted() {
    let app = spawn_app().await; // limit: 1 MiB
    let response = app
        .post(&Webhook::new("orders/create", vec![b' '; 1024 * 1024 + 1]))
        .await;
    assert_eq!(response.status(), 413);
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "payload_too_large"
    );

    // A large but legal order (notes and line items can be big) is accepted whole.
    let mut order: serde_json::Value =
        serde_json::from_slice(&fixture("orders_create.json")).unwrap();
    order["note"] = "x".repeat(1_000_000).into();
    let body = serde_json::to_vec(&order).unwrap();
    assert!(body.len() > 1_000_000 && body.len() <= 1024 * 1024);
    assert_eq!(
        app.post(&Webhook::new("orders/create", body))
            .await
            .status(),
        200
    );
}

#[tokio::test]
async fn a_chunked_body_is_cut_off_at_the_limit() {
    let app = spawn_app().await;
    let address = app.address.trim_start_matches("http://");
    let mut stream = tokio::net::TcpStream::connect(address).await.unwrap();
    let head = "POST /webhooks/shopify HTTP/1.1\r\nHost: x\r\nTransfer-Encoding: chunked\r\n\
                X-Shopify-Topic: orders/create\r\nContent-Type: application/json\r\n\r\n";
    stream.write_all(head.as_bytes()).await.unwrap();
    let chunk = vec![b'a'; 64 * 1024];
    // Send up to 4 MiB; the server must answer 413 once it has seen more than 1 MiB and may close early.
    for _ in 0..64 {
        let framed = [format!("{:x}\r\n", chunk.len()).as_bytes(), &chunk, b"\r\n"].concat();
        if stream.write_all(&framed).await.is_err() {
            break;
        }
    }
    let _ = stream.write_all(b"0\r\n\r\n").await;
    let mut response = vec![0u8; 512];
    let n = tokio::time::timeout(Duration::from_secs(10), stream.read(&mut response))
        .await
        .unwrap()
        .unwrap();
    let status_line = String::from_utf8_lossy(&response[..n]);
    assert!(status_line.starts_with("HTTP/1.1 413"), "{status_line}");
}

#[tokio::test]
async fn malformed_json_and_bad_money_are_400_with_a_json_error() {
    let app = spawn_app().await;
    let broken = app
        .post(&Webhook::new("orders/create", b"{\"id\": 1, ".to_vec()))
        .await;
    assert_eq!(broken.status(), 400);
    let body: serde_json::Value = broken.json().await.unwrap();
    assert_eq!(body["error"], "malformed");
    assert!(body["message"].as_str().unwrap().contains("orders/create"));

    let mut order: serde_json::Value =
        serde_json::from_slice(&fixture("orders_create.json")).unwrap();
    order["total_price_set"]["shop_money"]["amount"] = "NaN".into();
    let bad_money = app
        .post(&Webhook::new(
            "orders/create",
            serde_json::to_vec(&order).unwrap(),
        ))
        .await;
    assert_eq!(bad_money.status(), 400);
    assert!(bad_money.text().await.unwrap().contains("total_price"));

    let records = app.orders_before_marker().await;
    assert!(records.is_empty(), "{records:?}");
}

#[tokio::test]
async fn broker_down_is_503_within_shopifys_budget_and_the_retry_lands_once() {
    let mut broker = PrivateBroker::start(free_port());
    let brokers = format!("127.0.0.1:{}", broker.port);
    let app = spawn_app_with(&brokers, &[("KAFKA_DELIVERY_TIMEOUT_MS", "1500")]).await;
    let webhook = Webhook::new("orders/create", fixture("orders_create.json"));
    assert_eq!(
        app.post(&Webhook::new(
            "orders/create",
            fixture("orders_create.json")
        ))
        .await
        .status(),
        200
    );

    broker.stop();
    let started = Instant::now();
    let response = app.post(&webhook).await;
    assert_eq!(response.status(), 503);
    assert!(
        started.elapsed() < Duration::from_secs(5),
        "answered after {:?}",
        started.elapsed()
    );
    assert_eq!(
        response.json::<serde_json::Value>().await.unwrap()["error"],
        "kafka_unavailable"
    );

    // Shopify retries the same delivery once the broker is back; it must land exactly once.
    let broker = PrivateBroker::start(broker.port);
    create_topics(&brokers, &app.topics).await;
    let deadline = Instant::now() + Duration::from_secs(30);
    loop {
        let status = app.post(&webhook).await.status();
        if status == 200 {
            break;
        }
        assert_eq!(status, 503, "only 503 while the producer reconnects");
        assert!(Instant::now() < deadline, "retry never succeeded");
    }
    let id = webhook.id.clone();
    let records = read_records(
        &brokers,
        &app.topics.orders_create,
        move |r| r.value["event_id"] == id.as_str(),
        Duration::from_secs(20),
    )
    .await;
    let copies = records
        .iter()
        .filter(|r| r.value["event_id"] == webhook.id.as_str())
        .count();
    assert_eq!(copies, 1);
    drop(broker);
}

/// Posts `count` fresh webhooks one after another, then `count` at once, and returns the slowest answer and the
/// statuses seen.
async fn slowest_answer(app: &crate::helpers::TestApp, count: usize) -> (Duration, Vec<u16>) {
    let mut slowest = Duration::ZERO;
    let mut statuses = Vec::new();
    for _ in 0..count {
        let started = Instant::now();
        statuses.push(
            app.post(&Webhook::new(
                "orders/create",
                fixture("orders_create.json"),
            ))
            .await
            .status()
            .as_u16(),
        );
        slowest = slowest.max(started.elapsed());
    }
    let webhooks: Vec<_> = (0..count)
        .map(|_| Webhook::new("orders/create", fixture("orders_create.json")))
        .collect();
    let started = Instant::now();
    let answers = futures_util::future::join_all(webhooks.iter().map(|w| app.post(w))).await;
    slowest = slowest.max(started.elapsed());
    statuses.extend(answers.iter().map(|r| r.status().as_u16()));
    (slowest, statuses)
}

/// Shopify's budget is 5 s; the ingress promises the delivery timeout plus librdkafka's expiry slack, and keeps
/// that promise with the broker killed, frozen or never there, including while the stuck producer is replaced.
#[tokio::test]
async fn every_webhook_is_answered_within_the_delivery_timeout_whatever_the_broker_does() {
    let timeout = Duration::from_millis(1500);
    let promise = timeout + streams::sink::EXPIRY_SLACK + Duration::from_millis(500);
    let settings = [("KAFKA_DELIVERY_TIMEOUT_MS", "1500")];

    let mut killed = PrivateBroker::start(free_port());
    let app = spawn_app_with(&format!("127.0.0.1:{}", killed.port), &settings).await;
    let healthy = app
        .post(&Webhook::new(
            "orders/create",
            fixture("orders_create.json"),
        ))
        .await;
    assert_eq!(healthy.status(), 200);
    killed.stop();
    // Four in a row take longer than two delivery timeouts, so the producer is replaced during this phase.
    let (slowest, statuses) = slowest_answer(&app, 4).await;
    assert!(statuses.iter().all(|s| *s == 503), "killed: {statuses:?}");
    assert!(slowest <= promise, "killed: slowest answer {slowest:?}");

    let frozen = PrivateBroker::start(free_port());
    let app = spawn_app_with(&format!("127.0.0.1:{}", frozen.port), &settings).await;
    let healthy = app
        .post(&Webhook::new(
            "orders/create",
            fixture("orders_create.json"),
        ))
        .await;
    assert_eq!(healthy.status(), 200);
    frozen.set_frozen(true);
    let (slowest, statuses) = slowest_answer(&app, 4).await;
    frozen.set_frozen(false);
    assert!(statuses.iter().all(|s| *s == 503), "frozen: {statuses:?}");
    assert!(slowest <= promise, "frozen: slowest answer {slowest:?}");

    let nowhere = crate::helpers::spawn_app_on(&format!("127.0.0.1:{}", free_port()), &settings);
    let (slowest, statuses) = slowest_answer(&nowhere, 2).await;
    assert!(
        statuses.iter().all(|s| *s == 503),
        "unreachable: {statuses:?}"
    );
    assert!(
        slowest <= promise,
        "unreachable: slowest answer {slowest:?}"
    );
}
