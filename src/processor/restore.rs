//! The end of a restore (docs/RECOVERY.md): once the quiet replay reached the frontier, the versions the previous
//! owner published are read back in the background, handed to the partition actor, and the restore's net changes
//! (one per affected customer) go out in chunks, interleaved with live records and with other partitions'
//! restores. The lifecycle (`lifecycle`) decides when each step starts; this is how each is carried out.

use std::collections::{BTreeMap, HashSet};
use std::time::Duration;

use actix::Addr;
use actors::{FinishRestore, NextRestoreChunk, PartitionActor, PartitionCore, PublishedVersion};
use futures_util::StreamExt;
use streams::MerchantId;

use super::hydrate::Step;
use super::lifecycle::Event;
use super::publish::PublishError;
use super::readback::ReadBack;
use super::Processor;

/// A chunk of a restore's net changes, as its partition actor returned it (`None` once all are out).
pub(super) struct Chunk {
    pub(super) partition: i32,
    pub(super) attempt: u64,
    outcome: Result<Option<actors::Outcome>, actix::MailboxError>,
}

/// The actor's answer to a request for the next chunk, on its way.
pub(super) type ChunkRequest = futures_util::future::LocalBoxFuture<'static, Chunk>;

impl Processor {
    /// Reads back, in the background, what the previous owner of `partition` published after the snapshot's marks.
    pub(super) fn start_read_back(&mut self, partition: i32, attempt: u64) {
        let (Some(position), Some(addr)) = (
            self.positions.get(&partition),
            self.partitions.get(&partition).map(|a| a.value().clone()),
        ) else {
            return;
        };
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
                generation: attempt,
                published,
            });
        });
    }

    /// Takes over what the old owner published and publishes the first chunk of the restore's net changes; the
    /// rest follow through `on_chunk`.
    pub(super) async fn finish_restore(
        &mut self,
        partition: i32,
        attempt: u64,
        published: Vec<PublishedVersion>,
    ) -> Result<(), PublishError> {
        let Some(addr) = self.partitions.get(&partition).map(|a| a.value().clone()) else {
            return Ok(());
        };
        let now = self.clock.now();
        let outcome = addr.send(FinishRestore { published, now }).await;
        self.on_chunk(Chunk {
            partition,
            attempt,
            outcome: outcome.map(Some),
        })
        .await
    }

    /// Asks the actor of `partition` for the next chunk of the restore of `attempt`. Each chunk is evaluated when
    /// it is asked for: live records applied meanwhile were applied at their time, and a chunk evaluated at the
    /// restore's start would move their customers back.
    pub(super) fn ask_next_chunk(&mut self, partition: i32, attempt: u64) {
        let Some(addr) = self.partitions.get(&partition).map(|a| a.value().clone()) else {
            return;
        };
        let next = addr.send(NextRestoreChunk {
            now: self.clock.now(),
        });
        self.chunks.push(Box::pin(async move {
            Chunk {
                partition,
                attempt,
                outcome: next.await,
            }
        }));
    }

    /// Publishes one chunk of a restore's net changes (at most `MAX_IN_FLIGHT` batches publishing) and tells the
    /// lifecycle, which asks for the next or, after the last (empty) one, makes the partition live. A chunk of an
    /// earlier restore of the partition, or of an actor that stopped, is dropped: the restore that replaced it
    /// publishes its own.
    pub(super) async fn on_chunk(&mut self, chunk: Chunk) -> Result<(), PublishError> {
        let Chunk {
            partition,
            attempt,
            outcome,
        } = chunk;
        if !self
            .lifecycles
            .get(&partition)
            .is_some_and(|l| l.publishes(attempt))
        {
            return Ok(());
        }
        let outcome = outcome.ok().flatten();
        let event = Event::Chunk {
            attempt,
            changes: outcome.as_ref().map_or(0, |o| o.changes.len()),
            last: outcome.is_none(),
        };
        self.dispatch(partition, event, None).await?;
        match outcome {
            Some(outcome) => self.publish(outcome, Vec::new(), 0).await,
            None => Ok(()),
        }
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
                .lifecycles
                .get(&chunk.partition)
                .is_some_and(|l| l.publishes(chunk.attempt));
            if let (true, Ok(Some(outcome))) = (current, chunk.outcome) {
                self.publish(outcome, Vec::new(), 0).await?;
            }
        }
        Ok(())
    }
}

async fn read_back(
    addr: Addr<PartitionActor>,
    brokers: String,
    topic: String,
    marks: BTreeMap<i32, i64>,
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
