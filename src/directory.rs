//! The actor directory: which partition actor of this instance holds which partition, and how a reader runs a
//! closure inside them. The consumer loop registers and removes actors as partitions come and go; the read API
//! (`read_model`) only looks them up, so reads never pass through the loop.

use actix::Addr;
use actors::{Inspect, PartitionActor, PartitionCore};
use std::sync::Arc;
use streams::MerchantId;

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

/// Which partition last held each merchant read here. A merchant's records all go to one partition (they are keyed
/// by merchant), so while this instance keeps that partition a read needs one actor, not all of them: at 5,000
/// concurrent reads, asking every actor turned each read into a dozen cross-thread messages (docs/PERFORMANCE.md).
/// Only merchants found live are remembered, and a hint that misses is dropped, so the map holds at most the
/// merchants this instance has served live.
#[derive(Debug, Default)]
pub struct Owners(dashmap::DashMap<MerchantId, i32>);

impl Owners {
    /// Runs `read` in the actor that holds `merchant`: the remembered one first, then every actor (remembering
    /// the one that answered). `None` when no actor of this instance answers.
    pub async fn inspect<R, F>(
        &self,
        registry: &Registry,
        merchant: &MerchantId,
        read: F,
    ) -> Option<R>
    where
        R: Send + 'static,
        F: Fn(&PartitionCore) -> Option<R> + Clone + Send + 'static,
    {
        let hinted = self.0.get(merchant).map(|p| *p);
        if let Some(partition) = hinted {
            let addr = registry.get(&partition).map(|a| a.value().clone());
            let found = match addr {
                Some(addr) => inspect_one(&addr, read.clone()).await.flatten(),
                None => None,
            };
            if found.is_some() {
                return found;
            }
            self.0.remove(merchant);
        }
        let actors: Vec<(i32, Addr<PartitionActor>)> = registry
            .iter()
            .map(|e| (*e.key(), e.value().clone()))
            .collect();
        for (partition, addr) in actors {
            if let Some(found) = inspect_one(&addr, read.clone()).await.flatten() {
                self.0.insert(merchant.clone(), partition);
                return Some(found);
            }
        }
        None
    }
}
