//! `GET`/`PUT /api/v1/rfm/nudges/templates` against the real HTTP side and Postgres: defaults for a new merchant,
//! saves that round-trip and are audited, every kind of refusal, shops kept apart, and the renderer the widget
//! uses reading what was saved.

use actors::vocab::{CustomerKey, PendingNudge};
use functions::{NudgeKind, Timestamp};
use loyalnest_rfm::nudges::render::NudgeRenderer;
use loyalnest_rfm::nudges::templates::TemplateStore;
use loyalnest_rfm::startup::Application;
use loyalnest_rfm::store::Store;
use serde_json::{json, Value};
use sqlx::PgPool;
use streams::MerchantId;

use crate::helpers::fresh_database;
use crate::live::{shop, test_settings, token, LiveApp};

const PATH: &str = "/api/v1/rfm/nudges/templates";
const KINDS: [&str; 7] = [
    "at_risk",
    "champions",
    "churned",
    "inactive",
    "loyal",
    "new",
    "tier_dropped",
];

/// The HTTP side alone, on a fresh database, with a pool on it.
async fn spawn() -> (LiveApp, PgPool, String) {
    let url = fresh_database().await;
    let settings = test_settings(&[("DATABASE_URL", url.clone())]);
    let app = Application::build(&settings).expect("app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = PgPool::connect(&url).await.expect("postgres");
    (LiveApp::at(address, app), pool, url)
}

async fn call(app: &LiveApp, token: Option<&str>, body: Option<&[u8]>) -> (u16, Value) {
    let url = format!("{}{PATH}", app.address);
    let mut request = match body {
        Some(body) => app.client.put(url).body(body.to_vec()),
        None => app.client.get(url),
    };
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the app answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

async fn get(app: &LiveApp, shop: &MerchantId) -> Value {
    let (status, body) = call(app, Some(&token(shop)), None).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn put(app: &LiveApp, shop: &MerchantId, document: &Value) -> (u16, Value) {
    let body = document.to_string();
    call(app, Some(&token(shop)), Some(body.as_bytes())).await
}

/// The default at-risk template with one text replaced.
fn at_risk_with(defaults: &Value, locale: &str, text: Value) -> Value {
    let mut at_risk = defaults["templates"]["at_risk"].clone();
    at_risk["texts"][locale] = text;
    json!({ "templates": { "at_risk": at_risk } })
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

#[actix_web::test]
async fn a_new_merchant_gets_every_kind_in_five_locales() {
    let (app, _pool, _) = spawn().await;
    let body = get(&app, &shop()).await;
    let templates = body["templates"].as_object().unwrap();
    assert_eq!(templates.keys().collect::<Vec<_>>(), KINDS);
    for (kind, template) in templates {
        assert_eq!(template["enabled"], true, "{kind}");
        let locales: Vec<_> = template["texts"].as_object().unwrap().keys().collect();
        assert_eq!(locales, ["ar", "de", "en", "es", "fr"], "{kind}");
        for text in template["texts"].as_object().unwrap().values() {
            assert!(!text["title"].as_str().unwrap().is_empty(), "{kind}");
        }
    }
    assert_eq!(body["saved"], json!([]));
}

#[actix_web::test]
async fn a_valid_put_round_trips_and_writes_one_audit_row() {
    let (app, pool, _) = spawn().await;
    let a = shop();
    let defaults = get(&app, &a).await;
    let mut document = at_risk_with(
        &defaults,
        "es-MX",
        json!({"title": "¡Órale, {first_name}!", "body": "Tienes {points} puntos"}),
    );
    let mut churned = defaults["templates"]["churned"].clone();
    churned["enabled"] = json!(false);
    document["templates"]["churned"] = churned;
    document["templates"]["new"] = defaults["templates"]["new"].clone();

    let (status, answer) = put(&app, &a, &document).await;
    assert_eq!(status, 200, "{answer}");
    assert_eq!(
        answer["changed"],
        json!(["at_risk", "churned"]),
        "new was sent unchanged"
    );
    let after = get(&app, &a).await;
    assert_eq!(
        after["templates"]["at_risk"],
        document["templates"]["at_risk"]
    );
    assert_eq!(after["templates"]["churned"]["enabled"], false);
    assert_eq!(after["templates"]["loyal"], defaults["templates"]["loyal"]);
    assert_eq!(
        after["saved"],
        json!(["at_risk", "new", "churned"]),
        "in kind order"
    );

    let (status, again) = put(&app, &a, &after).await;
    assert_eq!(status, 200, "a GET answer goes back as it is");
    assert_eq!(again["changed"], json!([]));
    let rows = audit_rows(&pool, &a).await;
    assert_eq!(rows.len(), 2, "one row per PUT: {rows:?}");
    assert_eq!(rows[0].0, "dev");
    assert_eq!(rows[0].1, "nudge_templates_update");
    assert_eq!(rows[0].2, json!({"kinds": ["at_risk", "churned"]}));
    assert_eq!(rows[1].2, json!({"kinds": []}));
}

/// Documents that each break one rule: (document, the field named, words of its message).
fn broken(defaults: &Value) -> Vec<(Value, &'static str, &'static str)> {
    let text = |title: &str, body: &str| json!({"title": title, "body": body});
    vec![
        (
            at_risk_with(defaults, "es", text("Hola {nombre}", "")),
            "templates.at_risk.texts.es.title",
            "unknown placeholder",
        ),
        (
            at_risk_with(defaults, "es", text("Hola", "tienes {points puntos")),
            "templates.at_risk.texts.es.body",
            "unbalanced",
        ),
        (
            at_risk_with(defaults, "de", text(&"ü".repeat(81), "")),
            "templates.at_risk.texts.de.title",
            "at most 80",
        ),
        (
            at_risk_with(defaults, "en", text("Hi", &"x".repeat(281))),
            "templates.at_risk.texts.en.body",
            "at most 280",
        ),
        (
            at_risk_with(defaults, "en", text("<script>x</script>", "")),
            "templates.at_risk.texts.en.title",
            "plain text",
        ),
        (
            at_risk_with(defaults, "english", text("Hi", "")),
            "templates.at_risk.texts.english",
            "locale tag",
        ),
        (
            at_risk_with(defaults, "fr", text(" ", "corps")),
            "templates.at_risk.texts.fr.title",
            "empty",
        ),
        (
            json!({"templates": {"vip": defaults["templates"]["loyal"]}}),
            "templates.vip",
            "unknown nudge kind",
        ),
        (
            json!({"templates": {"loyal": {"enabled": true, "texts": {"es": {"title": "Hola"}}}}}),
            "templates.loyal.texts",
            "en text is required",
        ),
        (json!({"templates": {}}), "templates", "at least one"),
    ]
}

#[actix_web::test]
async fn every_broken_rule_is_a_422_naming_its_field_and_nothing_is_written() {
    let (app, pool, _) = spawn().await;
    let a = shop();
    let defaults = get(&app, &a).await;
    for (document, field, message) in broken(&defaults) {
        let (status, body) = put(&app, &a, &document).await;
        assert_eq!(status, 422, "{field}: {body}");
        let errors = body["errors"].as_array().unwrap();
        assert_eq!(errors.len(), 1, "{body}");
        assert_eq!(errors[0]["field"], field, "{body}");
        assert!(
            errors[0]["message"].as_str().unwrap().contains(message),
            "{body}"
        );
    }
    let mut two = at_risk_with(&defaults, "es", json!({"title": "Hola {nombre}"}));
    two["templates"]["loyal"] = json!({"enabled": true, "texts": {}});
    let (status, body) = put(&app, &a, &two).await;
    assert_eq!(
        (status, body["errors"].as_array().unwrap().len()),
        (422, 2),
        "every error at once: {body}"
    );

    let (status, _) = call(&app, Some(&token(&a)), Some(b"{not json")).await;
    assert_eq!(status, 400);
    assert_eq!(get(&app, &a).await, defaults, "nothing was saved");
    assert!(audit_rows(&pool, &a).await.is_empty());
    let stored: i64 = sqlx::query_scalar("SELECT count(*) FROM nudge_templates")
        .fetch_one(&pool)
        .await
        .unwrap();
    assert_eq!(stored, 0);
}

#[actix_web::test]
async fn a_shop_never_reads_or_writes_another_shops_templates() {
    let (app, pool, _) = spawn().await;
    let (a, b) = (shop(), shop());
    let defaults = get(&app, &a).await;
    let mine = at_risk_with(&defaults, "en", json!({"title": "Only for A", "body": ""}));
    assert_eq!(put(&app, &a, &mine).await.0, 200);

    assert_eq!(
        get(&app, &b).await,
        defaults,
        "B sees the defaults, not A's text"
    );
    let theirs = at_risk_with(&defaults, "en", json!({"title": "Only for B", "body": ""}));
    assert_eq!(put(&app, &b, &theirs).await.0, 200);
    let a_now = get(&app, &a).await;
    assert_eq!(
        a_now["templates"]["at_risk"]["texts"]["en"]["title"],
        "Only for A"
    );

    let owners: Vec<(String, String)> =
        sqlx::query_as("SELECT merchant_id, texts->'en'->>'title' FROM nudge_templates ORDER BY 2")
            .fetch_all(&pool)
            .await
            .unwrap();
    let expected = [
        (a.to_string(), "Only for A".to_owned()),
        (b.to_string(), "Only for B".to_owned()),
    ];
    assert_eq!(owners, expected);
    assert_eq!(audit_rows(&pool, &a).await.len(), 1);
    assert_eq!(audit_rows(&pool, &b).await.len(), 1);

    let body = mine.to_string();
    assert_eq!(call(&app, None, None).await.0, 401);
    assert_eq!(call(&app, None, Some(body.as_bytes())).await.0, 401);
    assert_eq!(
        call(&app, Some("not-a-token"), Some(body.as_bytes()))
            .await
            .0,
        401
    );
}

#[actix_web::test]
async fn without_a_database_the_defaults_are_read_and_nothing_is_saved() {
    let settings = test_settings(&[]);
    let app = Application::build(&settings).expect("app starts");
    let app = LiveApp::at(format!("http://127.0.0.1:{}", app.port()), app);
    let a = shop();
    let defaults = get(&app, &a).await;
    assert_eq!(defaults["templates"].as_object().unwrap().len(), 7);
    assert_eq!(put(&app, &a, &defaults).await.0, 503);
}

fn pending(shop: &MerchantId, kind: NudgeKind, segment: &str, locale: &str) -> PendingNudge {
    PendingNudge {
        key: CustomerKey {
            merchant: shop.clone(),
            customer_id: 42,
        },
        version: 3,
        segment: segment.to_owned(),
        kind,
        experiment_id: None,
        variant: "A".into(),
        locale: Some(locale.to_owned()),
        trace_id: "trace".to_owned(),
        fired_at: Timestamp::from_unix(1_790_000_000),
        points: 0,
    }
}

#[actix_web::test]
async fn a_mexican_spanish_customer_is_greeted_in_spanish_by_name() {
    let (app, _pool, url) = spawn().await;
    let a = shop();
    let defaults = get(&app, &a).await;
    let mut document = at_risk_with(
        &defaults,
        "es",
        json!({"title": "¡Vuelve, {first_name}!", "body": "Tus {points} puntos te esperan ({segment})."}),
    );
    let mut loyal = defaults["templates"]["loyal"].clone();
    loyal["enabled"] = json!(false);
    document["templates"]["loyal"] = loyal;
    assert_eq!(put(&app, &a, &document).await.0, 200);

    // Another instance's renderer: its own store and cache, reading what this one saved.
    let store = Store::connect_lazy(&url).expect("pool");
    let renderer = NudgeRenderer::new(TemplateStore::new(Some(store.clone())), Some(store));
    let nudge = pending(&a, NudgeKind::AtRisk, "at_risk", "es-MX");
    let shown = renderer
        .render(&nudge, Some("Ana"), Some(12_500))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(
        (shown.kind, shown.locale.as_str(), shown.dir),
        ("at_risk", "es", "ltr")
    );
    assert_eq!(shown.title, "¡Vuelve, Ana!");
    assert_eq!(shown.body, "Tus 12.500 puntos te esperan (En riesgo).");

    let nameless = renderer.render(&nudge, None, None).await.unwrap().unwrap();
    assert_eq!(nameless.title, "¡Vuelve!");
    let arabic = pending(&a, NudgeKind::New, "new", "ar");
    let shown = renderer
        .render(&arabic, Some("Layla"), None)
        .await
        .unwrap()
        .unwrap();
    assert_eq!((shown.locale.as_str(), shown.dir), ("ar", "rtl"));
    assert!(shown.title.contains("Layla"), "{}", shown.title);
    let off = pending(&a, NudgeKind::Loyal, "loyal", "es-MX");
    assert_eq!(
        renderer.render(&off, Some("Ana"), None).await.unwrap(),
        None,
        "disabled kind"
    );
}

#[actix_web::test]
async fn shop_redact_removes_the_shops_templates() {
    let (app, pool, url) = spawn().await;
    let (a, b) = (shop(), shop());
    let defaults = get(&app, &a).await;
    for shop in [&a, &b] {
        assert_eq!(put(&app, shop, &defaults).await.0, 200);
    }
    let store = Store::connect_lazy(&url).expect("pool");
    store.redact(&a, None, "redact-1").await.expect("redacted");
    let left: Vec<String> = sqlx::query_scalar("SELECT DISTINCT merchant_id FROM nudge_templates")
        .fetch_all(&pool)
        .await
        .unwrap();
    assert_eq!(left, [b.to_string()]);
}

/// The shop's default locale sits between the customer's language and `en`: saved with the templates, shown by
/// `GET`, refused when it is not a locale, cleared by `null`, and used by the renderer.
#[actix_web::test]
async fn the_shops_default_locale_comes_before_english() {
    let (app, _pool, url) = spawn().await;
    let a = shop();
    let defaults = get(&app, &a).await;
    assert_eq!(defaults["default_locale"], Value::Null);
    let mut document = at_risk_with(
        &defaults,
        "fr",
        json!({"title": "Revenez, {first_name} !", "body": "Vos {points} points vous attendent."}),
    );
    document["default_locale"] = json!("not a locale!");
    let (status, body) = put(&app, &a, &document).await;
    assert_eq!(status, 422, "{body}");
    assert!(
        body["errors"]
            .as_array()
            .unwrap()
            .iter()
            .any(|e| e["field"] == "default_locale"),
        "{body}"
    );
    document["default_locale"] = json!("fr-CA");
    let (status, body) = put(&app, &a, &document).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(get(&app, &a).await["default_locale"], "fr-CA");

    // A Portuguese customer: no `pt` text, so the shop's default (its language, `fr`) before `en`.
    let store = Store::connect_lazy(&url).expect("pool");
    let renderer = NudgeRenderer::new(TemplateStore::new(Some(store.clone())), Some(store));
    let mut nudge = pending(&a, NudgeKind::AtRisk, "at_risk", "pt-BR");
    nudge.points = 1_250;
    let shown = renderer
        .render(&nudge, Some("Inês"), Some(nudge.points))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(shown.locale, "fr");
    assert_eq!(shown.title, "Revenez, Inês !");
    assert!(
        shown.body.contains("points vous attendent"),
        "{}",
        shown.body
    );

    let mut cleared = document.clone();
    cleared["default_locale"] = Value::Null;
    assert_eq!(put(&app, &a, &cleared).await.0, 200);
    let renderer = NudgeRenderer::new(
        TemplateStore::new(Some(Store::connect_lazy(&url).unwrap())),
        None,
    );
    let shown = renderer.render(&nudge, None, None).await.unwrap().unwrap();
    assert_eq!(
        shown.locale, "en",
        "without a default the chain goes on to en"
    );
}
