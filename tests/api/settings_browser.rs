//! `/dashboard/settings` in a real headless Chromium (as `browser`): a non-monotonic threshold shows its field
//! error, the fix shows the preview, saving moves the shop's customers to the previewed sizes, and `/segments` and
//! the dashboard chart show them; the page reads in Spanish and French; embedded in the Shopify admin it carries
//! App Bridge. Screenshots are kept in `artifacts/settings-*.png`.

use std::path::PathBuf;
use std::time::Duration;

use serde_json::{json, Value};

use streams::MerchantId;

use crate::live::{post_order, shop, spawn_engine, token, LiveApp, API_KEY};

/// What the browser saw: the field error and its clearing, the preview, today's sizes after the save and the
/// dashboard chart, labelled inputs, the page in Spanish and French, no script errors, and the screenshots.
fn check_seen(seen: &Value, artifacts: &std::path::Path) {
    assert_eq!(seen["fieldError"]["invalid"], "true", "{seen}");
    assert_eq!(
        seen["fieldError"]["text"],
        "Must be above the previous threshold"
    );
    assert_eq!(seen["fieldError"]["summary"], true);
    assert_eq!(seen["cleared"], true);
    // $15 stays M2 (new); $25 and up are M3 or more: other.
    let expected =
        json!({"champions": 0, "loyal": 0, "new": 1, "inactive": 0, "at_risk": 0, "other": 7});
    assert_eq!(seen["preview"], expected);
    assert_eq!(seen["today"]["new"], 1);
    assert_eq!(seen["today"]["other"], 7);
    assert_eq!(
        (seen["chart"]["New"].clone(), seen["chart"]["Other"].clone()),
        (json!(1), json!(7))
    );
    assert_eq!(seen["unlabelled"], json!([]), "every input has a label");
    assert_eq!(seen["headings"]["es"]["title"], "Ajustes RFM");
    assert_eq!(seen["headings"]["es"]["recency"], "R5 hasta (días)");
    assert_eq!(seen["headings"]["fr"]["title"], "Réglages RFM");
    assert_eq!(seen["headings"]["fr"]["lang"], "fr");
    assert_eq!(seen["errors"], json!([]), "no script errors");
    for shot in ["error", "preview", "saved", "dashboard"] {
        let path = artifacts.join(format!("settings-{shot}.png"));
        assert!(
            std::fs::metadata(&path)
                .map(|m| m.len() > 10_000)
                .unwrap_or(false),
            "{path:?} kept"
        );
    }
}

/// The shop's non-empty segments as `/api/v1/rfm/segments` answers them.
async fn segments(app: &LiveApp, shop: &MerchantId) -> Vec<(String, u64)> {
    let response = app
        .client
        .get(format!("{}/api/v1/rfm/segments", app.address))
        .bearer_auth(token(shop))
        .send()
        .await
        .expect("answers");
    let body: Value = response.json().await.expect("json");
    body["segments"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|s| s["count"].as_u64() > Some(0))
        .map(|s| {
            (
                s["key"].as_str().unwrap().to_owned(),
                s["count"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[actix_web::test]
async fn a_merchant_fixes_a_threshold_previews_saves_and_sees_the_segments_move() {
    let root = PathBuf::from(env!("CARGO_MANIFEST_DIR"));
    let web = root.join("web");
    assert!(
        web.join("node_modules/playwright-core").is_dir(),
        "run `npm ci --prefix web` first"
    );
    let chromium = std::env::var("CHROMIUM").unwrap_or_else(|_| "/usr/bin/chromium".into());
    let app = spawn_engine().await;
    let a = shop();
    // Eight one-order customers of today, $15 to $85: all `new` under the default $50 M2 threshold.
    for (i, amount) in [
        "15.00", "25.00", "35.00", "45.00", "55.00", "65.00", "75.00", "85.00",
    ]
    .into_iter()
    .enumerate()
    {
        post_order(&app.address, &a, i as u64 + 1, i as u64 + 1, amount, 0).await;
    }
    crate::helpers::eventually("eight customers", Duration::from_secs(60), async || {
        segments(&app, &a).await == [("new".to_owned(), 8)]
    })
    .await;

    let artifacts = root.join("artifacts");
    std::fs::create_dir_all(&artifacts).unwrap();
    let run = tokio::process::Command::new("node")
        .arg(web.join("tests/settings.e2e.mjs"))
        .current_dir(&web)
        .env(
            "SETTINGS_URL",
            format!("{}/dashboard/settings#token={}", app.address, token(&a)),
        )
        .env("ARTIFACTS", &artifacts)
        .env("CHROMIUM", &chromium)
        .kill_on_drop(true)
        .output();
    let output = tokio::time::timeout(Duration::from_secs(180), run)
        .await
        .expect("the browser finishes within three minutes")
        .expect("node runs");
    let stderr = String::from_utf8_lossy(&output.stderr);
    assert!(output.status.success(), "browser script failed: {stderr}");
    let seen: Value = serde_json::from_slice(&output.stdout).expect("one JSON line");

    check_seen(&seen, &artifacts);
    assert_eq!(
        segments(&app, &a).await,
        [("new".to_owned(), 1), ("other".to_owned(), 7)]
    );
}

#[actix_web::test]
async fn embedded_in_the_admin_the_page_carries_app_bridge() {
    let (app, _) = crate::merchant_config::spawn_http().await;
    let get = |query: &'static str| {
        let client = app.client.clone();
        let url = format!("{}/dashboard/settings{query}", app.address);
        async move { client.get(url).send().await.expect("answers") }
    };
    let embedded = get("?embedded=1&host=YWRtaW4&shop=a.myshopify.com&locale=fr").await;
    let policy = embedded.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let page = embedded.text().await.unwrap();
    assert!(
        page.contains(&format!(
            "<meta name=\"shopify-api-key\" content=\"{API_KEY}\">"
        )),
        "{page}"
    );
    assert!(page.contains("https://cdn.shopify.com/shopifycloud/app-bridge.js"));
    assert!(
        policy.contains("script-src 'self' https://cdn.shopify.com/shopifycloud/app-bridge.js"),
        "{policy}"
    );
    let standalone = get("").await;
    let policy = standalone.headers()["content-security-policy"]
        .to_str()
        .unwrap()
        .to_owned();
    let page = standalone.text().await.unwrap();
    assert!(!page.contains("shopify-api-key") && !page.contains("cdn.shopify.com"));
    assert!(!policy.contains("cdn.shopify.com"), "{policy}");
}
