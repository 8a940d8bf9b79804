//! The actor directory: which partition actor of this instance holds which partition, and how a reader runs a
//! closure inside them. The consumer loop registers and removes actors as partitions come and go; the read API
//! (`read_model`) only looks them up, so reads never pass through the loop.

use actix::Addr;
use actors::{Inspect, PartitionActor, PartitionCore};
use std::sync::Arc;

/// The partition actors this instance owns, shared with the read API.
pub type Registry = Arc<dashmap::DashMap<i32, Addr<PartitionActor>>>;

/// Runs `read` inside every partition actor this instance owns and returns what each gave back. Actors that
/// stopped meanwhile (their partition was revoked) are skipped.
pub async fn inspect_all<R, F>(registry: &Registry, read: F) -> Vec<R>
where
    R: Send + 'static,
    F: Fn(&PartitionCore) -> R + Clone + Send + 'static,
{
    let actors: Vec<Addr<PartitionActor>> = registry.iter().map(|e| e.value().clone()).collect();
    let mut out = Vec::with_capacity(actors.len());
    for addr in actors {
        if let Ok(value) = addr.send(Inspect(read.clone())).await {
            out.push(value);
        }
    }
    out
}

/// Runs `read` inside one partition actor; `None` if it stopped.
pub(crate) async fn inspect_one<R, F>(addr: &Addr<PartitionActor>, read: F) -> Option<R>
where
    R: Send + 'static,
    F: FnOnce(&PartitionCore) -> R + Send + 'static,
{
    addr.send(Inspect(read)).await.ok()
}
