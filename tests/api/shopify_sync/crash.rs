//! SIGKILL of the `--role sync` binary mid-stream, against a stand-in on the standard bucket that also fails every
//! 11th call with a 502 and refuses one customer for good: after a restart every customer reaches its last
//! version (no write lost), no customer's metafields ever went back to an older version (no stale write, though
//! the restart replays uncommitted records), the refused customer is dead-lettered with Shopify's reason, and the
//! conservative client (an unknown bucket is assumed empty) is still never refused by the throttle.

use std::time::Duration;

use super::{
    fresh_topics, ingress, install, produce, shop, stage_of, standin, update, written_versions,
    Binary,
};
use crate::helpers::{brokers, eventually, fresh_database, read_all_records};

const CUSTOMERS: u64 = 1_000;
const ROUNDS: u32 = 3;
const PER_ROUND: u32 = 5;
const REFUSED: u64 = 17;

#[actix_web::test]
async fn a_killed_sync_worker_loses_no_write_and_writes_nothing_stale() {
    let standin = standin(|o| {
        o.fail_every = 11;
        o.refuse_customers.insert(REFUSED);
    });
    let database = fresh_database().await;
    let (prefix, topics) = fresh_topics().await;
    let shop = shop();
    install(&ingress(&database, &standin.address, &prefix), &shop).await;
    let mut records = Vec::new();
    for round in 0..ROUNDS {
        for customer in 1..=CUSTOMERS {
            let mut versions: Vec<u32> =
                (round * PER_ROUND + 1..=(round + 1) * PER_ROUND).collect();
            versions.rotate_left((customer % 3) as usize);
            records.extend(versions.into_iter().map(|v| update(&shop, customer, v)));
        }
    }
    produce(&topics, &records).await;

    let mut binary = Binary::new("sync", &prefix, &database, &standin.address);
    binary.env.push(("SYNC_BATCH_MAX", "2000".into()));
    binary.start();
    let calls = || standin.state.count(&standin.state.counters.calls);
    eventually(
        "the worker well into the stream",
        Duration::from_secs(120),
        async || calls() >= 150,
    )
    .await;
    binary.kill_9();
    let at_kill = calls();
    binary.start();

    let last = stage_of(ROUNDS * PER_ROUND);
    eventually(
        "every customer at its last version after the restart",
        Duration::from_secs(240),
        async || {
            standin.state.with_shop(shop.as_str(), |s| {
                s.customers
                    .values()
                    .filter(|f| {
                        f.iter()
                            .any(|((_, key), v)| key == "rfm_stage" && v.value == last)
                    })
                    .count() as u64
                    == CUSTOMERS - 1
            })
        },
    )
    .await;
    eprintln!("killed after {at_kill} calls; {} calls in all", calls());
    assert!(calls() > at_kill, "the restarted worker wrote");
    for customer in (1..=CUSTOMERS).filter(|&c| c != REFUSED) {
        let versions = written_versions(&standin, &shop, customer);
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "customer {customer} went back: {versions:?}"
        );
        let version = standin
            .state
            .metafield(shop.as_str(), customer, "loyalnest", "rfm_version");
        assert_eq!(version, Some((ROUNDS * PER_ROUND).to_string()));
    }
    let counters = &standin.state.counters;
    assert!(
        standin.state.count(&counters.failed) > 0,
        "502s were injected and retried"
    );
    assert_eq!(standin.state.count(&counters.throttled), 0);
    assert!(standin
        .state
        .metafield(shop.as_str(), REFUSED, "loyalnest", "rfm_segment")
        .is_none());
    eventually(
        "the refused customer dead-lettered",
        Duration::from_secs(60),
        async || {
            read_all_records(&brokers(), &topics.dlq)
                .await
                .iter()
                .any(|r| {
                    r.value["customer_id"] == REFUSED
                        && r.headers
                            .get("dlq.reason")
                            .is_some_and(|why| why.contains("shopify refused"))
                })
        },
    )
    .await;
}
