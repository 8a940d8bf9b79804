//! The Kafka side of the stream processor: a consumer-group member that copies records out with their input kind, hands
//! out short batches, stores offsets when told to, and sends records the actors could not decode to the
//! dead-letter topic.
//!
//! Offsets are stored explicitly (`enable.auto.offset.store=false`), and only for what a durable snapshot covers
//! (see `recovery`). On assignment a partition starts from its committed offsets; the processor skips what its
//! snapshot already holds and seeks back when the snapshot is older than the committed position. A revocation is
//! not answered in the callback: the processor first snapshots what it gives away, then calls [`Source::release`]
//! (librdkafka holds the rebalance until the application unassigns).

use std::collections::HashMap;
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Mutex;
use std::time::Duration;

use crate::traceparent::TraceParent;
use crate::{InputKind, Topics};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::error::KafkaResult;
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
    /// How long the group waits for a silent member (a killed process) before moving its partitions.
    pub session_timeout: Duration,
    /// How long the loop may go without asking for records before librdkafka leaves the group; also the bound on
    /// how long a revocation may wait for its hand-over snapshot.
    pub max_poll_interval: Duration,
    /// librdkafka's own debug contexts (`cgrp`, `fetch`, …), for diagnosing the group protocol with a broker.
    pub debug: Option<String>,
    /// Static membership (`group.instance.id`, `KAFKA_GROUP_INSTANCE_ID`): unique per instance and stable across its
    /// restarts (a StatefulSet pod name). Brokers without KIP-345 ignore it or treat the member as dynamic.
    pub group_instance_id: Option<String>,
}

/// Partitions the group took back, for the processor to hand over.
#[derive(Debug, Default)]
pub struct Revocation {
    pub partitions: Vec<i32>,
    /// The group revoked them without waiting for this member: another member may already own them, so no
    /// hand-over snapshot may be written and no offset committed for them.
    pub lost: bool,
}

/// Why the input topics cannot be consumed as they are.
#[derive(Debug, thiserror::Error)]
pub enum InputTopicsError {
    #[error(
        "the input topics do not all have the same partition count ({0}); a merchant's events must meet in one \
         partition, so create every input topic with one count (KAFKA_PARTITIONS) or re-create the odd ones"
    )]
    Mismatched(String),
    #[error("the input topics' partition counts are unknown: {0}")]
    Metadata(#[from] rdkafka::error::KafkaError),
}

/// A record as it came off Kafka. Decoding happens in the partition actor, so it runs on the actor threads in
/// parallel instead of on the consumer loop.
#[derive(Debug, Clone)]
pub struct RawRecord {
    /// `None` when the topic is not an input topic.
    pub kind: Option<InputKind>,
    pub topic: String,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
    /// The broker's timestamp, in milliseconds since the epoch.
    pub timestamp_ms: Option<i64>,
    /// The record's W3C `traceparent` header, when it carries a valid one.
    pub traceparent: Option<TraceParent>,
}

/// The `traceparent` header of a record; an invalid one is dropped (see `traceparent`).
fn traceparent_of<M: Message>(message: &M) -> Option<TraceParent> {
    use rdkafka::message::Headers;
    let headers = message.headers()?;
    headers
        .iter()
        .find(|h| h.key == crate::traceparent::HEADER)
        .and_then(|h| std::str::from_utf8(h.value?).ok())
        .and_then(|v| TraceParent::parse(v).ok())
}

#[derive(Debug)]
pub struct Polled {
    pub partition: i32,
    pub raw: RawRecord,
}

/// Receives rebalance callbacks on the consumer's thread and leaves notes for the processing loop.
#[derive(Default)]
pub struct Rebalances {
    /// A revocation waiting for `Source::release` (possibly of no partition: an instance that owned nothing must
    /// still answer it, or the rebalance never completes).
    revoked: Mutex<Option<Revocation>>,
    assigned: Mutex<Vec<i32>>,
    /// Set once the processor stops: a revocation during `close` is answered at once, nobody is left to snapshot.
    closing: AtomicBool,
    /// Consumer lag per partition, exported from librdkafka's statistics (see `lag`).
    lag: crate::lag::LagBook,
    /// The input topic names, whose partitions' lag is exported.
    inputs: Vec<String>,
}

impl ClientContext for Rebalances {
    fn stats(&self, statistics: rdkafka::statistics::Statistics) {
        let now_ms = chrono::Utc::now().timestamp_millis();
        self.lag.export(&statistics, &self.inputs, now_ms);
    }
}

