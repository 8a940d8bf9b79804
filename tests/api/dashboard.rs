//! The read API and the dashboard socket, end to end: signed webhooks in, REST answers and live frames out,
//! and no shop ever sees another's data.

use std::time::Duration;

use futures_util::{SinkExt, StreamExt};
use loyalnest_rfm::auth::mint;
use loyalnest_rfm::startup::Application;
use serde_json::Value;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{eventually, SECRET};
use crate::live::{
    count, frames_until, open_socket, post_order, shop, spawn_engine, test_settings, token, API_KEY,
};

const WAIT: Duration = Duration::from_secs(30);

pub(crate) async fn get(app: &crate::live::LiveApp, path: &str, token: &str) -> (u16, Value) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

#[actix_web::test]
async fn a_dashboard_sees_its_customer_move_into_champions_and_nothing_of_other_shops() {
    let app = spawn_engine().await;
    let (a, b) = (shop(), shop());
    let (mut socket, protocol) = open_socket(&app.address, &token(&a))
        .await
        .expect("handshake");
    assert_eq!(
        protocol.as_deref(),
        Some("bearer"),
        "the browser sub-protocol is answered"
    );
    let first = frames_until(&mut socket, WAIT, |_| true).await.remove(0);
    assert_eq!(first.merchant, a.as_str());
    assert_eq!(count(&first, "champions"), 0);
    socket
        .send(Message::Ping(b"are you there".to_vec().into()))
        .await
        .unwrap();
    let pong = tokio::time::timeout(WAIT, socket.next())
        .await
        .unwrap()
        .unwrap()
        .unwrap();
    assert_eq!(
        pong,
        Message::Pong(b"are you there".to_vec().into()),
        "pings are answered"
    );

    // Six $50 orders: R5 (today), F4 (6 orders), M4 ($300 against a $100 AOV) → Champions.
    for order in 1..=6 {
        post_order(&app.address, &b, 100 + order, 8, "50.00", 0).await;
        post_order(&app.address, &a, order, 7, "50.00", 0).await;
    }
    let frames = frames_until(&mut socket, WAIT, |f| count(f, "champions") == 1).await;
    let last = frames.last().unwrap();
    assert!(
        frames.iter().all(|f| f.merchant == a.as_str()),
        "only shop A's frames"
    );
    assert!(last
        .moves
        .iter()
        .any(|m| m.customer_id == 7 && m.to == "champions"));
    assert!(
        frames
            .iter()
            .flat_map(|f| &f.moves)
            .all(|m| m.customer_id == 7),
        "shop B's customer never shows up"
    );
    assert_eq!(last.customers, 1);
    assert!(
        last.deltas.iter().all(|d| d.event_ms.is_some()),
        "deltas carry event times"
    );
    assert!(
        frames
            .windows(2)
            .all(|w| w[0].seq < w[1].seq || w[0].seq == 0),
        "frames arrive in order"
    );
    let (status, segments) = get(&app, "/api/v1/rfm/segments", &token(&a)).await;
    assert_eq!(status, 200);
    assert_eq!(segments["merchant"], a.as_str());
    assert_eq!(segments["customers"], 1);

    // Other services read the score cache, written once the outputs are published.
    let redis = redis::Client::open(std::env::var("REDIS_URL").expect("REDIS_URL")).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let key = loyalnest_rfm::score_cache::key(&a, 7);
    eventually("the score cache entry", WAIT, async || {
        let cached: Option<String> = redis::cmd("GET")
            .arg(&key)
            .query_async(&mut redis)
            .await
            .unwrap();
        cached.is_some_and(|v| serde_json::from_str::<Value>(&v).unwrap()["segment"] == "champions")
    })
    .await;
    let ttl: i64 = redis::cmd("TTL")
        .arg(&key)
        .query_async(&mut redis)
        .await
        .unwrap();
    assert!(ttl > 86_000 && ttl <= 86_400, "24 h TTL, got {ttl}");

    // History in pages: the customer's versions, `limit` at a time, from `next_after`.
    let page = |query: String| {
        let path = format!("/api/v1/rfm/customers/7/history{query}");
        let token = token(&a);
        let app = &app;
        async move { get(app, &path, &token).await }
    };
    let mut all = Vec::new();
    eventually("customer 7's history in Postgres", WAIT, async || {
        let (_, body) = page("?limit=200".into()).await;
        all = body["history"].as_array().cloned().unwrap_or_default();
        all.last().is_some_and(|h| h["segment"] == "champions")
    })
    .await;
    assert!(all.len() >= 2, "several versions: {all:?}");
    let (status, first) = page("?limit=1".into()).await;
    assert_eq!(status, 200);
    assert_eq!(first["history"].as_array().unwrap().len(), 1);
    let after = first["next_after"].as_i64().expect("a next page");
    assert_eq!(after, all[0]["version"].as_i64().unwrap());
    let (_, rest) = page(format!("?after={after}&limit=200")).await;
    assert_eq!(rest["history"].as_array().unwrap()[..], all[1..]);
    assert_eq!(rest["next_after"], Value::Null);
    for bad in ["?limit=0", "?limit=201", "?after=x"] {
        assert_eq!(page(bad.into()).await.0, 400, "{bad}");
    }
}

