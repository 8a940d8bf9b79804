//! The score cache against the real Redis: a restore-sized write lands whole, and redactions delete.

use std::time::Duration;

use actors::Change;
use functions::{LifecycleStage, Money, Rfm, Timestamp};
use loyalnest_rfm::score_cache::{key, ScoreCache};
use streams::MerchantId;

use crate::helpers::unique;

fn change(merchant: &MerchantId, customer_id: u64) -> Change {
    Change {
        merchant: merchant.clone(),
        customer_id,
        version: 3,
        from_segment: "new".into(),
        to_segment: "loyal".into(),
        rfm: Rfm::new(4, 3, 3),
        score_tenths: 34,
        stage: LifecycleStage::RepeatBuyer,
        orders: 2,
        net_spend: Money::from_minor(12_345),
        currency_exponent: 2,
        last_order: None,
        churn_risk: None,
        occurred_at: Timestamp::from_unix(1_790_000_000),
        trace_id: "restore:7".into(),
        locale: None,
        event_ms: None,
        traceparent: None,
        order_added: None,
        points: 0,
    }
}

#[actix_web::test]
async fn a_restore_chunk_of_changes_is_written_whole_and_redactions_delete() {
    let url = std::env::var("REDIS_URL").expect("REDIS_URL");
    let cache = ScoreCache::new(&url, Duration::from_millis(250)).unwrap();
    let shop = unique("cache").to_lowercase();
    let merchant = MerchantId::parse(&format!("{shop}.myshopify.com")).unwrap();
    // More than one round trip's worth, as a restore chunk publishes.
    let changes: Vec<Change> = (1..=4_096).map(|c| change(&merchant, c)).collect();
    cache.apply(&changes, &[]).await;

    let redis = redis::Client::open(url).unwrap();
    let mut redis = redis.get_multiplexed_async_connection().await.unwrap();
    let keys: Vec<String> = (1..=4_096).map(|c| key(&merchant, c)).collect();
    let values: Vec<Option<String>> = redis::cmd("MGET")
        .arg(&keys)
        .query_async(&mut redis)
        .await
        .unwrap();
    let written = values.iter().flatten().count();
    assert_eq!(written, 4_096, "every change of the chunk is cached");
    let last: serde_json::Value = serde_json::from_str(values[4_095].as_ref().unwrap()).unwrap();
    assert_eq!(
        (last["customer_id"].as_u64(), last["segment"].as_str()),
        (Some(4_096), Some("loyal"))
    );

    // A change and the erasure of the same customer in one outcome (an order, then the redaction request):
    // the erasure wins.
    let redacted = vec![(merchant.clone(), Some(17), "g1".to_owned())];
    cache.apply(&changes[16..17], &redacted).await;
    let gone: Option<String> = redis::cmd("GET")
        .arg(key(&merchant, 17))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(gone, None);
}
