//! The Shopify write-back worker (`serve --role sync`): its own consumer group on `rfm.updated`, so it scales and
//! restarts like the processor. It takes records in batches (up to `SYNC_BATCH_MAX`, or what arrived within
//! `SYNC_LINGER_MS` of the first), keeps each customer's newest version, writes segment key, score and lifecycle
//! stage to the customer's metafields (`writer`), and commits the batch's offsets only once every write of it
//! was accepted by Shopify, refused for good (then dead-lettered to `rfm.dlq` first), or skipped.
//!
//! Skipped, and counted (`rfm_shopify_writes_total{outcome="no_token"}`): records of shops without a stored token
//! (not installed, or uninstalled) and of shops whose token Shopify refuses (401/403: uninstalled, the webhook is
//! on its way). Transient failures (Shopify or Postgres down) are retried with capped backoff and hold the batch:
//! consumer lag grows, nothing is lost.

pub mod coalesce;
pub mod versions;
pub mod writer;

use std::collections::HashMap;
use std::time::{Duration, Instant};

use futures_util::future::join_all;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};
use sqlx::PgPool;
use streams::dlq::DeadLetter;
use streams::outputs::RfmUpdated;
use streams::{EventSink, MerchantId, Topics};

use crate::configuration::SyncSettings;
use crate::pii::KeyRing;
use crate::shopify::access::{self, AccessError};
use crate::shopify::admin::paced::PacedClient;
use crate::shopify::admin::AdminError;
use crate::shopify::WRITES_TOTAL;
use coalesce::{Latest, Source};

