//! `/widget/demo` in a real headless Chromium (driven by `web/tests/widget.e2e.mjs`): a Spanish-speaking customer's
//! widget goes live, signed order webhooks move the customer, the new nudge appears greeting them by first name,
//! and the click on it is stored with the customer; an Arabic-speaking customer's nudge is laid out right to left.
//! Screenshots are kept in `artifacts/widget.png` and `artifacts/widget-rtl.png`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::helpers::{eventually, ENCRYPTION_KEYS, PII_INDEX_KEY};
use crate::live::{shop, spawn_engine_with};
use crate::widget::{get_with, post_named_order, widget_token, WAIT};

async fn line(lines: &mut tokio::io::Lines<BufReader<tokio::process::ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the browser reports within two minutes")
        .unwrap()
        .expect("a report line (see the browser's stderr)");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

#[actix_web::test]
async fn a_shopper_sees_the_nudge_by_name_clicks_it_and_arabic_reads_right_to_left() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix web` first"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).is_file(),
        "{chromium} missing: apt-get install chromium"
    );
    let app = spawn_engine_with(&[
        ("ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
        ("PII_INDEX_KEY", PII_INDEX_KEY.to_owned()),
        ("WIDGET_DEMO", "true".to_owned()),
    ])
    .await;
    let pool = sqlx::PgPool::connect(app.settings.database_url.as_deref().unwrap())
        .await
        .unwrap();
    let a = shop();
    let (ana, layla) = ((7, "Ana", "es"), (8, "Layla", "ar"));
    post_named_order(&app.address, &a, 1, ana, "20.00", 1).await;
    post_named_order(&app.address, &a, 2, layla, "20.00", 1).await;
    for customer in [7u64, 8] {
        let token = widget_token(&app.address, &a, customer).await;
        let named = "SELECT pii_sealed IS NOT NULL FROM customers WHERE merchant_id = $1 AND customer_id = $2";
        eventually(
            "the customer's name at rest and its nudge pending",
            WAIT,
            async || {
                let stored: Option<bool> = sqlx::query_scalar(named)
                    .bind(a.as_str())
                    .bind(customer as i64)
                    .fetch_optional(&pool)
                    .await
                    .unwrap();
                stored == Some(true)
                    && get_with(&app.address, "/api/v1/rfm/nudges", &token).await.0 == 200
            },
        )
        .await;
    }

    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    let (screenshot, rtl_screenshot) = (
        root.join("artifacts/widget.png"),
        root.join("artifacts/widget-rtl.png"),
    );
    let _ = std::fs::remove_file(&screenshot);
    let _ = std::fs::remove_file(&rtl_screenshot);
    let page = |customer: u64| format!("{}/widget/demo?shop={a}&customer={customer}", app.address);
    let mut browser = Command::new("node")
        .arg(web.join("tests/widget.e2e.mjs"))
        .current_dir(&web)
        .env("WIDGET_URL", page(7))
        .env("RTL_URL", page(8))
        .env("SCREENSHOT", &screenshot)
        .env("RTL_SCREENSHOT", &rtl_screenshot)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = line(&mut lines).await;
    assert_eq!(ready["ready"], true, "{ready}");

    for order in 10..15 {
        post_named_order(&app.address, &a, order, ana, "50.00", 0).await;
    }
    let seen = line(&mut lines).await;
    let status = browser.wait().await.unwrap();
    assert!(status.success(), "browser script failed: {seen}");
    assert_ne!(
        seen["nudgeId"], ready["initial"],
        "a newer nudge than the one on load: {seen}"
    );
    assert!(
        seen["nudgeId"]
            .as_str()
            .unwrap()
            .starts_with(&format!("nudge:{a}:7:")),
        "{seen}"
    );
    assert_eq!(seen["title"], "Hi Ana", "{seen}");
    assert_eq!(
        (&seen["lang"], &seen["dir"]),
        (&Value::from("es"), &Value::from("ltr"))
    );
    assert_eq!(seen["live"], "polite");
    assert_eq!(seen["focusOnBody"], true, "the nudge did not take focus");
    assert_eq!(seen["animation"], "none", "reduced motion respected");
    assert_eq!(
        seen["dismissLabel"], "Cerrar",
        "labels in the customer's language"
    );
    assert_eq!(seen["view"]["status"], 201, "{seen}");
    assert_eq!(seen["click"]["status"], 201, "{seen}");
    assert_eq!(seen["cardGone"], true);
    let clicks: Vec<(i64, String)> = sqlx::query_as(
        "SELECT customer_id, nudge_id FROM nudge_events WHERE merchant_id = $1 AND kind = 'click' AND event_id = $2",
    )
    .bind(a.as_str())
    .bind(seen["click"]["event_id"].as_str().unwrap())
    .fetch_all(&pool)
    .await
    .unwrap();
    assert_eq!(
        clicks,
        vec![(7, seen["nudgeId"].as_str().unwrap().to_owned())],
        "the click is stored"
    );

    let arabic = &seen["arabic"];
    assert_eq!(
        (&arabic["dir"], &arabic["direction"]),
        (&Value::from("rtl"), &Value::from("rtl")),
        "{arabic}"
    );
    assert_eq!(arabic["title"], "Hi Layla");
    assert!(
        arabic["left"].as_f64().unwrap() < arabic["right"].as_f64().unwrap(),
        "the card sits in the left corner for right-to-left text: {arabic}"
    );
    assert_eq!(seen["dismissed"], true, "Escape dismisses");
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors");
    for shot in [&screenshot, &rtl_screenshot] {
        assert!(
            std::fs::metadata(shot).unwrap().len() > 10_000,
            "{} kept",
            shot.display()
        );
    }
}
