//! The Postgres snapshot store against a real database: rounds written in one transaction and read back as the
//! snapshot they make up, incremental rounds refused when the store holds another round than the one they build
//! on, pieces of merchants a manifest no longer lists deleted, and the owners' liveness mark. And the Redis store
//! against a real Redis: a snapshot under the pre-hash-tag key is restored from, then deleted once the tagged
//! one is written.

use std::time::Duration;

use actors::{Configs, Incarnation, PartitionCore, SnapshotOffsets};
use functions::Timestamp;
use loyalnest_rfm::snapshots::{PgSnapshots, SnapshotStore, StoreError};
use sqlx::PgPool;
use streams::events::OrderCreated;
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

use crate::helpers::{fresh_database, unique};

const NOW: i64 = 1_790_000_000;

fn order(shop: &MerchantId, customer: u64, order: u64) -> InputEvent {
    InputEvent::OrderCreated(OrderCreated {
        event_id: unique("e"),
        schema_version: SCHEMA_VERSION,
        merchant_id: shop.clone(),
        customer_id: customer,
        order_id: order,
        total_price: "25.00".into(),
        currency: "USD".into(),
        created_at: chrono::DateTime::from_timestamp(NOW - 86_400, 0).unwrap(),
        financial_status: "paid".into(),
        test: false,
        cancelled: false,
        locale: None,
        pii: None,
    })
}

fn offsets(next: i64) -> SnapshotOffsets {
    SnapshotOffsets::of_inputs([("orders.create", next)])
}

async fn pieces(pool: &PgPool, group: &str) -> Vec<String> {
    sqlx::query_scalar(
        "SELECT merchant_id FROM snapshot_pieces WHERE group_id = $1 ORDER BY merchant_id",
    )
    .bind(group)
    .fetch_all(pool)
    .await
    .unwrap()
}

#[tokio::test]
async fn rounds_build_on_the_stored_round_and_read_back_as_the_whole_snapshot() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let group = unique("g-");
    let store = PgSnapshots::new(pool.clone(), &group);
    let (a, b) = (
        MerchantId::parse("a-shop.myshopify.com").unwrap(),
        MerchantId::parse("b-shop.myshopify.com").unwrap(),
    );
    let (configs, now) = (Configs::default(), Timestamp::from_unix(NOW));
    let mut core = PartitionCore::new(0);
    core.apply(&[order(&a, 1, 10), order(&b, 2, 20)], now, &configs);
    let none = Incarnation::default();
    assert!(store.load(0).await.unwrap().is_none(), "nothing stored yet");

    let first = store
        .save(core.snapshot_round(&offsets(2), &none, true), None, "w1")
        .await
        .unwrap();
    assert_eq!(first.pieces, 2);
    core.apply(&[order(&b, 2, 21)], now, &configs);
    let round = core.snapshot_round(&offsets(3), &none, false);
    assert_eq!(round.pieces.len(), 1, "only b changed");
    let second = store.save(round, first.stamp.as_ref(), "w1").await.unwrap();
    let loaded = store.load(0).await.unwrap().expect("a snapshot");
    assert_eq!(loaded.stamp, second.stamp);
    assert_eq!(
        loaded.stored.into_bytes().unwrap(),
        core.encode_snapshot(&offsets(3)),
        "the stored pieces make up the snapshot of the state"
    );

    // Another owner wrote since `first`: a round built on it would lay b's change over the other's state.
    core.apply(&[order(&a, 1, 11)], now, &configs);
    let stale = store
        .save(
            core.snapshot_round(&offsets(4), &none, false),
            first.stamp.as_ref(),
            "w1",
        )
        .await;
    assert!(matches!(stale, Err(StoreError::Conflict)), "{stale:?}");
    let unbased = store
        .save(core.snapshot_round(&offsets(4), &none, false), None, "w1")
        .await;
    assert!(matches!(unbased, Err(StoreError::Conflict)), "{unbased:?}");
    let loaded = store.load(0).await.unwrap().unwrap();
    assert_eq!(loaded.stamp, second.stamp, "refused rounds changed nothing");

    // A partition replayed from the start holds b only: a full round drops a's piece.
    let mut replayed = PartitionCore::new(0);
    replayed.apply(&[order(&b, 2, 20)], now, &configs);
    let full = store
        .save(
            replayed.snapshot_round(&offsets(1), &none, true),
            None,
            "w2",
        )
        .await
        .unwrap();
    assert_eq!(full.stamp.as_ref().map(|s| s.round), Some(3));
    assert_eq!(pieces(&pool, &group).await, [b.to_string()]);
    let loaded = store.load(0).await.unwrap().unwrap();
    assert_eq!(
        loaded.stored.into_bytes().unwrap(),
        replayed.encode_snapshot(&offsets(1))
    );
}

#[tokio::test]
async fn the_owners_mark_lasts_its_ttl() {
    let pool = PgPool::connect(&fresh_database().await).await.unwrap();
    let store = PgSnapshots::new(pool, &unique("g-"));
    assert!(!store.someone_alive().await.unwrap(), "no mark yet");
    store.mark_alive(Duration::from_secs(60)).await.unwrap();
    assert!(store.someone_alive().await.unwrap());
    store.mark_alive(Duration::from_millis(1)).await.unwrap();
    crate::helpers::eventually("the mark to expire", Duration::from_secs(5), async || {
        !store.someone_alive().await.unwrap()
    })
    .await;
}

#[tokio::test]
async fn a_legacy_redis_key_is_restored_from_then_deleted_once_the_tagged_snapshot_is_written() {
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let group = unique("g-");
    let store = SnapshotStore::redis(&url, &group, Duration::from_secs(5)).unwrap();
    let mut redis = redis::Client::open(url.as_str())
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let shop = MerchantId::parse("legacy-shop.myshopify.com").unwrap();
    let (configs, now) = (Configs::default(), Timestamp::from_unix(NOW));
    let mut core = PartitionCore::new(2);
    core.apply(&[order(&shop, 1, 10)], now, &configs);
    let old = core.encode_snapshot(&offsets(1));
    let (legacy, tagged) = (
        format!("rfm:snapshot:{group}:2"),
        format!("rfm:snapshot:{{{group}}}:2"),
    );
    let _: () = redis::cmd("SET")
        .arg(&legacy)
        .arg(&old)
        .query_async(&mut redis)
        .await
        .unwrap();

    let loaded = store.load(2).await.unwrap().expect("the legacy snapshot");
    assert_eq!(loaded.stored.into_bytes().unwrap(), old, "restored from it");
    core.apply(&[order(&shop, 1, 11)], now, &configs);
    let none = Incarnation::default();
    store
        .save(core.snapshot_round(&offsets(2), &none, true), None, "w1")
        .await
        .unwrap();

    let exists = |key: String| {
        let mut redis = redis.clone();
        async move {
            redis::cmd("EXISTS")
                .arg(key)
                .query_async::<bool>(&mut redis)
                .await
                .unwrap()
        }
    };
    assert!(!exists(legacy.clone()).await, "the legacy key is gone");
    assert!(exists(tagged.clone()).await, "the tagged snapshot is there");
    let loaded = store.load(2).await.unwrap().expect("the tagged snapshot");
    assert_eq!(
        loaded.stored.into_bytes().unwrap(),
        core.encode_snapshot(&offsets(2)),
        "the next load reads the new snapshot"
    );
    let _: () = redis::cmd("DEL")
        .arg(&tagged)
        .query_async(&mut redis)
        .await
        .unwrap();
}
