//! A configuration saved through one instance reaches the instance that owns the merchant through the config
//! topic: every customer is re-scored there at once to the segment an independent oracle gives, every customer
//! that moved gets its `rfm.updated` record and delta row, and a processor replaying the topics from the start
//! (fresh group, fresh database) ends with the same segments.

use std::time::Duration;

use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::startup::Application;
use serde_json::Value;
use streams::MerchantId;

use super::oracle::{post_customers, segment, Customer};
use super::{get_config, put_config, tiers};
use crate::helpers::{eventually, read_all_records, unique};
use crate::live::{shop, spawn_engine_with, token, LiveApp};

const CUSTOMERS: u64 = 24;

async fn live_segment(app: &LiveApp, shop: &MerchantId, id: u64) -> Option<(String, String)> {
    let response = app
        .client
        .get(format!("{}/api/v1/rfm/customers/{id}", app.address))
        .bearer_auth(token(shop))
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    Some((
        body["segment"].as_str()?.to_owned(),
        body["source"].as_str()?.to_owned(),
    ))
}

/// Waits until every customer's segment on `app` is the oracle's under `config`, read from `source`.
pub(super) async fn wait_for_oracle(
    app: &LiveApp,
    shop: &MerchantId,
    customers: &[Customer],
    config: &Value,
    source: &str,
) {
    eventually(
        &format!("every customer in the oracle's segment ({source})"),
        Duration::from_secs(60),
        async || {
            for c in customers {
                let expected = (segment(config, c), source.to_owned());
                if live_segment(app, shop, c.id).await != Some(expected) {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

/// The owner measures the shop from its live state: AOV over every order posted.
async fn check_measured(owner: &LiveApp, shop: &MerchantId, customers: &[Customer]) {
    let (_, measured) = get_config(&owner.address, shop).await;
    let cents: i64 = customers
        .iter()
        .map(|c| c.cents_each * i64::from(c.orders))
        .sum();
    let orders: i64 = customers.iter().map(|c| i64::from(c.orders)).sum();
    let aov = cents / orders;
    assert_eq!(measured["measured"]["source"], "live");
    assert_eq!(
        measured["measured"]["aov"],
        format!("{}.{:02}", aov / 100, aov % 100)
    );
    assert_eq!(measured["measured"]["orders"], orders);
}

/// Each customer the change moved, and only those, has a delta row and an `rfm.updated` record traced to it.
async fn check_moves_published(settings: &Settings, shop: &MerchantId, moved: &[u64]) {
    let db = sqlx::PgPool::connect(settings.database_url.as_deref().expect("database"))
        .await
        .expect("postgres");
    let mut delta_rows: Vec<i64> = sqlx::query_scalar(
        "SELECT customer_id FROM rfm_segment_deltas WHERE merchant_id = $1 AND trace_id LIKE 'config-%'",
    )
    .bind(shop.as_str())
    .fetch_all(&db)
    .await
    .expect("deltas");
    delta_rows.sort_unstable();
    assert_eq!(
        delta_rows,
        moved.iter().map(|id| *id as i64).collect::<Vec<_>>()
    );
    let updates = read_all_records(&settings.kafka_brokers, &settings.topics.rfm_updated).await;
    let mut updated: Vec<u64> = updates
        .iter()
        .filter(|r| r.key == shop.as_str())
        .filter(|r| {
            r.value["trace_id"]
                .as_str()
                .is_some_and(|t| t.starts_with("config-"))
        })
        .filter(|r| r.value["segment"]["from"] != r.value["segment"]["to"])
        .filter_map(|r| r.value["customer_id"].as_u64())
        .collect();
    updated.sort_unstable();
    assert_eq!(updated, moved);
}

#[actix_web::test]
async fn a_config_saved_elsewhere_is_applied_by_the_owner_and_replayed_alike() {
    let owner = spawn_engine_with(&[]).await;
    // The instance the merchant saves through: HTTP only, same database and topics, no partitions.
    let settings = owner.settings.clone();
    let http = Application::build(&settings).expect("app starts");
    let elsewhere = LiveApp::at(format!("http://127.0.0.1:{}", http.port()), http);
    let a = shop();
    let customers = Customer::spread(CUSTOMERS);
    post_customers(&owner.address, &a, &customers).await;
    let (tag, before) = get_config(&elsewhere.address, &a).await;
    wait_for_oracle(&owner, &a, &customers, &before["config"], "live").await;

    check_measured(&owner, &a, &customers).await;

    let (status, _, body) = put_config(&elsewhere.address, &a, Some(&tag), &tiers()).await;
    assert_eq!(status, 200, "{body}");
    let after = body["config"].clone();
    wait_for_oracle(&owner, &a, &customers, &after, "live").await;
    // The owner wrote the rows the other instance reads.
    wait_for_oracle(&elsewhere, &a, &customers, &after, "database").await;

    let moved: Vec<u64> = customers
        .iter()
        .filter(|c| segment(&before["config"], c) != segment(&after, c))
        .map(|c| c.id)
        .collect();
    assert!(
        moved.len() >= CUSTOMERS as usize / 2,
        "the tiers move most customers: {moved:?}"
    );
    check_moves_published(&settings, &a, &moved).await;

    // A processor of its own reads every topic from the start, the config topic among them.
    let prefix = settings.topics.orders_create.strip_suffix("orders.create");
    let replay = spawn_engine_with(&[
        (
            "KAFKA_TOPIC_PREFIX",
            prefix.expect("a prefixed topic").to_owned(),
        ),
        ("KAFKA_GROUP_ID", unique("g-replay-")),
    ])
    .await;
    wait_for_oracle(&replay, &a, &customers, &after, "live").await;
}
