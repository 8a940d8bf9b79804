//! The actor directory: which partition actor of this instance holds which partition, and how a reader runs a
//! closure inside them. The consumer loop registers and removes actors as partitions come and go; the read API
//! (`read_model`) only looks them up, so reads never pass through the loop.

use actix::Addr;
use actors::{Inspect, PartitionActor, PartitionCore};
use std::sync::Arc;

/// A request waiting in (or being handled by) a partition actor's mailbox: counted in `rfm_mailbox_depth` from
/// creation until dropped, so every path that sends to a partition actor shows in one gauge.
pub struct InMailbox(());

impl InMailbox {
    pub fn enter() -> InMailbox {
        metrics::gauge!(streams::metric_names::MAILBOX_DEPTH, "actor" => "partition")
            .increment(1.0);
        InMailbox(())
    }
}

impl Drop for InMailbox {
    fn drop(&mut self) {
        metrics::gauge!(streams::metric_names::MAILBOX_DEPTH, "actor" => "partition")
            .decrement(1.0);
    }
}

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
        let _waiting = InMailbox::enter();
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
    let _waiting = InMailbox::enter();
    addr.send(Inspect(read)).await.ok()
}
