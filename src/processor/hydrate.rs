//! Re-hydration of assigned partitions off the consumer loop, a bounded number at a time (docs/RECOVERY.md).
//!
//! An assigned partition is paused while its snapshot is loaded, decoded (on a blocking thread: about half a
//! second per million customers) and its watermarks are asked for; the other partitions go on being consumed
//! meanwhile. At most `restore_concurrency` partitions hydrate at once, so a rebalance that moves many big
//! partitions leaves cores for the live ones. When a partition is installed it resumes and is moved back to its
//! restored position: records delivered before the pause took effect were dropped unstored, and must be fetched
//! again even if nothing new arrives. The read-back that ends a restore runs in the background too.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::{Actor, Addr};
use actors::{
    Configs, FinishRestore, NextRestoreChunk, PartitionActor, PartitionCore, PublishedVersion,
};
use futures_util::StreamExt;
use streams::MerchantId;

use super::consumer::Source;
use super::publish::PublishError;
use super::readback::ReadBack;
use super::recovery::{Lineage, Position};
use super::Processor;
use crate::snapshots::SnapshotStore;
use crate::store::Store;

mod load;

use load::Restored;

/// Work finished in the background, for the loop to take in.
pub(super) enum Step {
    Hydrated {
        partition: i32,
        generation: u64,
        restored: Option<Box<Hydrated>>,
    },
    ReadBack {
        partition: i32,
        generation: u64,
        published: Option<Vec<PublishedVersion>>,
    },
}

/// A partition's state as loaded, before it is owned by an actor.
pub(super) struct Hydrated {
    restored: Restored,
    /// Low and high watermark of every input topic when the snapshot was loaded.
    watermarks: HashMap<String, (i64, i64)>,
    elapsed: Duration,
}

/// Everything a hydration needs, owned, so it can run as its own task.
struct Hydration {
    partition: i32,
    snapshots: Option<SnapshotStore>,
    configs: Configs,
    store: Option<Store>,
    now: functions::Timestamp,
    source: Arc<Source>,
    inputs: Vec<String>,
    brokers: String,
}

impl Hydration {
    /// `None` when the snapshot store or the broker cannot answer now; the loop tries again on a later tick.
    async fn run(self) -> Option<Hydrated> {
        let started = Instant::now();
        let mut restored = self.load().await?;
        let watermarks = self.watermarks().await?;
        let partition = self.partition;
        let (brokers, source) = (self.brokers.clone(), self.source.clone());
        let (incarnation, marks) = (restored.incarnation.clone(), watermarks.clone());
        let checked = tokio::task::spawn_blocking(move || {
            let cluster = source.cluster_id();
            super::incarnation::verify(&brokers, partition, cluster, &incarnation, &marks)
        })
        .await;
        let verdict = match checked {
            Ok(Ok(verdict)) => verdict,
            Ok(Err(e)) => {
                tracing::warn!(partition, error = %e, "restore postponed: the snapshot's records could not be read back");
                return None;
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: incarnation task failed");
                return None;
            }
        };
        let ahead = super::recovery::ahead_of_log(&restored.offsets, &watermarks).map(
            |(topic, next, high)| {
                format!("its position {next} in {topic} is past the log's end {high}")
            },
        );
        if let Some(reason) = ahead.or(verdict.refused) {
            tracing::warn!(
                partition,
                reason,
                "snapshot refused; replaying the partition from the start"
            );
            metrics::counter!("processor_snapshots_refused_total").increment(1);
            restored = Restored::empty(partition);
        }
        restored.incarnation.cluster_id = verdict.cluster.or(restored.incarnation.cluster_id);
        Some(Hydrated {
            restored,
            watermarks,
            elapsed: started.elapsed(),
        })
    }

    /// Low and high watermarks of every input topic of the partition, or `None` when the broker cannot say now.
    async fn watermarks(&self) -> Option<HashMap<String, (i64, i64)>> {
        let (source, inputs, partition) =
            (self.source.clone(), self.inputs.clone(), self.partition);
        let asked = tokio::task::spawn_blocking(move || {
            inputs
                .into_iter()
                .map(|topic| {
                    let marks = source.watermarks(&topic, partition)?;
                    Ok((topic, marks))
                })
                .collect::<rdkafka::error::KafkaResult<HashMap<String, (i64, i64)>>>()
        })
        .await;
        match asked {
            Ok(Ok(marks)) => Some(marks),
            Ok(Err(e)) => {
                tracing::warn!(partition, error = %e, "restore postponed: no watermarks");
                None
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: watermark task failed");
                None
            }
        }
    }
}

