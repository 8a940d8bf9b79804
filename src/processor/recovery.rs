//! Snapshots and restores (DESIGN.md §6, docs/RECOVERY.md).
//!
//! Every few seconds, with nothing in flight, each owned partition's state is encoded together with the next input
//! offset of each topic and the output topic's high watermarks, and written to the snapshot store; only once that
//! write succeeds are the covered offsets stored for commit, so the group's committed position never passes a
//! snapshot. On assignment the partition is restored from its snapshot (or from nothing), records it already holds
//! are skipped, records up to the input high watermark seen at assignment (the *frontier*) are applied quietly, and
//! then the versions the old owner published are read back and one net change per affected customer is published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::{Duration, Instant};

use actix::Actor;
use actors::{
    FinishRestore, PartitionActor, PartitionCore, RawRecord, SnapshotOffsets, SnapshotSummary,
};
use streams::MerchantId;

use super::readback::ReadBack;
use super::{InFlight, Processor};

/// Output marks share the offsets map with input topics under this prefix, which Kafka topic names cannot contain.
const OUTPUT_MARK: char = '>';

/// Where one owned partition stands.
#[derive(Debug, Default)]
pub(super) struct Position {
    /// The next offset to apply, per input topic.
    next: HashMap<String, i64>,
    /// While restoring: the input high watermarks at assignment. Records below them are applied quietly.
    frontier: Option<HashMap<String, i64>>,
    /// Where reading back the output topic starts, per output partition (from the snapshot).
    marks: BTreeMap<i32, i64>,
    /// Topics whose first record since the restore has not arrived yet. If it comes from past `next`, the consumer
    /// started after the snapshot (the snapshot was lost or is older than the commit), so it must seek back.
    awaiting: HashSet<String>,
}

impl Position {
    pub(super) fn restoring(&self) -> bool {
        self.frontier.is_some()
    }

    fn reached_frontier(&self) -> bool {
        self.frontier.as_ref().is_none_or(|frontier| {
            frontier
                .iter()
                .all(|(topic, high)| self.next.get(topic).is_some_and(|n| n >= high))
        })
    }
}

/// One partition's snapshot of a round: the offsets it covers, and its size once written.
pub(super) type Written = (
    i32,
    HashMap<String, i64>,
    Result<usize, crate::snapshots::StoreError>,
);

/// Settings of the snapshot loop.
pub struct SnapshotSettings {
    pub store: crate::snapshots::SnapshotStore,
    pub every: Duration,
}

impl Processor {
    /// Takes ownership of `partition`: loads its snapshot and starts its actor. `false` when the snapshot store or
    /// the broker cannot answer now; the caller drops the partition's records and tries again later, which loses
    /// nothing because the first record after a restore is checked against the restored position.
    pub(super) async fn restore(&mut self, partition: i32) -> bool {
        let started = Instant::now();
        let Some((core, offsets)) = self.load_snapshot(partition).await else {
            return false;
        };
        let mut position = Position::default();
        let mut frontier = HashMap::new();
        for topic in self.publisher.topics.inputs() {
            let (low, high) = match self.source.watermarks(topic, partition) {
                Ok(marks) => marks,
                Err(e) => {
                    tracing::warn!(partition, topic, error = %e, "restore postponed: no watermarks");
                    return false;
                }
            };
            let next = offsets.0.get(topic).copied().unwrap_or(low).max(low);
            position.next.insert(topic.to_owned(), next);
            frontier.insert(topic.to_owned(), high);
            position.awaiting.insert(topic.to_owned());
        }
        position.frontier = Some(frontier);
        position.marks = output_marks(&offsets, &self.publisher.topics.rfm_updated);
        let customers: usize = core.merchants().map(|m| m.len()).sum();
        let (configs, topics) = (self.configs.clone(), self.publisher.topics.clone());
        let arbiter = self.arbiters[partition as usize % self.arbiters.len()].handle();
        let addr = PartitionActor::start_in_arbiter(&arbiter, move |_| {
            PartitionActor::with_core(core, configs, topics)
        });
        self.partitions.insert(partition, addr);
        self.positions.insert(partition, position);
        tracing::info!(
            partition,
            customers,
            elapsed_ms = started.elapsed().as_millis() as u64,
            "partition restored from snapshot"
        );
        self.finish_if_caught_up(partition).await;
        true
    }