#[derive(Debug, thiserror::Error)]
pub enum SyncError {
    #[error("Kafka: {0}")]
    Kafka(#[from] rdkafka::error::KafkaError),
    #[error("Postgres: {0}")]
    Store(#[from] sqlx::Error),
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error(transparent)]
    Access(#[from] AccessError),
}

pub struct SyncWorker {
    pub consumer: StreamConsumer,
    /// Where `consumer` connects, for the fresh consumer a rejoin creates.
    pub brokers: String,
    pub pool: PgPool,
    pub keys: KeyRing,
    pub admin: PacedClient,
    pub sink: EventSink,
    pub topics: Topics,
    pub settings: SyncSettings,
}

/// Builds the consumer: manual commits, from the earliest record when the group has no offsets yet; the session
/// (`SYNC_SESSION_TIMEOUT_MS`) is how soon the group moves a killed worker's partitions.
pub fn consumer(
    brokers: &str,
    settings: &SyncSettings,
    topic: &str,
) -> Result<StreamConsumer, SyncError> {
    let session = settings.session_timeout;
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", &settings.group_id)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("session.timeout.ms", session.as_millis().to_string())
        // librdkafka's 3 s default, but at least three heartbeats per session, so a short one is accepted.
        .set(
            "heartbeat.interval.ms",
            (session.as_millis() / 3).clamp(1, 3_000).to_string(),
        );
    // Managed-Kafka settings (`KAFKA_CONFIG_*`) apply to this client like to every other.
    let consumer: StreamConsumer = streams::client_props::apply(&mut config).create()?;
    consumer.subscribe(&[topic])?;
    Ok(consumer)
}

/// What ended a wait for records.
enum Woken {
    Stop,
    Unassigned,
    Batch(Vec<Source>),
}

impl SyncWorker {
    /// Runs until `shutdown` resolves; a batch in progress is finished and committed first.
    pub async fn run(
        mut self,
        shutdown: impl std::future::Future<Output = ()>,
    ) -> Result<(), SyncError> {
        tokio::pin!(shutdown);
        loop {
            let woken = tokio::select! {
                _ = &mut shutdown => Woken::Stop,
                () = self.unassigned_too_long() => Woken::Unassigned,
                batch = self.collect() => Woken::Batch(batch?),
            };
            match woken {
                Woken::Stop => return Ok(()),
                Woken::Unassigned => self.rejoin().await?,
                Woken::Batch(batch) => self.process(batch).await?,
            }
        }
    }

    /// Resolves once this member has held no partition for two session timeouts.
    ///
    /// Tansu 0.6 can end a rebalance with the only live member holding nothing (a restarted member that joined
    /// while the killed one's session still ran; docs/RECOVERY.md, item 9), and a member that then leaves and
    /// rejoins with the same client (unsubscribe, subscribe) can stay unassigned for good on a loaded broker
    /// (the crash test hit it beside the whole suite). An idle member of a group with more members than
    /// partitions rejoins too, which costs the group a rebalance every such period: run at most as many sync
    /// instances as partitions.
    async fn unassigned_too_long(&self) {
        let limit = 2 * self.settings.session_timeout;
        let mut idle_since = Instant::now();
        loop {
            tokio::time::sleep((limit / 10).max(Duration::from_millis(100))).await;
            if self.consumer.assignment().map_or(0, |a| a.count()) > 0 {
                idle_since = Instant::now();
            } else if idle_since.elapsed() >= limit {
                return;
            }
        }
    }

    /// Leaves the group and joins it again as a new member with a new client: nothing of the old member's
    /// state (member id, generation, a join the broker never completes) carries over.
    async fn rejoin(&mut self) -> Result<(), SyncError> {
        tracing::warn!(
            group = %self.settings.group_id,
            "no partition of rfm.updated for two session timeouts; rejoining the group with a new consumer"
        );
        metrics::counter!(streams::metric_names::SYNC_GROUP_REJOINS).increment(1);
        let fresh = consumer(&self.brokers, &self.settings, &self.topics.rfm_updated)?;
        let old = std::mem::replace(&mut self.consumer, fresh);
        // Closing leaves the group (a blocking call in librdkafka); it holds nothing to commit.
        if tokio::task::spawn_blocking(move || drop(old))
            .await
            .is_err()
        {
            tracing::warn!("closing the previous consumer failed");
        }
        Ok(())
    }

    /// Waits for a first record, then takes what arrives within the linger, up to the batch size.
    /// A consumer error librdkafka will recover from (a broker away, a partition end) is logged and waited out
    /// rather than ending the worker; only a fatal one does.
    async fn collect(&self) -> Result<Vec<Source>, SyncError> {
        let first = loop {
            match self.consumer.recv().await {
                Ok(record) => break record,
                Err(e) if is_fatal(&e) => return Err(e.into()),
                Err(e) => {
                    tracing::warn!(error = %e, "write-back consumer error; waiting for the broker");
                    tokio::time::sleep(Duration::from_millis(500)).await;
                }
            }
        };
        let mut batch = vec![source(&first)];
        let until = Instant::now() + self.settings.linger;
        while batch.len() < self.settings.batch_max {
            let left = until.saturating_duration_since(Instant::now());
            match tokio::time::timeout(left, self.consumer.recv()).await {
                Ok(Ok(record)) => batch.push(source(&record)),
                Ok(Err(e)) if is_fatal(&e) => return Err(e.into()),
                // What was gathered goes on; the next wait for a first record meets the error again if it lasts.
                Ok(Err(_)) | Err(_) => break,
            }
        }
        Ok(batch)
    }

    async fn process(&self, batch: Vec<Source>) -> Result<(), SyncError> {
        let mut next: HashMap<i32, i64> = HashMap::new();
        let mut decoded = Vec::with_capacity(batch.len());
        let mut letters = Vec::new();
        for record in batch {
            let entry = next.entry(record.partition).or_insert(0);
            *entry = (*entry).max(record.offset + 1);
            match serde_json::from_slice::<RfmUpdated>(&record.payload) {
                Ok(update) => decoded.push((update, record)),
                Err(e) => letters.push((record, format!("undecodable rfm.updated: {e}"))),
            }
        }
        let shops = coalesce::coalesce(decoded);
        let outcomes = join_all(
            shops
                .into_iter()
                .map(|(shop, customers)| self.shop(shop, customers)),
        )
        .await;
        for outcome in outcomes {
            letters.extend(
                outcome?
                    .into_iter()
                    .map(|(latest, why)| (latest.source, format!("shopify refused: {why}"))),
            );
        }
        for (record, reason) in letters {
            self.dead_letter(record, reason).await;
        }
        self.commit(&next)
    }

    /// One shop's customers: its token, then the writes; the refused ones come back.
    async fn shop(
        &self,
        shop: MerchantId,
        customers: Vec<Latest>,
    ) -> Result<Vec<(Latest, String)>, SyncError> {
        let count = customers.len() as u64;
        let token = match retry_store(|| access::offline_token(&self.pool, &self.keys, &shop)).await
        {
            Ok(token) => token,
            Err(e) => {
                // A token sealed under a key no longer configured: the shop must install again.
                tracing::error!(merchant = %shop, error = %e, "the shop's token cannot be opened; skipped");
                None
            }
        };
        let Some(token) = token else {
            metrics::counter!(WRITES_TOTAL, "outcome" => "no_token").increment(count);
            tracing::debug!(merchant = %shop, customers = count, "no Admin API token for the shop; skipped");
            return Ok(Vec::new());
        };
        let mut delay = Duration::from_millis(100);
        loop {
            match writer::write_shop(&self.admin, &self.pool, &shop, &token, customers.clone())
                .await
            {
                Ok(outcome) => {
                    tracing::debug!(merchant = %shop, written = outcome.written, stale = outcome.stale, refused = outcome.refused.len(), "shop synced");
                    return Ok(outcome.refused);
                }
                Err(SyncError::Admin(AdminError::Unauthorized)) => {
                    metrics::counter!(WRITES_TOTAL, "outcome" => "no_token").increment(count);
                    tracing::warn!(merchant = %shop, "Shopify refused the shop's token (uninstalled?); skipped");
                    return Ok(Vec::new());
                }
                // A reply Shopify should never send; the batch cannot be placed, so it goes to the DLQ whole.
                Err(SyncError::Admin(e)) => {
                    return Ok(customers.into_iter().map(|l| (l, e.to_string())).collect());
                }
                Err(e @ SyncError::Store(_)) => {
                    tracing::warn!(merchant = %shop, error = %e, "Postgres failed during write-back; retrying");
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
                Err(e) => return Err(e),
            }
        }
    }

    async fn dead_letter(&self, record: Source, reason: String) {
        let letter = DeadLetter {
            topic: self.topics.rfm_updated.clone(),
            partition: record.partition,
            offset: record.offset,
            key: record.key,
            payload: record.payload,
            reason,
        };
        letter.deliver(&self.sink, &self.topics.dlq).await;
    }

    fn commit(&self, next: &HashMap<i32, i64>) -> Result<(), SyncError> {
        let mut offsets = TopicPartitionList::new();
        for (&partition, &offset) in next {
            offsets.add_partition_offset(
                &self.topics.rfm_updated,
                partition,
                Offset::Offset(offset),
            )?;
        }
        if offsets.count() > 0 {
            // A partition revoked meanwhile refuses the commit; its next owner replays the batch. The versions
            // table keeps the replay from sending what Shopify has, and `compareDigest` keeps a late write of the
            // old owner from landing over the new owner's (writer).
            if let Err(e) = self.consumer.commit(&offsets, CommitMode::Sync) {
                tracing::warn!(error = %e, "offsets of a synced batch not committed; it will be replayed");
            }
        }
        Ok(())
    }
}

fn source(record: &rdkafka::message::BorrowedMessage<'_>) -> Source {
    Source {
        partition: record.partition(),
        offset: record.offset(),
        key: record.key().map(<[u8]>::to_vec),
        payload: record.payload().map(<[u8]>::to_vec).unwrap_or_default(),
    }
}

/// Retries a Postgres read while Postgres is unreachable; other errors (an unopenable token) come back.
async fn retry_store<T, F, Fut>(mut call: F) -> Result<T, SyncError>
where
    F: FnMut() -> Fut,
    Fut: std::future::Future<Output = Result<T, AccessError>>,
{
    let mut delay = Duration::from_millis(100);
    loop {
        match call().await {
            Ok(value) => return Ok(value),
            Err(AccessError::Store(e)) => {
                tracing::warn!(error = %e, "Postgres failed reading a shop token; retrying");
                tokio::time::sleep(delay).await;
                delay = (delay * 2).min(Duration::from_secs(10));
            }
            Err(e) => return Err(e.into()),
        }
    }
}

/// Whether a consumer error ends the worker: librdkafka retries everything else itself.
fn is_fatal(e: &rdkafka::error::KafkaError) -> bool {
    use rdkafka::types::RDKafkaErrorCode;
    matches!(
        e.rdkafka_error_code(),
        Some(
            RDKafkaErrorCode::Fatal
                | RDKafkaErrorCode::Authentication
                | RDKafkaErrorCode::SaslAuthenticationFailed
        )
    ) || matches!(e, rdkafka::error::KafkaError::Subscription(_))
}