#[actix_web::test]
async fn rest_reads_are_scoped_to_the_token_shop_and_bad_tokens_are_refused() {
    let app = spawn_engine().await;
    let (a, b) = (shop(), shop());
    // Three lapsed one-order customers of A (70 days: R2 F1 M1 → At-Risk) and one fresh customer of B.
    for (customer, total) in [(1, "10.00"), (2, "45.00"), (3, "30.00")] {
        post_order(&app.address, &a, customer, customer, total, 70).await;
    }
    post_order(&app.address, &b, 99, 99, "20.00", 0).await;
    let (ta, tb) = (token(&a), token(&b));
    eventually("shop A's three at-risk customers", WAIT, async || {
        let (_, body) = get(&app, "/api/v1/rfm/segments", &ta).await;
        body["segments"]
            .as_array()
            .into_iter()
            .flatten()
            .any(|s| s["key"] == "at_risk" && s["count"] == 3)
    })
    .await;
    eventually("shop B's customer", WAIT, async || {
        get(&app, "/api/v1/rfm/customers/99", &tb).await.0 == 200
    })
    .await;

    let (status, body) = get(&app, "/api/v1/rfm/customers/99", &ta).await;
    assert_eq!(
        (status, body["error"].as_str()),
        (404, Some("customer 99 not found"))
    );
    let (status, body) = get(&app, "/api/v1/rfm/customers/2", &ta).await;
    assert_eq!(status, 200);
    assert_eq!(
        (body["segment"].as_str(), body["net_spend"].as_str()),
        (Some("at_risk"), Some("45.00"))
    );
    let (status, body) = get(&app, "/api/v1/rfm/customers/abc", &ta).await;
    assert_eq!((status, body["error"].is_string()), (400, true));

    let (_, page1) = get(&app, "/api/v1/rfm/churn-risk?per_page=2", &ta).await;
    let ids = |page: &Value| -> Vec<u64> {
        page["customers"]
            .as_array()
            .unwrap()
            .iter()
            .map(|c| c["customer_id"].as_u64().unwrap())
            .collect()
    };
    assert_eq!(
        (
            ids(&page1),
            page1["total"].as_u64(),
            page1["next_page"].as_u64()
        ),
        (vec![2, 3], Some(3), Some(2))
    );
    let (_, page2) = get(&app, "/api/v1/rfm/churn-risk?per_page=2&page=2", &ta).await;
    assert_eq!((ids(&page2), page2["next_page"].is_null()), (vec![1], true));
    let (_, b_risk) = get(&app, "/api/v1/rfm/churn-risk", &tb).await;
    assert_eq!(b_risk["total"], 0, "B sees none of A's at-risk customers");

    eventually("customer 2's history row", WAIT, async || {
        let (_, body) = get(&app, "/api/v1/rfm/customers/2/history", &ta).await;
        body["history"].as_array().is_some_and(|h| !h.is_empty())
    })
    .await;
    let (_, history) = get(&app, "/api/v1/rfm/customers/2/history", &ta).await;
    assert_eq!(history["history"][0]["segment"], "at_risk");
    assert_eq!(
        get(&app, "/api/v1/rfm/customers/99/history", &ta).await.0,
        404
    );

    let now = chrono::Utc::now().timestamp();
    let expired = mint(&a, API_KEY, SECRET.as_bytes(), now - 600, 60);
    let forged = mint(&a, API_KEY, b"not-the-secret", now, 60);
    let other_app = mint(&a, "another-app", SECRET.as_bytes(), now, 60);
    for bad in [
        expired.as_str(),
        forged.as_str(),
        other_app.as_str(),
        "garbage",
    ] {
        let (status, body) = get(&app, "/api/v1/rfm/segments", bad).await;
        assert_eq!(status, 401, "{body}");
        assert_eq!(
            open_socket(&app.address, bad).await.err(),
            Some(401),
            "socket refused too"
        );
    }
    let anonymous = app
        .client
        .get(format!("{}/api/v1/rfm/segments", app.address))
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}

