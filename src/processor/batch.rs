//! One polled batch through the partition actors: each partition's share is admitted against its position,
//! handed to its actor (all shares at once, so actors on different arbiter threads decode and apply in parallel),
//! and the outcomes are published one partition after another (each keeps its order), dead letters first.

use std::collections::HashMap;

use actix::Addr;
use actors::{ApplyBatch, Outcome, PartitionActor, RawRecord};
use streams::MerchantId;

use super::publish::PublishError;
use super::Processor;
use streams::source::Polled;

impl Processor {
    /// Hands each partition's share of `batch` to its actor, all at once so the actors (on one arbiter thread per
    /// core) decode and apply in parallel, then publishes the outcomes one partition after another.
    pub(super) async fn process(&mut self, batch: Vec<Polled>) -> Result<(), PublishError> {
        let mut by_partition: HashMap<i32, Vec<Polled>> = HashMap::new();
        for polled in batch {
            by_partition
                .entry(polled.partition)
                .or_default()
                .push(polled);
        }
        let keys = by_partition
            .iter()
            .filter(|(p, _)| self.positions.contains_key(p) && !self.config_wait.contains_key(p))
            .flat_map(|(_, records)| records.iter().map(|r| &r.raw));
        let unavailable = self.load_configs(keys).await;
        // Records of partitions not owned, still hydrating, or waiting for a configuration are dropped unstored. A
        // partition is moved back to its position when it is installed or its configurations arrive, so these are
        // fetched again.
        let mut shares = Vec::with_capacity(by_partition.len());
        for (partition, records) in by_partition {
            let waiting: Vec<MerchantId> = unavailable
                .iter()
                .filter(|m| records.iter().any(|r| keyed_by(&r.raw, m)))
                .cloned()
                .collect();
            if !waiting.is_empty() {
                self.wait_for_configs(partition, waiting);
            } else if !self.config_wait.contains_key(&partition) {
                shares.extend(self.share(partition, records));
            }
        }
        let now = self.clock.now();
        let requests = shares.iter_mut().map(|share| {
            let batch = ApplyBatch {
                records: std::mem::take(&mut share.records),
                now,
                quiet: share.quiet,
            };
            let addr = self
                .partitions
                .get(&share.partition)
                .map(|a| a.value().clone());
            apply(share.partition, addr, batch)
        });
        let applied = futures_util::future::join_all(requests);
        let outcomes = self.prefetch_while(applied).await;
        // If one share fails to publish, the later ones were already applied (and their records enqueued by their
        // actors) but are not tracked: the processor stops without storing their offsets, so the next owner
        // replays them, and its read-back of `rfm.updated` recognises whichever of their records did land.
        for (share, outcome) in shares.into_iter().zip(outcomes) {
            self.publish_share(share, outcome).await?;
        }
        Ok(())
    }

    /// Awaits `work` while receiving the next batch's records into `prefetched`, so the consumer loop and the
    /// actors overlap instead of taking turns. Records are only received here, never admitted: the next `process`
    /// admits them against the positions this batch leaves.
    async fn prefetch_while<T>(&mut self, work: impl std::future::Future<Output = T>) -> T {
        tokio::pin!(work);
        loop {
            let room = self.prefetched.len() < self.batch_max;
            tokio::select! {
                biased;
                done = &mut work => return done,
                polled = self.source.next(), if room => self.prefetched.extend(polled),
            }
        }
    }

    /// Admits one partition's records; `None` when there is nothing to apply.
    fn share(&mut self, partition: i32, records: Vec<Polled>) -> Option<Share> {
        let installed = self
            .lifecycles
            .get(&partition)
            .map(|l| (l.installed(), l.quiet()));
        let Some((true, quiet)) = installed else {
            return None;
        };
        let raw = self.admit(partition, records.into_iter().map(|p| p.raw).collect());
        if raw.is_empty() {
            return None;
        }
        self.note_applied(partition, &raw);
        let timestamps: Vec<i64> = raw.iter().filter_map(|r| r.timestamp_ms).collect();
        if let Some(oldest) = timestamps.iter().min() {
            let age_ms = chrono::Utc::now().timestamp_millis() - oldest;
            tracing::debug!(partition, records = raw.len(), age_ms, "batch received");
        }
        // Before the apply, so each span covers apply → publish; none unless spans are exported.
        let spans =
            crate::otel::record_spans(partition, raw.iter().filter_map(|r| r.traceparent.as_ref()));
        Some(Share {
            partition,
            events: raw.len() as u64,
            spans,
            records: raw,
            timestamps,
            quiet,
        })
    }

