//! Reading a topic's tail to its end once: an assigned consumer (no group membership, no commits) that reads
//! chosen partitions from chosen offsets up to the end they have now. Restores read back `rfm.updated` with it.

use std::collections::BTreeMap;
use std::ffi::{CStr, CString};
use std::time::{Duration, Instant};

use rdkafka::client::Client;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{bindings, ClientContext, Offset, TopicPartitionList};

#[derive(Debug, thiserror::Error)]
pub enum TailError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the topic was not read to its end within {0:?}")]
    Timeout(Duration),
}

/// A plain consumer for assigned reads: no commits, nothing remembered between runs (`group` only names it to the
/// broker).
pub fn reader(brokers: &str, group: &str) -> Result<BaseConsumer, KafkaError> {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", group)
        .set("enable.auto.commit", "false")
        .set("auto.offset.reset", "earliest")
        .set("isolation.level", "read_uncommitted");
    crate::client_props::apply(crate::source::fetch_settings(&mut config)).create()
}

/// The high watermark that the last fetch response of `partition` carried, or `None` before the first one.
///
/// Neither ListOffsets nor end-of-partition events serve here: Tansu answers ListOffsets with the base offset of
/// the last batch (short of the end whenever producers batch), and librdkafka reports the end of a partition that
/// returned nothing on its global queue, without saying which partition it was.
pub fn fetched_high_watermark<C: ClientContext>(
    client: &Client<C>,
    topic: &CStr,
    partition: i32,
) -> Option<i64> {
    let (mut low, mut high) = (-1_i64, -1_i64);
    // SAFETY: the client pointer is live for the borrow of `client`, `topic` is NUL-terminated, and librdkafka
    // only writes the two out-parameters, which are valid for the call.
    let err = unsafe {
        bindings::rd_kafka_get_watermark_offsets(
            client.native_ptr(),
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
pub fn read_to_end(
    consumer: &BaseConsumer,
    topic: &str,
    from: &BTreeMap<i32, i64>,
    deadline: Duration,
    mut each: impl FnMut(Option<&[u8]>, &[u8]),
) -> Result<(), TailError> {
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
            fetched_high_watermark(consumer.client(), &name, *partition)
                .is_some_and(|high| *offset >= high)
        });
        if done {
            return Ok(());
        }
        if started.elapsed() > deadline {
            let marks: Vec<(i32, i64, Option<i64>)> = next
                .iter()
                .map(|(p, o)| (*p, *o, fetched_high_watermark(consumer.client(), &name, *p)))
                .collect();
            tracing::warn!(
                topic,
                ?marks,
                "not at the end: (partition, next, fetched high watermark)"
            );
            return Err(TailError::Timeout(deadline));
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
