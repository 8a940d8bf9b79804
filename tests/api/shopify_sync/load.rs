//! 100,000 `rfm.updated` records (5,000 customers, 20 versions each, delivered in four rounds with each round's
//! versions of a customer out of order) through the real `--role sync` binary against a throttled stand-in on the
//! Plus bucket (1,000 points/s, 10,000 points; Plus keeps the run well under a minute on a busy machine, the
//! standard rate is in the benchmark): every customer ends at version 20, no write ever put an older version over
//! a newer one, the stand-in never had to refuse a call, and its bucket was never overdrawn.

use std::time::{Duration, Instant};

use loyalnest_rfm::shopify::admin::metafields::CUSTOMERS_PER_CALL;
use loyalnest_rfm::shopify::admin::throttle::ThrottlePlan;

use super::{
    fresh_topics, ingress, install, produce, segment_of, shop, stage_of, standin, update,
    written_versions, Binary,
};
use crate::helpers::{eventually, fresh_database};

const CUSTOMERS: u64 = 5_000;
const ROUNDS: u32 = 4;
const PER_ROUND: u32 = 5;

#[actix_web::test]
async fn a_hundred_thousand_changes_are_all_written_never_over_the_bucket_and_the_latest_wins() {
    let standin = standin(|o| o.plan = ThrottlePlan::Plus);
    let database = fresh_database().await;
    let (prefix, topics) = fresh_topics().await;
    let shop = shop();
    install(&ingress(&database, &standin.address, &prefix), &shop).await;

    let mut records = Vec::with_capacity((CUSTOMERS * (ROUNDS * PER_ROUND) as u64) as usize);
    for round in 0..ROUNDS {
        for customer in 1..=CUSTOMERS {
            let mut versions: Vec<u32> =
                (round * PER_ROUND + 1..=(round + 1) * PER_ROUND).collect();
            versions.rotate_left((customer % PER_ROUND as u64) as usize);
            records.extend(versions.into_iter().map(|v| update(&shop, customer, v)));
        }
    }
    assert_eq!(records.len(), 100_000);
    let producing = Instant::now();
    produce(&topics, &records).await;
    eprintln!("100,000 records produced in {:?}", producing.elapsed());

    let started = Instant::now();
    let mut binary = Binary::new("sync", &prefix, &database, &standin.address);
    binary.env.push(("SHOPIFY_THROTTLE_PLAN", "plus".into()));
    binary.start();
    let last = stage_of(ROUNDS * PER_ROUND);
    eventually(
        "every customer at its last version",
        Duration::from_secs(240),
        async || {
            standin.state.with_shop(shop.as_str(), |s| {
                s.customers
                    .values()
                    .filter(|fields| {
                        fields
                            .iter()
                            .any(|((_, key), f)| key == "rfm_stage" && f.value == last)
                    })
                    .count() as u64
                    == CUSTOMERS
            })
        },
    )
    .await;
    let elapsed = started.elapsed();

    let counters = &standin.state.counters;
    let calls = standin.state.count(&counters.calls);
    eprintln!("100,000 changes written in {elapsed:?} with {calls} calls");
    assert_eq!(
        standin.state.count(&counters.throttled),
        0,
        "no call was sent the bucket could not cover"
    );
    let (peak, maximum) = standin
        .state
        .peak_used(shop.as_str())
        .expect("the shop's bucket");
    assert!(
        peak <= maximum,
        "peak use {peak} within the bucket of {maximum}"
    );
    assert!(
        calls >= CUSTOMERS / CUSTOMERS_PER_CALL as u64,
        "at most {CUSTOMERS_PER_CALL} customers per call: {calls} calls"
    );
    for customer in 1..=CUSTOMERS {
        let versions = written_versions(&standin, &shop, customer);
        assert!(
            versions.windows(2).all(|w| w[0] <= w[1]),
            "customer {customer} went back: {versions:?}"
        );
        assert_eq!(versions.last(), Some(&(ROUNDS * PER_ROUND)));
        let segment = standin
            .state
            .metafield(shop.as_str(), customer, "loyalnest", "rfm_segment");
        assert_eq!(segment, Some(segment_of(customer, ROUNDS * PER_ROUND)));
        let score = standin
            .state
            .metafield(shop.as_str(), customer, "loyalnest", "rfm_score");
        assert_eq!(score.as_deref(), Some("2.0"));
        let version = standin
            .state
            .metafield(shop.as_str(), customer, "loyalnest", "rfm_version");
        assert_eq!(
            version,
            Some((ROUNDS * PER_ROUND).to_string()),
            "the compare-and-set guard holds the version written"
        );
    }
    // Coalescing: far fewer customer writes than records.
    let writes: usize = (1..=CUSTOMERS)
        .map(|c| written_versions(&standin, &shop, c).len())
        .sum();
    assert!(
        writes < 50_000,
        "{writes} customer writes for 100,000 records"
    );
}
