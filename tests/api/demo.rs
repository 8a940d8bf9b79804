//! The embedded demo, as a newcomer runs it: the real binary, no broker, Redis or Postgres configured. It must
//! print a working dashboard link whose counts grow, and report growing counts in the terminal, every demo shop
//! starting from a backfilled year of order history.

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
        .args(["demo", "--seconds", "20", "--every", "1", "--rate", "50"])
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .stdout(Stdio::piped())
        .kill_on_drop(true)
        .spawn()
        .expect("the binary runs");
    let mut lines = BufReader::new(demo.stdout.take().unwrap()).lines();
    let link = loop {
        let line = next_line(&mut lines).await;
        if let Some(link) = line
            .split_whitespace()
            .find(|w| w.contains("/dashboard#token="))
        {
            break link.to_owned();
        }
    };
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
    let _ = demo.kill().await;
}