impl ConsumerContext for Rebalances {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assigned: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                assigned.sort_unstable();
                assigned.dedup();
                tracing::info!(partitions = ?assigned, "partitions assigned");
                let rewound = rewound_assignment(consumer, tpl);
                if let Err(e) = consumer.assign(&rewound) {
                    tracing::error!(error = %e, "could not take the assignment");
                }
                lock(&self.assigned).extend(assigned);
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                revoked.sort_unstable();
                revoked.dedup();
                tracing::info!(partitions = ?revoked, "partitions revoked");
                metrics::counter!(crate::metric_names::PARTITIONS_REVOKED)
                    .increment(revoked.len() as u64);
                // Lost: the group already moved the partitions on (this member missed its session or poll
                // interval), so another member may own them now.
                let lost = consumer.assignment_lost();
                if lost {
                    tracing::warn!(partitions = ?revoked, "assignment lost; its partitions are fenced");
                    metrics::counter!(crate::metric_names::ASSIGNMENTS_LOST).increment(1);
                }
                if self.closing.load(Ordering::SeqCst) {
                    release(consumer);
                } else {
                    // The processor snapshots these partitions (unless lost) and then calls `Source::release`.
                    let mut pending = lock(&self.revoked);
                    let pending = pending.get_or_insert_default();
                    pending.partitions.extend(revoked);
                    pending.lost |= lost;
                }
            }
            other => {
                tracing::error!(error = ?other, "rebalance failed");
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "could not release the assignment");
                }
            }
        }
    }
}

/// How every consumer of the input and output topics fetches: the processor's, the read-back's and the bench's
/// plain reader, so the bench measures the broker with the processor's settings.
pub fn fetch_settings(config: &mut ClientConfig) -> &mut ClientConfig {
    config
        .set("fetch.wait.max.ms", "10")
        // librdkafka postpones a partition's next fetch by this much (default 1 s) whenever its local queue is past
        // `queued.min.messages` or `queued.max.messages.kbytes`, which a catch-up passes all the time; the loop then
        // sat idle for about half of the pipeline benchmark (docs/PERFORMANCE.md).
        .set("fetch.queue.backoff.ms", "10")
        .set("queued.max.messages.kbytes", "65536")
}

/// How often librdkafka reports statistics, and so how fresh the lag gauges are.
const LAG_EVERY_MS: &str = "5000";

pub struct Source {
    consumer: StreamConsumer<Rebalances>,
    topics: Topics,
}

impl Source {
    pub fn new(settings: &ConsumerSettings, topics: &Topics) -> KafkaResult<Source> {
        let mut config = ClientConfig::new();
        if let Some(contexts) = &settings.debug {
            config.set("debug", contexts);
        }
        config
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            .set(
                "session.timeout.ms",
                settings.session_timeout.as_millis().to_string(),
            )
            // librdkafka's 3 s default, but at most half the session, so a short session (a faster hand-over after
            // a crash) is still accepted and gets a heartbeat in before it expires.
            .set(
                "heartbeat.interval.ms",
                (settings.session_timeout.as_millis() / 2)
                    .clamp(1, 3000)
                    .to_string(),
            )
            // Range assigns partition p of every topic to the same member when the topics have equal partition
            // counts, which keeps a merchant's co-partitioned topics in one partition actor.
            .set("partition.assignment.strategy", "range")
            // Feeds the consumer-lag gauges (`lag`); the JSON is parsed on librdkafka's thread, not the loop.
            .set("statistics.interval.ms", LAG_EVERY_MS)
            .set(
                "max.poll.interval.ms",
                settings.max_poll_interval.as_millis().to_string(),
            );
        if let Some(id) = &settings.group_instance_id {
            // Static membership: a restart within the session takes its partitions back without a rebalance.
            config.set("group.instance.id", id);
        }
        let context = Rebalances {
            inputs: topics.inputs().iter().map(|t| (*t).to_owned()).collect(),
            ..Rebalances::default()
        };
        let consumer: StreamConsumer<Rebalances> =
            crate::client_props::apply(fetch_settings(&mut config)).create_with_context(context)?;
        consumer.subscribe(&topics.inputs())?;
        Ok(Source {
            consumer,
            topics: topics.clone(),
        })
    }

