//! Loading an assigned partition's snapshot: read from the store, assembled from its pieces, its merchants'
//! configurations loaded, decoded on a blocking thread. A snapshot that cannot be assembled or decoded is refused
//! (the partition replays from the start); a store that cannot answer postpones the hydration.

use actors::{Incarnation, PartitionCore, SnapshotOffsets, SnapshotSummary};

use super::Hydration;
use crate::processor::recovery::Held;
use crate::snapshots::{tail_of, Stamp, Stored};

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
}

impl Restored {
    pub(super) fn empty(partition: i32) -> Restored {
        Restored {
            core: PartitionCore::new(partition),
            offsets: SnapshotOffsets::default(),
            incarnation: Incarnation::default(),
            stamp: None,
            held: None,
        }
    }
}

impl Hydration {
    /// The decoded snapshot, an empty partition when there is none or it cannot be trusted, or `None` when the
    /// store cannot be read now.
    pub(super) async fn load(&self) -> Option<Restored> {
        let partition = self.partition;
        let Some(snapshots) = &self.snapshots else {
            return Some(Restored::empty(partition));
        };
        let loaded = match snapshots.load(partition).await {
            Ok(Some(loaded)) => loaded,
            Ok(None) => return Some(Restored::empty(partition)),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: snapshot store unavailable");
                return None;
            }
        };
        let stored = loaded.stored;
        let whole = matches!(stored, Stored::Whole(_));
        let bytes = match tokio::task::spawn_blocking(move || stored.into_bytes()).await {
            Ok(Ok(bytes)) => bytes,
            Ok(Err(e)) => return Some(refused(partition, &e)),
            Err(e) => {
                tracing::warn!(partition, error = %e, "restore postponed: assembly task failed");
                return None;
            }
        };
        let summary = SnapshotSummary::read(&bytes);
        let merchants = summary.as_ref().map(|s| s.merchants.clone());
        let unavailable = super::super::load_configs_of(
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
        let tail = whole.then(|| tail_of(&bytes)).flatten();
        let (configs, now) = (self.configs.clone(), self.now);
        let decoded = tokio::task::spawn_blocking(move || {
            let decoded = PartitionCore::decode_snapshot(partition, &bytes, &configs, now);
            // The snapshot's bytes and the decoder's scratch: tens of megabytes a partition, freed at once.
            drop(bytes);
            streams::zeroing::release_freed();
            decoded
        })
        .await;
        match (decoded, summary) {
            (Ok(Ok((core, offsets))), Ok(summary)) => Some(Restored {
                held: tail.map(|tail| Held {
                    front: (offsets.clone(), summary.incarnation.clone()),
                    tail,
                }),
                core,
                offsets,
                incarnation: summary.incarnation,
                stamp: loaded.stamp,
            }),
            (Ok(Err(e)), _) | (Ok(Ok(_)), Err(e)) => Some(refused(partition, &e)),
            (Err(e), _) => {
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
    Restored::empty(partition)
}
