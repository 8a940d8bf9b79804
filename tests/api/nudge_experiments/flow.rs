//! The processor's side of nudge experiments, through the real ingress, Tansu and Postgres: signed orders move
//! customers, each `rfm.task` carries the arm the pure assignment gives its customer, held-out customers get a
//! `holdout` row and nothing on the desk, a second nudge within the day is capped, and orders after a view (or
//! after a holdout assignment) are recorded as conversions, which the results then show.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::Ordering;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::customer::CustomerKey;
use actors::SystemClock;
use functions::nudge::experiment::Experiment;
use functions::NudgeKind;
use loyalnest_rfm::startup::Engine;
use serde_json::{json, Value};
use sqlx::PgPool;
use streams::MerchantId;

use super::{results, save, section};
use crate::helpers::{eventually, fresh_database, read_records};
use crate::live::token;
use crate::live::{post_order, shop, test_settings};
use crate::widget::{get_with, widget_token};

mod frames;

const WAIT: Duration = Duration::from_secs(60);

struct Running {
    address: String,
    engine: Engine,
    db: PgPool,
    brokers: String,
    rfm_task: String,
    topics: streams::Topics,
}

/// The whole engine on fresh topics and a fresh database, owning its partitions.
async fn start() -> Running {
    crate::helpers::init_test_logs();
    let url = fresh_database().await;
    let settings = test_settings(&[("DATABASE_URL", url.clone())]);
    streams::admin::ensure_topics(&settings.kafka_brokers, &settings.topics, 1, 1)
        .await
        .expect("topics");
    let engine = Engine::start(&settings, Arc::new(SystemClock), std::future::pending())
        .await
        .expect("engine starts");
    let stats = engine.stats.clone();
    eventually("the engine to own its partitions", WAIT, async || {
        stats.caught_up.load(Ordering::SeqCst)
    })
    .await;
    Running {
        address: format!("http://127.0.0.1:{}", engine.port),
        db: PgPool::connect(&url).await.expect("postgres"),
        brokers: settings.kafka_brokers.clone(),
        rfm_task: settings.topics.rfm_task.clone(),
        topics: settings.topics.clone(),
        engine,
    }
}

/// One `nudges` row: customer, nudge id, kind, experiment, variant, status.
type Row = (i64, String, String, Option<String>, String, String);

async fn nudge_rows(db: &PgPool, shop: &MerchantId) -> Vec<Row> {
    sqlx::query_as(
        "SELECT customer_id, nudge_id, kind, experiment_id, variant, status FROM nudges
         WHERE merchant_id = $1 ORDER BY customer_id, version",
    )
    .bind(shop.as_str())
    .fetch_all(db)
    .await
    .expect("nudge rows")
}

/// A widget's event for a nudge, stored as the events route stores it.
async fn widget_event(db: &PgPool, shop: &MerchantId, customer: u64, nudge_id: &str, kind: &str) {
    sqlx::query(
        "INSERT INTO nudge_events (merchant_id, nudge_id, kind, customer_id, event_id) VALUES ($1, $2, $3, $4, $5)",
    )
    .bind(shop.as_str())
    .bind(nudge_id)
    .bind(kind)
    .bind(customer as i64)
    .bind(crate::helpers::unique("widget-"))
    .execute(db)
    .await
    .expect("event stored");
}

/// The loyal nudge's English text with `{points}` (the default one names no points).
async fn loyal_template_with_points(app: &Running, m: &MerchantId) {
    let document = json!({"templates": {"loyal": {"enabled": true, "texts": {"en": {
        "title": "Thank you, {first_name}!", "body": "You have {points} points to spend."}}}}});
    let response = reqwest::Client::new()
        .put(format!("{}/api/v1/rfm/nudges/templates", app.address))
        .bearer_auth(token(m))
        .json(&document)
        .send()
        .await
        .unwrap();
    assert_eq!(
        response.status(),
        200,
        "{}",
        response.text().await.unwrap_or_default()
    );
}

/// A `points.earned` event for `customer`, applied before this returns (the engine counts it).
async fn earn_points(app: &Running, shop: &MerchantId, customer: u64, points: i64) {
    let before = app.engine.stats.events.load(Ordering::SeqCst);
    let event = streams::InputEvent::PointsEarned(streams::events::PointsChanged {
        event_id: crate::helpers::unique("points-"),
        schema_version: streams::SCHEMA_VERSION,
        merchant_id: shop.clone(),
        customer_id: customer,
        points,
        source: streams::events::PointsSource::Review,
        created_at: chrono::Utc::now(),
    });
    let sink = streams::SinkConfig::new(app.brokers.clone())
        .build()
        .expect("producer");
    let record = streams::sink::Outgoing {
        topic: &app.topics.points_earned,
        key: shop.as_str(),
        payload: &event.encode(),
        headers: &[],
    };
    sink.send(record).await.expect("broker acknowledges");
    let stats = app.engine.stats.clone();
    eventually("the points event applied", WAIT, async || {
        stats.events.load(Ordering::SeqCst) > before
    })
    .await;
}

