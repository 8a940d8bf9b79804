//! The shopper widget's doors, end to end: the App Proxy token route (valid, tampered, stale, no customer), widget
//! tokens and session tokens refused at each other's routes, and the shopper's event reports (validated, stored
//! once per event id with the customer, limited per customer). Shared helpers for the other widget tests too.

use std::time::{Duration, Instant};

use futures_util::StreamExt;
use loyalnest_rfm::shopify::hmac::sign;
use loyalnest_rfm::widget::proxy::signed_query;
use serde_json::{json, Value};
use streams::MerchantId;
use tokio_tungstenite::tungstenite::client::IntoClientRequest;
use tokio_tungstenite::tungstenite::Message;

use crate::helpers::{brokers, spawn_app_on, unique, PREVIOUS_SECRET, SECRET};
use crate::live::{open_socket, shop, spawn_engine, spawn_engine_with, token, Socket, DAY};

pub(crate) const WAIT: Duration = Duration::from_secs(60);

/// The query Shopify's App Proxy would forward for `customer` of `shop` at `timestamp`, signed with `secret`.
pub(crate) fn proxy_query(
    shop: &MerchantId,
    customer: Option<u64>,
    timestamp: i64,
    secret: &str,
) -> String {
    let (customer, timestamp) = (
        customer.map(|c| c.to_string()).unwrap_or_default(),
        timestamp.to_string(),
    );
    signed_query(
        &[
            ("shop", shop.as_str()),
            ("logged_in_customer_id", &customer),
            ("path_prefix", "/apps/loyalnest"),
            ("timestamp", &timestamp),
        ],
        secret.as_bytes(),
    )
}

fn now() -> i64 {
    chrono::Utc::now().timestamp()
}

/// `GET /proxy/widget-token?<query>`: the status and the JSON answer.
pub(crate) async fn proxy_token(address: &str, query: &str) -> (u16, Value) {
    let response = reqwest::get(format!("{address}/proxy/widget-token?{query}"))
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// A widget token for `customer` of `shop`, obtained the way a storefront gets one.
pub(crate) async fn widget_token(address: &str, shop: &MerchantId, customer: u64) -> String {
    let (status, body) =
        proxy_token(address, &proxy_query(shop, Some(customer), now(), SECRET)).await;
    assert_eq!(status, 200, "{body}");
    body["token"].as_str().expect("a token").to_owned()
}

/// `GET path` with a bearer token: status and JSON (Null for an empty body).
pub(crate) async fn get_with(address: &str, path: &str, token: &str) -> (u16, Value) {
    let response = reqwest::Client::new()
        .get(format!("{address}{path}"))
        .bearer_auth(token)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    (status, response.json().await.unwrap_or(Value::Null))
}

/// Opens the widget socket as a browser does (token as a sub-protocol); the HTTP status when refused.
pub(crate) async fn open_widget(address: &str, token: &str) -> Result<Socket, u16> {
    let url = format!(
        "{}/api/v1/widget/stream",
        address.replace("http://", "ws://")
    );
    let mut request = url.into_client_request().unwrap();
    request.headers_mut().insert(
        "Sec-WebSocket-Protocol",
        format!("bearer, {token}").parse().unwrap(),
    );
    match tokio_tungstenite::connect_async(request).await {
        Ok((socket, response)) => {
            let protocol = response.headers().get("sec-websocket-protocol");
            assert_eq!(protocol.and_then(|p| p.to_str().ok()), Some("bearer"));
            Ok(socket)
        }
        Err(tokio_tungstenite::tungstenite::Error::Http(response)) => {
            Err(response.status().as_u16())
        }
        Err(e) => panic!("widget socket failed: {e}"),
    }
}

/// What the socket says next: a nudge message, or the close code when it closes. Panics after `WAIT`.
pub(crate) async fn next_message(socket: &mut Socket) -> Result<Value, Option<u16>> {
    let deadline = Instant::now() + WAIT;
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let message = tokio::time::timeout(left, socket.next())
            .await
            .expect("the widget socket says something within a minute");
        match message {
            Some(Ok(Message::Text(text))) => {
                return Ok(serde_json::from_str(text.as_str()).unwrap())
            }
            Some(Ok(Message::Close(frame))) => return Err(frame.map(|f| u16::from(f.code))),
            Some(Ok(_)) => continue,
            Some(Err(_)) | None => return Err(None),
        }
    }
}

