//! `GET /api/v1/rfm/customers`, `/export` and `/movements` over the customer and delta rows in Postgres: pages
//! that add up to the export in every format, keyset pages in score order with nothing repeated or skipped, RFC
//! 4180 CSV, an audit row per export, and shops apart.

use std::collections::BTreeSet;

use serde_json::Value;
use sqlx::PgPool;
use streams::MerchantId;

use super::spawn_http;
use crate::live::{shop, token, LiveApp};

const SEGMENTS: [&str; 3] = ["loyal", "at_risk", "other"];

/// `n` customer rows of `shop`: segment by id, scores and spend varying, some with ties in score.
async fn rows(pool: &PgPool, shop: &MerchantId, ids: std::ops::RangeInclusive<i64>) {
    for id in ids {
        sqlx::query(
            "INSERT INTO customers (merchant_id, customer_id, version, recency, frequency, monetary, score, segment,
                                    lifecycle_stage, orders, net_spend, last_order_at)
             VALUES ($1, $2, 3, 3, 2, 4, $3::numeric, $4, 'repeat_buyer', $5, $6::numeric, now())",
        )
        .bind(shop.as_str())
        .bind(id)
        .bind(format!("{}.{}", 1 + id % 4, id % 10))
        .bind(SEGMENTS[(id % 3) as usize])
        .bind((id % 4) as i32)
        .bind(format!("{}.{:02}", id * 7 % 500, id % 100))
        .execute(pool)
        .await
        .expect("a customer row");
    }
}

async fn get(app: &LiveApp, shop: &MerchantId, path: &str) -> (u16, String, String) {
    let response = app
        .client
        .get(format!("{}{path}", app.address))
        .bearer_auth(token(shop))
        .send()
        .await
        .expect("the app answers");
    let status = response.status().as_u16();
    let content_type = response
        .headers()
        .get("content-type")
        .map(|v| v.to_str().unwrap().to_owned())
        .unwrap_or_default();
    (status, content_type, response.text().await.expect("a body"))
}

/// Every page of a list, by following the cursors.
async fn all_pages(app: &LiveApp, shop: &MerchantId, query: &str) -> Vec<Value> {
    let mut out = Vec::new();
    let mut cursor: Option<String> = None;
    loop {
        let after = cursor
            .as_deref()
            .map(|c| format!("&cursor={c}"))
            .unwrap_or_default();
        let (status, _, body) =
            get(app, shop, &format!("/api/v1/rfm/customers?{query}{after}")).await;
        assert_eq!(status, 200, "{body}");
        let page: Value = serde_json::from_str(&body).unwrap();
        out.extend(page["customers"].as_array().unwrap().iter().cloned());
        match page["next_cursor"].as_str() {
            Some(next) => cursor = Some(next.to_owned()),
            None => return out,
        }
    }
}

/// Splits RFC 4180 CSV with no quoted fields (these rows need none) into lines of fields, checking the CRLFs.
fn csv(body: &str) -> Vec<Vec<String>> {
    assert!(body.ends_with("\r\n"));
    body.trim_end_matches("\r\n")
        .split("\r\n")
        .map(|line| line.split(',').map(str::to_owned).collect())
        .collect()
}

/// One `rfm_export` row per export, by the token's subject, naming its format and segment.
async fn check_export_audits(pool: &PgPool, shop: &MerchantId) {
    let audits: Vec<(String, Value)> = sqlx::query_as(
        "SELECT actor, detail FROM audit_logs WHERE merchant_id = $1 AND action = 'rfm_export' ORDER BY id",
    )
    .bind(shop.as_str())
    .fetch_all(pool)
    .await
    .unwrap();
    let formats: Vec<&str> = audits
        .iter()
        .map(|(_, d)| d["format"].as_str().unwrap())
        .collect();
    assert_eq!(formats, ["csv", "json", "ndjson"]);
    assert!(audits
        .iter()
        .all(|(actor, d)| actor == "dev" && d["segment"] == "loyal"));
}

#[actix_web::test]
async fn an_export_is_the_pages_in_every_format_and_is_audited() {
    let (app, pool) = spawn_http().await;
    let (a, b) = (shop(), shop());
    rows(&pool, &a, 1..=250).await;
    rows(&pool, &b, 1_001..=1_005).await;
    let pages = all_pages(&app, &a, "segment=loyal&limit=17").await;
    let ids: Vec<i64> = pages
        .iter()
        .map(|c| c["customer_id"].as_i64().unwrap())
        .collect();
    let expected: Vec<i64> = (1..=250).filter(|id| id % 3 == 0).collect();
    assert_eq!(ids, expected);

    let (status, content_type, body) =
        get(&app, &a, "/api/v1/rfm/export?format=csv&segment=loyal").await;
    assert_eq!(status, 200);
    assert!(content_type.starts_with("text/csv"), "{content_type}");
    let lines = csv(&body);
    assert_eq!(lines[0][..3], ["customer_id", "segment", "recency"]);
    let exported: Vec<(i64, String, String)> = lines[1..]
        .iter()
        .map(|l| (l[0].parse().unwrap(), l[5].clone(), l[8].clone()))
        .collect();
    let paged: Vec<(i64, String, String)> = pages
        .iter()
        .map(|c| {
            let text = |f: &str| c[f].as_str().unwrap().to_owned();
            (
                c["customer_id"].as_i64().unwrap(),
                text("score"),
                text("net_spend"),
            )
        })
        .collect();
    assert_eq!(exported, paged);

    let (_, _, json) = get(&app, &a, "/api/v1/rfm/export?format=json&segment=loyal").await;
    assert_eq!(serde_json::from_str::<Vec<Value>>(&json).unwrap(), pages);
    let (_, content_type, ndjson) =
        get(&app, &a, "/api/v1/rfm/export?format=ndjson&segment=loyal").await;
    assert_eq!(content_type, "application/x-ndjson");
    let lines: Vec<Value> = ndjson
        .lines()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect();
    assert_eq!(lines, pages);

    check_export_audits(&pool, &a).await;

    let (_, _, theirs) = get(&app, &b, "/api/v1/rfm/export?format=csv").await;
    let their_ids: BTreeSet<String> = csv(&theirs)[1..].iter().map(|l| l[0].clone()).collect();
    assert_eq!(
        their_ids,
        (1_001..=1_005).map(|i: i64| i.to_string()).collect()
    );
    let (status, _, _) = get(&app, &a, "/api/v1/rfm/export?format=xml").await;
    assert_eq!(status, 400);
    let (status, _, _) = get(&app, &a, "/api/v1/rfm/customers?cursor=bm9wZQ").await;
    assert_eq!(status, 400);
}

