//! The loop's side of partition ownership: assignments and revocations from the group, each partition's
//! lifecycle (`lifecycle`) fed with what happened and its commands carried out, and the group-membership
//! workaround for a member left with nothing.

use std::sync::atomic::Ordering;
use std::time::{Duration, Instant};

use actors::PublishedVersion;

use super::lifecycle::{Command, Departure, Event, Lifecycle};
use super::publish::PublishError;
use super::Processor;
use streams::source::Revocation;

impl Processor {
    /// Hands revoked partitions over, starts the life of newly assigned ones (a partition without new records
    /// still gets its state and timers), and reports how far each replay got.
    pub(super) async fn take_assignments(&mut self) -> Result<(), PublishError> {
        if let Some(revocation) = self.source.take_revoked() {
            self.hand_over(revocation).await?;
        }
        for partition in self.source.take_assigned() {
            if self.lifecycles.contains_key(&partition) {
                continue;
            }
            let (lifecycle, commands) = Lifecycle::assigned(&mut self.attempts);
            self.lifecycles.insert(partition, lifecycle);
            self.partition_clocks.assigned(partition);
            self.run_commands(partition, commands, None).await?;
        }
        self.check_empty_assignment().await;
        // A restore whose remaining records were all skipped, or whose read-back failed, moves on here.
        let replaying: Vec<i32> = self
            .lifecycles
            .iter()
            .filter(|(_, l)| l.replaying())
            .map(|(p, _)| *p)
            .collect();
        for partition in replaying {
            self.report_progress(partition).await?;
        }
        let restoring = self.lifecycles.values().filter(|l| !l.live()).count();
        let caught_up = !self.lifecycles.is_empty() && restoring == 0;
        self.stats.caught_up.store(caught_up, Ordering::SeqCst);
        (self.stats.partitions_owned).store(self.lifecycles.len(), Ordering::SeqCst);
        metrics::gauge!(streams::metric_names::PARTITIONS_RESTORING).set(restoring as f64);
        metrics::gauge!(streams::metric_names::PARTITIONS_OWNED).set(self.lifecycles.len() as f64);
        Ok(())
    }

    /// Tells a replaying partition's lifecycle whether its position reached the frontier.
    pub(super) async fn report_progress(&mut self, partition: i32) -> Result<(), PublishError> {
        if !self
            .lifecycles
            .get(&partition)
            .is_some_and(Lifecycle::replaying)
        {
            return Ok(());
        }
        let reached = self
            .positions
            .get(&partition)
            .is_some_and(|p| p.reached_frontier());
        self.dispatch(partition, Event::Progress { reached }, None)
            .await
    }

    /// Lets every lifecycle know the loop ticked (a postponed hydration is tried again).
    pub(super) async fn tick_lifecycles(&mut self) -> Result<(), PublishError> {
        let partitions: Vec<i32> = self.lifecycles.keys().copied().collect();
        for partition in partitions {
            self.dispatch(partition, Event::Tick, None).await?;
        }
        Ok(())
    }

    /// Feeds `event` to the partition's lifecycle and carries out what it answers; `published` is the read-back
    /// that a `FinishRestore` hands to the actor.
    pub(super) async fn dispatch(
        &mut self,
        partition: i32,
        event: Event,
        published: Option<Vec<PublishedVersion>>,
    ) -> Result<(), PublishError> {
        let Some(lifecycle) = self.lifecycles.get_mut(&partition) else {
            return Ok(());
        };
        let commands = lifecycle.on(event, &mut self.attempts);
        self.run_commands(partition, commands, published).await
    }