/// Two instances sharing Redis: the dashboard is on an ingress-only instance that owns no partition, and still
/// gets the owner's frames.
/// The churn-risk list's customer ids, page after page of `per_page`.
async fn churn_risk_ids(app: &crate::live::LiveApp, token: &str, per_page: usize) -> Vec<u64> {
    let mut ids = Vec::new();
    for page in 1.. {
        let path = format!("/api/v1/rfm/churn-risk?per_page={per_page}&page={page}");
        let (status, body) = get(app, &path, token).await;
        assert_eq!(status, 200, "{body}");
        let customers = body["customers"].as_array().unwrap();
        ids.extend(customers.iter().map(|c| c["customer_id"].as_u64().unwrap()));
        if body["next_page"].is_null() {
            return ids;
        }
    }
    unreachable!()
}

#[actix_web::test]
async fn the_churn_risk_list_orders_ties_by_id_and_follows_changes() {
    let app = spawn_engine().await;
    let a = shop();
    let token = token(&a);
    // Nine lapsed one-order customers (R2 F1 M1: at risk) on three amounts, so every amount is a three-way tie.
    let totals = [
        "20.00", "10.00", "20.00", "30.00", "10.00", "30.00", "20.00", "10.00", "30.00",
    ];
    let mut customers: Vec<(u64, &str)> = (1..).zip(totals).collect();
    for (customer, total) in &customers {
        post_order(&app.address, &a, *customer, *customer, total, 70).await;
    }
    eventually("nine at-risk customers", WAIT, async || {
        let (_, body) = get(&app, "/api/v1/rfm/churn-risk", &token).await;
        body["total"] == 9
    })
    .await;
    // The same rule computed here: net spend, highest first, then the higher id (as Postgres orders them).
    let expected = |customers: &[(u64, &str)]| -> Vec<u64> {
        let mut ranked: Vec<(u64, u64)> = customers
            .iter()
            .map(|(id, total)| (total.replace('.', "").parse().unwrap(), *id))
            .collect();
        ranked.sort_by(|x, y| y.cmp(x));
        ranked.into_iter().map(|(_, id)| id).collect()
    };
    assert_eq!(expected(&customers), vec![9, 6, 4, 7, 3, 1, 8, 5, 2]);
    assert_eq!(churn_risk_ids(&app, &token, 4).await, expected(&customers));
    assert_eq!(
        churn_risk_ids(&app, &token, 200).await,
        expected(&customers)
    );

    // Customer 3 orders again and leaves the segment; customer 10 lapses into it at the top of a tie.
    post_order(&app.address, &a, 11, 3, "5.00", 0).await;
    post_order(&app.address, &a, 10, 10, "30.00", 70).await;
    customers.retain(|(id, _)| *id != 3);
    customers.push((10, "30.00"));
    let want = expected(&customers);
    eventually("the list after the changes", WAIT, async || {
        churn_risk_ids(&app, &token, 4).await == want
    })
    .await;
}

