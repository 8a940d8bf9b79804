//! Where partition snapshots live between owners (docs/RECOVERY.md). Postgres when `DATABASE_URL` is set: a manifest
//! row and one piece per merchant, written incrementally (`postgres`), on disk, so state outlives Redis and the input
//! topics' retention. Without Postgres, Redis (`rfm:snapshot:{group}:{partition}`, the whole snapshot each round);
//! for the embedded demo, this process's memory. Only a durable store lets the processor commit offsets: committed
//! offsets must never pass what a restarted process can load.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use actors::{SnapshotError, SnapshotRound};
use dashmap::{DashMap, DashSet};

use crate::redis_link::RedisLink;

mod postgres;

pub use postgres::PgSnapshots;

/// Which store `SNAPSHOT_STORE` asks for; unset, Postgres when there is one, else Redis.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum SnapshotBackend {
    Postgres,
    Redis,
    Memory,
}

impl std::str::FromStr for SnapshotBackend {
    type Err = String;

    fn from_str(s: &str) -> Result<Self, Self::Err> {
        match s.trim().to_ascii_lowercase().as_str() {
            "postgres" => Ok(SnapshotBackend::Postgres),
            "redis" => Ok(SnapshotBackend::Redis),
            "memory" => Ok(SnapshotBackend::Memory),
            other => Err(format!("{other:?} is not postgres, redis or memory")),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum StoreError {
    #[error("snapshot store: {0}")]
    Unavailable(String),
    /// The store holds a round this one does not build on (another owner wrote since, or an earlier commit's
    /// answer was lost): only a full round may be written now.
    #[error("snapshot store: the stored snapshot is not the one this round builds on")]
    Conflict,
    #[error("snapshot store: {0}")]
    Encoding(#[from] SnapshotError),
}

/// Which round of a partition's snapshot a store holds: who wrote it, and its number.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stamp {
    pub writer: String,
    pub round: i64,
}

/// A snapshot as it came out of the store.
#[derive(Debug)]
pub enum Stored {
    Whole(Vec<u8>),
    Pieces {
        manifest: Vec<u8>,
        pieces: HashMap<String, Vec<u8>>,
    },
}

/// The last bytes of a whole snapshot: its checksum over everything before (`actors` wire format), so equal tails
/// mean, to 64 bits, equal snapshots.
pub type Tail = [u8; 8];

/// The tail of `whole`, when it is long enough to have one.
pub fn tail_of(whole: &[u8]) -> Option<Tail> {
    whole.get(whole.len().checked_sub(8)?..)?.try_into().ok()
}

impl Stored {
    /// The whole snapshot `PartitionCore::decode_snapshot` reads. Pieces that are missing or are not the ones the
    /// manifest names make it an error, like any other damage.
    pub fn into_bytes(self) -> Result<Vec<u8>, SnapshotError> {
        match self {
            Stored::Whole(bytes) => Ok(bytes),
            Stored::Pieces { manifest, pieces } => actors::assemble(&manifest, |merchant| {
                pieces.get(merchant.as_str()).map(Vec::as_slice)
            }),
        }
    }
}

/// A loaded snapshot and, from a store that keeps rounds apart, the stamp of the round it is.
#[derive(Debug)]
pub struct Loaded {
    pub stored: Stored,
    pub stamp: Option<Stamp>,
}

/// A round the store took.
#[derive(Debug, Clone)]
pub struct Saved {
    /// Bytes written: the manifest and changed pieces, or the whole snapshot.
    pub bytes: usize,
    pub pieces: usize,
    /// The round's stamp, from a store that keeps rounds apart.
    pub stamp: Option<Stamp>,
    /// The whole snapshot's checksum, from a store that keeps it whole.
    pub tail: Option<Tail>,
}

#[derive(Clone)]
pub enum SnapshotStore {
    Postgres(PgSnapshots),
    Redis {
        link: RedisLink,
        prefix: String,
        /// Where snapshots were kept before the keys were hash-tagged; read when the tagged key is missing, so an
        /// upgrade restores from the last snapshot instead of replaying.
        legacy_prefix: String,
        /// Partitions whose legacy key this process has deleted since it last loaded them (see [`forget_legacy`]).
        legacy_gone: Arc<DashSet<i32>>,
    },
    Memory(Arc<DashMap<i32, Vec<u8>>>),
}

impl SnapshotStore {
    /// Snapshots are megabytes, so calls get a longer bound than the best-effort writers'.
    pub fn redis(url: &str, group: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(SnapshotStore::Redis {
            link: RedisLink::new(url, timeout)?,
            // The group as the hash tag: on a cluster every snapshot of the group and its liveness mark share a
            // slot, so they can be written together should that ever be needed.
            prefix: format!("rfm:snapshot:{}", crate::redis_link::tag(group)),
            legacy_prefix: format!("rfm:snapshot:{group}"),
            legacy_gone: Arc::default(),
        })
    }

    pub fn memory() -> Self {
        SnapshotStore::Memory(Arc::default())
    }

    /// Whether a snapshot outlives this process, so the offsets it covers may be committed.
    pub fn durable(&self) -> bool {
        !matches!(self, SnapshotStore::Memory(_))
    }

    /// Whether the store keeps merchants' pieces apart, so a round need only send those that changed. Redis and
    /// memory keep each snapshot whole, so every round there is full.
    pub fn incremental(&self) -> bool {
        matches!(self, SnapshotStore::Postgres(_))
    }

    /// Writes one round. An incremental round builds on `base`, the round the store is known to hold, and is
    /// refused with [`StoreError::Conflict`] when the store holds another; `writer` names this owner in the new
    /// stamp.
    pub async fn save(
        &self,
        round: SnapshotRound,
        base: Option<&Stamp>,
        writer: &str,
    ) -> Result<Saved, StoreError> {
        let partition = round.partition;
        match self {
            SnapshotStore::Postgres(pg) => pg.save(round, base, writer).await,
            SnapshotStore::Redis {
                link,
                prefix,
                legacy_prefix,
                legacy_gone,
            } => {
                let (whole, saved) = whole_of(round).await?;
                let key = partition_key(prefix, partition);
                link.query::<()>(redis::cmd("SET").arg(key).arg(whole))
                    .await
                    .map_err(StoreError::Unavailable)?;
                forget_legacy(link, legacy_prefix, partition, legacy_gone).await;
                Ok(saved)
            }
            SnapshotStore::Memory(map) => {
                let (whole, saved) = whole_of(round).await?;
                map.insert(partition, whole);
                Ok(saved)
            }
        }
    }

    /// Whether the store still holds, where this process writes it, the whole snapshot of `partition` whose checksum
    /// is `tail`, so an unchanged round may be skipped (`processor::recovery::rounds`). Redis may have been
    /// restarted from an older dump, flushed, made to evict, or written by a zombie owner since; a legacy key not
    /// yet deleted must be deleted by a write. Postgres is never asked: its unchanged rounds write a manifest
    /// only, and its stamps settle who wrote last. An error answers no: writing again is the safe side.
    pub async fn still_has(&self, partition: i32, tail: Tail) -> bool {
        match self {
            SnapshotStore::Postgres(_) => false,
            SnapshotStore::Redis {
                link,
                prefix,
                legacy_prefix,
                legacy_gone,
            } => {
                let key = partition_key(prefix, partition);
                let held = link
                    .query::<Vec<u8>>(redis::cmd("GETRANGE").arg(key).arg(-8).arg(-1))
                    .await;
                if !held.is_ok_and(|held| held == tail) {
                    return false;
                }
                let legacy = partition_key(legacy_prefix, partition);
                legacy_gone.contains(&partition)
                    || link
                        .query::<bool>(redis::cmd("EXISTS").arg(legacy))
                        .await
                        .is_ok_and(|exists| !exists)
            }
            SnapshotStore::Memory(map) => map
                .get(&partition)
                .is_some_and(|whole| tail_of(&whole) == Some(tail)),
        }
    }

    /// Notes that an instance owning partitions of this group is alive and snapshotting, for `ttl`. Only read by
    /// members that own nothing (see `processor::flow`).
    pub async fn mark_alive(&self, ttl: Duration) -> Result<(), StoreError> {
        match self {
            SnapshotStore::Postgres(pg) => pg.mark_alive(ttl).await,
            SnapshotStore::Redis { link, prefix, .. } => {
                let ms = ttl.as_millis().max(1) as u64;
                let key = format!("{prefix}:alive");
                link.query::<()>(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(ms))
                    .await
                    .map_err(StoreError::Unavailable)
            }
            SnapshotStore::Memory(_) => Ok(()),
        }
    }

    /// Whether some owner marked itself alive within its ttl. A memory store cannot see other processes and
    /// always says yes.
    pub async fn someone_alive(&self) -> Result<bool, StoreError> {
        match self {
            SnapshotStore::Postgres(pg) => pg.someone_alive().await,
            SnapshotStore::Redis { link, prefix, .. } => link
                .query::<bool>(redis::cmd("EXISTS").arg(format!("{prefix}:alive")))
                .await
                .map_err(StoreError::Unavailable),
            SnapshotStore::Memory(_) => Ok(true),
        }
    }

    pub async fn load(&self, partition: i32) -> Result<Option<Loaded>, StoreError> {
        let whole = match self {
            SnapshotStore::Postgres(pg) => return pg.load(partition).await,
            SnapshotStore::Redis {
                link,
                prefix,
                legacy_prefix,
                legacy_gone,
            } => {
                // Another owner (an older build, in a rolling upgrade) may have written the legacy key since this
                // process last deleted it: the first round after this load deletes it again.
                legacy_gone.remove(&partition);
                let get = |prefix: &str| {
                    redis::cmd("GET")
                        .arg(partition_key(prefix, partition))
                        .to_owned()
                };
                let (tagged, legacy) = (get(prefix), get(legacy_prefix));
                match link.query::<Option<Vec<u8>>>(&tagged).await {
                    Ok(Some(bytes)) => Some(bytes),
                    Ok(None) => link
                        .query::<Option<Vec<u8>>>(&legacy)
                        .await
                        .map_err(StoreError::Unavailable)?,
                    Err(e) => return Err(StoreError::Unavailable(e)),
                }
            }
            SnapshotStore::Memory(map) => map.get(&partition).map(|b| b.clone()),
        };
        Ok(whole.map(|bytes| Loaded {
            stored: Stored::Whole(bytes),
            stamp: None,
        }))
    }
}

/// The key of `partition`'s whole snapshot under `prefix` (the hash-tagged one or the legacy one).
fn partition_key(prefix: &str, partition: i32) -> String {
    format!("{prefix}:{partition}")
}

/// Deletes `partition`'s snapshot under the key it had before keys were hash-tagged, once a tagged one is written:
/// the load would otherwise keep falling back to it whenever the tagged key is missing (a flushed or rebuilt Redis),
/// restoring a snapshot from before the upgrade, and the key would hold its megabytes forever. Best effort, once
/// per partition and load: a failure is logged and the next round tries again.
async fn forget_legacy(link: &RedisLink, legacy_prefix: &str, partition: i32, gone: &DashSet<i32>) {
    if gone.contains(&partition) {
        return;
    }
    let key = partition_key(legacy_prefix, partition);
    match link.query::<i64>(redis::cmd("DEL").arg(&key)).await {
        Ok(deleted) => {
            gone.insert(partition);
            if deleted > 0 {
                metrics::counter!(streams::metric_names::LEGACY_SNAPSHOT_KEYS_DELETED).increment(1);
                tracing::info!(partition, key = %key, "legacy snapshot key deleted");
            }
        }
        Err(error) => {
            tracing::warn!(partition, key = %key, %error, "legacy snapshot key not deleted; tried again next round");
        }
    }
}

/// The whole snapshot of a full round, for a store that keeps it in one piece. Concatenating and checksumming
/// megabytes is kept off the processing loop's thread.
async fn whole_of(round: SnapshotRound) -> Result<(Vec<u8>, Saved), StoreError> {
    let pieces = round.pieces.len();
    let whole = tokio::task::spawn_blocking(move || round.whole())
        .await
        .map_err(|e| StoreError::Unavailable(e.to_string()))??;
    let saved = Saved {
        bytes: whole.len(),
        pieces,
        stamp: None,
        tail: tail_of(&whole),
    };
    Ok((whole, saved))
}
