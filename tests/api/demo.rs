//! The embedded demo, as a newcomer runs it: the real binary, no broker, Redis or Postgres configured.

use std::process::Command;

/// `events=N segments={...}` status lines printed by the demo.
fn status_lines(stdout: &str) -> Vec<(u64, serde_json::Value)> {
    stdout
        .lines()
        .filter_map(|l| l.strip_prefix("events="))
        .filter_map(|rest| {
            let (events, segments) = rest.split_once(" segments=")?;
            Some((events.parse().ok()?, serde_json::from_str(segments).ok()?))
        })
        .collect()
}

#[test]
fn the_demo_runs_fully_embedded_and_its_counts_grow() {
    let output = Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
        .args(["demo", "--seconds", "12", "--every", "1", "--rate", "50"])
        .env("HTTP_ADDR", "127.0.0.1:0")
        .env_remove("REDIS_URL")
        .env_remove("DATABASE_URL")
        .env_remove("KAFKA_BROKERS")
        .output()
        .expect("the binary runs");
    assert!(
        output.status.success(),
        "{}",
        String::from_utf8_lossy(&output.stderr)
    );
    let stdout = String::from_utf8_lossy(&output.stdout);
    assert!(stdout.contains("/webhooks/shopify"), "{stdout}");
    let lines = status_lines(&stdout);
    assert!(lines.len() >= 5, "{stdout}");
    let events: Vec<u64> = lines.iter().map(|(e, _)| *e).collect();
    assert!(
        events.windows(2).all(|w| w[0] <= w[1]),
        "events never go down: {events:?}"
    );
    let (last_events, last_segments) = lines.last().unwrap();
    assert!(*last_events > 50, "{stdout}");
    let customers: u64 = last_segments
        .as_object()
        .unwrap()
        .values()
        .flat_map(|shop| shop.as_object().unwrap().values())
        .map(|n| n.as_u64().unwrap())
        .sum();
    assert!(customers > 0, "segment counts are live: {stdout}");
    let first_nonzero = lines.iter().position(|(e, _)| *e > 0).unwrap();
    assert!(
        first_nonzero < lines.len() - 1,
        "counts keep growing after the first: {events:?}"
    );
}
