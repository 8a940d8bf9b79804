//! The Kafka producer every component writes through: idempotent, `acks=all`, keyed by merchant, and bounded in
//! time so a caller (the webhook ingress) can answer Shopify within its 5 s budget whether or not Kafka is up.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, RwLock};
use std::time::{Duration, Instant};

use rdkafka::config::ClientConfig;
use rdkafka::error::{KafkaError, RDKafkaErrorCode};
use rdkafka::message::{Header, OwnedHeaders};
use rdkafka::producer::{FutureProducer, FutureRecord, Producer};
use rdkafka::util::Timeout;

/// The broker's acknowledgement of one enqueued record, as `EventSink::enqueue` returns it.
pub use rdkafka::producer::DeliveryFuture;

/// How much longer than the delivery timeout [`EventSink::send`] waits before it gives up on its own. librdkafka
/// has normally expired the record by then, so a record given up on is rarely delivered afterwards (and if it is,
/// the retry is a duplicate the consumer absorbs).
pub const EXPIRY_SLACK: Duration = Duration::from_millis(1_000);

/// The longest a produce request waits for its answer before librdkafka tries it again (within the delivery
/// timeout, which bounds the record as a whole).
const REQUEST_TIMEOUT_MAX: Duration = Duration::from_secs(10);

/// Settings for [`EventSink`]; `build()` turns them into a connected producer.
#[derive(Debug, Clone)]
pub struct SinkConfig {
    pub brokers: String,
    /// How long a record may wait for the broker's acknowledgement before the send fails. Shopify gives us 5 s in
    /// total, so the ingress default leaves room for the rest of the request.
    pub delivery_timeout: Duration,
    /// Time librdkafka waits to fill a batch. A few milliseconds buys much larger batches under load.
    pub linger: Duration,
    /// Extra librdkafka properties (`security.protocol`, `sasl.*`, …), applied last.
    pub extra: Vec<(String, String)>,
}

impl SinkConfig {
    pub fn new(brokers: impl Into<String>) -> Self {
        SinkConfig {
            brokers: brokers.into(),
            delivery_timeout: Duration::from_millis(3_000),
            linger: Duration::from_millis(2),
            extra: Vec::new(),
        }
    }

    pub fn client_config(&self) -> ClientConfig {
        let mut config = ClientConfig::new();
        config
            .set("bootstrap.servers", &self.brokers)
            .set("enable.idempotence", "true")
            .set("acks", "all")
            // The same partitioner as the Java client, so other LoyalNest producers put a merchant on the same
            // partition we do.
            .set("partitioner", "murmur2_random")
            .set("compression.type", "lz4")
            .set("linger.ms", self.linger.as_millis().to_string())
            .set(
                "message.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set(
                "request.timeout.ms",
                self.delivery_timeout.as_millis().max(1).to_string(),
            )
            .set("socket.keepalive.enable", "true");
        // The client's own limit on a request: with a long delivery window (the processor's), one lost on a
        // half-open connection must time out well before its records do, so the idempotent producer retries it
        // inside the window instead of the caller resending a duplicate once the window is over
        // (`request.timeout.ms` is only what the broker is asked to wait for the replicas). A short window (the
        // ingress's) already bounds its produce requests.
        if self.delivery_timeout > REQUEST_TIMEOUT_MAX {
            config.set(
                "socket.timeout.ms",
                REQUEST_TIMEOUT_MAX.as_millis().to_string(),
            );
        }
        for (key, value) in &self.extra {
            config.set(key, value);
        }
        crate::client_props::apply(&mut config);
        config
    }

    pub fn build(&self) -> Result<EventSink, ProduceError> {
        Ok(EventSink {
            producer: Arc::new(RwLock::new(self.create_producer()?)),
            config: self.clone(),
            health: Arc::new(Health {
                epoch: Instant::now(),
                last_delivery_ms: AtomicU64::new(0),
                last_replaced_ms: AtomicU64::new(0),
            }),
        })
    }