impl Processor {
    /// Starts hydrating every owned partition that has no state yet and is not hydrating already.
    pub(super) fn hydrate_missing(&mut self) {
        let missing: Vec<i32> = self
            .owned
            .iter()
            .filter(|p| !self.positions.contains_key(p) && !self.hydrating.contains_key(p))
            .copied()
            .collect();
        for partition in missing {
            self.generation += 1;
            self.hydrating.insert(partition, self.generation);
            self.source.set_paused(&[partition], true);
            let job = Hydration {
                partition,
                snapshots: self.snapshots.as_ref().map(|s| s.store.clone()),
                configs: self.configs.clone(),
                store: self.publisher.store.clone(),
                now: self.clock.now(),
                source: self.source.clone(),
                inputs: self
                    .publisher
                    .topics
                    .inputs()
                    .iter()
                    .map(|t| t.to_string())
                    .collect(),
                brokers: self.brokers.clone(),
            };
            let (permits, steps, generation) = (
                self.restore_permits.clone(),
                self.steps.0.clone(),
                self.generation,
            );
            tokio::task::spawn_local(async move {
                let Ok(_permit) = permits.acquire_owned().await else {
                    return;
                };
                let restored = job.run().await.map(Box::new);
                let _ = steps.send(Step::Hydrated {
                    partition,
                    generation,
                    restored,
                });
            });
        }
    }

    pub(super) async fn on_step(&mut self, step: Step) -> Result<(), PublishError> {
        match step {
            Step::Hydrated {
                partition,
                generation,
                restored,
            } => {
                // A partition revoked (and perhaps assigned again) meanwhile has a newer hydration or none.
                if self.hydrating.get(&partition) != Some(&generation) {
                    return Ok(());
                }
                self.hydrating.remove(&partition);
                if let Some(hydrated) = restored {
                    self.install(partition, *hydrated);
                }
                Ok(())
            }
            Step::ReadBack {
                partition,
                generation,
                published,
            } => self.finish_restore(partition, generation, published).await,
        }
    }

    fn install(&mut self, partition: i32, hydrated: Hydrated) {
        let Hydrated {
            restored,
            watermarks,
            elapsed,
        } = hydrated;
        let Restored {
            core,
            offsets,
            incarnation,
            stamp,
        } = restored;
        let position = Position::restored(&offsets, &watermarks, &self.publisher.topics)
            .bound_to(incarnation, Lineage::restored(stamp));
        let customers: usize = core.merchants().map(|m| m.len()).sum();
        let (configs, topics) = (self.configs.clone(), self.publisher.topics.clone());
        let sink = self.publisher.sink.clone();
        let arbiter = self.arbiters[partition as usize % self.arbiters.len()].handle();
        let addr = PartitionActor::start_in_arbiter(&arbiter, move |_| {
            PartitionActor::with_core(core, configs, topics).publishing_to(sink)
        });
        self.partitions.insert(partition, addr);
        self.positions.insert(partition, position);
        if !self.paused {
            self.source.set_paused(&[partition], false);
            self.rewind_to_position(partition);
        }
        tracing::info!(
            partition,
            customers,
            elapsed_ms = elapsed.as_millis() as u64,
            "partition restored from snapshot"
        );
        self.finish_if_caught_up(partition);
    }

    /// Once the quiet replay reached the frontier, reads back in the background what the old owner published.
    pub(super) fn finish_if_caught_up(&mut self, partition: i32) {
        let Some(position) = self.positions.get_mut(&partition) else {
            return;
        };
        if !position.restoring() || !position.reached_frontier() || position.reading_back.is_some()
        {
            return;
        }
        let Some(addr) = self.partitions.get(&partition).map(|a| a.value().clone()) else {
            return;
        };
        self.generation += 1;
        let generation = self.generation;
        position.reading_back = Some(generation);
        tracing::info!(
            partition,
            "quiet replay reached the frontier; reading back the outputs"
        );
        let marks = position.read_back_from();
        let (brokers, topic) = (
            self.brokers.clone(),
            self.publisher.topics.rfm_updated.clone(),
        );
        let steps = self.steps.0.clone();
        tokio::task::spawn_local(async move {
            let published = read_back(addr, brokers, topic, marks, partition).await;
            let _ = steps.send(Step::ReadBack {
                partition,
                generation,
                published,
            });
        });
    }

