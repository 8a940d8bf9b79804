//! Re-hydration of assigned partitions off the consumer loop, a bounded number at a time (docs/RECOVERY.md).
//!
//! An assigned partition is paused while its snapshot is loaded, decoded (on a blocking thread: about half a
//! second per million customers) and its watermarks are asked for; the other partitions go on being consumed
//! meanwhile. At most `restore_concurrency` partitions hydrate at once, so a rebalance that moves many big
//! partitions leaves cores for the live ones. When a partition is installed it resumes and is moved back to its
//! restored position: records delivered before the pause took effect were dropped unstored, and must be fetched
//! again even if nothing new arrives. What happens next is the partition's lifecycle's to say (`lifecycle`); the
//! end of the restore is in `restore`.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use actix::Actor;
use actors::{
    Configs, PartitionActor, PartitionCore, PublishedVersion, SnapshotOffsets, SnapshotSummary,
};

use super::consumer::Source;
use super::lifecycle::{Event, Phase};
use super::publish::PublishError;
use super::recovery::Position;
use super::Processor;
use crate::snapshots::SnapshotStore;
use crate::store::Store;

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
    core: PartitionCore,
    offsets: SnapshotOffsets,
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
}

impl Hydration {
    /// `None` when the snapshot store or the broker cannot answer now; the loop tries again on a later tick.
    async fn run(self) -> Option<Hydrated> {
        let started = Instant::now();
        let (mut core, mut offsets) = self.load().await?;
        let (source, inputs, partition) = (self.source, self.inputs, self.partition);
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
        let watermarks = match asked {
            Ok(Ok(marks)) => marks,
            Ok(Err(e)) => {
                tracing::warn!(partition, error = %e, "restore postponed: no watermarks");
                return None;
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: watermark task failed");
                return None;
            }
        };
        if let Some((topic, next, high)) = super::recovery::ahead_of_log(&offsets, &watermarks) {
            tracing::warn!(
                partition,
                topic,
                next,
                high,
                "snapshot ahead of the log; replaying the partition from the start"
            );
            metrics::counter!("processor_snapshots_refused_total").increment(1);
            (core, offsets) = (PartitionCore::new(partition), SnapshotOffsets::default());
        }
        Some(Hydrated {
            core,
            offsets,
            watermarks,
            elapsed: started.elapsed(),
        })
    }

    /// The decoded snapshot, an empty partition when there is none or it cannot be trusted, or `None` when the
    /// store cannot be read now.
    async fn load(&self) -> Option<(PartitionCore, SnapshotOffsets)> {
        let partition = self.partition;
        let empty = || Some((PartitionCore::new(partition), SnapshotOffsets::default()));
        let Some(snapshots) = &self.snapshots else {
            return empty();
        };
        let bytes = match snapshots.load(partition).await {
            Ok(Some(bytes)) => bytes,
            Ok(None) => return empty(),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: snapshot store unavailable");
                return None;
            }
        };
        let merchants = SnapshotSummary::read(&bytes).map(|s| s.merchants);
        let unavailable = super::load_configs_of(
            &self.configs,
            self.store.as_ref(),
            merchants.unwrap_or_default(),
        )
        .await;
        if !unavailable.is_empty() {
            // Decoding under a guessed configuration would refuse the snapshot (its fingerprints would differ).
            tracing::warn!(
                partition,
                merchants = unavailable.len(),
                "restore postponed: merchant configurations unavailable"
            );
            return None;
        }
        let (configs, now) = (self.configs.clone(), self.now);
        let decoded = tokio::task::spawn_blocking(move || {
            PartitionCore::decode_snapshot(partition, &bytes, &configs, now)
        })
        .await;
        match decoded {
            Ok(Ok(restored)) => Some(restored),
            Ok(Err(e)) => {
                // Replaying from the beginning is slower but exact.
                tracing::warn!(partition, error = %e, "snapshot refused; replaying the partition from the start");
                empty()
            }
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: decode task failed");
                None
            }
        }
    }
}

impl Processor {
    /// Starts loading `partition`'s snapshot in the background, tagged with `attempt`; at most
    /// `restore_concurrency` load at once.
    pub(super) fn start_hydration(&mut self, partition: i32, attempt: u64) {
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
        };
        let (permits, steps) = (self.restore_permits.clone(), self.steps.0.clone());
        tokio::task::spawn_local(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let restored = job.run().await.map(Box::new);
            let _ = steps.send(Step::Hydrated {
                partition,
                generation: attempt,
                restored,
            });
        });
    }

    pub(super) async fn on_step(&mut self, step: Step) -> Result<(), PublishError> {
        match step {
            Step::Hydrated {
                partition,
                generation,
                restored,
            } => {
                // A partition revoked (and perhaps assigned again) meanwhile has a newer hydration or none.
                let current = self.lifecycles.get(&partition).is_some_and(|l| {
                    l.phase()
                        == &Phase::Hydrating {
                            attempt: Some(generation),
                        }
                });
                if !current {
                    return Ok(());
                }
                let loaded = restored.is_some();
                if let Some(hydrated) = restored {
                    self.install(partition, *hydrated);
                }
                let event = Event::Hydrated {
                    attempt: generation,
                    loaded,
                };
                self.dispatch(partition, event, None).await?;
                // The quiet replay may have nothing to do (the snapshot is at the frontier already).
                self.report_progress(partition).await
            }
            Step::ReadBack {
                partition,
                generation,
                published,
            } => {
                let event = Event::ReadBack {
                    attempt: generation,
                    read: published.is_some(),
                };
                self.dispatch(partition, event, published).await
            }
        }
    }

    fn install(&mut self, partition: i32, hydrated: Hydrated) {
        let Hydrated {
            core,
            offsets,
            watermarks,
            elapsed,
        } = hydrated;
        let position = Position::restored(&offsets, &watermarks, &self.publisher.topics);
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
    }
}
