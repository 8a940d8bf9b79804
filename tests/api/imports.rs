//! Points imported from another loyalty app (issue 19) through the real engine: ingress, Tansu, processor and
//! Postgres. Customers are matched by Shopify id or by their email's blind index (written by the processor from a
//! sealed order webhook); bad rows are reported by line; sending the same file again changes nothing.

use std::time::Duration;

use serde_json::{json, Value};

use crate::helpers::{eventually, post_webhook};
use crate::live::{post_order, shop, spawn_sealing_engine, token};

const FILE: &str = "email,points,external_id\n\
ann@example.com,120,\n\
,40,912\n\
nobody@example.com,5,\n\
bob@example.com,12abc,\n\
,7,\n";

async fn points(
    client: &reqwest::Client,
    address: &str,
    token: &str,
    customer: u64,
) -> Option<i64> {
    let response = client
        .get(format!("{address}/api/v1/rfm/customers/{customer}"))
        .bearer_auth(token)
        .send()
        .await
        .ok()?;
    let body: Value = response.json().await.ok()?;
    body.get("points")?.as_i64()
}

#[actix_web::test]
async fn an_export_with_bad_rows_imports_the_good_ones_and_again_changes_nothing() {
    let (app, db) = spawn_sealing_engine().await;
    let shop = shop();
    let token = token(&shop);
    // Ann is known by email only (her order webhook carried it, sealed); 912 by id.
    let order = json!({"id": 7001, "customer": {"id": 911, "email": "Ann@Example.com"}, "created_at": chrono::Utc::now().to_rfc3339(),
        "total_price": "30.00", "currency": "USD", "financial_status": "paid", "test": false});
    post_webhook(&app.address, &shop, "orders/create", order.to_string()).await;
    post_order(&app.address, &shop, 7002, 912, "15.00", 3).await;
    eventually(
        "Ann's blind index in Postgres",
        Duration::from_secs(30),
        async || {
            sqlx::query_scalar::<_, Option<String>>(
                "SELECT email_index FROM customers WHERE merchant_id = $1 AND customer_id = 911",
            )
            .bind(shop.as_str())
            .fetch_optional(&db)
            .await
            .ok()
            .flatten()
            .flatten()
            .is_some()
        },
    )
    .await;

    let import = |source: &'static str| {
        app.client
            .post(format!("{}/api/v1/imports?source={source}", app.address))
            .bearer_auth(&token)
            .header("Content-Type", "text/csv")
            .body(FILE)
            .send()
    };
    let first = import("smile").await.unwrap();
    assert_eq!(first.status(), 201);
    let first: Value = first.json().await.unwrap();
    assert_eq!(
        (
            first["rows_imported"].as_u64(),
            first["rows_failed"].as_u64()
        ),
        (Some(2), Some(3)),
        "{first}"
    );
    let lines: Vec<u64> = first["errors"]
        .as_array()
        .unwrap()
        .iter()
        .map(|e| e["line"].as_u64().unwrap())
        .collect();
    assert_eq!(lines, [4, 5, 6]);
    assert!(
        first["errors"][0]["reason"]
            .as_str()
            .unwrap()
            .contains("no customer"),
        "{first}"
    );
    assert!(
        first["errors"][1]["reason"]
            .as_str()
            .unwrap()
            .contains("whole number"),
        "{first}"
    );

    let client = app.client.clone();
    eventually(
        "the imported points applied",
        Duration::from_secs(30),
        async || {
            points(&client, &app.address, &token, 911).await == Some(120)
                && points(&client, &app.address, &token, 912).await == Some(40)
        },
    )
    .await;

    let again: Value = import("smile").await.unwrap().json().await.unwrap();
    assert_eq!(again["rows_imported"], 2);
    // A marker after the re-import: once its points show, everything sent before it was applied too.
    let marker = "email,points,external_id\n,1,913\n";
    let marked = app
        .client
        .post(format!("{}/api/v1/imports?source=smile", app.address))
        .bearer_auth(&token)
        .body(marker)
        .send()
        .await
        .unwrap();
    assert_eq!(marked.status(), 201);
    post_order(&app.address, &shop, 7003, 913, "1.00", 0).await;
    eventually("the marker applied", Duration::from_secs(30), async || {
        points(&client, &app.address, &token, 913).await == Some(1)
    })
    .await;
    assert_eq!(
        points(&client, &app.address, &token, 911).await,
        Some(120),
        "the same file again changed nothing"
    );
    assert_eq!(points(&client, &app.address, &token, 912).await, Some(40));

    let id = first["id"].as_str().unwrap();
    let status: Value = app
        .client
        .get(format!("{}/api/v1/imports/{id}", app.address))
        .bearer_auth(&token)
        .send()
        .await
        .unwrap()
        .json()
        .await
        .unwrap();
    assert_eq!(
        (
            status["rows_failed"].as_i64(),
            status["errors"][2]["line"].as_i64()
        ),
        (Some(3), Some(6))
    );
    let other = crate::live::token(&crate::live::shop());
    let hidden = app
        .client
        .get(format!("{}/api/v1/imports/{id}", app.address))
        .bearer_auth(&other)
        .send()
        .await
        .unwrap();
    assert_eq!(hidden.status(), 404, "another shop does not see the import");

    let unknown = import("yotpo").await.unwrap();
    assert_eq!(unknown.status(), 400);
    let no_points = app
        .client
        .post(format!("{}/api/v1/imports?source=loyaltylion", app.address))
        .bearer_auth(&token)
        .body("merchant_id,email\n1,a@b.co\n")
        .send()
        .await
        .unwrap();
    assert_eq!(no_points.status(), 400);
    let anonymous = app
        .client
        .post(format!("{}/api/v1/imports?source=smile", app.address))
        .body(FILE)
        .send()
        .await
        .unwrap();
    assert_eq!(anonymous.status(), 401);
}
