//! SIGKILL at random moments while a known stream flows, a restart after each. `CRASH_KILLS` sets the number of
//! kills (CI: 5; docs/RECOVERY.md gives the long mode).

use std::time::Duration;

use super::*;

#[actix_web::test]
async fn kill_9_at_random_moments_loses_nothing_and_publishes_each_version_once() {
    let kills: usize = std::env::var("CRASH_KILLS")
        .ok()
        .and_then(|k| k.parse().ok())
        .unwrap_or(5);
    let mut random = rng();
    let scenario = Scenario::new("crash").await;
    let mut instance = scenario.instance();
    let chunk = scenario.events.len().div_ceil(kills + 1);

    instance.start();
    for (i, part) in scenario.events.chunks(chunk).enumerate() {
        if i > 0 && i <= kills {
            // Kills must also land after this instance snapshotted restored state and then published more.
            wait_for_snapshots_after_restore(&instance.address()).await;
        }
        scenario.produce(part).await;
        if i < kills {
            // Once the instance owns partitions again, a random moment while the chunk is consumed, published or
            // snapshotted.
            wait_until_live(&instance.address(), &scenario.merchants).await;
            tokio::time::sleep(Duration::from_millis(random(2 * SNAPSHOT_MS))).await;
            instance.kill_9();
            instance.start();
        }
    }
    assert_eq!(instance.starts as usize, kills + 1);
    scenario.check(&[instance.address()]).await;
}
