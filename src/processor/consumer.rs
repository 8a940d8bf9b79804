//! The Kafka side of the processor: a consumer-group member that copies records out with their input kind, hands
//! out short batches, stores offsets when told to, and sends records the actors could not decode to the
//! dead-letter topic.
//!
//! Offsets are stored explicitly (`enable.auto.offset.store=false`) and only for records whose effects are
//! published. On assignment every partition starts from the beginning of its topics: the state a partition needs is
//! rebuilt by replaying it, until snapshots carry the offsets they cover (issue 5 of the project).

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::Duration;

use actors::{RawRecord, Rejected};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, CommitMode, Consumer, ConsumerContext, StreamConsumer};
use rdkafka::message::Message;
use rdkafka::types::RDKafkaRespErr;
use rdkafka::{ClientContext, Offset, TopicPartitionList};
use streams::outputs::dlq_headers;
use streams::sink::{EventSink, Outgoing};
use streams::{InputKind, ProduceError, Topics};

#[derive(Debug, Clone)]
pub struct ConsumerSettings {
    pub brokers: String,
    pub group_id: String,
}

#[derive(Debug)]
pub struct Polled {
    pub partition: i32,
    pub raw: RawRecord,
}

/// Receives rebalance callbacks on the consumer's thread and leaves notes for the processing loop.
#[derive(Default)]
pub struct Rebalances {
    revoked: Mutex<Vec<i32>>,
}

impl ClientContext for Rebalances {}

impl ConsumerContext for Rebalances {
    fn rebalance(
        &self,
        consumer: &BaseConsumer<Self>,
        err: RDKafkaRespErr,
        tpl: &mut TopicPartitionList,
    ) {
        match err {
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__ASSIGN_PARTITIONS => {
                let mut assignment = tpl.clone();
                for element in tpl.elements() {
                    // Replay from the start: the partition's state is rebuilt from its history.
                    let _ = assignment.set_partition_offset(
                        element.topic(),
                        element.partition(),
                        Offset::Beginning,
                    );
                }
                tracing::info!(partitions = tpl.count(), "partitions assigned");
                if let Err(e) = consumer.assign(&assignment) {
                    tracing::error!(error = %e, "could not take the assignment");
                }
            }
            RDKafkaRespErr::RD_KAFKA_RESP_ERR__REVOKE_PARTITIONS => {
                let mut revoked: Vec<i32> = tpl.elements().iter().map(|e| e.partition()).collect();
                revoked.dedup();
                tracing::info!(partitions = ?revoked, "partitions revoked");
                // Commit what was published before giving the partitions away.
                let _ = consumer.commit_consumer_state(CommitMode::Sync);
                if let Err(e) = consumer.unassign() {
                    tracing::error!(error = %e, "could not release the assignment");
                }
                self.revoked
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .extend(revoked);
            }
            other => tracing::error!(error = ?other, "rebalance failed"),
        }
    }
}

pub struct Source {
    consumer: StreamConsumer<Rebalances>,
    topics: Topics,
}

impl Source {
    pub fn new(settings: &ConsumerSettings, topics: &Topics) -> anyhow::Result<Source> {
        let consumer: StreamConsumer<Rebalances> = ClientConfig::new()
            .set("bootstrap.servers", &settings.brokers)
            .set("group.id", &settings.group_id)
            .set("enable.auto.commit", "true")
            .set("auto.commit.interval.ms", "1000")
            .set("enable.auto.offset.store", "false")
            .set("auto.offset.reset", "earliest")
            // Range assigns partition p of every topic to the same member when the topics have equal partition
            // counts, which keeps a merchant's co-partitioned topics in one partition actor.
            .set("partition.assignment.strategy", "range")
            .set("fetch.wait.max.ms", "10")
            .set("queued.max.messages.kbytes", "65536")
            .create_with_context(Rebalances::default())?;
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

    pub fn take_revoked(&self) -> Vec<i32> {
        std::mem::take(
            &mut *self
                .consumer
                .context()
                .revoked
                .lock()
                .unwrap_or_else(|p| p.into_inner()),
        )
    }

    pub fn commit_stored(&self) {
        if let Err(e) = self.consumer.commit_consumer_state(CommitMode::Sync) {
            tracing::debug!(error = %e, "nothing committed at shutdown");
        }
    }
}

/// Sends an undecodable record to `rfm.dlq` with headers saying where it came from and why.
pub async fn dead_letter(
    sink: &EventSink,
    topics: &Topics,
    partition: i32,
    rejected: &Rejected,
) -> Result<(), ProduceError> {
    let record = &rejected.record;
    let topic = record.topic.as_str();
    let (partition, offset) = (partition.to_string(), record.offset.to_string());
    tracing::warn!(topic, partition, offset, reason = %rejected.reason, "record sent to the dead-letter topic");
    metrics::counter!("processor_dead_lettered_total").increment(1);
    let key = record
        .key
        .as_deref()
        .map(String::from_utf8_lossy)
        .unwrap_or_default();
    sink.send(Outgoing {
        topic: &topics.dlq,
        key: &key,
        payload: &record.payload,
        headers: &[
            (dlq_headers::REASON, rejected.reason.as_str()),
            // Decoding is deterministic: a record that fails once fails every time, so it is not retried.
            (dlq_headers::ATTEMPTS, "1"),
            (dlq_headers::TOPIC, topic),
            (dlq_headers::PARTITION, &partition),
            (dlq_headers::OFFSET, &offset),
        ],
    })
    .await
    .map(drop)
}