    /// Waits for the next record. Cancellation-safe: dropping the future loses no record, so it can race a timer.
    pub async fn next(&self) -> Option<Polled> {
        match self.consumer.recv().await {
            Ok(message) => Some(self.decode(&message)),
            Err(e) => {
                tracing::warn!(error = %e, "consumer error");
                None
            }
        }
    }

    /// Adds whatever else arrives within `linger` to `batch`, up to `max` records. Not cancellation-safe; await it
    /// to the end.
    pub async fn fill(&self, batch: &mut Vec<Polled>, max: usize, linger: Duration) {
        let deadline = tokio::time::Instant::now() + linger;
        while batch.len() < max {
            match tokio::time::timeout_at(deadline, self.consumer.recv()).await {
                Ok(Ok(message)) => batch.push(self.decode(&message)),
                Ok(Err(e)) => tracing::warn!(error = %e, "consumer error"),
                Err(_) => break,
            }
        }
    }

    fn decode(&self, message: &rdkafka::message::BorrowedMessage<'_>) -> Polled {
        let topic = message.topic().to_owned();
        Polled {
            partition: message.partition(),
            raw: RawRecord {
                timestamp_ms: message.timestamp().to_millis(),
                traceparent: traceparent_of(message),
                kind: InputKind::of_topic(&self.topics, &topic),
                offset: message.offset(),
                key: message.key().map(<[u8]>::to_vec),
                payload: message.payload().unwrap_or_default().to_vec(),
                topic,
            },
        }
    }

    /// Marks every record up to `offsets[topic]` on `partition` as done; the next commit includes them.
    pub fn store_offsets(&self, partition: i32, offsets: &HashMap<String, i64>) {
        for (topic, offset) in offsets {
            if let Err(e) = self.consumer.store_offset(topic, partition, *offset) {
                // The partition was revoked meanwhile; its new owner replays these records.
                tracing::debug!(topic, partition, error = %e, "offset not stored");
            }
        }
    }

    /// Commits what was stored and gives up the whole assignment, answering the pending revocation. Blocks for
    /// the commit's round trip.
    pub fn release(&self) {
        release(&self.consumer);
    }

    /// Gives up a lost assignment without committing: the offsets stored for it belong to the new owner now.
    pub fn release_lost(&self) {
        if let Err(e) = self.consumer.unassign() {
            tracing::error!(error = %e, "could not release the lost assignment");
        }
    }

    /// Whether the current assignment was lost (see [`Revocation::lost`]).
    pub fn assignment_lost(&self) -> bool {
        self.consumer.assignment_lost()
    }

    /// Leaves the group and joins it again as a new member, which starts a fresh rebalance.
    pub fn rejoin(&self) -> KafkaResult<()> {
        self.consumer.unsubscribe();
        self.consumer.subscribe(&self.topics.inputs())
    }

    /// From now on a revocation is answered inside the callback (the processor is stopping).
    pub fn closing(&self) {
        self.consumer
            .context()
            .closing
            .store(true, Ordering::SeqCst);
    }

    /// Stops (`pause`) or restarts fetching every input topic of `partitions`. librdkafka drops what it had
    /// fetched for a paused partition and fetches again from the last record handed out, so after a resume the caller
    /// moves the partition back to its own position (`rewind_to_position`).
    pub fn set_paused(&self, partitions: &[i32], pause: bool) {
        let mut list = TopicPartitionList::new();
        for topic in self.topics.inputs() {
            for partition in partitions {
                list.add_partition(topic, *partition);
            }
        }
        let result = if pause {
            self.consumer.pause(&list)
        } else {
            self.consumer.resume(&list)
        };
        if let Err(e) = result {
            tracing::warn!(?partitions, pause, error = %e, "could not change the fetch state");
        }
    }

    /// The pending revocation, if any; the caller must answer it with [`Source::release`].
    pub fn take_revoked(&self) -> Option<Revocation> {
        lock(&self.consumer.context().revoked).take()
    }

    /// Where the processor stands in each input partition, for the consumer-lag gauges.
    pub fn lag(&self) -> &crate::lag::LagBook {
        &self.consumer.context().lag
    }

    pub fn take_assigned(&self) -> Vec<i32> {
        std::mem::take(&mut *lock(&self.consumer.context().assigned))
    }

    /// Low and high watermarks of one topic partition. Blocks for a broker round trip.
    pub fn watermarks(&self, topic: &str, partition: i32) -> KafkaResult<(i64, i64)> {
        self.consumer
            .fetch_watermarks(topic, partition, Duration::from_secs(5))
    }