#[actix_web::test]
async fn frames_reach_a_dashboard_on_another_instance() {
    assert!(
        std::env::var("REDIS_URL").is_ok(),
        "this test needs REDIS_URL (the fan-out goes through Redis)"
    );
    let owner = spawn_engine().await;
    let mut settings = test_settings(&[]);
    settings.topics = owner.settings.topics.clone();
    let other = Application::build(&settings).expect("second instance");
    let other_address = format!("http://127.0.0.1:{}", other.port());
    actix_web::rt::spawn(other.run_until_stopped());

    let a = shop();
    let (mut socket, _) = open_socket(&other_address, &token(&a))
        .await
        .expect("handshake");
    frames_until(&mut socket, WAIT, |_| true).await;
    post_order(&owner.address, &a, 1, 5, "20.00", 0).await;
    let frames = frames_until(&mut socket, WAIT, |f| f.customers == 1).await;
    let last = frames.last().unwrap();
    assert_eq!(last.merchant, a.as_str());
    assert_eq!(last.deltas[0].customer_id, 5);
}

/// `loyalnest-rfm token` mints what the read API accepts, for the shop it names only.
#[actix_web::test]
async fn the_token_command_mints_a_working_session_token() {
    let app = spawn_engine().await;
    let a = shop();
    post_order(&app.address, &a, 1, 1, "20.00", 0).await;
    let output = std::process::Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
        .args(["token", "--shop", a.as_str(), "--ttl", "120"])
        .env("SHOPIFY_API_SECRET", SECRET)
        .env("SHOPIFY_API_KEY", API_KEY)
        .output()
        .expect("the binary runs");
    assert!(output.status.success());
    let minted = String::from_utf8(output.stdout).unwrap().trim().to_owned();
    eventually("shop A's customer", WAIT, async || {
        get(&app, "/api/v1/rfm/customers/1", &minted).await.0 == 200
    })
    .await;
    let (_, segments) = get(&app, "/api/v1/rfm/segments", &minted).await;
    assert_eq!(segments["merchant"], a.as_str());
    let bad = std::process::Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
        .args(["token", "--shop", "not a shop"])
        .env("SHOPIFY_API_SECRET", SECRET)
        .output()
        .unwrap();
    assert!(!bad.status.success(), "an invalid shop is refused");
}

/// An instance that does not own the merchant's partition (here: ingress only) answers from Postgres.
#[actix_web::test]
async fn an_instance_without_the_partition_reads_from_postgres() {
    let owner = spawn_engine().await;
    let reader = Application::build(&owner.settings).expect("second instance");
    let reader = crate::live::LiveApp::at(format!("http://127.0.0.1:{}", reader.port()), reader);
    let a = shop();
    for (customer, total, days) in [(1, "10.00", 70), (2, "45.00", 70), (3, "20.00", 0)] {
        post_order(&owner.address, &a, customer, customer, total, days).await;
    }
    let ta = token(&a);
    eventually("three customers in Postgres", WAIT, async || {
        let (_, body) = get(&reader, "/api/v1/rfm/segments", &ta).await;
        body["customers"] == 3
    })
    .await;
    let (_, segments) = get(&reader, "/api/v1/rfm/segments", &ta).await;
    assert_eq!(segments["source"], "database");
    let (status, customer) = get(&reader, "/api/v1/rfm/customers/2", &ta).await;
    assert_eq!(status, 200);
    assert_eq!(
        (customer["source"].as_str(), customer["segment"].as_str()),
        (Some("database"), Some("at_risk"))
    );
    assert_eq!(
        customer["net_spend"], "45.00",
        "the same rendering as the live answer"
    );
    let (_, risk) = get(&reader, "/api/v1/rfm/churn-risk", &ta).await;
    let ids: Vec<u64> = risk["customers"]
        .as_array()
        .unwrap()
        .iter()
        .map(|c| c["customer_id"].as_u64().unwrap())
        .collect();
    assert_eq!((ids, risk["total"].as_u64()), (vec![2, 1], Some(2)));
    assert_eq!(get(&reader, "/api/v1/rfm/customers/99", &ta).await.0, 404);
    let (_, history) = get(&reader, "/api/v1/rfm/customers/3/history", &ta).await;
    assert_eq!(history["history"][0]["version"], 1);
}