    /// The decoded snapshot, an empty partition when there is none or it cannot be trusted, or `None` when the
    /// store cannot be read now.
    async fn load_snapshot(&mut self, partition: i32) -> Option<(PartitionCore, SnapshotOffsets)> {
        let empty = || Some((PartitionCore::new(partition), SnapshotOffsets::default()));
        let Some(snapshots) = &self.snapshots else {
            return empty();
        };
        let bytes = match snapshots.store.load(partition).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return empty(),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: snapshot store unavailable");
                return None;
            }
        };
        let merchants = SnapshotSummary::read(&bytes).map(|s| s.merchants);
        self.load_configs_of(merchants.unwrap_or_default()).await;
        let now = self.clock.now();
        match PartitionCore::decode_snapshot(partition, &bytes, &self.configs, now) {
            Ok(restored) => Some(restored),
            Err(e) => {
                // Replaying from the beginning is slower but exact.
                tracing::warn!(partition, error = %e, "snapshot refused; replaying the partition from the start");
                empty()
            }
        }
    }

    /// Drops records the restored state already holds, and seeks back when the consumer started past it.
    pub(super) fn admit(&mut self, partition: i32, records: Vec<RawRecord>) -> Vec<RawRecord> {
        let Some(position) = self.positions.get_mut(&partition) else {
            return Vec::new();
        };
        let mut sought: HashSet<String> = HashSet::new();
        let mut admitted = Vec::with_capacity(records.len());
        for record in records {
            if sought.contains(&record.topic) {
                continue;
            }
            let next = position.next.get(&record.topic).copied().unwrap_or(0);
            if record.offset < next {
                continue;
            }
            if record.offset > next && position.awaiting.contains(&record.topic) {
                tracing::info!(partition, topic = %record.topic, from = next, at = record.offset, "seeking back to the snapshot's position");
                let from = (next - super::consumer::REWIND).max(0);
                if let Err(e) = self.source.seek(&record.topic, partition, from) {
                    tracing::warn!(partition, error = %e, "seek failed; will retry on the next record");
                }
                sought.insert(record.topic.clone());
                continue;
            }
            position.awaiting.remove(&record.topic);
            position
                .next
                .insert(record.topic.clone(), record.offset + 1);
            admitted.push(record);
        }
        admitted
    }

    /// Ends the restore once the quiet replay reached the frontier: reads back what the old owner published and
    /// publishes the net changes.
    pub(super) async fn finish_if_caught_up(&mut self, partition: i32) {
        let Some(position) = self.positions.get(&partition) else {
            return;
        };
        if !position.restoring() || !position.reached_frontier() {
            return;
        }
        let Some(addr) = self.partitions.get(&partition).map(|a| a.value().clone()) else {
            return;
        };
        let merchants = super::inspect_one(&addr, |core: &PartitionCore| {
            core.merchants()
                .map(|m| m.id.clone())
                .collect::<HashSet<MerchantId>>()
        })
        .await
        .unwrap_or_default();
        let read = ReadBack {
            brokers: self.brokers.clone(),
            topic: self.publisher.topics.rfm_updated.clone(),
            // Reading earlier than the marks only finds versions the snapshot already holds (see `REWIND`).
            marks: position
                .marks
                .iter()
                .map(|(p, o)| (*p, (o - super::consumer::REWIND).max(0)))
                .collect(),
            merchants,
            deadline: Duration::from_secs(10),
        };
        let published = match tokio::task::spawn_blocking(move || read.run()).await {
            Ok(Ok(published)) => published,
            Ok(Err(e)) => {
                tracing::warn!(partition, error = %e, "read-back failed; will retry");
                return;
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "read-back task failed; will retry");
                return;
            }
        };
        let now = self.clock.now();
        let Ok(outcome) = addr.send(FinishRestore { published, now }).await else {
            return;
        };
        if let Some(position) = self.positions.get_mut(&partition) {
            position.frontier = None;
        }
        tracing::info!(
            partition,
            changes = outcome.changes.len(),
            "restore finished"
        );
        if let Some(live) = &self.live {
            live.observe(&outcome);
        }
        let done = tokio::task::spawn_local(self.publisher.start(outcome));
        self.in_flight.push_back(InFlight::without_events(done));
    }

    /// Snapshots every partition that is not restoring, if one is due and the previous round is written. Waits for
    /// everything in flight first, so a snapshot never holds a change that is not yet published. The writes run in
    /// the background, so a slow or absent Redis does not stall consumption; their offsets are stored when the round
    /// is collected. `force` (shutdown) waits for the round to be written.
    pub(super) async fn snapshot_if_due(&mut self, force: bool) -> Result<(), super::PublishError> {
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
        self.last_snapshot = Instant::now();
        self.settle(0).await?;
        let Some(marks) = self.current_output_marks() else {
            return Ok(());
        };
        let mut round = Vec::with_capacity(self.positions.len());
        for (partition, position) in self.positions.iter().filter(|(_, p)| !p.restoring()) {
            let Some(addr) = self.partitions.get(partition).map(|a| a.value().clone()) else {
                continue;
            };
            let mut offsets = SnapshotOffsets(position.next.clone().into_iter().collect());
            for (p, high) in &marks {
                offsets
                    .0
                    .insert(mark_key(&self.publisher.topics.rfm_updated, *p), *high);
            }
            let covered: HashMap<String, i64> = position
                .next
                .iter()
                .filter(|(_, next)| **next > 0)
                .map(|(topic, next)| (topic.clone(), next - 1))
                .collect();
            let encode = move |core: &PartitionCore| core.encode_snapshot(&offsets);
            if let Some(bytes) = super::inspect_one(&addr, encode).await {
                round.push((*partition, bytes, covered));
            }
        }
        self.saving = Some(tokio::task::spawn_local(async move {
            let mut written = Vec::with_capacity(round.len());
            for (partition, bytes, covered) in round {
                let size = bytes.len();
                let result = store.save(partition, bytes).await.map(|()| size);
                written.push((partition, covered, result));
            }
            written
        }));
        if force {
            self.collect_snapshots(true).await;
        }
        Ok(())
    }

    /// Stores the offsets of every snapshot of the last round that was written. `false` while the round is still
    /// being written (and `wait` is off).
    async fn collect_snapshots(&mut self, wait: bool) -> bool {
        let Some(saving) = self.saving.take_if(|s| wait || s.is_finished()) else {
            return self.saving.is_none();
        };
        let durable = self.snapshots.as_ref().is_some_and(|s| s.store.durable());
        for (partition, covered, result) in saving.await.unwrap_or_default() {
            match result {
                Ok(bytes) => {
                    metrics::counter!("processor_snapshots_total").increment(1);
                    tracing::debug!(partition, bytes, "snapshot written");
                    // A partition revoked meanwhile belongs to its new owner's commits now.
                    if durable && self.positions.contains_key(&partition) {
                        self.source.store_offsets(partition, &covered);
                    }
                }
                Err(e) => {
                    metrics::counter!("processor_snapshot_failures_total").increment(1);
                    tracing::warn!(partition, error = %e, "snapshot not written; offsets not committed");
                }
            }
        }
        true
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

fn mark_key(topic: &str, partition: i32) -> String {
    format!("{OUTPUT_MARK}{topic}:{partition}")
}

fn output_marks(offsets: &SnapshotOffsets, topic: &str) -> BTreeMap<i32, i64> {
    let prefix = format!("{OUTPUT_MARK}{topic}:");
    offsets
        .0
        .iter()
        .filter_map(|(key, high)| {
            let partition = key.strip_prefix(&prefix)?.parse().ok()?;
            Some((partition, *high))
        })
        .collect()
}
