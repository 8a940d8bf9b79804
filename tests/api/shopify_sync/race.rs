//! The rebalance race of the write-back (review finding): the worker that lost a customer's partition read the
//! versions table, then its write of an older version lands after the partition's new owner wrote a newer one.
//! Both writers here are the real writer against the stand-in and Postgres; the old owner's read is taken before
//! the new owner writes, as it happens on a rebalance, and its older version is sent last. `compareDigest` makes
//! Shopify refuse it; the newer value stays, and the refusal is a newer write winning: no dead letter, no retry.

use std::sync::Arc;

use loyalnest_rfm::shopify::admin::paced::PacedClient;
use loyalnest_rfm::shopify::admin::throttle::{CostThrottle, ThrottlePlan};
use loyalnest_rfm::shopify::admin::{AdminClient, AdminSettings};
use loyalnest_rfm::store::Store;
use loyalnest_rfm::sync::coalesce::{Latest, Source};
use loyalnest_rfm::sync::{versions, writer};
use streams::MerchantId;

use super::{shop, stage_of, standin, update, written_versions};
use crate::helpers::fresh_database;

const CUSTOMER: u64 = 77;
const TOKEN: &str = "shpat_race";

fn latest(shop: &MerchantId, version: u32) -> Latest {
    Latest {
        update: serde_json::from_value(update(shop, CUSTOMER, version)).expect("rfm.updated"),
        source: Source {
            partition: 0,
            offset: i64::from(version),
            key: None,
            payload: Vec::new(),
        },
    }
}

#[actix_web::test]
async fn an_older_version_sent_after_a_newer_one_never_overwrites_it() {
    let standin = standin(|_| {});
    let shop = shop();
    standin
        .state
        .register_token(shop.as_str(), TOKEN)
        .expect("a token of its own");
    let store = Store::connect_lazy(&fresh_database().await).expect("postgres");
    store.migrate().await.expect("migrations");
    let pool = store.pool();
    let admin = PacedClient::new(
        AdminClient::new(AdminSettings {
            base_url: standin.address.clone(),
            api_version: "2025-10".into(),
        }),
        Arc::new(CostThrottle::new(ThrottlePlan::Standard)),
    );
    let write =
        |version: u32| writer::write_shop(&admin, pool, &shop, TOKEN, vec![latest(&shop, version)]);
    let stored = |key: &str| {
        standin
            .state
            .metafield(shop.as_str(), CUSTOMER, "loyalnest", key)
    };

    let first = write(5).await.expect("version 5");
    assert_eq!((first.written, first.stale), (1, 0));
    // The old owner reads the table (version 5) and is about to send version 6 ...
    let old_read = versions::written(pool, &shop, &[CUSTOMER])
        .await
        .expect("read");
    assert_eq!(old_read[&CUSTOMER].version, 5);
    // ... when the partition moves and the new owner writes version 7.
    let newer = write(7).await.expect("version 7");
    assert_eq!(newer.written, 1);
    // The old owner's version 6 lands last.
    let late = writer::write_known(
        &admin,
        pool,
        &shop,
        TOKEN,
        vec![latest(&shop, 6)],
        &old_read,
    )
    .await
    .expect("the late write is answered");
    assert_eq!(
        (late.written, late.stale, late.refused.len()),
        (0, 1, 0),
        "a newer write won: counted stale, not written, not dead-lettered"
    );
    assert_eq!(stored("rfm_version").as_deref(), Some("7"));
    assert_eq!(stored("rfm_stage"), Some(stage_of(7)));
    assert_eq!(written_versions(&standin, &shop, CUSTOMER), [5, 7]);
    assert_eq!(
        versions::written(pool, &shop, &[CUSTOMER]).await.unwrap()[&CUSTOMER].version,
        7
    );

    // The table behind Shopify (a crash after Shopify accepted, before the record): the guard refuses, the
    // stored version is read back, older than ours, and the newer write goes through.
    sqlx::query("UPDATE shopify_sync_versions SET version = 5, compare_digest = 'gone'")
        .execute(pool)
        .await
        .expect("set the table back");
    let ahead = write(9).await.expect("version 9");
    assert_eq!((ahead.written, ahead.stale), (1, 0));
    assert_eq!(stored("rfm_version").as_deref(), Some("9"));

    // No row at all (say, a table restored from an old backup) and an older version: refused, the newer stays.
    sqlx::query("DELETE FROM shopify_sync_versions")
        .execute(pool)
        .await
        .expect("drop the rows");
    let older = write(8).await.expect("version 8");
    assert_eq!((older.written, older.stale, older.refused.len()), (0, 1, 0));
    assert_eq!(stored("rfm_stage"), Some(stage_of(9)));
    assert_eq!(written_versions(&standin, &shop, CUSTOMER), [5, 7, 9]);
    assert_eq!(
        versions::written(pool, &shop, &[CUSTOMER]).await.unwrap()[&CUSTOMER].version,
        9,
        "what Shopify holds is recorded again"
    );
}
