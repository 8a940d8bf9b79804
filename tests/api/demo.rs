//! The embedded demo, as a newcomer runs it: the real binary, no broker, Redis or Postgres configured. It must
//! print a working dashboard link whose counts grow, report growing counts in the terminal, print the widget's
//! storefront page, and fill the A/B results with its synthetic shoppers (kept in memory without Postgres), every demo
//! shop starting from a backfilled year of order history.

use std::process::Stdio;
use std::time::Duration;

use tokio::io::{AsyncBufReadExt, BufReader, Lines};
use tokio::process::{ChildStdout, Command};

use crate::live::{frames_until, open_socket};

/// `events=N segments={...}` status lines printed by the demo.
fn status_line(line: &str) -> Option<(u64, serde_json::Value)> {
    let (events, segments) = line.strip_prefix("events=")?.split_once(" segments=")?;
    Some((events.parse().ok()?, serde_json::from_str(segments).ok()?))
}

async fn next_line(lines: &mut Lines<BufReader<ChildStdout>>) -> String {
    tokio::time::timeout(Duration::from_secs(60), lines.next_line())
        .await
        .expect("the demo keeps printing")
        .unwrap()
        .expect("the demo is still running")
}

#[actix_web::test]
async fn the_demo_runs_fully_embedded_and_its_dashboard_counts_grow() {
    let mut demo = Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
        .args(["demo", "--seconds", "150", "--every", "1", "--rate", "50"])
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let (mut link, mut widget_page) = (None, None);
    while link.is_none() || widget_page.is_none() {
        let line = next_line(&mut lines).await;
        let word = |part: &str| {
            line.split_whitespace()
                .find(|w| w.contains(part))
                .map(str::to_owned)
        };
        link = link.or_else(|| word("/dashboard#token="));
        widget_page = widget_page.or_else(|| word("/widget/demo?"));
    }
    let (link, widget_page) = (link.unwrap(), widget_page.unwrap());
    let (base, token) = link.split_once("/dashboard#token=").unwrap();
    let page = reqwest::get(format!("{base}/dashboard")).await.unwrap();
    assert_eq!(page.status(), 200);
    assert!(page.text().await.unwrap().contains("segments-chart"));

    let (mut socket, _) = open_socket(base, token)
        .await
        .expect("the printed token opens the socket");
    let first = frames_until(&mut socket, Duration::from_secs(30), |f| f.customers > 0).await;
    let seen = first.last().unwrap().customers;
    let grown = frames_until(&mut socket, Duration::from_secs(30), |f| f.customers > seen).await;
    assert_eq!(grown.last().unwrap().merchant, "demo-1.myshopify.com");

    // The terminal reports too: events counted, never going down, and still growing; from the first status line,
    // the backfilled history has put demo-1's customers in several segments.
    let mut events: Vec<u64> = Vec::new();
    while events.iter().filter(|e| **e > 0).count() < 2 || events.first() == events.last() {
        if let Some((n, segments)) = status_line(&next_line(&mut lines).await) {
            if events.is_empty() {
                let populated = segments["demo-1.myshopify.com"]
                    .as_object()
                    .map_or(0, |s| s.len());
                assert!(
                    populated >= 4,
                    "segments from the first status line: {segments}"
                );
            }
            events.push(n);
        }
    }
    assert!(
        events.windows(2).all(|w| w[0] <= w[1]),
        "events never go down: {events:?}"
    );

    // Status lines keep coming; drained, so a full pipe never stalls the demo.
    tokio::spawn(async move { while let Ok(Some(_)) = lines.next_line().await {} });
    let page = reqwest::get(&widget_page).await.unwrap();
    assert_eq!(page.status(), 200, "{widget_page}");
    the_shoppers_fill_the_ab_results(base, token).await;
    let _ = demo.kill().await;
}

/// The demo's experiment gains views, clicks and conversions in each arm, and the holdout, assigned but shown
/// nothing, reports no view, click or dismissal.
async fn the_shoppers_fill_the_ab_results(base: &str, token: &str) {
    let client = reqwest::Client::new();
    let filled = |arm: &serde_json::Value| {
        ["viewed", "clicked", "converted"]
            .iter()
            .all(|k| arm[k].as_u64() > Some(0))
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(120);
    let experiment = loop {
        let results: serde_json::Value = client
            .get(format!("{base}/api/v1/rfm/nudges/ab-test"))
            .bearer_auth(token)
            .send()
            .await
            .unwrap()
            .json()
            .await
            .unwrap();
        let experiment = results["experiments"]
            .as_array()
            .and_then(|list| list.iter().find(|e| e["experiment_id"] == "demo-loyal"))
            .cloned();
        if let Some(e) = experiment.filter(|e| {
            e["arms"]
                .as_array()
                .is_some_and(|arms| arms.len() == 2 && arms.iter().all(filled))
                && e["holdout"]["assigned"].as_u64() > Some(0)
        }) {
            break e;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "the A/B panel never filled: {results}"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    };
    let holdout = &experiment["holdout"];
    for k in ["viewed", "clicked", "dismissed"] {
        assert_eq!(holdout[k], 0, "the holdout is shown nothing: {experiment}");
    }
    assert_eq!(experiment["running"], true);
}
