//! Loading an assigned partition's snapshot: read from the store, assembled from its pieces, its merchants'
//! configurations loaded, decoded on a blocking thread. A snapshot that cannot be assembled or decoded is refused
//! (the partition replays from the start); a store that cannot answer postpones the hydration.

use std::time::{Duration, Instant};

use actors::{Incarnation, PartitionCore, SnapshotOffsets, SnapshotSummary};

use super::Hydration;
use crate::processor::recovery::Held;
use crate::snapshots::{tail_of, Stamp, Stored, Tail};

/// A decoded snapshot (or an empty partition), with what it says about where it came from.
pub(super) struct Restored {
    pub(super) core: PartitionCore,
    pub(super) offsets: SnapshotOffsets,
    pub(super) incarnation: Incarnation,
    /// The store's round this state is, when the store keeps rounds apart.
    pub(super) stamp: Option<Stamp>,
    /// From a store that keeps snapshots whole: the position the snapshot itself says it covers, as read (the
    /// hydration may fill in the cluster id later), and its checksum. What the store holds until the state changes.
    pub(super) held: Option<Held>,
    pub(super) timing: LoadTiming,
    /// A snapshot was found and refused: the partition replays from the start, and nothing is left to check.
    pub(super) refused: bool,
}

/// Where a load's time went, for the restore's log line: an SRE sizing restarts needs to know whether the store,
/// the decode or the broker is the bound.
#[derive(Debug, Default, Clone, Copy)]
pub(super) struct LoadTiming {
    /// Reading the snapshot from the store and assembling it.
    pub(super) read: Duration,
    /// Decoding it into the partition's state, timers included.
    pub(super) decode: Duration,
    /// Threads the decode was given.
    pub(super) threads: usize,
    pub(super) bytes: usize,
}

impl Restored {
    pub(super) fn empty(partition: i32) -> Restored {
        Restored {
            core: PartitionCore::new(partition),
            offsets: SnapshotOffsets::default(),
            incarnation: Incarnation::default(),
            stamp: None,
            held: None,
            timing: LoadTiming::default(),
            refused: false,
        }
    }
}

/// A snapshot read, checked and its configurations loaded, still to decode.
pub(super) struct Fetched {
    bytes: Vec<u8>,
    summary: SnapshotSummary,
    stamp: Option<Stamp>,
    /// The checksum of a whole snapshot (see [`Restored::held`]).
    tail: Option<Tail>,
    timing: LoadTiming,
}

impl Fetched {
    pub(super) fn incarnation(&self) -> &Incarnation {
        &self.summary.incarnation
    }
}

/// How far a load got without decoding.
pub(super) enum Fetch {
    /// No snapshot, or one refused unread: the partition replays from the start.
    Done(Box<Restored>),
    Decode(Box<Fetched>),
}

impl Fetch {
    pub(super) fn incarnation(&self) -> &Incarnation {
        match self {
            Fetch::Done(restored) => &restored.incarnation,
            Fetch::Decode(fetched) => fetched.incarnation(),
        }
    }
}

impl Hydration {
    /// The snapshot as read, ready to decode; an empty partition when there is none or it cannot be trusted; or
    /// `None` when the store cannot be read now.
    pub(super) async fn fetch(&self) -> Option<Fetch> {
        let partition = self.partition;
        let Some(snapshots) = &self.snapshots else {
            return Some(Fetch::Done(Box::new(Restored::empty(partition))));
        };
        let started = Instant::now();
        let loaded = match snapshots.load(partition).await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Some(Fetch::Done(Box::new(Restored::empty(partition)))),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: snapshot store unavailable");
                return None;
            }
        };
        let stored = loaded.stored;
        let whole = matches!(stored, Stored::Whole(_));
        let bytes = match tokio::task::spawn_blocking(move || stored.into_bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Some(Fetch::Done(Box::new(refused(partition, &e)))),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: assembly task failed");
                return None;
            }
        };
        let summary = match SnapshotSummary::read(&bytes) {
            Ok(summary) => summary,
            Err(e) => return Some(Fetch::Done(Box::new(refused(partition, &e)))),
        };
        let unavailable = super::super::load_configs_of(
            &self.configs,
            self.store.as_ref(),
            summary.merchants.clone(),
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
        Some(Fetch::Decode(Box::new(Fetched {
            tail: whole.then(|| tail_of(&bytes)).flatten(),
            timing: LoadTiming {
                read: started.elapsed(),
                bytes: bytes.len(),
                ..LoadTiming::default()
            },
            bytes,
            summary,
            stamp: loaded.stamp,
        })))
    }

    /// Decodes a fetched snapshot on a blocking thread (and `threads - 1` helpers); `None` when the task failed.
    pub(super) async fn decode(&self, fetch: Fetch, threads: usize) -> Option<Restored> {
        let fetched = match fetch {
            Fetch::Done(restored) => return Some(*restored),
            Fetch::Decode(fetched) => fetched,
        };
        let Fetched {
            bytes,
            summary,
            stamp,
            tail,
            mut timing,
        } = *fetched;
        let (partition, configs, now) = (self.partition, self.configs.clone(), self.now);
        let decoding = Instant::now();
        let decoded = tokio::task::spawn_blocking(move || {
            let decoded =
                PartitionCore::decode_snapshot_on(partition, &bytes, &configs, now, threads);
            // The snapshot's bytes and the decoder's scratch: tens of megabytes a partition, freed at once.
            drop(bytes);
            streams::zeroing::release_freed();
            decoded
        })
        .await;
        timing.decode = decoding.elapsed();
        timing.threads = threads;
        match decoded {
            Ok(Ok((core, offsets))) => Some(Restored {
                held: tail.map(|tail| Held {
                    front: (offsets.clone(), summary.incarnation.clone()),
                    tail,
                }),
                core,
                offsets,
                incarnation: summary.incarnation,
                stamp,
                timing,
                refused: false,
            }),
            Ok(Err(e)) => Some(Restored {
                timing,
                ..refused(partition, &e)
            }),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: decode task failed");
                None
            }
        }
    }
}

/// A snapshot that cannot be read: replaying from the beginning is slower but exact.
fn refused(partition: i32, error: &actors::SnapshotError) -> Restored {
    tracing::warn!(partition, error = %error, "snapshot refused; replaying the partition from the start");
    metrics::counter!(streams::metric_names::SNAPSHOTS_REFUSED).increment(1);
    Restored {
        refused: true,
        ..Restored::empty(partition)
    }
}
