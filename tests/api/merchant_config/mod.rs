//! `GET`/`PUT /api/v1/rfm/config` and `POST /api/v1/rfm/config/reset` against the real HTTP side, Postgres and
//! the broker: defaults and entity tags, saves that round-trip and are audited, every kind of refusal, resets,
//! and shops kept apart. `stream` follows a saved configuration into the engine.

mod export_limits;
mod lists;
mod oracle;
mod outbox;
mod preview;
mod restart;
mod stream;

use loyalnest_rfm::startup::Application;
use serde_json::{json, Value};
use sqlx::PgPool;
use streams::MerchantId;

use crate::helpers::fresh_database;
use crate::live::{shop, test_settings, token, LiveApp};

const PATH: &str = "/api/v1/rfm/config";

/// An HTTP-only instance on a fresh database and fresh topics (a save is produced to the config topic).
pub(crate) async fn spawn_http() -> (LiveApp, PgPool) {
    spawn_http_with(&[]).await
}

/// [`spawn_http`] with extra settings.
pub(crate) async fn spawn_http_with(extra: &[(&str, String)]) -> (LiveApp, PgPool) {
    let url = fresh_database().await;
    let mut env = vec![("DATABASE_URL", url.clone())];
    env.extend(extra.iter().cloned());
    let settings = test_settings(&env);
    streams::admin::ensure_topics(&settings.kafka_brokers, &settings.topics, 1, 1)
        .await
        .expect("topics");
    let app = Application::build(&settings).expect("app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = PgPool::connect(&url).await.expect("postgres");
    let mut live = LiveApp::at(address, app);
    live.settings = settings;
    (live, pool)
}

/// One answer: status, `ETag` header, body.
type Answer = (u16, Option<String>, Value);

async fn send(request: reqwest::RequestBuilder, shop: &MerchantId) -> Answer {
    let response = request
        .bearer_auth(token(shop))
        .send()
        .await
        .expect("the app answers");
    let status = response.status().as_u16();
    let etag = response
        .headers()
        .get("etag")
        .map(|v| v.to_str().expect("ascii tag").to_owned());
    (status, etag, response.json().await.unwrap_or(Value::Null))
}

async fn get_config(address: &str, shop: &MerchantId) -> (String, Value) {
    let client = reqwest::Client::new();
    let (status, etag, body) = send(client.get(format!("{address}{PATH}")), shop).await;
    assert_eq!(status, 200, "{body}");
    (etag.expect("GET answers an ETag"), body)
}

async fn put_config(
    address: &str,
    shop: &MerchantId,
    if_match: Option<&str>,
    document: &Value,
) -> Answer {
    let mut request = reqwest::Client::new()
        .put(format!("{address}{PATH}"))
        .header("content-type", "application/json")
        .body(document.to_string());
    if let Some(tag) = if_match {
        request = request.header("If-Match", tag);
    }
    send(request, shop).await
}

async fn reset(address: &str, shop: &MerchantId, body: &str) -> Answer {
    let request = reqwest::Client::new()
        .post(format!("{address}{PATH}/reset"))
        .body(body.to_owned());
    send(request, shop).await
}

fn tier(key: &str, en: &str, es: &str, fr: &str, r: [u8; 2], f: [u8; 2], m: [u8; 2]) -> Value {
    json!({
        "key": key, "name": {"en": en, "es": es, "fr": fr},
        "recency": {"min": r[0], "max": r[1]}, "frequency": {"min": f[0], "max": f[1]},
        "monetary": {"min": m[0], "max": m[1]}, "vip": key == "platinum",
    })
}

/// A merchant's own tiers with thresholds of their own, the kind of document the settings page saves.
pub(crate) fn tiers() -> Value {
    json!({
        "recency_days": [10, 40, 80, 120],
        "frequency_orders": [1, 2, 4, 8],
        "monetary": ["30.00", "60.00", "150.00", "400.00"],
        "weights": {"recency": 0.5, "frequency": 0.25, "monetary": 0.25},
        "grace_period_days": 0,
        "churned_after_days": 365,
        "segments": [
            tier("platinum", "Platinum", "Platino", "Platine", [4, 5], [3, 5], [4, 5]),
            tier("gold", "Gold", "Oro", "Or", [3, 5], [2, 5], [2, 5]),
            tier("silver", "Silver", "Plata", "Argent", [2, 5], [1, 5], [1, 5]),
            tier("lapsed", "Lapsed", "Inactivo", "Inactif", [1, 5], [1, 5], [1, 5]),
        ],
    })
}

async fn audit_rows(pool: &PgPool, shop: &MerchantId) -> Vec<(String, String, Value)> {
    sqlx::query_as(
        "SELECT actor, action, detail FROM audit_logs WHERE merchant_id = $1 ORDER BY id",
    )
    .bind(shop.as_str())
    .fetch_all(pool)
    .await
    .expect("audit rows")
}

fn error_fields(body: &Value) -> Vec<String> {
    body["errors"]
        .as_array()
        .map(|errors| {
            errors
                .iter()
                .map(|e| e["field"].as_str().unwrap_or_default().to_owned())
                .collect()
        })
        .unwrap_or_default()
}

#[actix_web::test]
async fn a_save_round_trips_with_a_new_tag_and_one_audit_row() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    let (tag, body) = get_config(&app.address, &a).await;
    assert_eq!(body["saved"], false);
    assert_eq!(
        body["config"]["monetary"],
        json!(["50.00", "100.00", "200.00", "500.00"])
    );
    assert_eq!(body["config"]["grace_period_days"], 0);
    assert_eq!(body["presets"]["plus"], "500.00");
    assert_eq!(body["measured"]["aov"], Value::Null, "no orders yet");

    let (status, new_tag, saved) = put_config(&app.address, &a, Some(&tag), &tiers()).await;
    assert_eq!(status, 200, "{saved}");
    let new_tag = new_tag.expect("a save answers the new tag");
    assert_ne!(new_tag, tag);
    let (again, body) = get_config(&app.address, &a).await;
    assert_eq!(again, new_tag);
    assert_eq!(body["saved"], true);
    assert_eq!(body["config"]["segments"][0]["name"]["fr"], "Platine");
    assert_eq!(body["config"]["monetary"], tiers()["monetary"]);

    let rows = audit_rows(&pool, &a).await;
    assert_eq!(rows.len(), 1, "{rows:?}");
    let (actor, action, detail) = &rows[0];
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("dev", "rfm_config_update")
    );
    assert_eq!(detail["before"], Value::Null, "nothing was saved before");
    assert_eq!(detail["after"], body["config"]);
    assert_eq!(detail["etag_after"], new_tag);
}

