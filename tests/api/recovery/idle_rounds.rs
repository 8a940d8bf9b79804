//! Snapshot rounds of partitions that did not change are skipped: an idle instance neither re-encodes nor re-sends
//! its state every few seconds. Skipping must never leave the store without the state: a snapshot that Redis lost
//! (restarted, flushed, evicted) is written again at the next round even though nothing changed.

use super::*;

const WRITTEN: &str = "rfm_snapshots_total{outcome=\"written\"}";
const UNCHANGED: &str = "rfm_snapshots_total{outcome=\"unchanged\"}";

/// Waits for two whole rounds (all 3 partitions) skipped with no write in between.
async fn idle_rounds_skipped(address: &str) {
    let started = std::time::Instant::now();
    loop {
        let (written, unchanged) = (
            metric(address, WRITTEN).await,
            metric(address, UNCHANGED).await,
        );
        eventually(
            "two rounds of every partition",
            Duration::from_secs(30),
            async || metric(address, UNCHANGED).await >= unchanged + 6.0,
        )
        .await;
        if metric(address, WRITTEN).await == written {
            return;
        }
        // A partition still had changes to write (a timer, the last records): try from here.
        assert!(
            started.elapsed() < Duration::from_secs(90),
            "an idle instance kept writing snapshots"
        );
    }
}

#[actix_web::test]
async fn unchanged_partitions_skip_their_rounds_and_a_lost_snapshot_is_written_again() {
    let mut scenario = Scenario::new("idle-rounds").await;
    scenario.set_env("SNAPSHOT_STORE", "redis");
    let mut instance = scenario.instance();
    instance.start();
    let address = instance.address();
    wait_for_snapshots_after_restore(&address).await;
    scenario.produce(&scenario.events).await;
    let now = chrono::Utc::now().timestamp();
    scenario
        .until_consumed("the stream consumed", std::slice::from_ref(&address), now)
        .await;
    idle_rounds_skipped(&address).await;

    // Behind the instance's back, the store loses partition 0's snapshot and partition 1's is replaced by other
    // bytes (an older dump restored, a zombie owner's late write): both must be written again, unchanged or not.
    let (_, group) = scenario
        .env
        .iter()
        .find(|(k, _)| *k == "KAFKA_GROUP_ID")
        .expect("a group");
    let key = |p: i32| format!("rfm:snapshot:{}:{p}", loyalnest_rfm::redis_link::tag(group));
    let url = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
    let mut redis = redis::Client::open(url)
        .unwrap()
        .get_multiplexed_async_connection()
        .await
        .unwrap();
    let written = metric(&address, WRITTEN).await;
    let removed: i64 = redis::cmd("DEL")
        .arg(key(0))
        .query_async(&mut redis)
        .await
        .unwrap();
    assert_eq!(
        removed,
        1,
        "partition 0's snapshot was in Redis under {}",
        key(0)
    );
    let () = redis::cmd("SET")
        .arg(key(1))
        .arg(b"not this instance's snapshot".as_slice())
        .query_async(&mut redis)
        .await
        .unwrap();
    eventually(
        "the lost and the replaced snapshot written again",
        Duration::from_secs(30),
        async || {
            let mut whole = true;
            for p in [0, 1] {
                let held: Option<Vec<u8>> = redis::cmd("GET")
                    .arg(key(p))
                    .query_async(&mut redis)
                    .await
                    .unwrap_or(None);
                whole &= held.is_some_and(|b| b.starts_with(b"LNRS"));
            }
            whole && metric(&address, WRITTEN).await >= written + 2.0
        },
    )
    .await;
    idle_rounds_skipped(&address).await;

    // A restart restores from those snapshots (none refused, nothing replayed from the start), is idle at once, and
    // serves what the oracle says.
    instance.stop();
    instance.start();
    wait_until_live(&address, &scenario.merchants).await;
    idle_rounds_skipped(&address).await;
    assert_eq!(
        metric(&address, "processor_snapshots_refused_total").await,
        0.0
    );
    scenario.check(&[address]).await;
}
