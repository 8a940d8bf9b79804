//! The checkout discount Function (`functions/segment-discount`, its own cargo project) given the metafield the
//! write-back wrote: the test builds the Function's input (the shape of its `run.graphql`) from the value read
//! back from the stand-in and the merchant's discount configuration, and runs the Function's own test over it
//! natively (`run_function_with_input`), which asserts the configured percentage comes out.

use std::path::PathBuf;
use std::process::Command;

use loyalnest_rfm::shopify::standin::Standin;
use serde_json::json;
use streams::MerchantId;

use super::flow::{field, read_back};

/// The merchant's configuration on the discount: the customer's segment gets this much off.
const PERCENTAGE: f64 = 12.5;

pub async fn applies_the_merchants_discount(standin: &Standin, shop: &MerchantId, customer: u64) {
    let reader = standin.state.issue_token(shop.as_str());
    let nodes = read_back(&standin.address, &reader, shop.as_str(), customer).await;
    let segment = field(&nodes, "rfm_segment")
        .expect("the segment metafield")
        .to_owned();
    let mut segments = serde_json::Map::new();
    segments.insert(
        segment.clone(),
        json!({ "percentage": PERCENTAGE, "message": format!("LoyalNest: {PERCENTAGE}% for {segment}") }),
    );
    segments.insert("someone_else".into(), json!({ "percentage": 50.0 }));
    let input = json!({
        "cart": { "buyerIdentity": { "customer": { "rfmSegment": { "value": segment } } } },
        "discount": {
            "discountClasses": ["ORDER"],
            "segmentDiscounts": { "jsonValue": { "segments": segments } },
        },
    });
    std::fs::create_dir_all("artifacts").expect("artifacts");
    let path = PathBuf::from("artifacts").join(format!("segment-discount-input-{customer}.json"));
    std::fs::write(&path, serde_json::to_vec_pretty(&input).expect("json")).expect("input written");
    let manifest =
        PathBuf::from(env!("CARGO_MANIFEST_DIR")).join("functions/segment-discount/Cargo.toml");
    let cargo = std::env::var("CARGO").unwrap_or_else(|_| "cargo".into());
    let run = tokio::task::spawn_blocking(move || {
        Command::new(cargo)
            .args(["test", "--quiet", "--manifest-path"])
            .arg(&manifest)
            .args(["the_metafield_written_by_the_sync_worker_applies_the_discount"])
            .env(
                "SEGMENT_DISCOUNT_INPUT",
                std::fs::canonicalize(&path).expect("path"),
            )
            .env("SEGMENT_DISCOUNT_EXPECT", PERCENTAGE.to_string())
            .output()
            .expect("cargo runs")
    })
    .await
    .expect("cargo thread");
    let stdout = String::from_utf8_lossy(&run.stdout);
    // A filter that matched nothing would pass too: the one test must have run.
    assert!(
        stdout.contains("1 passed"),
        "the Function's test ran: {stdout}"
    );
    assert!(
        run.status.success(),
        "the Function applied the discount for {segment}:\n{}\n{}",
        String::from_utf8_lossy(&run.stdout),
        String::from_utf8_lossy(&run.stderr)
    );
}