#[actix_web::test]
async fn a_stale_or_weak_tag_is_412_and_a_missing_one_428() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    let (first_tag, _) = get_config(&app.address, &a).await;
    let (status, winner_tag, _) = put_config(&app.address, &a, Some(&first_tag), &tiers()).await;
    assert_eq!(status, 200);

    // A second admin edited the page loaded before the first save.
    let mut theirs = tiers();
    theirs["grace_period_days"] = json!(30);
    let (status, current_tag, body) = put_config(&app.address, &a, Some(&first_tag), &theirs).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(current_tag, winner_tag, "the 412 names the tag to reload");
    assert_eq!(body["config"]["grace_period_days"], 0);

    let (status, _, body) = put_config(&app.address, &a, None, &theirs).await;
    assert_eq!(status, 428, "{body}");
    // If-Match compares strongly (RFC 9110 13.1.1): the current tag marked weak matches nothing.
    let weak = format!("W/{}", winner_tag.as_deref().expect("a tag"));
    let (status, _, body) = put_config(&app.address, &a, Some(&weak), &theirs).await;
    assert_eq!(status, 412, "{body}");
    assert_eq!(
        audit_rows(&pool, &a).await.len(),
        1,
        "refused saves leave no row"
    );
    let (status, _, _) = put_config(&app.address, &a, winner_tag.as_deref(), &theirs).await;
    assert_eq!(status, 200);
}