/// A signed `orders/create` for `customer` carrying the customer's first name and locale, as Shopify sends it.
pub(crate) async fn post_named_order(
    address: &str,
    shop: &MerchantId,
    order: u64,
    (customer, first_name, locale): (u64, &str, &str),
    total: &str,
    days_ago: i64,
) {
    let created = chrono::Utc::now() - chrono::Duration::seconds(days_ago * DAY);
    let body = json!({"id": order, "created_at": created.to_rfc3339(), "total_price": total, "currency": "USD",
        "financial_status": "paid", "test": false, "customer_locale": locale,
        "customer": {"id": customer, "first_name": first_name, "email": format!("c{customer}@example.com")}})
    .to_string();
    post_signed(address, shop, "orders/create", body).await;
}

/// Posts a webhook signed with the test secret and asserts it was accepted.
pub(crate) async fn post_signed(address: &str, shop: &MerchantId, topic: &str, body: String) {
    let response = reqwest::Client::new()
        .post(format!("{address}/webhooks/shopify"))
        .header("X-Shopify-Topic", topic)
        .header(
            "X-Shopify-Hmac-Sha256",
            sign(SECRET.as_bytes(), body.as_bytes()),
        )
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", unique("wh-"))
        .body(body)
        .send()
        .await
        .expect("ingress reachable");
    assert_eq!(response.status(), 200, "{topic} accepted");
}

/// `customers/redact` for one customer of `shop`.
pub(crate) async fn redact(address: &str, shop: &MerchantId, customer: u64) {
    let body = json!({"shop_id": 1, "shop_domain": shop.as_str(), "customer": {"id": customer},
        "orders_to_redact": []})
    .to_string();
    post_signed(address, shop, "customers/redact", body).await;
}

/// `POST /api/v1/rfm/nudges/{nudge}/events`: status, `Retry-After`, JSON.
pub(crate) async fn post_event(
    address: &str,
    token: &str,
    nudge: &str,
    body: Value,
) -> (u16, Option<String>, Value) {
    let response = reqwest::Client::new()
        .post(format!(
            "{address}/api/v1/rfm/nudges/{}/events",
            nudge.replace(':', "%3A")
        ))
        .bearer_auth(token)
        .json(&body)
        .send()
        .await
        .unwrap();
    let status = response.status().as_u16();
    let retry = response
        .headers()
        .get("retry-after")
        .map(|v| v.to_str().unwrap().to_owned());
    (status, retry, response.json().await.unwrap_or(Value::Null))
}

#[tokio::test]
async fn the_proxy_token_needs_a_fresh_signature_by_shopify_and_a_logged_in_customer() {
    // The proxy route needs no broker: no topics are made.
    let app = spawn_app_on(&brokers(), &[]);
    let a = shop();
    let (status, body) = proxy_token(&app.address, &proxy_query(&a, Some(7), now(), SECRET)).await;
    assert_eq!(status, 200, "{body}");
    let expires =
        chrono::DateTime::parse_from_rfc3339(body["expires_at"].as_str().unwrap()).unwrap();
    let lifetime = expires.timestamp() - now();
    assert!(
        lifetime > 0 && lifetime <= 15 * 60,
        "short-lived: {lifetime} s"
    );
    assert_eq!(
        body["token"].as_str().unwrap().split('.').count(),
        3,
        "a JWT"
    );

    let rotated = proxy_query(&a, Some(7), now(), PREVIOUS_SECRET);
    assert_eq!(
        proxy_token(&app.address, &rotated).await.0,
        200,
        "the previous secret during a rotation"
    );

    let signed = proxy_query(&a, Some(7), now(), SECRET);
    let tampered = signed.replace("logged_in_customer_id=7", "logged_in_customer_id=8");
    assert_ne!(tampered, signed);
    assert_eq!(
        proxy_token(&app.address, &tampered).await.0,
        401,
        "another customer"
    );
    let forged = proxy_query(&a, Some(7), now(), "not-the-secret");
    assert_eq!(proxy_token(&app.address, &forged).await.0, 401);
    let stale = proxy_query(&a, Some(7), now() - 301, SECRET);
    assert_eq!(
        proxy_token(&app.address, &stale).await.0,
        401,
        "older than five minutes"
    );
    let unsigned = signed.split("&signature=").next().unwrap();
    assert_eq!(proxy_token(&app.address, unsigned).await.0, 401);

    let (status, body) = proxy_token(&app.address, &proxy_query(&a, None, now(), SECRET)).await;
    assert_eq!(status, 200);
    assert_eq!(
        body,
        json!({"token": null, "expires_at": null}),
        "nobody logged in: no token"
    );
    let bad_shop = MerchantId::parse("x.myshopify.com").unwrap();
    let odd = proxy_query(&bad_shop, Some(7), now(), SECRET)
        .replace("x.myshopify.com", "evil.example.com");
    assert_eq!(
        proxy_token(&app.address, &odd).await.0,
        401,
        "the shop is signed too"
    );
}

