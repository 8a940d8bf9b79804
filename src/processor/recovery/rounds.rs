//! Snapshot rounds (docs/RECOVERY.md, points 1 and 11): every few seconds, and at a hand-over or shutdown, each
//! settled partition's actor is asked for a round (its manifest and the pieces of the merchants that changed), the
//! rounds are written to the store in the background, and only then are the offsets they cover stored for commit.
//! A round the store did not take is handed back to its actor, whose next round carries those pieces again.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use actors::{
    Incarnation, Restain, RoundAnswer, SnapshotOffsets, SnapshotRound, TakeSnapshotRound,
};
use streams::MerchantId;

use super::SnapshotSettings;
use crate::processor::Processor;
use crate::snapshots::{Saved, SnapshotStore, Stamp, StoreError, Tail};

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
    /// The whole snapshot the store was last known to hold of this state (written here, or restored from). While
    /// the partition's position is still its front, no merchant changed and the store still holds those bytes,
    /// the next round would write the same bytes again, so it is skipped: an idle instance neither re-encodes nor
    /// re-sends its partitions every few seconds (docs/DECISIONS.md, "Unchanged snapshot rounds and memory
    /// settings").
    holds: Option<Held>,
}

/// The position a round covers, beside its merchants' pieces.
pub(in crate::processor) type Front = (SnapshotOffsets, Incarnation);

/// A whole snapshot a store holds: the position it covers and its checksum.
#[derive(Debug, Clone)]
pub(in crate::processor) struct Held {
    pub(in crate::processor) front: Front,
    pub(in crate::processor) tail: Tail,
}

/// How long a round waits for the store to confirm what it holds before writing anyway: the check runs on the
/// processing loop, and a store that is slow to answer is one to write to, not to trust.
const HOLD_CHECK: Duration = Duration::from_millis(250);

impl Default for Lineage {
    fn default() -> Self {
        Lineage::restored(None, None)
    }
}

impl Lineage {
    /// A partition restored from the round `base` of the store (its pieces, decoded), or from nothing. `holds`
    /// is the position of the snapshot it was decoded from: the store holds that state until this owner changes it.
    pub(in crate::processor) fn restored(base: Option<Stamp>, holds: Option<Held>) -> Lineage {
        Lineage {
            writer: uuid::Uuid::new_v4().to_string(),
            full: base.is_none(),
            base,
            holds,
        }
    }

    fn written(&mut self, saved: &Saved, front: Front) {
        self.base = saved.stamp.clone();
        self.full = false;
        self.holds = saved.tail.map(|tail| Held { front, tail });
    }

