//! State that outlives the input topics' retention and Redis: after the stream's records have left the input
//! topics (as retention deletes them) and Redis has lost everything, a restarted instance still holds every
//! customer exactly, because its snapshots are in Postgres. Before they were, the snapshot lived only in Redis:
//! the restart replayed what the topics still held, and every older order was silently gone.
//!
//! Tansu 0.6, the broker of the other tests, cannot delete records: its memory storage answers DeleteRecords with
//! a panic (`todo!()` in its dynostore engine) and never applies `retention.ms`, and its log start stays at 0. So
//! the broker here is librdkafka's mock cluster, which keeps at most 5 MB (or 100,000 batches) per partition and
//! drops the oldest batches past that, moving the log start as size-based retention does. The test writes enough
//! padding after the stream to push every record of the stream out, checks that each log now starts after them,
//! and only then restarts the instance. The mock is not Kafka: it runs inside the test process, has no
//! CreateTopics (its topics are created through its own API) and no DeleteRecords either, so time-based
//! retention on a real broker is not what is exercised, only its effect on the log.

use std::collections::BTreeMap;

use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::mocking::MockCluster;
use rdkafka::producer::{FutureProducer, FutureRecord};
use rdkafka::ClientConfig;
use serde_json::Value;

use super::outage::PrivateRedis;
use super::*;

/// Bytes of padding per record, and records per partition: together past the mock's 5 MB per partition.
const PADDING: usize = 600_000;
const PADDING_RECORDS: usize = 10;

#[actix_web::test]
async fn state_outlives_the_input_topics_retention_and_a_flushed_redis() {
    let cluster = MockCluster::new(1).expect("librdkafka's mock cluster");
    let brokers = cluster.bootstrap_servers();
    let mut scenario = Scenario::without_topics("retention", &brokers).await;
    for topic in scenario.topics.all() {
        cluster.create_topic(topic, 3, 1).expect("mock topic");
    }
    let redis = PrivateRedis::start(free_port()).await;
    scenario.use_redis(&redis.url());
    let mut instance = scenario.instance();
    let address = instance.address();
    let addresses = [address.clone()];
    instance.start();
    wait_for_snapshots_after_restore(&address).await;

    scenario.produce(&scenario.events).await;
    let now = chrono::Utc::now().timestamp();
    scenario
        .until_consumed("the stream consumed", &addresses, now)
        .await;
    // Two rounds of every partition after the stream is in: its snapshot covers the whole stream.
    let rounds = snapshot_rounds(&address).await;
    eventually(
        "snapshot rounds after the stream",
        Duration::from_secs(60),
        async || snapshot_rounds(&address).await >= rounds + 6.0,
    )
    .await;
    instance.stop();

    let ends = log_ends(&brokers, &scenario.topics).await;
    assert!(!ends.is_empty(), "the stream is on the input topics");
    pad(&brokers, &scenario, &ends).await;
    let starts = log_starts(&brokers, &ends).await;
    for (at, end) in &ends {
        assert!(
            starts[at] >= *end,
            "{at:?}: the log starts at {}, before the stream's end {end}: retention has not deleted the stream",
            starts[at]
        );
    }
    redis.flush().await;

    instance.start();
    scenario.check(&addresses).await;
    assert_eq!(
        metric(&address, "processor_snapshots_refused_total").await,
        0.0,
        "a snapshot whose last records retention deleted is trusted"
    );
}

/// The end of every input topic partition that holds records.
async fn log_ends(brokers: &str, topics: &Topics) -> BTreeMap<(String, i32), i64> {
    let inputs: Vec<String> = topics.inputs().iter().map(|t| t.to_string()).collect();
    let brokers = brokers.to_owned();
    tokio::task::spawn_blocking(move || {
        let consumer = plain_consumer(&brokers);
        let mut ends = BTreeMap::new();
        for topic in inputs {
            for partition in 0..3 {
                let (_, high) = consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                    .expect("watermarks");
                if high > 0 {
                    ends.insert((topic.clone(), partition), high);
                }
            }
        }
        ends
    })
    .await
    .expect("watermark thread")
}

/// Where each of `at`'s logs starts now.
async fn log_starts(
    brokers: &str,
    at: &BTreeMap<(String, i32), i64>,
) -> BTreeMap<(String, i32), i64> {
    let (brokers, keys): (String, Vec<(String, i32)>) =
        (brokers.to_owned(), at.keys().cloned().collect());
    tokio::task::spawn_blocking(move || {
        let consumer = plain_consumer(&brokers);
        keys.into_iter()
            .map(|(topic, partition)| {
                let (low, _) = consumer
                    .fetch_watermarks(&topic, partition, Duration::from_secs(10))
                    .expect("watermarks");
                ((topic, partition), low)
            })
            .collect()
    })
    .await
    .expect("watermark thread")
}

fn plain_consumer(brokers: &str) -> BaseConsumer {
    ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .create()
        .expect("consumer")
}

/// Appends `PADDING_RECORDS` large records to every partition in `ends`: valid events of the topic's kind for a
/// merchant of their own (so the instance applies them like any other), each in a batch of its own and
/// uncompressed, so the mock's size limit pushes out everything before them.
async fn pad(brokers: &str, scenario: &Scenario, ends: &BTreeMap<(String, i32), i64>) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers)
        .set("compression.type", "none")
        .set("message.max.bytes", "2000000")
        .create()
        .expect("producer");
    let merchant = format!("{}.myshopify.com", unique("padding-"));
    let filler = filler(PADDING);
    for (topic, partition) in ends.keys() {
        let template = scenario
            .events
            .iter()
            .find(|e| e.kind().topic(&scenario.topics) == topic)
            .expect("a stream event of the topic");
        for _ in 0..PADDING_RECORDS {
            let mut value: Value = serde_json::from_slice(&template.encode()).unwrap();
            value["merchant_id"] = Value::from(merchant.as_str());
            value["event_id"] = Value::from(unique("pad-"));
            value["padding"] = Value::from(filler.as_str());
            let payload = serde_json::to_vec(&value).unwrap();
            let record = FutureRecord::to(topic)
                .partition(*partition)
                .key(&merchant)
                .payload(&payload);
            producer
                .send(record, Duration::from_secs(10))
                .await
                .expect("padding acknowledged");
        }
    }
}

/// Text that does not compress, so every byte counts against the mock's limit.
fn filler(len: usize) -> String {
    let mut state = 0x9e37_79b9_7f4a_7c15_u64;
    (0..len)
        .map(|_| {
            state ^= state << 13;
            state ^= state >> 7;
            state ^= state << 17;
            char::from(b'a' + (state % 26) as u8)
        })
        .collect()
}
