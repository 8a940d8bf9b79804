//! Snapshot rounds (docs/RECOVERY.md, points 1 and 11): every few seconds, and at a hand-over or shutdown, each
//! settled partition's actor is asked for a round (its manifest and the pieces of the merchants that changed), the
//! rounds are written to the store in the background, and only then are the offsets they cover stored for commit.
//! A round the store did not take is handed back to its actor, whose next round carries those pieces again.

use std::collections::{BTreeMap, HashMap};
use std::time::Instant;

use actors::{Restain, SnapshotOffsets, SnapshotRound, TakeSnapshotRound};
use streams::MerchantId;

use super::SnapshotSettings;
use crate::processor::Processor;
use crate::snapshots::{Saved, SnapshotStore, Stamp, StoreError};

/// What an owner knows of its partition's snapshot in the store, so a round can send only what changed.
#[derive(Debug)]
pub(in crate::processor) struct Lineage {
    /// Names this owner in the rounds it writes. New with every restore, so a round that completes after its
    /// partition was revoked and restored again is not taken for the new restore's.
    writer: String,
    /// The round the store holds, as restored or as last written here.
    base: Option<Stamp>,
    /// The next round must carry every piece: the store holds nothing this state came from, or another state.
    full: bool,
}

impl Default for Lineage {
    fn default() -> Self {
        Lineage::restored(None)
    }
}

impl Lineage {
    /// A partition restored from the round `base` of the store (its pieces, decoded), or from nothing.
    pub(in crate::processor) fn restored(base: Option<Stamp>) -> Lineage {
        Lineage {
            writer: uuid::Uuid::new_v4().to_string(),
            full: base.is_none(),
            base,
        }
    }

    fn written(&mut self, saved: &Saved) {
        self.base = saved.stamp.clone();
        self.full = false;
    }

    /// A round failed; after a conflict only a full one can be written.
    fn failed(&mut self, error: &StoreError) {
        if matches!(error, StoreError::Conflict) {
            self.full = true;
        }
    }
}

/// One partition's round as sent, for taking in its outcome.
pub(in crate::processor) struct RoundOf {
    /// The offsets it covers.
    covered: HashMap<String, i64>,
    /// The owner that took it (`Lineage::writer`).
    writer: String,
    /// The merchants whose pieces it carries, to be sent again if it is not written.
    changed: Vec<MerchantId>,
}

/// One partition's round and what became of it.
pub(in crate::processor) type Written = (i32, RoundOf, Result<Saved, StoreError>);

/// One partition's round, encoded and not written yet.
struct Encoded {
    round: SnapshotRound,
    base: Option<Stamp>,
    of: RoundOf,
}

/// Writes a round one partition after another.
async fn write_round(store: SnapshotStore, round: Vec<Encoded>) -> Vec<Written> {
    let mut written = Vec::with_capacity(round.len());
    for Encoded { round, base, of } in round {
        let partition = round.partition;
        let result = store.save(round, base.as_ref(), &of.writer).await;
        written.push((partition, of, result));
    }
    written
}

impl Processor {
    /// Snapshots every partition that is not restoring, if one is due and the previous round is written. Waits for
    /// everything in flight first, so a snapshot never holds a change that is not yet published. The writes run in
    /// the background, so a slow or absent store does not stall consumption; their offsets are stored when the round
    /// is collected. `force` (shutdown) waits for the round to be written.
    pub(in crate::processor) async fn snapshot_if_due(
        &mut self,
        force: bool,
    ) -> Result<(), crate::processor::PublishError> {
        let Some(SnapshotSettings { store, every }) = &self.snapshots else {
            return Ok(());
        };
        let (store, due) = (
            store.clone(),
            force || self.last_snapshot.elapsed() >= *every,
        );
        if !self.collect_snapshots(force).await || !due {
            return Ok(());
        }
        // Fenced: a member whose assignment was lost must not write over its partitions' new owner.
        if self.source.assignment_lost() {
            return Ok(());
        }
        self.last_snapshot = Instant::now();
        self.settle(0).await?;
        let round = self.encode_round(|_| true).await;
        let alive = (!round.is_empty()).then(|| self.alive_ttl());
        self.saving = Some(tokio::task::spawn_local(async move {
            let written = write_round(store.clone(), round).await;
            if let Some(ttl) = alive.filter(|_| written.iter().any(|(_, _, r)| r.is_ok())) {
                if let Err(e) = store.mark_alive(ttl).await {
                    tracing::debug!(error = %e, "owner mark not written");
                }
            }
            written
        }));
        if force {
            self.collect_snapshots(true).await;
        }
        Ok(())
    }

    /// Snapshots `partitions` now and waits for the writes (a hand-over); the caller stores the offsets. Nothing
    /// may be in flight.
    pub(in crate::processor) async fn snapshot_now(&mut self, partitions: &[i32]) -> Vec<Written> {
        let Some(store) = self.snapshots.as_ref().map(|s| s.store.clone()) else {
            return Vec::new();
        };
        self.collect_snapshots(true).await;
        let round = self.encode_round(|p| partitions.contains(&p)).await;
        write_round(store, round).await
    }

