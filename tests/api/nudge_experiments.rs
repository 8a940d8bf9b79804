//! `POST`/`GET /api/v1/rfm/nudges/ab-test` against the real HTTP side and Postgres: a save is validated whole,
//! audited and kept to its shop, and the results equal a count made here, apart from the app, of rows this test
//! writes. The processor's side (arms on `rfm.task`, the holdout off the desk, the cap, conversions) is in `flow`.

use std::collections::HashSet;

use loyalnest_rfm::startup::Application;
use serde_json::{json, Value};
use sqlx::PgPool;
use streams::MerchantId;

use crate::helpers::fresh_database;
use crate::live::{shop, test_settings, token, LiveApp};

mod flow;

pub(crate) const PATH: &str = "/api/v1/rfm/nudges/ab-test";

/// The HTTP side alone, on a fresh database, with a pool on it.
async fn spawn() -> (LiveApp, PgPool) {
    let url = fresh_database().await;
    let settings = test_settings(&[("DATABASE_URL", url.clone())]);
    let app = Application::build(&settings).expect("app starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    let pool = PgPool::connect(&url).await.expect("postgres");
    (LiveApp::at(address, app), pool)
}

pub(crate) async fn post(address: &str, token: Option<&str>, body: &[u8]) -> (u16, Value) {
    let client = reqwest::Client::new();
    let mut request = client.post(format!("{address}{PATH}")).body(body.to_vec());
    if let Some(token) = token {
        request = request.bearer_auth(token);
    }
    let response = request.send().await.expect("the app answers");
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

pub(crate) async fn save(address: &str, shop: &MerchantId, document: &Value) -> (u16, Value) {
    post(address, Some(&token(shop)), document.to_string().as_bytes()).await
}

pub(crate) async fn results(address: &str, shop: &MerchantId) -> Value {
    let response = reqwest::Client::new()
        .get(format!("{address}{PATH}"))
        .bearer_auth(token(shop))
        .send()
        .await
        .expect("the app answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("results are JSON")
}

/// The section of `kind`'s experiment `id` (`None`: the kind's nudges outside any experiment).
pub(crate) fn section<'a>(results: &'a Value, kind: &str, id: Option<&str>) -> &'a Value {
    results["experiments"]
        .as_array()
        .expect("a list of experiments")
        .iter()
        .find(|e| e["kind"] == kind && e["experiment_id"].as_str() == id)
        .unwrap_or_else(|| panic!("no section for {kind}/{id:?} in {results}"))
}

fn error_fields(body: &Value) -> HashSet<String> {
    body["errors"]
        .as_array()
        .expect("a list of errors")
        .iter()
        .map(|e| {
            assert!(e["message"].as_str().is_some_and(|m| !m.is_empty()), "{e}");
            e["field"].as_str().expect("a field").to_owned()
        })
        .collect()
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

fn two_arms(id: &str, kind: &str, holdout: f64) -> Value {
    json!({
        "id": id, "kind": kind, "holdout_percent": holdout,
        "variants": [
            {"name": "warm", "weight": 1, "texts": {"en": {"title": "We miss you, {first_name}", "body": ""}}},
            {"name": "cool", "weight": 3}
        ]
    })
}

#[actix_web::test]
async fn a_save_is_validated_whole_audited_and_kept_to_its_shop() {
    let (app, pool) = spawn().await;
    let (a, b) = (shop(), shop());
    refusals_name_every_field_and_are_not_audited(&app, &pool, &a).await;
    let valid = two_arms("welcome", "new", 20.0);
    let (status, body) = save(&app.address, &a, &valid).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        (body["id"].as_str(), body["running"].as_bool()),
        (Some("welcome"), Some(true))
    );
    assert_eq!(body["holdout_percent"], 20.0);
    let audit = audit_rows(&pool, &a).await;
    assert_eq!(audit.len(), 1);
    let (actor, action, detail) = &audit[0];
    assert_eq!(
        (actor.as_str(), action.as_str()),
        ("dev", "nudge_ab_test_saved")
    );
    assert_eq!(detail["experiment"]["variants"][0]["name"], "warm");

    // Shop B sees none of it, and may use the same id for its own experiment of another kind.
    assert_eq!(results(&app.address, &b).await["experiments"], json!([]));
    let (status, _) = save(&app.address, &b, &two_arms("welcome", "loyal", 0.0)).await;
    assert_eq!(status, 200);
    // Shop A may not: the id names its experiment of kind `new`.
    let (status, body) = save(&app.address, &a, &two_arms("welcome", "loyal", 0.0)).await;
    assert_eq!(
        (status, error_fields(&body)),
        (422, HashSet::from(["id".to_owned()]))
    );

    a_second_save_for_the_kind_replaces_the_first(&app, &pool, &a, &b).await;
}

async fn refusals_name_every_field_and_are_not_audited(
    app: &LiveApp,
    pool: &PgPool,
    a: &MerchantId,
) {
    let valid = two_arms("welcome", "new", 20.0);
    let (status, _) = post(&app.address, None, valid.to_string().as_bytes()).await;
    assert_eq!(status, 401, "no session token");
    let (status, body) = post(&app.address, Some(&token(a)), b"{not json").await;
    assert_eq!(
        (status, error_fields(&body)),
        (422, HashSet::from(["".to_owned()]))
    );
    let invalid = json!({
        "kind": "sometimes", "holdout_percent": 60,
        "variants": [{"name": "a", "weight": 0}, {"name": "A", "weight": 1, "texts": {"en": {"title": "<b>"}}}]
    });
    let (status, body) = save(&app.address, a, &invalid).await;
    assert_eq!(status, 422, "{body}");
    let expected = [
        "kind",
        "holdout_percent",
        "variants[0].weight",
        "variants[1].name",
        "variants[1].texts.en.title",
    ];
    assert_eq!(error_fields(&body), expected.map(String::from).into());
    let (status, body) = save(
        &app.address,
        a,
        &json!({"kind": "new", "variants": [{"name": "only", "weight": 1}]}),
    )
    .await;
    assert_eq!(
        (status, error_fields(&body)),
        (422, HashSet::from(["variants".to_owned()]))
    );
    assert!(
        audit_rows(pool, a).await.is_empty(),
        "nothing refused is audited"
    );
}

/// A second experiment for the kind replaces the first, which stays with its results; an id is made when the
/// document names none.
async fn a_second_save_for_the_kind_replaces_the_first(
    app: &LiveApp,
    pool: &PgPool,
    a: &MerchantId,
    b: &MerchantId,
) {
    let unnamed = json!({"kind": "new", "variants": [{"name": "x", "weight": 1}, {"name": "y", "weight": 1}]});
    let (status, body) = save(&app.address, a, &unnamed).await;
    assert_eq!(
        (status, &body["replaced"]),
        (200, &json!("welcome")),
        "{body}"
    );
    let generated = body["id"].as_str().expect("a generated id").to_owned();
    assert!(generated.starts_with("new-"), "{generated}");
    let seen = results(&app.address, a).await;
    assert_eq!(section(&seen, "new", Some(&generated))["running"], true);
    let first = section(&seen, "new", Some("welcome"));
    assert_eq!(first["running"], false);
    assert_eq!(first["arms"][1]["variant"], "cool");
    assert_eq!(first["arms"][1]["weight"], 3);
    assert_eq!(first["holdout"]["assigned"], 0);
    assert_eq!(audit_rows(pool, a).await.len(), 2);
    assert_eq!(audit_rows(pool, b).await.len(), 1);
    let b_sees = results(&app.address, b).await;
    assert_eq!(b_sees["experiments"].as_array().map(Vec::len), Some(1));
    assert_eq!(
        section(&b_sees, "loyal", Some("welcome"))["holdout"],
        Value::Null,
        "no holdout, no row"
    );
}

/// One nudge row the test writes, and the events it writes for it.
struct Fired {
    id: String,
    variant: &'static str,
    status: &'static str,
    events: Vec<&'static str>,
    revenue: Option<&'static str>,
}

/// A count made apart from the app: per arm, nudges with at least one event of each kind, among `status`.
fn count(fired: &[Fired], variant: &str, status: &str, event: &str) -> u64 {
    fired
        .iter()
        .filter(|f| f.variant == variant && f.status == status && f.events.contains(&event))
        .count() as u64
}

fn wilson(x: f64, n: f64) -> (f64, f64) {
    let z = 1.959_963_984_540_054_f64;
    let p = x / n;
    let centre = (p + z * z / (2.0 * n)) / (1.0 + z * z / n);
    let half = z / (1.0 + z * z / n) * (p * (1.0 - p) / n + z * z / (4.0 * n * n)).sqrt();
    ((centre - half).max(0.0), (centre + half).min(1.0))
}

fn close(actual: &Value, expected: f64, what: &str) {
    let actual = actual
        .as_f64()
        .unwrap_or_else(|| panic!("{what}: {actual}"));
    assert!(
        (actual - expected).abs() < 1e-9,
        "{what}: {actual} vs {expected}"
    );
}

#[actix_web::test]
async fn results_equal_a_count_of_the_rows_made_apart_from_the_app() {
    let (app, pool) = spawn().await;
    let (a, other) = (shop(), shop());
    let (status, _) = save(&app.address, &a, &two_arms("calc", "at_risk", 10.0)).await;
    assert_eq!(status, 200);

    let fired = fired_rows(&a);
    for f in &fired {
        write(&pool, &a, f, "calc").await;
        sqlx::query("INSERT INTO nudge_events (merchant_id, nudge_id, kind, event_id) VALUES ($1, $2, 'view', $3)")
            .bind(other.as_str())
            .bind(&f.id)
            .bind(format!("other-{}", f.id))
            .execute(&pool)
            .await
            .unwrap();
    }

    let seen = results(&app.address, &a).await;
    let calc = section(&seen, "at_risk", Some("calc"));
    let holdout_n = count_rows(&fired, "holdout", "holdout") as f64;
    let holdout_x = count(&fired, "holdout", "holdout", "conversion") as f64;
    let holdout = (holdout_x, holdout_n);
    for (index, variant) in ["warm", "cool"].into_iter().enumerate() {
        check_arm(&calc["arms"][index], variant, &fired, holdout);
    }
    let holdout = &calc["holdout"];
    assert_eq!(holdout["assigned"], holdout_n as u64);
    assert_eq!(holdout["converted"], holdout_x as u64);
    assert_eq!(holdout["revenue"], revenue_of(&fired, "holdout", "holdout"));
    assert_eq!(holdout["lift"], Value::Null);
    assert_eq!(
        results(&app.address, &other).await["experiments"],
        json!([]),
        "events alone make no results"
    );
}

/// The rows of the results test: warm 40 shown (20 viewed, 16 clicked, 8 dismissed, 12 converted) and 3 capped
/// (one with a stray conversion); cool 50 shown (5 viewed and converted); holdout 30 assigned (3 converted). Events
/// repeat; the test adds another shop's events naming the same nudge ids.
fn fired_rows(a: &MerchantId) -> Vec<Fired> {
    let mut fired = Vec::new();
    for i in 0..123u32 {
        let (variant, status) = match i {
            0..40 => ("warm", "shown"),
            40..43 => ("warm", "capped"),
            43..93 => ("cool", "shown"),
            _ => ("holdout", "holdout"),
        };
        let events = match (variant, status, i % 10) {
            ("warm", "shown", 0..3) => vec!["view", "view", "click", "conversion"],
            ("warm", "shown", 3) => vec!["view", "dismiss"],
            ("warm", "shown", 4) => vec!["dismiss", "click", "click"],
            ("warm", "shown", 5) => vec!["view", "view"],
            ("warm", "capped", _) if i == 41 => vec!["conversion"],
            ("cool", "shown", 7) => vec!["view", "conversion", "conversion"],
            ("holdout", _, 1) => vec!["conversion"],
            _ => vec![],
        };
        let revenue =
            events
                .contains(&"conversion")
                .then_some(if i % 2 == 0 { "19.990" } else { "5.005" });
        fired.push(Fired {
            id: format!("nudge:{a}:{i}:1"),
            variant,
            status,
            events,
            revenue,
        });
    }
    fired
}

/// One arm's numbers against a count made here and the formulas written out here; `holdout` is (converted,
/// assigned).
fn check_arm(arm: &Value, variant: &str, fired: &[Fired], holdout: (f64, f64)) {
    let (holdout_x, holdout_n) = holdout;
    assert_eq!(arm["variant"], variant);
    let n = count_rows(fired, variant, "shown");
    assert_eq!(arm["shown"], n, "{variant} shown");
    assert_eq!(
        arm["capped"],
        count_rows(fired, variant, "capped"),
        "{variant} capped"
    );
    for (field, event) in [
        ("viewed", "view"),
        ("clicked", "click"),
        ("dismissed", "dismiss"),
        ("converted", "conversion"),
    ] {
        assert_eq!(
            arm[field],
            count(fired, variant, "shown", event),
            "{variant} {field}"
        );
    }
    assert_eq!(
        arm["revenue"],
        revenue_of(fired, variant, "shown"),
        "{variant} revenue"
    );
    let x = count(fired, variant, "shown", "conversion") as f64;
    let n = n as f64;
    close(&arm["conversion_rate"], x / n, "rate");
    let (low, high) = wilson(x, n);
    close(&arm["ci95"]["low"], low, "ci low");
    close(&arm["ci95"]["high"], high, "ci high");
    let (p1, p0) = (x / n, holdout_x / holdout_n);
    let pooled = (x + holdout_x) / (n + holdout_n);
    let z = (p1 - p0) / (pooled * (1.0 - pooled) * (1.0 / n + 1.0 / holdout_n)).sqrt();
    close(&arm["lift"]["absolute"], p1 - p0, "absolute lift");
    close(&arm["lift"]["relative"], (p1 - p0) / p0, "relative lift");
    close(&arm["lift"]["z"], z, "z");
    // The p-value against references from outside Rust: warm 12/40 against 3/30 gives z = 2.01810, p = 0.04358;
    // cool 5/50 has the holdout's rate, z = 0, p = 1 (Python: math.erfc(abs(z) / math.sqrt(2))).
    let p_value = if variant == "warm" {
        0.043_580_856_392_609_266
    } else {
        1.0
    };
    close(&arm["lift"]["p_value"], p_value, "p-value");
}

fn count_rows(fired: &[Fired], variant: &str, status: &str) -> u64 {
    fired
        .iter()
        .filter(|f| f.variant == variant && f.status == status)
        .count() as u64
}

/// Revenue of `variant`'s `status` nudges, summed here in thousandths and rendered with cents.
fn revenue_of(fired: &[Fired], variant: &str, status: &str) -> String {
    let thousandths: i64 = fired
        .iter()
        .filter(|f| f.variant == variant && f.status == status)
        .flat_map(|f| {
            f.events
                .iter()
                .filter(|e| **e == "conversion")
                .map(|_| f.revenue.unwrap())
        })
        .map(|r| r.replace('.', "").parse::<i64>().unwrap())
        .sum();
    if thousandths % 10 == 0 {
        format!("{}.{:02}", thousandths / 1000, (thousandths % 1000) / 10)
    } else {
        format!("{}.{:03}", thousandths / 1000, thousandths % 1000)
    }
}

async fn write(pool: &PgPool, shop: &MerchantId, f: &Fired, experiment: &str) {
    let customer: i64 = f.id.split(':').nth(2).unwrap().parse().unwrap();
    sqlx::query(
        "INSERT INTO nudges (merchant_id, nudge_id, customer_id, version, segment, variant, kind, experiment_id, status)
         VALUES ($1, $2, $3, 1, 'at_risk', $4, 'at_risk', $5, $6)",
    )
    .bind(shop.as_str())
    .bind(&f.id)
    .bind(customer)
    .bind(f.variant)
    .bind(experiment)
    .bind(f.status)
    .execute(pool)
    .await
    .unwrap();
    for (n, kind) in f.events.iter().enumerate() {
        let revenue = (*kind == "conversion").then_some(f.revenue).flatten();
        sqlx::query(
            "INSERT INTO nudge_events (merchant_id, nudge_id, kind, customer_id, event_id, revenue)
             VALUES ($1, $2, $3, $4, $5, $6::numeric)",
        )
        .bind(shop.as_str())
        .bind(&f.id)
        .bind(*kind)
        .bind(customer)
        .bind(format!("{}-{n}", f.id))
        .bind(revenue)
        .execute(pool)
        .await
        .unwrap();
    }
}

/// Revisions come from a sequence when a save starts, so a save can commit after a later-numbered one. A refresh
/// that reads between the two must not end the plan of the save still committing (this instance installed it when
/// its API saved it); only a visible ended row ends a plan.
#[actix_web::test]
async fn plan_refresh_never_goes_back_when_saves_commit_out_of_revision_order() {
    use loyalnest_rfm::experiments::plans::sync;
    use loyalnest_rfm::experiments::store::save;
    use loyalnest_rfm::store::Store;

    let url = fresh_database().await;
    let store = Store::connect_lazy(&url).expect("pool");
    store.migrate().await.expect("migrations");
    let pool = PgPool::connect(&url).await.expect("postgres");
    let (late_shop, other_shop) = (shop(), shop());
    let doc = |id: &str| json!({"id": id, "kind": "new", "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}]});
    let experiment =
        |id: &str| functions::nudge::experiment::Experiment::from_json(&doc(id), "x").unwrap();

    // The late save takes its revision, then another shop's save takes a later one and commits first.
    let mut late = pool.begin().await.unwrap();
    let late_revision: i64 = sqlx::query_scalar(
        "INSERT INTO nudge_experiments (merchant_id, experiment_id, kind, definition)
         VALUES ($1, 'late', 'new', $2) RETURNING revision",
    )
    .bind(late_shop.as_str())
    .bind(experiment("late").to_json())
    .fetch_one(&mut *late)
    .await
    .unwrap();
    save(&store, &other_shop, &experiment("other"), "test")
        .await
        .unwrap();

    let plans: actors::NudgePlans = Default::default();
    let installed = |plans: &actors::NudgePlans, shop: &MerchantId| -> Vec<String> {
        plans
            .get(shop)
            .map(|p| p.iter().map(|p| p.id.to_string()).collect())
            .unwrap_or_default()
    };
    let plan = actors::ExperimentPlan::new(experiment("late"), late_revision);
    actors::experiments::install(&plans, &late_shop, std::sync::Arc::new(plan));
    sync(&store, &plans).await.unwrap();
    assert_eq!(
        installed(&plans, &late_shop),
        ["late"],
        "kept while its row is not visible"
    );
    assert_eq!(installed(&plans, &other_shop), ["other"]);

    late.commit().await.unwrap();
    sync(&store, &plans).await.unwrap();
    assert_eq!(installed(&plans, &late_shop), ["late"]);

    // A replacing save ends it in the same transaction: the next refresh swaps the plans.
    save(&store, &late_shop, &experiment("next"), "test")
        .await
        .unwrap();
    sync(&store, &plans).await.unwrap();
    assert_eq!(installed(&plans, &late_shop), ["next"]);
}