#[actix_web::test]
async fn widget_and_session_tokens_open_only_their_own_doors() {
    let app = spawn_engine().await;
    let a = shop();
    let widget = widget_token(&app.address, &a, 7).await;
    let session = token(&a);

    assert_eq!(
        get_with(&app.address, "/api/v1/rfm/nudges", &widget)
            .await
            .0,
        204,
        "no nudge yet"
    );
    assert_eq!(
        get_with(&app.address, "/api/v1/rfm/nudges", &session)
            .await
            .0,
        401
    );
    assert_eq!(open_widget(&app.address, &session).await.err(), Some(401));
    let webhook_signature = sign(SECRET.as_bytes(), b"{}");
    assert_eq!(
        get_with(&app.address, "/api/v1/rfm/nudges", &webhook_signature)
            .await
            .0,
        401
    );

    assert_eq!(
        get_with(&app.address, "/api/v1/rfm/segments", &widget)
            .await
            .0,
        401
    );
    assert_eq!(
        get_with(&app.address, "/api/v1/rfm/segments", &session)
            .await
            .0,
        200
    );
    assert_eq!(
        open_socket(&app.address, &widget).await.err(),
        Some(401),
        "not a dashboard token"
    );
    assert!(open_widget(&app.address, &widget).await.is_ok());
    let event = json!({"action": "view", "event_id": uuid::Uuid::new_v4().to_string()});
    let nudge = format!("nudge:{a}:7:1");
    assert_eq!(
        post_event(&app.address, &session, &nudge, event).await.0,
        401
    );
}

/// Posts events until one is refused with 429 (at most 20); its `Retry-After`.
async fn first_refusal(address: &str, token: &str, nudge: &str) -> u64 {
    for _ in 0..20 {
        let body = json!({"action": "dismiss", "event_id": uuid::Uuid::new_v4().to_string()});
        let (status, retry, _) = post_event(address, token, nudge, body).await;
        if status == 429 {
            return retry.expect("Retry-After").parse().unwrap();
        }
        assert_eq!(status, 201);
    }
    panic!("20 events in a row were not rate limited");
}

async fn stored_events(
    pool: &sqlx::PgPool,
    shop: &MerchantId,
    event_id: &str,
) -> Vec<(i64, String)> {
    sqlx::query_as(
        "SELECT customer_id, kind FROM nudge_events WHERE merchant_id = $1 AND event_id = $2",
    )
    .bind(shop.as_str())
    .bind(event_id)
    .fetch_all(pool)
    .await
    .unwrap()
}

/// The id of the nudge the widget shows now (polled over REST, within the customer's read budget).
async fn shown_nudge(address: &str, token: &str) -> String {
    let deadline = Instant::now() + WAIT;
    loop {
        let (status, body) = get_with(address, "/api/v1/rfm/nudges", token).await;
        if status == 200 {
            return body["nudge_id"].as_str().expect("a nudge id").to_owned();
        }
        assert!(Instant::now() < deadline, "no nudge shown: {status} {body}");
        tokio::time::sleep(Duration::from_millis(600)).await;
    }
}

