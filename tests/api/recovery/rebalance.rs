//! Scale-out: instances in one group share the partitions, and a partition that moves takes its state along
//! through its snapshot. Two instances split the stream; one stops (SIGTERM) and the other takes everything over;
//! a third joins and takes a share back. The stream flows between each step.

use super::*;

/// Waits until the instances at `addresses` together own all 3 partitions, each at least one, none restoring.
async fn wait_for_split(addresses: &[String]) {
    eventually(
        "the group to settle on these instances",
        Duration::from_secs(90),
        async || {
            let mut total = 0.0;
            for address in addresses {
                let owned = metric(address, "rfm_partitions_owned").await;
                let restoring = metric(address, "processor_partitions_restoring").await;
                if owned < 1.0 || restoring > 0.0 {
                    return false;
                }
                total += owned;
            }
            total == 3.0
        },
    )
    .await;
}

#[actix_web::test]
async fn partitions_move_with_their_state_when_instances_stop_and_join() {
    let scenario = Scenario::new("rebal").await;
    let parts: Vec<&[InputEvent]> = scenario
        .events
        .chunks(scenario.events.len().div_ceil(3))
        .collect();
    let (mut a, mut b, mut c) = (
        scenario.instance(),
        scenario.instance(),
        scenario.instance(),
    );
    a.start();
    b.start();
    wait_for_split(&[a.address(), b.address()]).await;
    scenario.produce(parts[0]).await;
    wait_for_snapshots_after_restore(&a.address()).await;
    wait_for_snapshots_after_restore(&b.address()).await;

    a.stop();
    wait_for_split(&[b.address()]).await;
    scenario.produce(parts[1]).await;

    c.start();
    wait_for_split(&[b.address(), c.address()]).await;
    // b gave its partitions up for the new split only after snapshotting them, so c started from their exact state.
    assert!(
        metric(&b.address(), "processor_handover_snapshots_total").await > 0.0,
        "revoked partitions are snapshotted before they are handed over"
    );
    scenario.produce(parts[2]).await;

    scenario.check(&[b.address(), c.address()]).await;
}