/// `count` $80 orders of `customer` from today, numbered after its `first`.
async fn orders(app: &Running, shop: &MerchantId, customer: u64, first: u64, count: u64) {
    for n in first..first + count {
        post_order(&app.address, shop, customer * 100 + n, customer, "80.00", 0).await;
    }
}

/// The customers of the test, three of each arm and three held out, as the pure assignment places them.
struct Cast {
    experiment: Experiment,
    reds: Vec<u64>,
    blues: Vec<u64>,
    held: Vec<u64>,
}

impl Cast {
    fn of(document: &Value, shop: &MerchantId) -> Cast {
        let experiment = Experiment::from_json(document, "unused").unwrap();
        let mut picked: HashMap<String, Vec<u64>> = HashMap::new();
        for customer in 1..=1_000u64 {
            let arm = picked
                .entry(expected(&experiment, shop, customer))
                .or_default();
            if arm.len() < 3 {
                arm.push(customer);
            }
        }
        let mut take = |name: &str| picked.remove(name).unwrap_or_default();
        let (reds, blues, held) = (take("red"), take("blue"), take("holdout"));
        assert_eq!((reds.len(), blues.len(), held.len()), (3, 3, 3));
        Cast {
            experiment,
            reds,
            blues,
            held,
        }
    }

    fn everyone(&self) -> Vec<u64> {
        self.reds
            .iter()
            .chain(&self.blues)
            .chain(&self.held)
            .copied()
            .collect()
    }

    fn shown(&self) -> Vec<u64> {
        self.reds.iter().chain(&self.blues).copied().collect()
    }
}

/// The variant the pure assignment gives `customer`.
fn expected(experiment: &Experiment, shop: &MerchantId, customer: u64) -> String {
    experiment
        .variant(experiment.assign(shop.as_str(), customer))
        .to_owned()
}

#[actix_web::test]
async fn arms_ride_on_rfm_task_the_holdout_stays_off_the_desk_the_cap_holds_and_orders_convert() {
    let app = start().await;
    let m = shop();
    let document = json!({"id": "first-order", "kind": "new", "holdout_percent": 30, "variants": [
        {"name": "red", "weight": 1, "texts": {"en": {"title": "Red says welcome", "body": "An arm's own words"}}},
        {"name": "blue", "weight": 1}
    ]});
    let (status, body) = save(&app.address, &m, &document).await;
    assert_eq!(status, 200, "{body}");
    let cast = Cast::of(&document, &m);
    // A first order each: inactive → new, a nudge of the experiment's kind.
    for c in cast.everyone() {
        orders(&app, &m, c, 1, 1).await;
    }
    tasks_carry_the_assigned_arms(&app, &m, &cast).await;
    let nudge_of = rows_record_the_arms(&app, &m, &cast).await;
    only_the_shown_reach_the_desk(&app, &m, &cast).await;
    the_widget_shows_the_arms_texts(&app, &m, &cast).await;
    second_round(&app, &m, &cast, &nudge_of).await;
    check_rows_and_conversions(&app, &m, &nudge_of, &cast).await;
    frames::the_dashboard_frames_carry_the_counters(&app, &m, cast.blues[0], &nudge_of).await;
}

async fn tasks_carry_the_assigned_arms(app: &Running, m: &MerchantId, cast: &Cast) {
    let wanted: HashSet<u64> = cast.everyone().into_iter().collect();
    let seen = Arc::new(Mutex::new(HashSet::new()));
    let reader = seen.clone();
    let tasks = read_records(
        &app.brokers,
        &app.rfm_task,
        move |r| {
            let mut seen = reader.lock().unwrap();
            seen.extend(r.value["customer_id"].as_u64());
            wanted.is_subset(&seen)
        },
        WAIT,
    )
    .await;
    assert_eq!(tasks.len(), 9, "one task per customer");
    for task in &tasks {
        let customer = task.value["customer_id"].as_u64().unwrap();
        let variant = expected(&cast.experiment, m, customer);
        assert_eq!(task.value["variant"], variant, "customer {customer}");
        assert_eq!(task.value["experiment_id"], "first-order");
        assert_eq!(task.value["kind"], "new");
    }
}

