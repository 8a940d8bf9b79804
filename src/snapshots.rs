//! Where partition snapshots live between owners: Redis (`rfm:snapshot:{group}:{partition}`), or this process's
//! memory when Redis is not configured (the embedded demo). Only a durable store lets the processor commit offsets:
//! committed offsets must never pass what a restarted process can load (docs/RECOVERY.md).

use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;

use crate::redis_link::RedisLink;

#[derive(Debug, thiserror::Error)]
#[error("snapshot store: {0}")]
pub struct StoreError(String);

#[derive(Clone)]
pub enum SnapshotStore {
    Redis { link: RedisLink, prefix: String },
    Memory(Arc<DashMap<i32, Vec<u8>>>),
}

impl SnapshotStore {
    /// Snapshots are megabytes, so calls get a longer bound than the best-effort writers'.
    pub fn redis(url: &str, group: &str, timeout: Duration) -> redis::RedisResult<Self> {
        Ok(SnapshotStore::Redis {
            link: RedisLink::new(url, timeout)?,
            prefix: format!("rfm:snapshot:{group}"),
        })
    }

    pub fn memory() -> Self {
        SnapshotStore::Memory(Arc::default())
    }

    /// Whether a snapshot outlives this process, so the offsets it covers may be committed.
    pub fn durable(&self) -> bool {
        matches!(self, SnapshotStore::Redis { .. })
    }

    pub async fn save(&self, partition: i32, bytes: Vec<u8>) -> Result<(), StoreError> {
        match self {
            SnapshotStore::Redis { link, prefix } => {
                let key = format!("{prefix}:{partition}");
                link.query::<()>(redis::cmd("SET").arg(key).arg(bytes))
                    .await
                    .map_err(StoreError)
            }
            SnapshotStore::Memory(map) => {
                map.insert(partition, bytes);
                Ok(())
            }
        }
    }

    /// Notes that an instance owning partitions of this group is alive and snapshotting, for `ttl`
    /// (`{prefix}:alive`). Only read by members that own nothing (see `processor::flow`).
    pub async fn mark_alive(&self, ttl: Duration) -> Result<(), StoreError> {
        match self {
            SnapshotStore::Redis { link, prefix } => {
                let ms = ttl.as_millis().max(1) as u64;
                let key = format!("{prefix}:alive");
                link.query::<()>(redis::cmd("SET").arg(key).arg(1).arg("PX").arg(ms))
                    .await
                    .map_err(StoreError)
            }
            SnapshotStore::Memory(_) => Ok(()),
        }
    }

    /// Whether some owner marked itself alive within its ttl. A memory store cannot see other processes and
    /// always says yes.
    pub async fn someone_alive(&self) -> Result<bool, StoreError> {
        match self {
            SnapshotStore::Redis { link, prefix } => link
                .query::<bool>(redis::cmd("EXISTS").arg(format!("{prefix}:alive")))
                .await
                .map_err(StoreError),
            SnapshotStore::Memory(_) => Ok(true),
        }
    }

    pub async fn load(&self, partition: i32) -> Result<Option<Vec<u8>>, StoreError> {
        match self {
            SnapshotStore::Redis { link, prefix } => link
                .query::<Option<Vec<u8>>>(redis::cmd("GET").arg(format!("{prefix}:{partition}")))
                .await
                .map_err(StoreError),
            SnapshotStore::Memory(map) => Ok(map.get(&partition).map(|b| b.clone())),
        }
    }
}