#[actix_web::test]
async fn every_field_error_is_answered_at_once() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    let (tag, _) = get_config(&app.address, &a).await;
    let mut bad = tiers();
    bad["recency_days"] = json!([10, 40, 30, 120]);
    bad["monetary"][0] = json!("-5.00");
    bad["weights"]["recency"] = json!(0.6);
    bad["grace_period_days"] = json!(400);
    bad["segments"][1]["name"]["es"] = json!("Platino");
    bad["segments"][2]["name"]["Français"] = json!("Argent");
    bad["segments"].as_array_mut().unwrap().pop();
    let (status, _, body) = put_config(&app.address, &a, Some(&tag), &bad).await;
    assert_eq!(status, 422, "{body}");
    let fields = error_fields(&body);
    for expected in [
        "recency_days[2]",
        "monetary[0]",
        "weights",
        "grace_period_days",
        "segments[1].name.es",
        "segments[2].name.Français",
        "segments",
    ] {
        assert!(
            fields.iter().any(|f| f == expected),
            "{expected} missing from {fields:?}"
        );
    }
    let mut unknown = tiers();
    unknown["grace_days"] = json!(3);
    let (status, _, body) = put_config(&app.address, &a, Some(&tag), &unknown).await;
    assert_eq!(status, 422, "{body}");
    assert!(body["errors"][0]["message"]
        .as_str()
        .unwrap()
        .contains("grace_days"));
    assert!(audit_rows(&pool, &a).await.is_empty());
}

#[actix_web::test]
async fn resets_derive_thresholds_from_a_preset_or_an_aov() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    let (tag, _) = get_config(&app.address, &a).await;
    put_config(&app.address, &a, Some(&tag), &tiers()).await;

    let (status, _, body) = reset(&app.address, &a, "{}").await;
    assert_eq!(status, 422, "nothing measured yet: {body}");
    assert_eq!(error_fields(&body), ["aov"]);
    let (status, _, body) = reset(&app.address, &a, r#"{"preset": "small"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["config"]["monetary"],
        json!(["10.00", "20.00", "40.00", "100.00"])
    );
    assert_eq!(
        body["config"]["segments"][0]["key"], "platinum",
        "segments are kept"
    );
    let (status, _, body) = reset(&app.address, &a, r#"{"aov": "23.50"}"#).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body["config"]["monetary"],
        json!(["11.75", "23.50", "47.00", "117.50"])
    );
    let (status, _, _) = reset(&app.address, &a, r#"{"aov": "-1"}"#).await;
    assert_eq!(status, 422);
    let actions: Vec<String> = audit_rows(&pool, &a)
        .await
        .into_iter()
        .map(|r| r.1)
        .collect();
    assert_eq!(
        actions,
        ["rfm_config_update", "rfm_config_reset", "rfm_config_reset"]
    );
}

#[actix_web::test]
async fn one_shop_never_reads_or_writes_another_shops_configuration() {
    let (app, pool) = spawn_http().await;
    let (a, b) = (shop(), shop());
    let (a_tag, _) = get_config(&app.address, &a).await;
    put_config(&app.address, &a, Some(&a_tag), &tiers()).await;

    let (b_tag, b_body) = get_config(&app.address, &b).await;
    assert_eq!(
        b_body["saved"], false,
        "b sees its own defaults, not a's tiers"
    );
    assert_eq!(b_tag, a_tag, "equal configurations, equal tags");
    let mut bs = tiers();
    bs["grace_period_days"] = json!(7);
    let (status, _, _) = put_config(&app.address, &b, Some(&b_tag), &bs).await;
    assert_eq!(status, 200);
    let (_, a_body) = get_config(&app.address, &a).await;
    assert_eq!(a_body["config"]["grace_period_days"], 0);
    assert_eq!(audit_rows(&pool, &a).await.len(), 1);
    assert_eq!(audit_rows(&pool, &b).await.len(), 1);
    let anonymous = reqwest::Client::new()
        .get(format!("{}{PATH}", app.address))
        .send()
        .await;
    assert_eq!(anonymous.expect("answers").status(), 401);
}