#[actix_web::test]
async fn events_are_validated_stored_once_with_their_customer_and_limited_per_customer() {
    let app = spawn_engine_with(&[("WIDGET_RATE_PER_CUSTOMER", "1".to_owned())]).await;
    let pool = sqlx::PgPool::connect(app.settings.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let a = shop();
    let token_of = |customer| widget_token(&app.address, &a, customer);
    let (seven, eight, nine) = (token_of(7).await, token_of(8).await, token_of(9).await);
    // Real nudges: a first order each moves 7, 9 and 10 into `new`, which is shown (no experiment, nothing capped).
    for customer in [7, 9, 10] {
        post_named_order(
            &app.address,
            &a,
            7_000 + customer,
            (customer, "Sam", "en"),
            "40.00",
            0,
        )
        .await;
    }
    let mut shown = std::collections::HashMap::new();
    for (customer, token) in [(7, &seven), (9, &nine)] {
        shown.insert(customer, shown_nudge(&app.address, token).await);
    }
    let nudge = |customer: u64| shown[&customer].clone();

    // The customer's own id, but a nudge never shown to them (customer 11 has no order): nothing is stored.
    let eleven = token_of(11).await;
    let never = format!("nudge:{a}:11:1");
    let body = json!({"action": "view", "event_id": uuid::Uuid::new_v4().to_string()});
    let (status, _, _) = post_event(&app.address, &eleven, &never, body.clone()).await;
    assert_eq!(status, 404, "a nudge that was never shown");
    let stored = stored_events(&pool, &a, body["event_id"].as_str().unwrap()).await;
    assert!(stored.is_empty());

    let id = uuid::Uuid::new_v4().to_string();
    let click = json!({"action": "click", "event_id": id});
    let (status, _, body) = post_event(&app.address, &seven, &nudge(7), click.clone()).await;
    assert_eq!((status, &body["duplicate"]), (201, &json!(false)), "{body}");
    let (status, _, body) = post_event(&app.address, &seven, &nudge(7), click).await;
    assert_eq!(
        (status, &body["duplicate"]),
        (200, &json!(true)),
        "a retry is stored once"
    );
    assert_eq!(
        stored_events(&pool, &a, &id).await,
        vec![(7, "click".to_owned())]
    );

    let fresh = || uuid::Uuid::new_v4().to_string();
    let (status, _, _) = post_event(
        &app.address,
        &eight,
        &nudge(7),
        json!({"action": "view", "event_id": fresh()}),
    )
    .await;
    assert_eq!(status, 404, "customer 7's nudge is not customer 8's");
    let (status, _, _) = post_event(
        &app.address,
        &eight,
        &format!("nudge:{a}:8:1"),
        json!({"action": "buy", "event_id": fresh()}),
    )
    .await;
    assert_eq!(status, 400, "unknown action");
    let (status, _, _) = post_event(
        &app.address,
        &nine,
        &nudge(9),
        json!({"action": "view", "event_id": "42"}),
    )
    .await;
    assert_eq!(status, 400, "not a UUID");

    // One a second, a burst of two: customer 9 has one request left, and is refused within a few more.
    let retry = first_refusal(&app.address, &nine, &nudge(9)).await;
    assert!(retry >= 1, "Retry-After {retry}");
    let ten = token_of(10).await;
    let tens = shown_nudge(&app.address, &ten).await;
    let body = json!({"action": "dismiss", "event_id": fresh()});
    assert_eq!(
        post_event(&app.address, &ten, &tens, body).await.0,
        201,
        "another customer's budget"
    );
}

/// The token route: limited per peer address before any signature is checked, and refusing parameters the App
/// Proxy does not add.
#[tokio::test]
async fn the_proxy_route_is_limited_per_address_and_takes_only_the_proxys_parameters() {
    let app = spawn_app_on(&brokers(), &[("WIDGET_PROXY_RATE_PER_IP", "1")]);
    let a = shop();
    let with_extra = signed_query(
        &[
            ("shop", a.as_str()),
            ("logged_in_customer_id", "7"),
            ("path_prefix", "/apps/loyalnest"),
            ("timestamp", &now().to_string()),
            ("redirect", "https://evil.example.com"),
        ],
        SECRET.as_bytes(),
    );
    let (status, body) = proxy_token(&app.address, &with_extra).await;
    assert_eq!(status, 400, "{body}");
    assert!(
        body["error"].as_str().unwrap().contains("redirect"),
        "{body}"
    );
    // One a second, a burst of two: the second request above this line's first spent the burst.
    let (status, _) = proxy_token(&app.address, &proxy_query(&a, Some(7), now(), SECRET)).await;
    assert_eq!(status, 200);
    let deadline = Instant::now() + WAIT;
    loop {
        let response = reqwest::get(format!(
            "{}/proxy/widget-token?{}",
            app.address,
            proxy_query(&a, Some(7), now(), SECRET)
        ))
        .await
        .unwrap();
        if response.status() == 429 {
            assert!(response.headers().contains_key("retry-after"));
            break;
        }
        assert!(Instant::now() < deadline, "never limited");
    }
    let unsigned = "shop=a.myshopify.com";
    assert_eq!(
        proxy_token(&app.address, unsigned).await.0,
        429,
        "limited before the signature is looked at"
    );
}
