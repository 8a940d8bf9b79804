//! `/dashboard` in a real headless Chromium (Debian's `chromium`, driven by `playwright-core` from
//! `web/node_modules`): a signed order moves a customer into Champions and the chart shows it. The screenshot is
//! kept in `artifacts/dashboard.png`.

use std::path::PathBuf;
use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader};
use tokio::process::Command;

use crate::live::{post_order, shop, spawn_engine, token};

#[actix_web::test]
async fn the_dashboard_chart_shows_a_customer_moving_into_champions() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir()
            && web.join("node_modules/chart.js").is_dir(),
        "run `npm ci --prefix web` first (Chart.js and playwright-core)"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    assert!(
        PathBuf::from(&chromium).is_file(),
        "{chromium} missing: apt-get install chromium"
    );
    let app = spawn_engine().await;
    let a = shop();
    std::fs::create_dir_all(root.join("artifacts")).unwrap();
    let screenshot = root.join("artifacts/dashboard.png");
    let _ = std::fs::remove_file(&screenshot);
    let mut browser = Command::new("node")
        .arg(web.join("tests/dashboard.e2e.mjs"))
        .current_dir(&web)
        .env(
            "DASHBOARD_URL",
            format!("{}/dashboard#token={}", app.address, token(&a)),
        )
        .env("SCREENSHOT", &screenshot)
        .env("CHROMIUM", &chromium)
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("node runs");
    let mut lines = BufReader::new(browser.stdout.take().unwrap()).lines();
    let ready = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("page live within a minute")
        .unwrap();
    assert_eq!(
        ready.as_deref(),
        Some("ready"),
        "the page connected and drew a frame"
    );

    for order in 1..=6 {
        post_order(&app.address, &a, order, 42, "50.00", 0).await;
    }
    let seen = tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the browser reports within a minute")
        .unwrap()
        .expect("a report line");
    let status = browser.wait().await.unwrap();
    assert!(status.success(), "browser script failed: {seen}");
    let seen: serde_json::Value = serde_json::from_str(&seen).unwrap();
    assert_eq!(seen["champions"], 1, "{seen}");
    assert_eq!(seen["table"], "1");
    assert_eq!(seen["shop"], a.as_str());
    assert!(
        seen["moves"][0].as_str().unwrap().contains("Customer 42"),
        "{seen}"
    );
    assert!(
        seen["moves"][0].as_str().unwrap().ends_with("→ Champions"),
        "{seen}"
    );
    assert_eq!(
        seen["overflow"], false,
        "readable on a phone: no sideways scrolling"
    );
    assert_eq!(
        seen["focused"], "pause",
        "the first Tab reaches the controls"
    );
    assert_eq!(seen["pressed"], "true", "Enter toggles the focused button");
    assert_eq!(
        seen["tokenInAddressBar"], false,
        "the token leaves the address bar"
    );
    assert_eq!(seen["errors"], serde_json::json!([]), "no script errors");
    assert!(
        std::fs::metadata(&screenshot).unwrap().len() > 10_000,
        "screenshot kept"
    );
}