    /// Takes a round of every chosen partition that is live (see `lifecycle`): the offsets it covers,
    /// the output marks and its incarnation, with the pieces of the merchants that changed (of all of them when the
    /// store keeps snapshots whole, or this owner does not know what the store holds).
    async fn encode_round(&self, chosen: impl Fn(i32) -> bool) -> Vec<Encoded> {
        let Some(marks) = self.current_output_marks() else {
            return Vec::new();
        };
        let incremental = self
            .snapshots
            .as_ref()
            .is_some_and(|s| s.store.incremental());
        let mut round = Vec::with_capacity(self.positions.len());
        let positions = self.positions.iter().filter(|(p, _)| {
            chosen(**p)
                && self
                    .lifecycles
                    .get(p)
                    .is_some_and(crate::processor::lifecycle::Lifecycle::live)
        });
        for (partition, position) in positions {
            let Some(addr) = self.partitions.get(partition).map(|a| a.value().clone()) else {
                continue;
            };
            let offsets = SnapshotOffsets {
                inputs: position.next.clone().into_iter().collect(),
                marks: marks.clone(),
            };
            let covered: HashMap<String, i64> = position
                .next
                .iter()
                .filter(|(_, next)| **next > 0)
                .map(|(topic, next)| (topic.clone(), next - 1))
                .collect();
            let take = TakeSnapshotRound {
                offsets,
                incarnation: position.incarnation.clone(),
                full: !incremental || position.lineage.full,
            };
            // `None`: a re-score is still publishing its moves; this partition waits for the next round.
            let Ok(Some(taken)) = addr.send(take).await else {
                continue;
            };
            let of = RoundOf {
                covered,
                writer: position.lineage.writer.clone(),
                changed: taken.pieces.iter().map(|(m, _)| m.clone()).collect(),
            };
            round.push(Encoded {
                round: taken,
                base: position.lineage.base.clone(),
                of,
            });
        }
        round
    }

    /// Stores the offsets of every snapshot of the last round that was written. `false` while the round is still
    /// being written (and `wait` is off).
    async fn collect_snapshots(&mut self, wait: bool) -> bool {
        let Some(saving) = self.saving.take_if(|s| wait || s.is_finished()) else {
            return self.saving.is_none();
        };
        let written = saving.await.unwrap_or_default();
        self.store_written(written);
        true
    }

    /// Stores the offsets covered by every snapshot that was written; those that were not keep theirs uncommitted,
    /// and their merchants' pieces are sent again with the next round.
    pub(in crate::processor) fn store_written(&mut self, written: Vec<Written>) {
        let durable = self.snapshots.as_ref().is_some_and(|s| s.store.durable());
        for (partition, round, result) in written {
            match &result {
                Ok(saved) => {
                    metrics::counter!(streams::metric_names::SNAPSHOTS, "outcome" => "written")
                        .increment(1);
                    self.partition_clocks.snapshot_written(partition);
                    metrics::counter!(streams::metric_names::SNAPSHOT_PIECES)
                        .increment(saved.pieces as u64);
                    metrics::counter!(streams::metric_names::SNAPSHOT_BYTES)
                        .increment(saved.bytes as u64);
                    tracing::debug!(
                        partition,
                        bytes = saved.bytes,
                        pieces = saved.pieces,
                        "snapshot written"
                    );
                }
                Err(e) => {
                    metrics::counter!(streams::metric_names::SNAPSHOTS, "outcome" => "failed")
                        .increment(1);
                    streams::metric_names::error("processor", "snapshot");
                    tracing::warn!(partition, error = %e, "snapshot not written; offsets not committed");
                }
            }
            // A partition revoked meanwhile (and perhaps restored again) belongs to its new owner's rounds and commits.
            let Some(position) = self
                .positions
                .get_mut(&partition)
                .filter(|p| p.lineage.writer == round.writer)
            else {
                continue;
            };
            match result {
                Ok(saved) => {
                    position.lineage.written(&saved);
                    if durable {
                        self.source.store_offsets(partition, &round.covered);
                    }
                }
                Err(e) => {
                    position.lineage.failed(&e);
                    if let Some(addr) = self.partitions.get(&partition) {
                        // Queued before the next round is asked for, so that round carries these pieces again.
                        addr.do_send(Restain(round.changed));
                    }
                }
            }
        }
    }

    /// The output topic's high watermark per partition, or `None` when the broker cannot say now (no snapshot is
    /// taken then: without marks a restore could not tell what was published after it).
    fn current_output_marks(&self) -> Option<BTreeMap<i32, i64>> {
        let topic = &self.publisher.topics.rfm_updated;
        let count = self.source.partition_count(topic).ok()?;
        (0..count)
            .map(|p| {
                self.source
                    .watermarks(topic, p)
                    .ok()
                    .map(|(_, high)| (p, high))
            })
            .collect()
    }
}