#[actix_web::test]
async fn score_order_pages_repeat_and_skip_nothing() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    rows(&pool, &a, 1..=230).await;
    let pages = all_pages(&app, &a, "sort=score").await;
    assert_eq!(pages.len(), 230);
    let keys: Vec<(f64, i64)> = pages
        .iter()
        .map(|c| {
            (
                c["score"].as_str().unwrap().parse().unwrap(),
                c["customer_id"].as_i64().unwrap(),
            )
        })
        .collect();
    for pair in keys.windows(2) {
        let ((s1, id1), (s2, id2)) = (pair[0], pair[1]);
        assert!(s1 > s2 || (s1 == s2 && id1 < id2), "{pair:?} out of order");
    }
    let (status, _, body) = get(&app, &a, "/api/v1/rfm/customers").await;
    assert_eq!(status, 200);
    let first: Value = serde_json::from_str(&body).unwrap();
    // A cursor continues the order it came from, and no other.
    let by_id = first["next_cursor"].as_str().expect("a next page");
    let (status, _, body) = get(
        &app,
        &a,
        &format!("/api/v1/rfm/customers?sort=score&cursor={by_id}"),
    )
    .await;
    assert_eq!(status, 400, "{body}");
    let (_, _, body) = get(&app, &a, "/api/v1/rfm/customers?sort=spend").await;
    let by_spend: Value = serde_json::from_str(&body).unwrap();
    let by_spend = by_spend["next_cursor"].as_str().expect("a next page");
    for other in ["score", "id"] {
        let path = format!("/api/v1/rfm/customers?sort={other}&cursor={by_spend}");
        let (status, _, body) = get(&app, &a, &path).await;
        assert_eq!(status, 400, "{other}: {body}");
    }
    let (status, _, _) = get(
        &app,
        &a,
        &format!("/api/v1/rfm/customers?sort=spend&cursor={by_spend}"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(
        first["customers"].as_array().unwrap().len(),
        100,
        "100 a page"
    );
}

/// Four moves of `shop`: three in the last ten days (new → loyal twice, loyal → at_risk), one 40 days ago.
async fn insert_deltas(pool: &PgPool, shop: &MerchantId) {
    for (customer, from, to, days_ago) in [
        (1, "new", "loyal", 2),
        (2, "new", "loyal", 3),
        (3, "loyal", "at_risk", 4),
        (4, "new", "other", 40),
    ] {
        sqlx::query(
            "INSERT INTO rfm_segment_deltas (merchant_id, customer_id, version, from_segment, to_segment, occurred_at, trace_id)
             VALUES ($1, $2, 2, $3, $4, now() - make_interval(days => $5), 't')",
        )
        .bind(shop.as_str())
        .bind(customer)
        .bind(from)
        .bind(to)
        .bind(days_ago)
        .execute(pool)
        .await
        .expect("a delta row");
    }
}

#[actix_web::test]
async fn movements_count_the_window_and_sum_the_segments() {
    let (app, pool) = spawn_http().await;
    let a = shop();
    rows(&pool, &a, 1..=6).await;
    insert_deltas(&pool, &a).await;
    let since = (chrono::Utc::now() - chrono::Duration::days(10)).format("%Y-%m-%d");
    let (status, _, body) = get(&app, &a, &format!("/api/v1/rfm/movements?from={since}")).await;
    assert_eq!(status, 200, "{body}");
    let body: Value = serde_json::from_str(&body).unwrap();
    let transitions: Vec<(String, String, i64)> = body["transitions"]
        .as_array()
        .unwrap()
        .iter()
        .map(|t| {
            (
                t["from"].as_str().unwrap().into(),
                t["to"].as_str().unwrap().into(),
                t["customers"].as_i64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        transitions,
        [
            ("loyal".into(), "at_risk".into(), 1),
            ("new".into(), "loyal".into(), 2)
        ]
    );
    let flow = |segment: &str| {
        body["flows"]
            .as_array()
            .unwrap()
            .iter()
            .find(|f| f["segment"] == segment)
            .map(|f| f["net"].clone())
    };
    assert_eq!(
        (flow("new"), flow("loyal"), flow("at_risk")),
        (Some((-2).into()), Some(1.into()), Some(1.into()))
    );
    // Customers 3 and 6 are loyal: orders 3 and 2, so both repeat buyers; spend 21.03 + 42.06.
    let loyal = body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["segment"] == "loyal")
        .unwrap()
        .clone();
    assert_eq!(loyal["customers"], 2);
    assert_eq!(loyal["revenue"], "63.090");
    assert_eq!(loyal["repeat_purchase_rate"], 1.0);
    let (status, _, _) = get(
        &app,
        &a,
        "/api/v1/rfm/movements?from=2026-02-01&to=2026-01-01",
    )
    .await;
    assert_eq!(status, 400);
}
