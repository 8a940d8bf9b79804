//! `/widget/demo` in a real headless Chromium (driven by `web/tests/widget.e2e.mjs`): a Spanish-speaking customer's
//! widget goes live, signed order webhooks move the customer, the new nudge appears greeting them by first name,
//! and the click on it is stored with the customer; an Arabic-speaking customer's nudge is laid out right to left.
//! Screenshots are kept in `artifacts/widget.png` and `artifacts/widget-rtl.png`.

use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use streams::MerchantId;
use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{Child, ChildStdout, Command};

use crate::helpers::{eventually, ENCRYPTION_KEYS, PII_INDEX_KEY};
use crate::live::{shop, spawn_engine_with, LiveApp};
use crate::widget::{get_with, post_named_order, widget_token, WAIT};

const ANA: (u64, &str, &str) = (7, "Ana", "es");
const LAYLA: (u64, &str, &str) = (8, "Layla", "ar");

async fn line(lines: &mut Lines<BufReader<ChildStdout>>) -> Value {
    let line = tokio::time::timeout(Duration::from_secs(120), lines.next_line())
        .await
        .expect("the browser reports within two minutes")
        .unwrap()
        .expect("a report line (see the browser's stderr)");
    serde_json::from_str(&line).unwrap_or_else(|e| panic!("{e}: {line}"))
}

/// Each customer's first order (a new customer, which fires a nudge), waited for until the name is at rest and the
/// nudge pending, so the page can greet them by name from its first render.
async fn first_orders(app: &LiveApp, pool: &PgPool, a: &MerchantId) {
    post_named_order(&app.address, a, 1, ANA, "20.00", 1).await;
    post_named_order(&app.address, a, 2, LAYLA, "20.00", 1).await;
    let named =
        "SELECT pii_sealed IS NOT NULL FROM customers WHERE merchant_id = $1 AND customer_id = $2";
    for customer in [ANA.0, LAYLA.0] {
        let token = widget_token(&app.address, a, customer).await;
        eventually(
            "the customer's name at rest and its nudge pending",
            WAIT,
            async || {
                let stored: Option<bool> = sqlx::query_scalar(named)
                    .bind(a.as_str())
                    .bind(customer as i64)
                    .fetch_optional(pool)
                    .await
                    .unwrap();
                stored == Some(true)
                    && get_with(&app.address, "/api/v1/rfm/nudges", &token).await.0 == 200
            },
        )
        .await;
    }
}

/// Starts the browser script on the two customers' demo pages.
fn browse(app: &LiveApp, a: &MerchantId, shots: (&Path, &Path)) -> Child {
    let web = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix web` first"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).is_file(),
        "{chromium} missing: apt-get install chromium"
    );
    let page = |customer: u64| format!("{}/widget/demo?shop={a}&customer={customer}", app.address);
    Command::new("node")
        .arg(web.join("tests/widget.e2e.mjs"))
        .current_dir(&web)
        .env("WIDGET_URL", page(ANA.0))
        .env("RTL_URL", page(LAYLA.0))
        .env("EXPECT_KIND", "champions")
        .env(
            "DASHBOARD_URL",
            format!("{}/dashboard#token={}", app.address, crate::live::token(a)),
        )
        .env("SCREENSHOT", shots.0)
        .env("RTL_SCREENSHOT", shots.1)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs")
}

/// What the Spanish-speaking customer saw and did, and the click as stored.
async fn check_spanish(seen: &Value, ready: &Value, pool: &PgPool, a: &MerchantId) {
    assert_ne!(
        seen["nudgeId"], ready["initial"],
        "a newer nudge than on load: {seen}"
    );
    let nudge_id = seen["nudgeId"].as_str().unwrap();
    assert!(nudge_id.starts_with(&format!("nudge:{a}:7:")), "{seen}");
    assert_eq!(seen["kind"], "champions", "{seen}");
    assert_eq!(seen["title"], "¡Eres de lo mejor, Ana!", "{seen}");
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
    let board = &seen["dashboardClicks"];
    assert!(
        board["after"].as_u64() > board["before"].as_u64(),
        "the dashboard's results panel counts the click for its arm: {board}"
    );
    let clicks: Vec<(i64, String)> = sqlx::query_as(
        "SELECT customer_id, nudge_id FROM nudge_events
         WHERE merchant_id = $1 AND kind = 'click' AND event_id = $2",
    )
    .bind(a.as_str())
    .bind(seen["click"]["event_id"].as_str().unwrap())
    .fetch_all(pool)
    .await
    .unwrap();
    assert_eq!(
        clicks,
        vec![(7, nudge_id.to_owned())],
        "the click is stored"
    );
}

fn check_arabic(seen: &Value) {
    let arabic = &seen["arabic"];
    assert_eq!(
        (&arabic["dir"], &arabic["direction"]),
        (&Value::from("rtl"), &Value::from("rtl")),
        "{arabic}"
    );
    assert!(
        arabic["title"]
            .as_str()
            .unwrap_or_default()
            .contains("Layla"),
        "{arabic}"
    );
    assert!(
        arabic["left"].as_f64().unwrap() < arabic["right"].as_f64().unwrap(),
        "the card sits in the left corner for right-to-left text: {arabic}"
    );
    assert_eq!(seen["dismissed"], true, "Escape dismisses");
}

#[actix_web::test]
async fn a_shopper_sees_the_nudge_by_name_clicks_it_and_arabic_reads_right_to_left() {
    let app = spawn_engine_with(&[
        ("ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
        ("PII_INDEX_KEY", PII_INDEX_KEY.to_owned()),
        ("WIDGET_DEMO", "true".to_owned()),
        // Newer nudges within minutes of the first: the frequency cap (tested in `nudge_experiments`) is off here.
        ("NUDGE_CAP_SECS", "0".to_owned()),
    ])
    .await;
    let url = app.settings.database_url.as_deref().unwrap();
    let pool = PgPool::connect(url).await.unwrap();
    let a = shop();
    first_orders(&app, &pool, &a).await;
    let artifacts = PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let shots = (
        artifacts.join("widget.png"),
        artifacts.join("widget-rtl.png"),
    );
    let _ = std::fs::remove_file(&shots.0);
    let _ = std::fs::remove_file(&shots.1);

    let mut browser = browse(&app, &a, (&shots.0, &shots.1));
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = line(&mut lines).await;
    assert_eq!(ready["ready"], true, "{ready}");
    // Five $50 orders today move Ana from New into Champions (R5 F4 M4): newer nudges for the live widget.
    for order in 10..15 {
        post_named_order(&app.address, &a, order, ANA, "50.00", 0).await;
    }
    let seen = line(&mut lines).await;
    let status = browser.wait().await.unwrap();
    assert!(status.success(), "browser script failed: {seen}");
    check_spanish(&seen, &ready, &pool, &a).await;
    check_arabic(&seen);
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors");
    for shot in [&shots.0, &shots.1] {
        let size = std::fs::metadata(shot).unwrap().len();
        assert!(size > 10_000, "{} kept", shot.display());
    }
}