/// Checks the first round's rows; returns each customer's nudge id.
async fn rows_record_the_arms(app: &Running, m: &MerchantId, cast: &Cast) -> HashMap<u64, String> {
    eventually("a nudges row per customer", WAIT, async || {
        nudge_rows(&app.db, m).await.len() == 9
    })
    .await;
    let rows = nudge_rows(&app.db, m).await;
    for (customer, _, kind, experiment_id, variant, status) in &rows {
        let customer = *customer as u64;
        assert_eq!(variant, &expected(&cast.experiment, m, customer));
        assert_eq!(
            (kind.as_str(), experiment_id.as_deref()),
            ("new", Some("first-order"))
        );
        let held_out = cast.held.contains(&customer);
        assert_eq!(
            status,
            if held_out { "holdout" } else { "shown" },
            "customer {customer}"
        );
    }
    rows.iter().map(|r| (r.0 as u64, r.1.clone())).collect()
}

fn key(m: &MerchantId, customer_id: u64) -> CustomerKey {
    CustomerKey {
        merchant: m.clone(),
        customer_id,
    }
}

async fn only_the_shown_reach_the_desk(app: &Running, m: &MerchantId, cast: &Cast) {
    let desk = app.engine.nudges.clone().expect("the engine holds nudges");
    let shown = cast.shown();
    eventually("the shown nudges on the desk", WAIT, async || {
        for &c in &shown {
            if desk.current(key(m, c)).await.is_none() {
                return false;
            }
        }
        true
    })
    .await;
    for &c in &shown {
        let pending = desk.current(key(m, c)).await.unwrap();
        let variant = expected(&cast.experiment, m, c);
        assert_eq!(&*pending.variant, variant.as_str());
        assert_eq!(pending.experiment_id.as_deref(), Some("first-order"));
    }
    for &c in &cast.held {
        assert_eq!(
            desk.current(key(m, c)).await,
            None,
            "held-out customer {c} has nothing pending"
        );
    }
    assert_eq!(
        desk.stats().await.offered,
        6,
        "only the shown nudges were offered"
    );
}

/// What the widget shows `customer` over REST, with a token got the way a storefront gets one.
async fn widget_shows(app: &Running, m: &MerchantId, customer: u64) -> Value {
    let token = widget_token(&app.address, m, customer).await;
    let (status, body) = get_with(&app.address, "/api/v1/rfm/nudges", &token).await;
    assert_eq!(status, 200, "{body}");
    body
}

async fn the_widget_shows_the_arms_texts(app: &Running, m: &MerchantId, cast: &Cast) {
    let red = widget_shows(app, m, cast.reds[0]).await;
    assert_eq!(
        (&red["title"], &red["variant"]),
        (&json!("Red says welcome"), &json!("red"))
    );
    let blue = widget_shows(app, m, cast.blues[0]).await;
    assert_eq!(blue["variant"], "blue");
    let title = blue["title"].as_str().unwrap_or_default();
    assert!(
        !title.is_empty() && title != "Red says welcome",
        "the kind's template: {blue}"
    );
}

/// Widget events, second orders, and a move on to loyal within the day.
async fn second_round(app: &Running, m: &MerchantId, cast: &Cast, nudge_of: &HashMap<u64, String>) {
    let (reds, blues, held) = (&cast.reds, &cast.blues, &cast.held);
    // The widget reports a view of blue 0's nudge and a dismissal of blue 2's. Then second orders: blue 0
    // converts, blue 1 (no event) and blue 2 (dismissed only) do not, held-out 0 converts on its assignment.
    widget_event(&app.db, m, blues[0], &nudge_of[&blues[0]], "view").await;
    widget_event(&app.db, m, blues[2], &nudge_of[&blues[2]], "dismiss").await;
    for &c in blues.iter().chain(&held[..1]) {
        orders(app, m, c, 2, 1).await;
    }
    // The cap: red 0 moves on to loyal within the day (orders 2 to 4), so that nudge is capped. Held-out 1 does the
    // same afterwards and is shown it: a held-out customer was shown nothing. Its orders convert on its assignment.
    orders(app, m, reds[0], 2, 3).await;
    loyal_template_with_points(app, m).await;
    earn_points(app, m, held[1], 1_200).await;
    orders(app, m, held[1], 2, 3).await;
    let desk = app.engine.nudges.clone().expect("the engine holds nudges");
    eventually("held-out 1's loyal nudge on the desk", WAIT, async || {
        desk.current(key(m, held[1]))
            .await
            .is_some_and(|n| n.kind == NudgeKind::Loyal)
    })
    .await;
    // The loyal template's `{points}` is the balance the points event left.
    let loyal = widget_shows(app, m, held[1]).await;
    let body = loyal["body"].as_str().unwrap_or_default();
    assert_eq!(body, "You have 1,200 points to spend.", "{loyal}");
    // Red 0's outcome started before held-out 1's, and the desk takes outcomes in the order they started.
    let red_now = desk.current(key(m, reds[0])).await.map(|n| n.kind);
    assert_eq!(red_now, Some(NudgeKind::New));
    assert_eq!(
        desk.stats().await.offered,
        7,
        "the capped nudge never reached the desk"
    );
    let want = [
        (blues[0], 2),
        (blues[1], 2),
        (blues[2], 2),
        (held[0], 2),
        (reds[0], 4),
        (held[1], 4),
    ];
    eventually("every order in the customers' rows", WAIT, async || {
        let rows: Vec<(i64, i32)> =
            sqlx::query_as("SELECT customer_id, orders FROM customers WHERE merchant_id = $1")
                .bind(m.as_str())
                .fetch_all(&app.db)
                .await
                .unwrap();
        let have: HashMap<u64, i32> = rows.into_iter().map(|(c, o)| (c as u64, o)).collect();
        want.iter().all(|(c, n)| have.get(c) == Some(n))
    })
    .await;
}