    async fn run_commands(
        &mut self,
        partition: i32,
        commands: Vec<Command>,
        mut published: Option<Vec<PublishedVersion>>,
    ) -> Result<(), PublishError> {
        for command in commands {
            match command {
                Command::Pause => self.source.set_paused(&[partition], true),
                Command::Hydrate { attempt } => self.start_hydration(partition, attempt),
                Command::ReadBack { attempt } => self.start_read_back(partition, attempt),
                Command::FinishRestore { attempt } => {
                    let versions = published.take().unwrap_or_default();
                    // Boxed: finishing publishes a chunk, which feeds the lifecycle again.
                    let finishing: futures_util::future::LocalBoxFuture<'_, _> =
                        Box::pin(self.finish_restore(partition, attempt, versions));
                    finishing.await?;
                }
                Command::NextChunk { attempt } => self.ask_next_chunk(partition, attempt),
            }
        }
        Ok(())
    }

    /// Answers a revocation: waits for what is in flight, snapshots the revoked partitions that are live so their
    /// next owner starts from their exact state, stores and commits those offsets, and only then gives the
    /// partitions up. A lost assignment is fenced instead: its partitions may already be restored and written by
    /// their new owner, so this member writes no snapshot of them and commits nothing; their outputs in flight are
    /// still driven to the end (the new owner's read-back recognises them as already published).
    pub(super) async fn hand_over(&mut self, revocation: Revocation) -> Result<(), PublishError> {
        let Revocation {
            partitions: revoked,
            lost,
        } = revocation;
        self.drain_chunks(|p| revoked.contains(&p)).await?;
        self.settle(0).await?;
        // Waiting for the window can outlast the group's patience: check again.
        let lost = lost || self.source.assignment_lost();
        let handed: Vec<i32> = revoked
            .iter()
            .copied()
            .filter(|p| {
                self.lifecycles
                    .get(p)
                    .is_some_and(|l| l.revoked(lost) == Departure::HandOver)
            })
            .collect();
        if lost {
            // A round started before the loss must not land over the new owner's.
            if let Some(saving) = self.saving.take() {
                saving.abort();
            }
            metrics::counter!(streams::metric_names::FENCED_HANDOVERS).increment(1);
            tracing::warn!(partitions = ?revoked, "assignment lost; fenced: no hand-over snapshot, no commit");
            self.source.release_lost();
        } else {
            let (written, unchanged) = self.snapshot_now(&handed).await;
            let snapshotted = written.iter().filter(|(_, _, r)| r.is_ok()).count() + unchanged;
            self.store_written(written);
            metrics::counter!(streams::metric_names::HANDOVER_SNAPSHOTS)
                .increment(snapshotted as u64);
            tracing::info!(partitions = ?revoked, snapshotted, unchanged, "handing partitions over");
            let releasing = Instant::now();
            self.source.release();
            tracing::info!(partitions = ?revoked, elapsed_ms = releasing.elapsed().as_millis() as u64, "partitions released");
        }
        for partition in &revoked {
            self.partitions.remove(partition);
            self.positions.remove(partition);
            self.lifecycles.remove(partition);
            self.partition_clocks.revoked(*partition);
            self.source.lag().forget(*partition);
            self.config_wait.remove(partition);
        }
        Ok(())
    }

    /// Tansu 0.6 can settle a rebalance with the only live member holding no partitions: when a restarted
    /// instance joins while the dead leader's session is still running, the leader's expiry lets the newcomer's
    /// follower SyncGroup (which carries no assignment) complete the generation, and nothing rebalances again. So a
    /// member that has owned nothing for two session timeouts checks whether any owner is alive (owners refresh
    /// `rfm:snapshot:{group}:alive` with every snapshot round); when none is, nobody consumes the partitions, which
    /// is wrong on any broker, and it leaves and joins the group again. Legitimately idle members (more instances
    /// than partitions) see the owners' mark and stay put.
    async fn check_empty_assignment(&mut self) {
        let Some(store) = self.snapshots.as_ref().map(|s| s.store.clone()) else {
            return;
        };
        if !self.lifecycles.is_empty() {
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
                metrics::counter!(streams::metric_names::GROUP_REJOINS).increment(1);
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
