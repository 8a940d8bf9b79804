//! Backpressure and hand-over: the in-flight window of batches being published, and what the loop does when it
//! cannot drain (DESIGN.md §6: "when a buffer is full the consumer pauses, it does not drop").
//!
//! While the window drains normally the loop just awaits its oldest batch. When that takes longer than `STALL`
//! (Postgres or the broker is down and the publishing tasks are retrying), every owned partition is paused and
//! the loop keeps asking the consumer for records while it waits: nothing arrives from paused partitions, but the
//! asking keeps the instance in its group (librdkafka leaves the group when the application stops polling for
//! `max.poll.interval.ms`) and lets rebalance callbacks run. Once the window has room again the partitions
//! resume from their positions (`rewind_to_position`), so nothing fetched before the pause is skipped.

use std::time::{Duration, Instant};

use super::consumer::Revocation;
use super::publish::PublishError;
use super::Processor;

/// How long the oldest batch may take before consumption is paused rather than merely waiting.
const STALL: Duration = Duration::from_secs(1);

impl Processor {
    /// Starts publishing `outcome` behind what is already in flight (the dashboards see it now), then waits while
    /// more than `MAX_IN_FLIGHT` batches are publishing. `timestamps` and `events` are the records it covers, for
    /// the latency figures and the event count; none for a restore's chunk.
    pub(super) async fn publish(
        &mut self,
        outcome: actors::Outcome,
        timestamps: Vec<i64>,
        events: u64,
    ) -> Result<(), PublishError> {
        if let Some(live) = &self.live {
            live.observe(&outcome);
        }
        let done = tokio::task::spawn_local(self.publisher.start(outcome));
        self.in_flight.push_back(super::InFlight {
            done,
            timestamps,
            events,
        });
        self.settle(super::MAX_IN_FLIGHT).await
    }

    /// Retires every finished batch at the front of the window and waits, pausing consumption when the wait is
    /// long, until at most `keep` batches are in flight.
    pub(super) async fn settle(&mut self, keep: usize) -> Result<(), PublishError> {
        let mut stalled_since: Option<Instant> = None;
        loop {
            while self.in_flight.front().is_some_and(|b| b.done.is_finished()) {
                if let Some(batch) = self.in_flight.pop_front() {
                    let result = batch.done.await;
                    self.retire(result, &batch.timestamps, batch.events)?;
                }
            }
            if self.in_flight.len() <= keep {
                self.unpause(stalled_since);
                return Ok(());
            }
            let Some(front) = self.in_flight.front_mut() else {
                return Ok(());
            };
            // A handle that completed here is never polled again; its batch is retired below.
            let completed = if self.paused {
                tokio::select! {
                    result = &mut front.done => Some(result),
                    // A record fetched before the pause took effect: dropped unstored, since every partition is
                    // rewound to its position when it resumes (`unpause`).
                    _ = self.source.next() => None,
                }
            } else {
                match tokio::time::timeout(STALL, &mut front.done).await {
                    Ok(result) => Some(result),
                    Err(_) => {
                        stalled_since = Some(Instant::now());
                        self.pause_owned();
                        None
                    }
                }
            };
            if let Some(result) = completed {
                if let Some(batch) = self.in_flight.pop_front() {
                    self.retire(result, &batch.timestamps, batch.events)?;
                }
            }
        }
    }

    /// Counts a batch that left the window. One whose publishing task failed stops the processor instead: a
    /// snapshot after it would lose its effects, and the restart replays them.
    fn retire(
        &self,
        result: Result<(), tokio::task::JoinError>,
        timestamps: &[i64],
        events: u64,
    ) -> Result<(), PublishError> {
        result.map_err(|e| PublishError::Task(e.to_string()))?;
        self.stats.record_latencies(timestamps);
        self.stats
            .events
            .fetch_add(events, std::sync::atomic::Ordering::SeqCst);
        Ok(())
    }

    fn pause_owned(&mut self) {
        let owned: Vec<i32> = self.positions.keys().copied().collect();
        tracing::warn!(partitions = ?owned, in_flight = self.in_flight.len(), "outputs not completing; consumption paused");
        self.source.set_paused(&owned, true);
        self.paused = true;
        metrics::counter!("processor_pauses_total").increment(1);
        metrics::gauge!("processor_paused").set(1.0);
    }