/// After the second round: the loyal rows' statuses, the conversion events, and the results.
async fn check_rows_and_conversions(
    app: &Running,
    m: &MerchantId,
    nudge_of: &HashMap<u64, String>,
    cast: &Cast,
) {
    let (red, blue, held) = (cast.reds[0], cast.blues[0], &cast.held);
    let mut loyal: Vec<(i64, Option<String>, String, String)> = nudge_rows(&app.db, m)
        .await
        .into_iter()
        .filter(|r| r.2 == "loyal")
        .map(|(c, _, _, e, v, s)| (c, e, v, s))
        .collect();
    loyal.sort();
    let mut want_loyal = vec![
        (red as i64, None, "A".to_owned(), "capped".to_owned()),
        (held[1] as i64, None, "A".to_owned(), "shown".to_owned()),
    ];
    want_loyal.sort();
    assert_eq!(
        loyal, want_loyal,
        "outside the experiment; capped within the day unless nothing was shown"
    );

    let conversions: Vec<(i64, String, Option<String>)> = sqlx::query_as(
        "SELECT customer_id, nudge_id, revenue::text FROM nudge_events
         WHERE merchant_id = $1 AND kind = 'conversion' ORDER BY customer_id, event_id",
    )
    .bind(m.as_str())
    .fetch_all(&app.db)
    .await
    .unwrap();
    let eighty = Some("80.000".to_owned());
    let mut want = vec![
        (blue as i64, nudge_of[&blue].clone(), eighty.clone()),
        (held[0] as i64, nudge_of[&held[0]].clone(), eighty.clone()),
    ];
    want.extend((0..3).map(|_| (held[1] as i64, nudge_of[&held[1]].clone(), eighty.clone())));
    want.sort();
    let mut got = conversions.clone();
    got.sort();
    assert_eq!(
        got, want,
        "a conversion per order after a view or a holdout assignment, and no other"
    );

    results_show_the_round(app, m).await;
}

/// The results after both rounds, counted from what the test did.
async fn results_show_the_round(app: &Running, m: &MerchantId) {
    let seen = results(&app.address, m).await;
    let first = section(&seen, "new", Some("first-order"));
    assert_eq!(first["running"], true);
    let arm = |i: usize, field: &str| first["arms"][i][field].clone();
    assert_eq!(
        (arm(0, "variant"), arm(0, "shown"), arm(0, "converted")),
        (json!("red"), json!(3), json!(0))
    );
    assert_eq!(
        (arm(1, "variant"), arm(1, "shown"), arm(1, "viewed")),
        (json!("blue"), json!(3), json!(1))
    );
    assert_eq!(
        (arm(1, "dismissed"), arm(1, "converted"), arm(1, "revenue")),
        (json!(1), json!(1), json!("80.00"))
    );
    let holdout = &first["holdout"];
    assert_eq!(
        (&holdout["assigned"], &holdout["converted"]),
        (&json!(3), &json!(2))
    );
    assert_eq!(holdout["revenue"], "320.00");
    let outside = section(&seen, "loyal", None);
    assert_eq!(outside["arms"][0]["variant"], "A");
    assert_eq!(
        (&outside["arms"][0]["shown"], &outside["arms"][0]["capped"]),
        (&json!(1), &json!(1))
    );
    assert_eq!(outside["holdout"], Value::Null);
}
