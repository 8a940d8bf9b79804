//! Reading back what a partition's previous owner published: the `rfm.updated` records after the marks a snapshot
//! saved, up to the end of the topic. Restores use them to continue each customer's version sequence instead of
//! re-publishing versions that are already out (docs/RECOVERY.md).
//!
//! A plain assigned consumer (no group, no commits), run on a blocking thread: it reads a bounded tail once.

use std::collections::{BTreeMap, HashSet};
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use actors::PublishedVersion;
use functions::{LifecycleStage, Rfm};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{bindings, Offset, TopicPartitionList};
use streams::outputs::RfmUpdated;
use streams::MerchantId;

#[derive(Debug, thiserror::Error)]
pub enum ReadBackError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the output topic was not read to its end within {0:?}")]
    Timeout(Duration),
}

/// What to read: every partition of `topic` from its mark (the start of the partition when it has none) to the
/// high watermark seen now, keeping records of `merchants` only.
pub struct ReadBack {
    pub brokers: String,
    pub topic: String,
    pub marks: BTreeMap<i32, i64>,
    pub merchants: HashSet<MerchantId>,
    pub deadline: Duration,
}

impl ReadBack {
    pub fn run(self) -> Result<Vec<PublishedVersion>, ReadBackError> {
        let consumer = reader(&self.brokers)?;
        let partitions = super::consumer::partition_count(&consumer, &self.topic)?;
        let from: BTreeMap<i32, i64> = (0..partitions)
            .map(|p| (p, self.marks.get(&p).copied().unwrap_or(0)))
            .collect();
        let mut found = Vec::new();
        // The key is the merchant: records of the merchants other partitions own are most of the topic, and are
        // skipped without decoding their JSON.
        let names: HashSet<&str> = self
            .merchants
            .iter()
            .map(actors::outputs::record_key)
            .collect();
        let ours = |key: Option<&[u8]>| {
            key.and_then(|k| std::str::from_utf8(k).ok())
                .is_none_or(|k| names.contains(k))
        };
        read_to_end(
            &consumer,
            &self.topic,
            &from,
            self.deadline,
            |key, payload| {
                if ours(key) {
                    found.extend(self.decode(payload));
                }
            },
        )?;
        Ok(found)
    }

    /// Records of other merchants or that do not parse (written by another producer) are not ours to restore.
    fn decode(&self, payload: &[u8]) -> Option<PublishedVersion> {
        let record: RfmUpdated = serde_json::from_slice(payload).ok()?;
        if !self.merchants.contains(&record.merchant_id) {
            return None;
        }
        Some(PublishedVersion {
            customer_id: record.customer_id,
            version: record.version,
            from_segment: record.segment.from,
            occurred_at: functions::Timestamp(record.occurred_at.timestamp()),
            trace_id: record.trace_id,
            rfm: Rfm::new(
                record.score.recency,
                record.score.frequency,
                record.score.monetary,
            ),
            stage: LifecycleStage::parse(&record.lifecycle_stage)?,
            segment: record.segment.to,
            merchant: record.merchant_id,
        })
    }
}

pub(super) fn reader(brokers: &str) -> Result<BaseConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", "loyalnest-rfm-readback")
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted");
    super::consumer::fetch_settings(&mut config).create()
}

/// The high watermark that the last fetch response of `partition` carried, or `None` before the first one.
///
/// Neither ListOffsets nor end-of-partition events serve here: Tansu answers ListOffsets with the base offset of
/// the last batch (short of the end whenever producers batch), and librdkafka reports the end of a partition that
/// returned nothing on its global queue, without saying which partition it was.
pub(super) fn fetched_high_watermark(
    consumer: &BaseConsumer,
    topic: &CStr,
    partition: i32,
) -> Option<i64> {
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is live for the borrow of `consumer`, `topic` is NUL-terminated, and librdkafka
    // only writes the two out-parameters, which are valid for the call.
    let err = unsafe {
        bindings::rd_kafka_get_watermark_offsets(
            consumer.client().native_ptr(),
            topic.as_ptr(),
            partition,
            &mut low,
            &mut high,
        )
    };
    (err == bindings::rd_kafka_resp_err_t::RD_KAFKA_RESP_ERR_NO_ERROR && high >= 0).then_some(high)
}

/// Reads the partitions of `topic` in `from` with `consumer`, from those offsets to their current end, handing
/// each record's key and payload to `each`.
fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    deadline: Duration,
    mut each: impl FnMut(Option<&[u8]>, &[u8]),
) -> Result<(), ReadBackError> {
    // Per partition, the offset after the last record read (its start while there is none).
    let mut next = from.clone();
    if from.is_empty() {
        return Ok(());
    }
    let mut assignment = TopicPartitionList::new();
    for (partition, offset) in from {
        assignment.add_partition_offset(topic, *partition, Offset::Offset(*offset))?;
    }
    consumer.assign(&assignment)?;
    let name = CString::new(topic).map_err(|_| KafkaError::Subscription(topic.to_owned()))?;
    let started = Instant::now();
    loop {
        let done = next.iter().all(|(partition, offset)| {
            fetched_high_watermark(consumer, &name, *partition).is_some_and(|high| *offset >= high)
        });
        if done {
            return Ok(());
        }
        if started.elapsed() > deadline {
            let marks: Vec<(i32, i64, Option<i64>)> = next
                .iter()
                .map(|(p, o)| (*p, *o, fetched_high_watermark(consumer, &name, *p)))
                .collect();
            tracing::warn!(
                topic,
                ?marks,
                "not at the end: (partition, next, fetched high watermark)"
            );
            return Err(ReadBackError::Timeout(deadline));
        }
        match consumer.poll(Duration::from_millis(20)) {
            None => {}
            Some(Err(e)) => return Err(e.into()),
            Some(Ok(message)) => {
                next.insert(message.partition(), message.offset() + 1);
                each(message.key(), message.payload().unwrap_or_default());
            }
        }
    }
}
