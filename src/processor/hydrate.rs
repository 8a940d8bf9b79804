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
use actors::{Configs, Incarnation, PartitionActor, PublishedVersion};

use super::incarnation::Verdict;
use super::lifecycle::{Event, Phase};
use super::publish::PublishError;
use super::recovery::{Lineage, Position};
use super::Processor;
use crate::snapshots::SnapshotStore;
use crate::store::Store;
use streams::source::Source;

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
    /// Asking the broker for the watermarks and reading the snapshot's records back (the incarnation check).
    broker: Duration,
    /// Waiting for a restore permit before any of it.
    queued: Duration,
}

/// What the broker says for a hydration: the input watermarks, its cluster id, its verdict on the snapshot's
/// incarnation (or why it could not be read back), and how long asking took.
type BrokerAnswer = (
    HashMap<String, (i64, i64)>,
    Option<String>,
    Result<Verdict, String>,
    Duration,
);

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
    /// Threads the decode may spread the snapshot's merchants over.
    decode_threads: usize,
}

impl Hydration {
    /// `None` when the snapshot store or the broker cannot answer now; the loop tries again on a later tick.
    async fn run(self, queued: Duration) -> Option<Hydrated> {
        let started = Instant::now();
        let fetched = self.fetch().await?;
        let incarnation = fetched.incarnation().clone();
        // What the broker says does not depend on the decoded state: asked while the decode runs, which at millions
        // of customers a partition takes a second or more.
        let (decoded, asked) = tokio::join!(
            self.decode(fetched, self.decode_threads),
            self.ask_broker(incarnation)
        );
        let (mut restored, (watermarks, cluster, checked, broker)) = (decoded?, asked?);
        let verdict = match checked {
            Ok(verdict) => verdict,
            // The decode refused the snapshot already: what the broker would say of it no longer matters.
            Err(_) if restored.refused => Verdict::default(),
            Err(e) => {
                tracing::warn!(partition = self.partition, error = %e, "restore postponed: the snapshot's records could not be read back");
                return None;
            }
        };
        let ahead = super::recovery::ahead_of_log(&restored.offsets, &watermarks).map(
            |(topic, next, high)| {
                format!("its position {next} in {topic} is past the log's end {high}")
            },
        );
        // A snapshot the decode refused already is not refused (and counted) twice.
        let refused = verdict.refused.filter(|_| !restored.refused);
        if let Some(reason) = ahead.or(refused) {
            tracing::warn!(
                partition = self.partition,
                reason,
                "snapshot refused; replaying the partition from the start"
            );
            metrics::counter!(streams::metric_names::SNAPSHOTS_REFUSED).increment(1);
            restored = Restored {
                timing: restored.timing,
                refused: true,
                ..Restored::empty(self.partition)
            };
        }
        restored.incarnation.cluster_id = cluster.or(restored.incarnation.cluster_id);
        Some(Hydrated {
            restored,
            watermarks,
            elapsed: started.elapsed(),
            broker,
            queued,
        })
    }

    /// The input topics' watermarks, the broker's cluster id and its verdict on `incarnation`, and how long asking
    /// took; `None` when the watermarks cannot be had now (a restore needs them whatever the snapshot).
    async fn ask_broker(&self, incarnation: Incarnation) -> Option<BrokerAnswer> {
        let asking = Instant::now();
        let watermarks = self.watermarks().await?;
        let partition = self.partition;
        let (brokers, source) = (self.brokers.clone(), self.source.clone());
        let marks = watermarks.clone();
        let asked = tokio::task::spawn_blocking(move || {
            let cluster = source.cluster_id();
            let checked = super::incarnation::verify(
                &brokers,
                partition,
                cluster.clone(),
                &incarnation,
                &marks,
            )
            .map_err(|e| e.to_string());
            (cluster, checked)
        })
        .await;
        match asked {
            Ok((cluster, checked)) => Some((watermarks, cluster, checked, asking.elapsed())),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: incarnation task failed");
                None
            }
        }
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
            brokers: self.brokers.clone(),
            // Decided at assignment: when this instance had nothing live (a start, or an instance that owned
            // nothing), every restore of the assignment may take all the cores its permit stands for, even after
            // the first of them are live (they are catching up too, and the restart ends with the last one);
            // beside partitions that were already live, one, as `restore_concurrency` intends.
            decode_threads: if self.partitions.is_empty() {
                self.decode_spread
            } else {
                1
            },
        };
        let (permits, steps) = (self.restore_permits.clone(), self.steps.0.clone());
        let asked = Instant::now();
        tokio::task::spawn_local(async move {
            let Ok(_permit) = permits.acquire_owned().await else {
                return;
            };
            let restored = job.run(asked.elapsed()).await.map(Box::new);
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
                if !loaded {
                    super::gauges::restore_failed(
                        partition,
                        "snapshot, broker or store unavailable",
                    );
                }
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
                if published.is_none() {
                    super::gauges::restore_failed(partition, "read-back of rfm.updated failed");
                }
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
            restored,
            watermarks,
            elapsed,
            broker,
            queued,
        } = hydrated;
        let Restored {
            core,
            offsets,
            incarnation,
            stamp,
            held,
            timing,
            ..
        } = restored;
        let position = Position::restored(&offsets, &watermarks)
            .bound_to(incarnation, Lineage::restored(stamp, held));
        let customers: usize = core.merchants().map(|m| m.len()).sum();
        let (configs, topics) = (self.configs.clone(), self.publisher.topics.clone());
        let (sink, plans) = (self.publisher.sink.clone(), self.plans.clone());
        let arbiter = self.arbiters[partition as usize % self.arbiters.len()].handle();
        let addr = PartitionActor::start_in_arbiter(&arbiter, move |_| {
            PartitionActor::with_core(core, configs, topics)
                .publishing_to(sink)
                .planning_with(plans)
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
            queued_ms = queued.as_millis() as u64,
            read_ms = timing.read.as_millis() as u64,
            decode_ms = timing.decode.as_millis() as u64,
            decode_threads = timing.threads,
            broker_ms = broker.as_millis() as u64,
            snapshot_bytes = timing.bytes,
            "partition restored from snapshot"
        );
    }
}
