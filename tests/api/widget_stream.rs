//! The widget socket end to end: signed order webhooks move customers, each customer's widget gets its current
//! nudge at once and every newer one pushed, greeted by the first name opened from the sealed PII, never another
//! customer's nudge (socket or REST); a `customers/redact` ends the customer's open socket and removes its events;
//! and a widget on an instance that does not consume the customer's partition gets the nudge too (Redis relay).

use std::time::Duration;

use loyalnest_rfm::startup::Application;
use serde_json::{json, Value};
use sqlx::PgPool;
use streams::MerchantId;

use crate::helpers::eventually;
use crate::live::{shop, spawn_engine, spawn_sealing_engine, LiveApp, Socket};
use crate::widget::{
    get_with, next_message, open_widget, post_event, post_named_order, redact, widget_token, WAIT,
};

const X: (u64, &str, &str) = (7, "Ana", "es");
const Y: (u64, &str, &str) = (8, "Bo", "ar");

async fn sealed_pii_stored(pool: &PgPool, shop: &MerchantId, customer: u64) -> bool {
    sqlx::query_scalar::<_, bool>(
        "SELECT pii_sealed IS NOT NULL FROM customers WHERE merchant_id = $1 AND customer_id = $2",
    )
    .bind(shop.as_str())
    .bind(customer as i64)
    .fetch_optional(pool)
    .await
    .unwrap()
    .unwrap_or(false)
}

/// The first order of a customer (yesterday, $20: a new customer, which fires a nudge), waited for until its
/// personal data is at rest and its nudge is pending, so the greeting can name the customer.
async fn first_order(
    app: &LiveApp,
    pool: &PgPool,
    a: &MerchantId,
    customer: (u64, &str, &str),
    order: u64,
) -> String {
    post_named_order(&app.address, a, order, customer, "20.00", 1).await;
    eventually("the sealed personal data at rest", WAIT, async || {
        sealed_pii_stored(pool, a, customer.0).await
    })
    .await;
    let token = widget_token(&app.address, a, customer.0).await;
    eventually("the first nudge pending", WAIT, async || {
        get_with(&app.address, "/api/v1/rfm/nudges", &token).await.0 == 200
    })
    .await;
    token
}

/// Reads nudges until one is not `seen`; every nudge read must name `customer`.
async fn next_new_nudge(
    socket: &mut Socket,
    seen: &str,
    shop: &MerchantId,
    customer: u64,
) -> Value {
    loop {
        let nudge = next_message(socket).await.expect("the socket stays open");
        let id = nudge["nudge_id"].as_str().unwrap();
        assert!(id.starts_with(&format!("nudge:{shop}:{customer}:")), "{id}");
        if id != seen {
            return nudge;
        }
    }
}

/// Five $50 orders today: the customer moves up from New.
async fn more_orders(app: &LiveApp, a: &MerchantId, customer: (u64, &str, &str), first_order: u64) {
    for order in first_order..first_order + 5 {
        post_named_order(&app.address, a, order, customer, "50.00", 0).await;
    }
}