    fn unpause(&mut self, stalled_since: Option<Instant>) {
        if !self.paused {
            return;
        }
        let owned: Vec<i32> = self
            .positions
            .keys()
            .filter(|p| !self.config_wait.contains_key(p))
            .copied()
            .collect();
        self.source.set_paused(&owned, false);
        for partition in &owned {
            self.rewind_to_position(*partition);
        }
        self.paused = false;
        let paused_ms = stalled_since.map_or(0, |s| s.elapsed().as_millis() as u64);
        tracing::info!(partitions = ?owned, paused_ms, "outputs completing again; consumption resumed");
        metrics::gauge!("processor_paused").set(0.0);
    }

    /// Answers a revocation: waits for what is in flight, snapshots the revoked partitions so their next owner
    /// starts from their exact state, stores and commits those offsets, and only then gives the partitions up.
    /// A lost assignment is fenced instead: its partitions may already be restored and written by their new owner,
    /// so this member writes no snapshot of them and commits nothing; their outputs in flight are still driven to
    /// the end (the new owner's read-back recognises them as already published).
    pub(super) async fn hand_over(&mut self, revocation: Revocation) -> Result<(), PublishError> {
        let Revocation {
            partitions: revoked,
            lost,
        } = revocation;
        self.drain_chunks(|p| revoked.contains(&p)).await?;
        self.settle(0).await?;
        if lost {
            metrics::counter!("processor_fenced_handovers_total").increment(1);
            tracing::warn!(partitions = ?revoked, "assignment lost; fenced: no hand-over snapshot, no commit");
            self.source.release_lost();
        } else {
            let written = self.snapshot_now(&revoked).await;
            let handed = written.iter().filter(|(_, _, r)| r.is_ok()).count();
            self.store_written(written);
            metrics::counter!("processor_handover_snapshots_total").increment(handed as u64);
            tracing::info!(partitions = ?revoked, snapshotted = handed, "handing partitions over");
            self.source.release();
        }
        for partition in &revoked {
            self.partitions.remove(partition);
            self.positions.remove(partition);
            self.owned.remove(partition);
            self.hydrating.remove(partition);
            self.config_wait.remove(partition);
        }
        Ok(())
    }
}

impl Processor {
    /// Tansu 0.6 can settle a rebalance with the only live member holding no partitions: when a restarted
    /// instance joins while the dead leader's session is still running, the leader's expiry lets the newcomer's
    /// follower SyncGroup (which carries no assignment) complete the generation, and nothing rebalances again. So a
    /// member that has owned nothing for two session timeouts checks whether any owner is alive (owners refresh
    /// `rfm:snapshot:{group}:alive` with every snapshot round); when none is, nobody consumes the partitions, which
    /// is wrong on any broker, and it leaves and joins the group again. Legitimately idle members (more instances
    /// than partitions) see the owners' mark and stay put.
    pub(super) async fn check_empty_assignment(&mut self) {
        let Some(store) = self.snapshots.as_ref().map(|s| s.store.clone()) else {
            return;
        };
        if !self.owned.is_empty() {
            self.idle_since = None;
            return;
        }
        let since = *self.idle_since.get_or_insert_with(Instant::now);
        if since.elapsed() < self.session_timeout * 2 {
            return;
        }
        self.idle_since = Some(Instant::now());
        match store.someone_alive().await {
            Ok(false) => {
                tracing::warn!("no partitions and no live owner in the group; rejoining");
                metrics::counter!("processor_group_rejoins_total").increment(1);
                if let Err(e) = self.source.rejoin() {
                    tracing::warn!(error = %e, "could not rejoin the group");
                }
            }
            Ok(true) => tracing::debug!("no partitions; other members own them"),
            Err(e) => tracing::debug!(error = %e, "owners unknown"),
        }
    }

    /// How long an owner's mark stays after its last snapshot round.
    pub(super) fn alive_ttl(&self) -> Duration {
        self.session_timeout * 2
    }
}