    async fn publish_share(&mut self, share: Share, outcome: Outcome) -> Result<(), PublishError> {
        let partition = share.partition;
        self.publish_traced(outcome, share.timestamps, share.events, share.spans)
            .await?;
        if share.quiet {
            self.report_progress(partition).await?;
        }
        Ok(())
    }

    /// Holds `partition` back until the configurations of `merchants` can be read: paused, its position not
    /// moved, retried every tick (`retry_configs`).
    fn wait_for_configs(&mut self, partition: i32, merchants: Vec<MerchantId>) {
        tracing::warn!(
            partition,
            merchants = merchants.len(),
            "partition waits for merchant configurations"
        );
        self.source.set_paused(&[partition], true);
        let waiting = self.config_wait.entry(partition).or_default();
        waiting.extend(merchants);
        waiting.sort_unstable();
        waiting.dedup();
    }

    /// Loads the configurations partitions wait for; each partition whose configurations all arrived resumes
    /// from its position.
    pub(super) async fn retry_configs(&mut self) {
        let waiting: Vec<(i32, Vec<MerchantId>)> = self.config_wait.drain().collect();
        let mut unavailable = false;
        for (partition, merchants) in waiting {
            // Postgres did not answer for an earlier partition: the others wait for the next tick untried, so a
            // tick costs the loop at most one load's timeout.
            if unavailable {
                self.config_wait.insert(partition, merchants);
                continue;
            }
            let failed = self.load_configs_of(merchants).await;
            if !failed.is_empty() {
                unavailable = true;
                self.config_wait.insert(partition, failed);
                continue;
            }
            tracing::info!(
                partition,
                "merchant configurations loaded; partition resumes"
            );
            if !self.paused {
                self.source.set_paused(&[partition], false);
                self.rewind_to_position(partition);
            }
        }
    }

    /// Loads configurations of merchants seen for the first time (the record key is the merchant); defaults when
    /// there is no database or no row. Returns the merchants whose configuration could not be read now.
    pub(super) async fn load_configs(
        &self,
        records: impl Iterator<Item = &RawRecord>,
    ) -> Vec<MerchantId> {
        let mut keys: Vec<&[u8]> = records.filter_map(|r| r.key.as_deref()).collect();
        keys.sort_unstable();
        keys.dedup();
        let merchants: Vec<MerchantId> = keys
            .into_iter()
            .filter_map(|k| std::str::from_utf8(k).ok())
            .filter_map(|k| MerchantId::parse(k).ok())
            .collect();
        self.load_configs_of(merchants).await
    }
}

/// Whether `record` is one of `merchant`'s (the record key is the merchant).
fn keyed_by(record: &RawRecord, merchant: &MerchantId) -> bool {
    record.key.as_deref() == Some(merchant.as_str().as_bytes())
}

/// One partition's share of a polled batch, admitted and on its way to the partition's actor.
struct Share {
    partition: i32,
    records: Vec<RawRecord>,
    timestamps: Vec<i64>,
    events: u64,
    /// Restoring: applied without publishing changes.
    quiet: bool,
    /// One per trace the records carry, with OTLP export on (`otel::record_spans`); ended once published.
    spans: Vec<tracing::Span>,
}

/// Applies a batch in the partition's actor; an empty outcome when the actor is gone.
async fn apply(partition: i32, addr: Option<Addr<PartitionActor>>, batch: ApplyBatch) -> Outcome {
    let Some(addr) = addr else {
        return Outcome::default();
    };
    let _waiting = crate::directory::InMailbox::enter();
    match addr.send(batch).await {
        Ok(outcome) => outcome,
        // The actor only stops with its arbiter, i.e. at shutdown.
        Err(e) => {
            tracing::error!(partition, error = %e, "partition actor unavailable");
            Outcome::default()
        }
    }
}