#[actix_web::test]
async fn each_widget_gets_its_own_customers_nudges_now_and_as_they_fire() {
    let (app, pool) = spawn_sealing_engine().await;
    let a = shop();
    let x_token = first_order(&app, &pool, &a, X, 1).await;
    let y_token = first_order(&app, &pool, &a, Y, 2).await;

    let (status, x_rest) = get_with(&app.address, "/api/v1/rfm/nudges", &x_token).await;
    assert_eq!(status, 200);
    assert_eq!(x_rest["type"], "nudge");
    assert_eq!(x_rest["kind"], "new");
    assert_eq!(
        x_rest["title"], "¡Te damos la bienvenida, Ana!",
        "the merchant's Spanish template, with the first name opened at render time"
    );
    assert_eq!(
        (&x_rest["locale"], &x_rest["dir"]),
        (&json!("es"), &json!("ltr"))
    );
    let (_, y_rest) = get_with(&app.address, "/api/v1/rfm/nudges", &y_token).await;
    assert_eq!(y_rest["title"], "أهلًا بك، Bo!");
    assert_eq!(y_rest["dir"], "rtl");
    assert!(y_rest["nudge_id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("nudge:{a}:8:")));

    let mut x_socket = open_widget(&app.address, &x_token).await.unwrap();
    let mut y_socket = open_widget(&app.address, &y_token).await.unwrap();
    let current = next_message(&mut x_socket).await.unwrap();
    assert_eq!(
        current, x_rest,
        "the current nudge at once, as REST renders it"
    );
    let y_current = next_message(&mut y_socket).await.unwrap();
    assert_eq!(y_current, y_rest);

    more_orders(&app, &a, X, 10).await;
    let pushed = next_new_nudge(&mut x_socket, current["nudge_id"].as_str().unwrap(), &a, 7).await;
    assert_ne!(pushed["kind"], "new");
    assert!(
        pushed["title"].as_str().unwrap().contains("Ana"),
        "{pushed}"
    );
    // Customer 8 moves after customer 7 did: its socket gets its own new nudge, and nothing of customer 7's
    // before it (next_new_nudge checks every nudge it reads names customer 8).
    more_orders(&app, &a, Y, 20).await;
    let y_pushed = next_new_nudge(
        &mut y_socket,
        y_current["nudge_id"].as_str().unwrap(),
        &a,
        8,
    )
    .await;
    assert!(
        y_pushed["title"].as_str().unwrap().contains("Bo"),
        "{y_pushed}"
    );
    let (_, x_now) = get_with(&app.address, "/api/v1/rfm/nudges", &x_token).await;
    assert!(x_now["nudge_id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("nudge:{a}:7:")));
}

#[actix_web::test]
async fn erasing_a_customer_closes_its_widget_and_removes_its_events() {
    let (app, pool) = spawn_sealing_engine().await;
    let a = shop();
    let token = first_order(&app, &pool, &a, X, 1).await;
    let other = first_order(&app, &pool, &a, Y, 2).await;
    let mut socket = open_widget(&app.address, &token).await.unwrap();
    let nudge = next_message(&mut socket).await.unwrap();
    let id = nudge["nudge_id"].as_str().unwrap();
    for action in ["view", "click"] {
        let event = json!({"action": action, "event_id": uuid::Uuid::new_v4().to_string()});
        assert_eq!(post_event(&app.address, &token, id, event).await.0, 201);
    }
    let (_, other_nudge) = get_with(&app.address, "/api/v1/rfm/nudges", &other).await;
    let event = json!({"action": "view", "event_id": uuid::Uuid::new_v4().to_string()});
    let other_id = other_nudge["nudge_id"].as_str().unwrap();
    assert_eq!(
        post_event(&app.address, &other, other_id, event).await.0,
        201
    );
    let events_of = |customer: i64| {
        sqlx::query_scalar::<_, i64>(
            "SELECT count(*) FROM nudge_events WHERE merchant_id = $1 AND customer_id = $2",
        )
        .bind(a.as_str())
        .bind(customer)
        .fetch_one(&pool)
    };
    assert_eq!(events_of(7).await.unwrap(), 2);

    redact(&app.address, &a, 7).await;
    assert_eq!(
        next_message(&mut socket).await,
        Err(Some(4002)),
        "the widget's stream ends"
    );
    eventually("the customer's events erased", WAIT, async || {
        events_of(7).await.unwrap() == 0
    })
    .await;
    assert_eq!(
        events_of(8).await.unwrap(),
        1,
        "another customer's events stay"
    );
    assert_eq!(
        get_with(&app.address, "/api/v1/rfm/nudges", &token).await.0,
        204
    );
}

async fn relay_subscribers(channel: &str) -> i64 {
    let redis = redis::Client::open(std::env::var("REDIS_URL").expect("REDIS_URL")).unwrap();
    let mut conn = redis.get_multiplexed_async_connection().await.unwrap();
    let (_, count): (String, i64) = redis::cmd("PUBSUB")
        .arg("NUMSUB")
        .arg(channel)
        .query_async(&mut conn)
        .await
        .unwrap();
    count
}

#[actix_web::test]
async fn a_widget_on_an_instance_that_consumes_nothing_gets_the_nudges_and_their_erasure() {
    let owner = spawn_engine().await;
    let settings = owner.settings.clone();
    let second = Application::build(&settings).expect("a second, HTTP-only instance");
    let second = LiveApp::at(format!("http://127.0.0.1:{}", second.port()), second);
    let channel = loyalnest_rfm::widget::relay::channel(&settings);
    eventually(
        "both instances subscribed to the nudge relay",
        WAIT,
        async || relay_subscribers(&channel).await >= 2,
    )
    .await;

    let a = shop();
    let token = widget_token(&second.address, &a, 7).await;
    let mut socket = open_widget(&second.address, &token).await.unwrap();
    post_named_order(&owner.address, &a, 1, X, "20.00", 1).await;
    let nudge = next_message(&mut socket)
        .await
        .expect("the nudge crosses to the other instance");
    assert_eq!(nudge["kind"], "new");
    assert!(nudge["nudge_id"]
        .as_str()
        .unwrap()
        .starts_with(&format!("nudge:{a}:7:")));
    let (status, current) = get_with(&second.address, "/api/v1/rfm/nudges", &token).await;
    assert_eq!((status, &current["nudge_id"]), (200, &nudge["nudge_id"]));

    redact(&owner.address, &a, 7).await;
    assert_eq!(
        next_message(&mut socket).await,
        Err(Some(4002)),
        "the erasure crosses too"
    );
    let second_address = second.address.clone();
    eventually(
        "the nudge gone on the other instance",
        Duration::from_secs(30),
        async || {
            get_with(&second_address, "/api/v1/rfm/nudges", &token)
                .await
                .0
                == 204
        },
    )
    .await;
}