    /// A round failed; after a conflict only a full one can be written.
    fn failed(&mut self, error: &StoreError) {
        self.holds = None;
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
    /// Its offsets and incarnation, which the store holds once it is written.
    front: Front,
}

/// One partition's round and what became of it.
pub(in crate::processor) type Written = (i32, RoundOf, Result<Saved, StoreError>);

/// One partition's round, encoded and not written yet.
struct Encoded {
    round: SnapshotRound,
    base: Option<Stamp>,
    of: RoundOf,
}

/// The position a round of `position` would cover now.
fn front_of(position: &super::Position, marks: &BTreeMap<i32, i64>) -> Front {
    (
        SnapshotOffsets {
            inputs: position.next.clone().into_iter().collect(),
            marks: marks.clone(),
        },
        position.incarnation.clone(),
    )
}

/// The last offset applied per input topic: what a written round lets the consumer commit.
fn covered(position: &super::Position) -> HashMap<String, i64> {
    position
        .next
        .iter()
        .filter(|(_, next)| **next > 0)
        .map(|(topic, next)| (topic.clone(), next - 1))
        .collect()
}

/// One round: what was encoded, and the partitions that had nothing new for the store (with the offsets that the
/// snapshot the store holds covers).
#[derive(Default)]
struct Round {
    encoded: Vec<Encoded>,
    unchanged: Vec<(i32, HashMap<String, i64>)>,
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
        let Round { encoded, unchanged } = self.encode_round(|_| true).await;
        self.note_unchanged(&unchanged);
        // The mark says an owner is alive and snapshotting: a round with nothing new to write is still one.
        let alive = (!encoded.is_empty() || !unchanged.is_empty()).then(|| self.alive_ttl());
        self.saving = Some(tokio::task::spawn_local(async move {
            let written = write_round(store.clone(), encoded).await;
            let any_held = written.iter().any(|(_, _, r)| r.is_ok()) || written.is_empty();
            if let Some(ttl) = alive.filter(|_| any_held) {
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
    /// may be in flight. Also says how many needed no write: the store held their state as it is.
    pub(in crate::processor) async fn snapshot_now(
        &mut self,
        partitions: &[i32],
    ) -> (Vec<Written>, usize) {
        let Some(store) = self.snapshots.as_ref().map(|s| s.store.clone()) else {
            return (Vec::new(), 0);
        };
        self.collect_snapshots(true).await;
        let Round { encoded, unchanged } = self.encode_round(|p| partitions.contains(&p)).await;
        self.note_unchanged(&unchanged);
        (write_round(store, encoded).await, unchanged.len())
    }

    /// Partitions whose round was skipped: the store holds their state as it is now, checked by its checksum, so
    /// the offsets it covers may be committed (a partition restored and idle since has stored none yet).
    fn note_unchanged(&mut self, partitions: &[(i32, HashMap<String, i64>)]) {
        let durable = self.snapshots.as_ref().is_some_and(|s| s.store.durable());
        for (partition, covered) in partitions {
            metrics::counter!(streams::metric_names::SNAPSHOTS, "outcome" => "unchanged")
                .increment(1);
            self.partition_clocks.snapshot_written(*partition);
            if durable {
                self.source.store_offsets(*partition, covered);
            }
        }
    }

    /// Takes a round of every chosen partition that is live (see `lifecycle`): the offsets it covers,
    /// the output marks and its incarnation, with the pieces of the merchants that changed (of all of them when the
    /// store keeps snapshots whole, or this owner does not know what the store holds).
    async fn encode_round(&self, chosen: impl Fn(i32) -> bool) -> Round {
        let Some(marks) = self.current_output_marks() else {
            return Round::default();
        };
        let Some(store) = self.snapshots.as_ref().map(|s| &s.store) else {
            return Round::default();
        };
        let incremental = store.incremental();
        let fronts: Vec<(i32, Front)> = self
            .positions
            .iter()
            .filter(|(p, _)| {
                chosen(**p)
                    && self
                        .lifecycles
                        .get(p)
                        .is_some_and(crate::processor::lifecycle::Lifecycle::live)
            })
            .map(|(partition, position)| (*partition, front_of(position, &marks)))
            .collect();
        let held = self.still_held(store, &fronts).await;
        let mut round = Round::default();
        for (partition, front) in fronts {
            let (Some(addr), Some(position)) = (
                self.partitions.get(&partition).map(|a| a.value().clone()),
                self.positions.get(&partition),
            ) else {
                continue;
            };
            let take = TakeSnapshotRound {
                offsets: front.0.clone(),
                incarnation: front.1.clone(),
                full: !incremental || position.lineage.full,
                unless_unchanged: held.contains(&partition),
            };
            match addr.send(take).await {
                Ok(RoundAnswer::Taken(taken)) => round.encoded.push(Encoded {
                    of: RoundOf {
                        covered: covered(position),
                        writer: position.lineage.writer.clone(),
                        changed: taken.pieces.iter().map(|(m, _)| m.clone()).collect(),
                        front,
                    },
                    round: taken,
                    base: position.lineage.base.clone(),
                }),
                Ok(RoundAnswer::Unchanged) => round.unchanged.push((partition, covered(position))),
                // Busy: a re-score is still publishing its moves; this partition waits for the next round.
                Ok(RoundAnswer::Busy) | Err(_) => {}
            }
        }
        round
    }

    /// The partitions among `fronts` whose position is the one of the snapshot the store is known to hold, and
    /// which the store confirms still holding (all asked at once, within [`HOLD_CHECK`]).
    async fn still_held(&self, store: &SnapshotStore, fronts: &[(i32, Front)]) -> HashSet<i32> {
        let checks = fronts.iter().filter_map(|(partition, front)| {
            let held = self.positions.get(partition)?.lineage.holds.as_ref()?;
            (held.front == *front).then_some(async move {
                store
                    .still_has(*partition, held.tail)
                    .await
                    .then_some(*partition)
            })
        });
        let answers =
            tokio::time::timeout(HOLD_CHECK, futures_util::future::join_all(checks)).await;
        answers.unwrap_or_default().into_iter().flatten().collect()
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
                    position.lineage.written(&saved, round.front);
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
