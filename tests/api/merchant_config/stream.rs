//! A configuration saved through one instance reaches the instance that owns the merchant through the config
//! topic: every customer is re-scored there at once to the segment an independent oracle gives, every customer
//! that moved gets its `rfm.updated` record and delta row, and a processor replaying the topics from the start
//! (fresh group, fresh database) ends with the same segments.

use std::time::{Duration, Instant};

use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::startup::Application;
use serde_json::Value;
use streams::MerchantId;

use super::oracle::{post_customers, segment, Customer};
use super::{get_config, put_config, tiers};
use crate::helpers::{read_all_records, unique};
use crate::live::{shop, spawn_engine_with, token, LiveApp};

const CUSTOMERS: u64 = 24;

/// The customer's segment and where it was read from, or what the API answered instead.
async fn live_segment(
    app: &LiveApp,
    shop: &MerchantId,
    id: u64,
) -> Result<(String, String), String> {
    let response = app
        .client
        .get(format!("{}/api/v1/rfm/customers/{id}", app.address))
        .bearer_auth(token(shop))
        .send()
        .await
        .map_err(|e| e.to_string())?;
    let status = response.status();
    let body: Value = response
        .json()
        .await
        .map_err(|e| format!("{status}: {e}"))?;
    match (body["segment"].as_str(), body["source"].as_str()) {
        (Some(segment), Some(source)) => Ok((segment.to_owned(), source.to_owned())),
        _ => Err(format!("{status}: {body}")),
    }
}

/// Waits until every customer's segment on `app` is the oracle's under `config`, read from `source`. A round is a
/// read per customer every 20 ms, which the per-shop API limit (50/s, burst 100) would start refusing once a slow
/// machine keeps it polling for a few seconds; the instances these tests poll run with the limit off (it has its
/// own tests, `limits`). A timeout names the first customer that differed and what was read.
pub(super) async fn wait_for_oracle(
    app: &LiveApp,
    shop: &MerchantId,
    customers: &[Customer],
    config: &Value,
    source: &str,
) {
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        let mut differs = None;
        for c in customers {
            let expected = (segment(config, c), source.to_owned());
            let read = live_segment(app, shop, c.id).await;
            if read.as_ref() != Ok(&expected) {
                differs = Some(format!(
                    "customer {c:?}: expected {expected:?}, read {read:?}"
                ));
                break;
            }
        }
        let Some(differs) = differs else { return };
        assert!(
            Instant::now() < deadline,
            "timed out waiting for every customer in the oracle's segment ({source}); last: {differs}"
        );
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
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
    // `wait_for_oracle` reads every customer each round (see there).
    let owner = spawn_engine_with(&[("API_RATE_PER_SHOP", "0".to_owned())]).await;
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
