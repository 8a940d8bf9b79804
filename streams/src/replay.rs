//! `loyalnest-rfm replay-dlq`: re-injects dead-lettered records into the topic they came from, after the cause was
//! fixed (a deploy that understands a new schema version, a corrected producer).
//!
//! It reads `rfm.dlq` as its own consumer group, so each dead-lettered record is replayed once however often the
//! command runs, produces each record back with its original key, commits, and stops at the end the topic had when
//! it started. A record that still cannot be processed is dead-lettered again by the processor.

use std::collections::HashMap;
use std::ffi::CString;
use std::time::Duration;

use rdkafka::config::ClientConfig;
use rdkafka::consumer::{CommitMode, Consumer, StreamConsumer};
use rdkafka::error::KafkaError;
use rdkafka::message::{Headers, Message};

use crate::outputs::dlq_headers;
use crate::sink::{EventSink, Outgoing};
use crate::tail::fetched_high_watermark;
use crate::{ProduceError, Topics};

#[derive(Debug, thiserror::Error)]
pub enum ReplayError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error(transparent)]
    Produce(#[from] ProduceError),
}

#[derive(Debug, Default, serde::Serialize)]
pub struct ReplayReport {
    pub replayed: u64,
    /// Records without an original-topic header; left in place and counted.
    pub skipped: u64,
}

/// Replays until the dead-letter topic has nothing new for `idle`.
pub async fn replay_dlq(
    brokers: &str,
    group_id: &str,
    topics: &Topics,
    sink: &EventSink,
    idle: Duration,
) -> Result<ReplayReport, ReplayError> {
    let consumer: StreamConsumer = crate::client_props::apply(
        ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", group_id)
            .set("enable.auto.commit", "false")
            .set("auto.offset.reset", "earliest"),
    )
    .create()?;
    consumer.subscribe(&[topics.dlq.as_str()])?;
    let dlq = CString::new(topics.dlq.as_str())
        .map_err(|_| KafkaError::Subscription(topics.dlq.clone()))?;
    // Replay only what was dead-lettered before we started: a record that fails again lands behind this mark and
    // must not be replayed in a loop. The mark of each partition is the high watermark of the first fetch that
    // brought its records (taken before anything was replayed); ListOffsets would do on Kafka, but Tansu answers it
    // with the last batch's base offset, short of the end when letters were batched together.
    let mut ends: HashMap<i32, i64> = HashMap::new();
    let mut report = ReplayReport::default();
    loop {
        let Ok(polled) = tokio::time::timeout(idle, consumer.recv()).await else {
            break;
        };
        let message = polled?;
        let partition = message.partition();
        let end = *ends.entry(partition).or_insert_with(|| {
            fetched_high_watermark(consumer.client(), &dlq, partition)
                .unwrap_or(message.offset() + 1)
        });
        if message.offset() >= end {
            continue;
        }
        let header = |name: &str| {
            message.headers().and_then(|h| {
                h.iter()
                    .find(|x| x.key == name)
                    .and_then(|x| x.value)
                    .map(|v| String::from_utf8_lossy(v).into_owned())
            })
        };
        match header(dlq_headers::TOPIC) {
            None => report.skipped += 1,
            Some(topic) => {
                let key = message
                    .key()
                    .map(String::from_utf8_lossy)
                    .unwrap_or_default();
                sink.send(Outgoing {
                    topic: &topic,
                    key: &key,
                    payload: message.payload().unwrap_or_default(),
                    headers: &[("replayed_from", topics.dlq.as_str())],
                })
                .await?;
                report.replayed += 1;
            }
        }
        // Committed after the record is back on its topic: a crash replays at most this one record twice.
        consumer.commit_message(&message, CommitMode::Sync)?;
    }
    Ok(report)
}