    fn create_producer(&self) -> Result<FutureProducer, ProduceError> {
        self.client_config().create().map_err(ProduceError::Client)
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ProduceError {
    #[error("could not create the Kafka producer: {0}")]
    Client(#[source] KafkaError),
    #[error("Kafka did not acknowledge the record: {0}")]
    NotDelivered(#[source] KafkaError),
}

/// Where a record landed.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Delivered {
    pub partition: i32,
    pub offset: i64,
}

/// One record to write.
#[derive(Debug, Clone, Copy)]
pub struct Outgoing<'a> {
    pub topic: &'a str,
    pub key: &'a str,
    pub payload: &'a [u8],
    pub headers: &'a [(&'a str, &'a str)],
}

/// A producer that replaces itself when it is stuck. An idempotent producer can wedge when the broker loses its
/// producer state (a broker restored from nothing, a topic deleted and recreated): it keeps retrying sequence
/// numbers the broker no longer knows, and every later webhook would be refused. A fresh producer asks for a new
/// producer id. Replacing is only done after a fatal error, or when nothing at all was delivered for two delivery
/// timeouts, so a healthy producer with one slow record is left alone.
#[derive(Clone)]
pub struct EventSink {
    producer: Arc<RwLock<FutureProducer>>,
    config: SinkConfig,
    health: Arc<Health>,
}

/// Milliseconds since `epoch` of the last delivery and of the last replacement.
struct Health {
    epoch: Instant,
    last_delivery_ms: AtomicU64,
    last_replaced_ms: AtomicU64,
}

impl Health {
    fn now_ms(&self) -> u64 {
        self.epoch.elapsed().as_millis() as u64
    }
}

impl EventSink {
    /// Sends one record and waits for the broker's acknowledgement (all in-sync replicas), at most the delivery
    /// timeout plus [`EXPIRY_SLACK`].
    pub async fn send(&self, record: Outgoing<'_>) -> Result<Delivered, ProduceError> {
        let future = future_record(&record);
        let producer = self.producer();
        // A full local queue waits at most the delivery timeout as well. librdkafka expires a record only when it
        // next scans its queues (about once a second), so the wait is also capped here: a caller with a deadline
        // of its own (Shopify's 5 s) is answered in time whatever the broker is doing.
        let sent = producer.send(future, Timeout::After(self.config.delivery_timeout));
        let cap = self.config.delivery_timeout + EXPIRY_SLACK;
        let outcome = match tokio::time::timeout(cap, sent).await {
            Ok(Ok(delivered)) => Ok(delivered),
            Ok(Err((e, _))) => Err(e),
            Err(_) => Err(KafkaError::MessageProduction(
                RDKafkaErrorCode::MessageTimedOut,
            )),
        };
        let result = match outcome {
            Ok(d) => {
                self.health
                    .last_delivery_ms
                    .store(self.health.now_ms(), Ordering::Relaxed);
                Ok(Delivered {
                    partition: d.partition,
                    offset: d.offset,
                })
            }
            Err(e) => {
                tracing::debug!(error = %e, topic = record.topic, "record not delivered");
                self.replace_if_stuck(&producer);
                Err(ProduceError::NotDelivered(e))
            }
        };
        self.release(producer);
        result
    }

    /// Drops this call's handle on the producer. When the producer was replaced meanwhile, this may be the last
    /// handle, and destroying it blocks (see `replace_if_stuck`), so that happens on a thread of its own.
    fn release(&self, producer: FutureProducer) {
        if self.producer().client().native_ptr() != producer.client().native_ptr() {
            retire(producer);
        }
    }

    /// Hands a record to the producer's queue without waiting, keeping the order of calls; the returned future
    /// resolves with the broker's acknowledgement. Fails at once when the local queue is full.
    pub fn enqueue(&self, record: Outgoing<'_>) -> Result<DeliveryFuture, ProduceError> {
        let future = future_record(&record);
        self.producer()
            .send_result(future)
            .map_err(|(e, _)| ProduceError::NotDelivered(e))
    }

    fn producer(&self) -> FutureProducer {
        self.producer
            .read()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }

    fn replace_if_stuck(&self, failed: &FutureProducer) {
        let fatal = failed.client().fatal_error();
        let now = self.health.now_ms();
        let quiet_for = now.saturating_sub(self.health.last_delivery_ms.load(Ordering::Relaxed));
        let since_replaced =
            now.saturating_sub(self.health.last_replaced_ms.load(Ordering::Relaxed));
        let window = 2 * self.config.delivery_timeout.as_millis() as u64;
        if fatal.is_none() && (quiet_for < window || since_replaced < window) {
            return;
        }
        let mut slot = self.producer.write().unwrap_or_else(|p| p.into_inner());
        if slot.client().native_ptr() != failed.client().native_ptr() {
            return; // another request replaced it while we waited for the lock
        }
        match self.config.create_producer() {
            Ok(fresh) => {
                tracing::warn!(fatal = ?fatal, quiet_ms = quiet_for, "Kafka producer stuck; replaced it");
                metrics::counter!(crate::metric_names::PRODUCER_REPLACED).increment(1);
                let stuck = std::mem::replace(&mut *slot, fresh);
                // Destroying a librdkafka handle waits for its broker threads, which can take seconds against a
                // dead broker; that must block neither this lock nor the caller's async worker.
                retire(stuck);
                self.health
                    .last_replaced_ms
                    .store(self.health.now_ms(), Ordering::Relaxed);
            }
            Err(e) => tracing::error!(error = %e, "could not replace the stuck Kafka producer"),
        }
    }

    /// Waits for queued records; part of an orderly shutdown.
    pub fn flush(&self, timeout: Duration) -> Result<(), ProduceError> {
        self.producer()
            .flush(Timeout::After(timeout))
            .map_err(ProduceError::NotDelivered)
    }

    /// Whether a broker answers a metadata request for `topic`, for readiness probes. One topic, not the whole
    /// cluster's metadata, so a probe stays cheap on a cluster with many topics.
    pub fn broker_reachable(&self, topic: &str, timeout: Duration) -> bool {
        self.producer()
            .client()
            .fetch_metadata(Some(topic), Timeout::After(timeout))
            .map(|m| !m.brokers().is_empty())
            .unwrap_or(false)
    }
}

/// Destroys retired producer handles on one thread of its own: destroying a librdkafka handle waits for its broker
/// threads, which can take seconds against a dead broker, and must block neither a lock nor an async worker. One
/// thread, fed by a channel, however many in-flight sends held the retired producer; if it cannot be started, the
/// handle is dropped where it is.
fn retire(producer: FutureProducer) {
    static REAPER: std::sync::OnceLock<Option<std::sync::mpsc::Sender<FutureProducer>>> =
        std::sync::OnceLock::new();
    let reaper = REAPER.get_or_init(|| {
        let (tx, rx) = std::sync::mpsc::channel::<FutureProducer>();
        std::thread::Builder::new()
            .name("kafka-producer-reaper".into())
            .spawn(move || rx.into_iter().for_each(drop))
            .ok()
            .map(|_| tx)
    });
    match reaper {
        Some(tx) => {
            if let Err(returned) = tx.send(producer) {
                drop(returned.0);
            }
        }
        None => drop(producer),
    }
}

fn future_record<'a>(record: &Outgoing<'a>) -> FutureRecord<'a, str, [u8]> {
    let headers = record
        .headers
        .iter()
        .fold(OwnedHeaders::new(), |h, (key, value)| {
            h.insert(Header {
                key,
                value: Some(*value),
            })
        });
    FutureRecord::to(record.topic)
        .key(record.key)
        .payload(record.payload)
        .headers(headers)
}
