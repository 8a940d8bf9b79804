//! The config outbox against the real app, Tansu and Postgres: a save the broker did not take (the saving
//! instance cannot reach any) is committed, then sent by another instance's relay and applied; the same save sent
//! again after a later one (a crash between the send and its mark) moves nobody; and a save whose transaction
//! fails at commit leaves nothing on the config topic.

use std::time::Duration;

use loyalnest_rfm::startup::Application;
use serde_json::{json, Value};
use sqlx::PgPool;
use streams::MerchantId;

use super::oracle::{post_customers, segment, Customer};
use super::stream::wait_for_oracle;
use super::{get_config, put_config, spawn_http, tiers};
use crate::helpers::{eventually, free_port, record_count};
use crate::live::{shop, spawn_engine_with, LiveApp};

/// Delta rows traced to the configuration saved as `revision`.
async fn deltas_of(pool: &PgPool, shop: &MerchantId, revision: i64) -> i64 {
    sqlx::query_scalar(
        "SELECT count(*) FROM rfm_segment_deltas d JOIN rfm_config_outbox o
             ON o.merchant_id = d.merchant_id AND d.trace_id = convert_from(o.payload, 'UTF8')::jsonb->>'event_id'
         WHERE o.merchant_id = $1 AND o.revision = $2",
    )
    .bind(shop.as_str())
    .bind(revision)
    .fetch_one(pool)
    .await
    .expect("deltas")
}

async fn sent(pool: &PgPool, shop: &MerchantId, revision: i64) -> bool {
    sqlx::query_scalar(
        "SELECT sent_at IS NOT NULL FROM rfm_config_outbox WHERE merchant_id = $1 AND revision = $2",
    )
    .bind(shop.as_str())
    .bind(revision)
    .fetch_optional(pool)
    .await
    .expect("outbox")
    .unwrap_or(false)
}

fn moves(customers: &[Customer], from: &Value, to: &Value) -> i64 {
    customers
        .iter()
        .filter(|c| segment(from, c) != segment(to, c))
        .count() as i64
}

/// Thresholds of a third kind, so moving to them from the default is told apart from moving from the tiers.
fn cheap_tiers() -> Value {
    let mut config = tiers();
    config["monetary"] = json!(["5.00", "10.00", "20.00", "40.00"]);
    config["recency_days"] = json!([5, 20, 60, 200]);
    config
}

#[actix_web::test]
async fn a_save_the_broker_did_not_take_is_sent_later_and_an_old_one_sent_again_is_ignored() {
    // `wait_for_oracle` reads every customer each round (see there).
    let owner = spawn_engine_with(&[("API_RATE_PER_SHOP", "0".to_owned())]).await;
    let mut settings = owner.settings.clone();
    let pool = PgPool::connect(settings.database_url.as_deref().expect("database"))
        .await
        .expect("postgres");
    // The instance the merchant saves through reaches no broker, and leaves retries to others.
    settings.kafka_brokers = format!("127.0.0.1:{}", free_port());
    settings.config_relay_interval = Duration::from_secs(3_600);
    let http = Application::build(&settings).expect("app starts");
    let cut_off = LiveApp::at(format!("http://127.0.0.1:{}", http.port()), http);
    let a = shop();
    let customers = Customer::spread(24);
    post_customers(&owner.address, &a, &customers).await;
    let (tag, before) = get_config(&owner.address, &a).await;
    let default = before["config"].clone();
    wait_for_oracle(&owner, &a, &customers, &default, "live").await;

    let (status, _, body) = put_config(&cut_off.address, &a, Some(&tag), &tiers()).await;
    assert_eq!(status, 200, "committed, to be sent: {body}");
    let first = body["config"].clone();
    wait_for_oracle(&owner, &a, &customers, &first, "live").await;
    assert!(
        sent(&pool, &a, 1).await,
        "the owner's relay sent it and marked it"
    );
    let moved_first = moves(&customers, &default, &first);
    assert!(moved_first > 0);
    eventually(
        "the first save's deltas",
        Duration::from_secs(30),
        async || deltas_of(&pool, &a, 1).await == moved_first,
    )
    .await;

    // Save 2 back to the default, then save 1 "sent again" by a relay that crashed before marking it.
    let (tag, _) = get_config(&owner.address, &a).await;
    let (status, _, _) = put_config(&owner.address, &a, Some(&tag), &default).await;
    assert_eq!(status, 200);
    wait_for_oracle(&owner, &a, &customers, &default, "live").await;
    sqlx::query(
        "UPDATE rfm_config_outbox SET sent_at = NULL WHERE merchant_id = $1 AND revision = 1",
    )
    .bind(a.as_str())
    .execute(&pool)
    .await
    .unwrap();
    eventually("save 1 sent again", Duration::from_secs(30), async || {
        sent(&pool, &a, 1).await
    })
    .await;
    // Save 3 follows it on the same partition of the config topic: once 3 is applied, 1 was read before it.
    let (tag, _) = get_config(&owner.address, &a).await;
    let (status, _, body) = put_config(&owner.address, &a, Some(&tag), &cheap_tiers()).await;
    assert_eq!(status, 200, "{body}");
    let third = body["config"].clone();
    let moved_third = moves(&customers, &default, &third);
    assert!(moved_third > 0 && moves(&customers, &first, &third) != moved_third);
    wait_for_oracle(&owner, &a, &customers, &third, "live").await;
    eventually(
        "the third save's deltas, from the default",
        Duration::from_secs(30),
        async || deltas_of(&pool, &a, 3).await == moved_third,
    )
    .await;
    assert_eq!(
        deltas_of(&pool, &a, 1).await,
        moved_first,
        "save 1 sent again moved nobody"
    );
}

#[actix_web::test]
async fn a_save_that_fails_to_commit_sends_nothing() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    // Refuses every outbox row at commit, after the save's statements all succeeded.
    for statement in [
        "CREATE FUNCTION refuse_at_commit() RETURNS trigger LANGUAGE plpgsql AS
             $$ BEGIN RAISE EXCEPTION 'refused at commit'; END $$",
        "CREATE CONSTRAINT TRIGGER refuse_at_commit AFTER INSERT ON rfm_config_outbox
             DEFERRABLE INITIALLY DEFERRED FOR EACH ROW EXECUTE FUNCTION refuse_at_commit()",
    ] {
        sqlx::query(statement).execute(&pool).await.unwrap();
    }
    let (tag, _) = get_config(&app.address, &a).await;
    let (status, _, body) = put_config(&app.address, &a, Some(&tag), &tiers()).await;
    assert_eq!(status, 503, "{body}");
    let topic = &app.settings.topics.rfm_config;
    assert_eq!(
        record_count(&app.settings.kafka_brokers, topic).await,
        0,
        "nothing sent"
    );
    let (_, now) = get_config(&app.address, &a).await;
    assert_eq!(now["saved"], false);

    sqlx::query("DROP TRIGGER refuse_at_commit ON rfm_config_outbox")
        .execute(&pool)
        .await
        .unwrap();
    let (status, _, _) = put_config(&app.address, &a, Some(&tag), &tiers()).await;
    assert_eq!(status, 200);
    eventually(
        "the committed save on the topic",
        Duration::from_secs(30),
        async || record_count(&app.settings.kafka_brokers, topic).await == 1,
    )
    .await;
}
