//! `POST /api/v1/rfm/preview` from an instance that does not hold the merchant: the owner computes it on its live
//! state (sizes and moves equal the oracle's under the proposal), nothing is saved, the second request is served
//! from the cache, an invalid proposal is a 422, and another shop's token previews its own (empty) customers.

use std::collections::BTreeMap;

use loyalnest_rfm::startup::Application;
use serde_json::Value;
use streams::MerchantId;

use super::oracle::{post_customers, segment, Customer};
use super::{error_fields, get_config, tiers};
use crate::live::{shop, spawn_engine_with, token, LiveApp};

async fn preview(app: &LiveApp, shop: &MerchantId, document: &Value) -> (u16, Value) {
    let response = app
        .client
        .post(format!("{}/api/v1/rfm/preview", app.address))
        .bearer_auth(token(shop))
        .body(document.to_string())
        .send()
        .await
        .expect("the app answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

fn sizes(answer: &Value, table: &str) -> BTreeMap<String, u64> {
    answer[table]
        .as_array()
        .expect("sizes")
        .iter()
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_owned(),
                s["customers"].as_u64().unwrap(),
            )
        })
        .collect()
}

/// Waited for on the owner's counts, not with a preview: one taken before every order is in would be cached.
async fn wait_until_applied(owner: &LiveApp, shop: &MerchantId, customers: &[Customer]) {
    crate::helpers::eventually(
        "every order applied",
        std::time::Duration::from_secs(60),
        async || {
            let response = owner
                .client
                .get(format!("{}/api/v1/rfm/segments", owner.address))
                .bearer_auth(token(shop))
                .send()
                .await;
            let body: Value = match response {
                Ok(r) => r.json().await.unwrap_or(Value::Null),
                Err(_) => return false,
            };
            let orders: u32 = customers.iter().map(|c| c.orders).sum();
            let (_, measured) = get_config(&owner.address, shop).await;
            body["customers"] == customers.len() && measured["measured"]["orders"] == orders
        },
    )
    .await;
}

/// The preview's proposed sizes and moves are the oracle's, from today's configuration to the tiers.
fn check_against_oracle(answer: &Value, today: &Value, customers: &[Customer]) {
    let mut expected: BTreeMap<String, u64> = ["platinum", "gold", "silver", "lapsed"]
        .into_iter()
        .map(|k| (k.to_owned(), 0))
        .collect();
    let mut moves: BTreeMap<(String, String), u64> = BTreeMap::new();
    for c in customers {
        let (from, to) = (segment(today, c), segment(&tiers(), c));
        *expected.get_mut(&to).unwrap() += 1;
        *moves.entry((from, to)).or_default() += 1;
    }
    assert_eq!(sizes(answer, "proposed"), expected);
    let answered: BTreeMap<(String, String), u64> = answer["moves"]
        .as_array()
        .unwrap()
        .iter()
        .map(|m| {
            let key = (
                m["from"].as_str().unwrap().to_owned(),
                m["to"].as_str().unwrap().to_owned(),
            );
            (key, m["customers"].as_u64().unwrap())
        })
        .collect();
    assert_eq!(answered, moves);
}

#[actix_web::test]
async fn the_owner_previews_a_proposal_for_any_instance() {
    let owner = spawn_engine_with(&[]).await;
    let http = Application::build(&owner.settings).expect("app starts");
    let elsewhere = LiveApp::at(format!("http://127.0.0.1:{}", http.port()), http);
    let a = shop();
    let customers = Customer::spread(30);
    post_customers(&owner.address, &a, &customers).await;
    let (tag, before) = get_config(&elsewhere.address, &a).await;
    wait_until_applied(&owner, &a, &customers).await;

    let (status, answer) = preview(&elsewhere, &a, &tiers()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["source"], "live", "computed by the owner");
    check_against_oracle(&answer, &before["config"], &customers);

    let (_, again) = preview(&owner, &a, &tiers()).await;
    assert_eq!(again["cached"], true);
    assert_eq!(again["proposed"], answer["proposed"]);
    let (tag_after, _) = get_config(&elsewhere.address, &a).await;
    assert_eq!(tag_after, tag, "a preview saves nothing");

    let mut bad = tiers();
    bad["weights"]["monetary"] = serde_json::json!(0.9);
    let (status, body) = preview(&elsewhere, &a, &bad).await;
    assert_eq!(
        (status, error_fields(&body)),
        (422, vec!["weights".to_owned()])
    );

    let (status, other) = preview(&elsewhere, &shop(), &tiers()).await;
    assert_eq!(status, 200);
    assert_eq!(
        other["customers"], 0,
        "another shop sees none of a's customers: {other}"
    );
}

/// No instance holds the merchant (an HTTP-only instance, no processor anywhere for it): the preview is computed
/// from the customer rows in Postgres and says so.
#[actix_web::test]
async fn without_an_owner_the_rows_in_postgres_answer() {
    let (app, pool) = super::spawn_http().await;
    let a = shop();
    let customers = Customer::spread(6);
    let default_config = serde_json::to_value(functions::RfmConfig::default()).unwrap();
    for c in &customers {
        let net = (c.cents_each * i64::from(c.orders)) as f64 / 100.0;
        sqlx::query(
            "INSERT INTO customers (merchant_id, customer_id, version, recency, frequency, monetary, score, segment,
                                    lifecycle_stage, orders, net_spend, last_order_at)
             VALUES ($1, $2, 1, 1, 1, 1, 1.0, $3, 'one_time_buyer', $4, $5::numeric,
                     now() - make_interval(days => $6::int) - interval '1 hour')",
        )
        .bind(a.as_str())
        .bind(c.id as i64)
        .bind(segment(&default_config, c))
        .bind(c.orders as i32)
        .bind(net.to_string())
        .bind(c.days_ago as i32)
        .execute(&pool)
        .await
        .expect("a customer row");
    }
    let (status, answer) = preview(&app, &a, &tiers()).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(answer["source"], "database");
    assert_eq!(answer["cached"], false);
    let mut expected: BTreeMap<String, u64> = BTreeMap::new();
    for c in &customers {
        *expected.entry(segment(&tiers(), c)).or_default() += 1;
    }
    let proposed: BTreeMap<String, u64> = sizes(&answer, "proposed")
        .into_iter()
        .filter(|(_, n)| *n > 0)
        .collect();
    assert_eq!(proposed, expected);
}