    /// Takes over what the old owner published and publishes the first chunk of the restore's net changes; the
    /// rest come through `on_chunk`, interleaved with live records and with other partitions' restores (whose
    /// actors re-evaluate in parallel). A failed read-back is tried again on the next tick.
    async fn finish_restore(
        &mut self,
        partition: i32,
        generation: u64,
        published: Option<Vec<PublishedVersion>>,
    ) -> Result<(), PublishError> {
        let Some(position) = self
            .positions
            .get_mut(&partition)
            .filter(|p| p.reading_back == Some(generation))
        else {
            return Ok(());
        };
        position.reading_back = None;
        let (Some(published), Some(addr)) = (
            published,
            self.partitions.get(&partition).map(|a| a.value().clone()),
        ) else {
            return Ok(());
        };
        let now = self.clock.now();
        let Ok(outcome) = addr.send(FinishRestore { published, now }).await else {
            return Ok(());
        };
        // From here records are published live; the partition is not snapshotted until the last chunk is out (a
        // snapshot in between would hold customers whose change was never published).
        position.frontier = None;
        position.publishing = Some((generation, 0));
        self.on_chunk(Chunk {
            partition,
            generation,
            addr,
            outcome: Ok(Some(outcome)),
        })
        .await
    }

    /// Publishes one chunk of a restore's net changes and asks the actor for the next, at most `MAX_IN_FLIGHT`
    /// batches publishing; the last (empty) chunk settles the partition. A chunk of an earlier restore of the
    /// partition, or of an actor that stopped, is dropped: the restore that replaced it publishes its own.
    pub(super) async fn on_chunk(&mut self, chunk: Chunk) -> Result<(), PublishError> {
        let Chunk {
            partition,
            generation,
            addr,
            outcome,
        } = chunk;
        let Some(position) = self
            .positions
            .get_mut(&partition)
            .filter(|p| p.publishes(generation))
        else {
            return Ok(());
        };
        let Ok(Some(outcome)) = outcome else {
            let changes = position.publishing.take().map_or(0, |(_, n)| n);
            tracing::info!(partition, changes, "restore finished");
            return Ok(());
        };
        if let Some((_, published)) = &mut position.publishing {
            *published += outcome.changes.len();
        }
        // Each chunk is evaluated when it is asked for: live records applied meanwhile were applied at their time,
        // and a chunk evaluated at the restore's start would move their customers back.
        let next = addr.send(NextRestoreChunk {
            now: self.clock.now(),
        });
        self.chunks.push(Box::pin(async move {
            Chunk {
                partition,
                generation,
                outcome: next.await,
                addr,
            }
        }));
        self.publish(outcome, Vec::new(), 0).await
    }

    /// Takes in every chunk already asked for. Its actor enqueued the chunk's records when it computed it, so the
    /// chunk's rows, score-cache entries and acknowledgements must be waited for before a hand-over or shutdown;
    /// partitions for which `ending` holds get no further chunk and stay unsettled (not snapshotted), so their
    /// next owner restores them.
    pub(super) async fn drain_chunks(
        &mut self,
        ending: impl Fn(i32) -> bool,
    ) -> Result<(), PublishError> {
        let pending: Vec<Chunk> = std::mem::take(&mut self.chunks).collect().await;
        for chunk in pending {
            if !ending(chunk.partition) {
                self.on_chunk(chunk).await?;
                continue;
            }
            let current = self
                .positions
                .get(&chunk.partition)
                .is_some_and(|p| p.publishes(chunk.generation));
            if let (true, Ok(Some(outcome))) = (current, chunk.outcome) {
                self.publish(outcome, Vec::new(), 0).await?;
            }
        }
        Ok(())
    }
}

/// A chunk of a restore's net changes, as its partition actor returned it (`None` once all are out).
pub(super) struct Chunk {
    partition: i32,
    generation: u64,
    addr: Addr<PartitionActor>,
    outcome: Result<Option<actors::Outcome>, actix::MailboxError>,
}

/// The actor's answer to a request for the next chunk, on its way.
pub(super) type ChunkRequest = futures_util::future::LocalBoxFuture<'static, Chunk>;

async fn read_back(
    addr: Addr<PartitionActor>,
    brokers: String,
    topic: String,
    marks: std::collections::BTreeMap<i32, i64>,
    partition: i32,
) -> Option<Vec<PublishedVersion>> {
    let merchants = super::inspect_one(&addr, |core: &PartitionCore| {
        core.merchants()
            .map(|m| m.id.clone())
            .collect::<HashSet<MerchantId>>()
    })
    .await?;
    let read = ReadBack {
        brokers,
        topic,
        marks,
        merchants,
        deadline: Duration::from_secs(10),
    };
    match tokio::task::spawn_blocking(move || read.run()).await {
        Ok(Ok(published)) => Some(published),
        Ok(Err(e)) => {
            tracing::warn!(partition, error = %e, "read-back failed; will retry");
            None
        }
        Err(e) => {
            tracing::warn!(partition, error = %e, "read-back task failed; will retry");
            None
        }
    }
}