    /// Moves the fetch position of one topic partition; records fetched before are discarded by librdkafka.
    pub fn seek(&self, topic: &str, partition: i32, offset: i64) -> KafkaResult<()> {
        self.consumer.seek(
            topic,
            partition,
            Offset::Offset(offset),
            Duration::from_secs(5),
        )
    }

    /// The broker's cluster id, when it gives one (Kafka does; every Tansu says `tansu_cluster` unless told
    /// otherwise). Known from the consumer's metadata, so this rarely waits.
    pub fn cluster_id(&self) -> Option<String> {
        self.consumer
            .client()
            .fetch_cluster_id(Duration::from_secs(5))
    }

    /// How many partitions `topic` has. Blocks for a broker round trip.
    pub fn partition_count(&self, topic: &str) -> KafkaResult<i32> {
        partition_count(&self.consumer, topic)
    }

    /// The input topics' common partition count. They must agree: a merchant's orders, refunds and GDPR requests
    /// meet in one partition actor only when every topic hashes the merchant to the same partition number, and
    /// the range assignor hands a member partitions that the shorter topics lack. Blocks for broker round trips.
    pub fn input_partitions(&self) -> Result<i32, InputTopicsError> {
        let mut counts = Vec::new();
        for topic in self.topics.inputs() {
            counts.push((topic.to_owned(), self.partition_count(topic)?));
        }
        let first = counts.first().map_or(0, |(_, n)| *n);
        if first > 0 && counts.iter().all(|(_, n)| *n == first) {
            return Ok(first);
        }
        let listed: Vec<String> = counts
            .iter()
            .map(|(topic, n)| match n {
                0 => format!("{topic}: missing"),
                n => format!("{topic}: {n}"),
            })
            .collect();
        Err(InputTopicsError::Mismatched(listed.join(", ")))
    }

    pub fn commit_stored(&self) {
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "nothing committed at shutdown");
        }
    }
}

fn release<C: ConsumerContext>(consumer: &impl Consumer<C>) {
    if let Err(e) = consumer.commit_consumer_state(CommitMode::Sync) {
        tracing::debug!(error = %e, "nothing committed before the hand-over");
    }
    if let Err(e) = consumer.unassign() {
        tracing::error!(error = %e, "could not release the assignment");
    }
}

impl Drop for Source {
    /// Dropping the consumer closes it, and closing revokes the assignment through the callback: with nobody left
    /// to snapshot, the callback must answer it itself or the close waits forever.
    fn drop(&mut self) {
        self.closing();
    }
}

/// Fetching must start at or before the first offset of the batch holding the position: Tansu 0.6 answers a fetch
/// from inside a batch with the batches after it, silently skipping the rest of that one. The processor drops
/// records below the restored position anyway, so starting earlier costs a little reading and loses nothing.
pub const REWIND: i64 = 10_000;

/// The assignment starting `REWIND` records before each committed offset (from the start without one).
fn rewound_assignment(
    consumer: &BaseConsumer<Rebalances>,
    tpl: &TopicPartitionList,
) -> TopicPartitionList {
    let committed = match consumer.committed_offsets(tpl.clone(), Duration::from_secs(5)) {
        Ok(committed) => committed,
        Err(e) => {
            tracing::warn!(error = %e, "committed offsets unknown; starting from the beginning");
            TopicPartitionList::new()
        }
    };
    let mut rewound = TopicPartitionList::new();
    for element in tpl.elements() {
        let start = match committed
            .find_partition(element.topic(), element.partition())
            .map(|e| e.offset())
        {
            Some(Offset::Offset(o)) => Offset::Offset((o - REWIND).max(0)),
            _ => Offset::Beginning,
        };
        if let Err(e) = rewound.add_partition_offset(element.topic(), element.partition(), start) {
            tracing::error!(error = %e, "could not build the assignment");
        }
    }
    rewound
}

/// How many partitions `topic` has, asked through any consumer. Blocks for a broker round trip.
pub fn partition_count<C: ConsumerContext>(
    consumer: &impl Consumer<C>,
    topic: &str,
) -> KafkaResult<i32> {
    let metadata = consumer.fetch_metadata(Some(topic), Duration::from_secs(5))?;
    Ok(metadata
        .topics()
        .first()
        .map_or(0, |t| t.partitions().len()) as i32)
}

fn lock<T>(notes: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    notes.lock().unwrap_or_else(|p| p.into_inner())
}
