//! `spawn_app()` and friends: a fresh app per test on port 0, with its own topic prefix and shop domain so tests
//! sharing one broker and one Redis never see each other's data.

use std::collections::HashMap;
use std::path::PathBuf;
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use loyalnest_rfm::configuration::Settings;
use loyalnest_rfm::shopify::hmac::sign;
use loyalnest_rfm::startup::Application;
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};
use streams::Topics;

pub const SECRET: &str = "test-secret";
pub const PREVIOUS_SECRET: &str = "old-test-secret";
pub const ENCRYPTION_KEYS: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
pub const PII_INDEX_KEY: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

pub struct TestApp {
    pub address: String,
    pub shop: String,
    pub topics: Topics,
    pub brokers: String,
    pub client: reqwest::Client,
}

/// A record read back from the broker.
#[derive(Debug)]
pub struct Record {
    pub key: String,
    pub value: serde_json::Value,
    pub raw: Vec<u8>,
    pub headers: HashMap<String, String>,
}

pub fn brokers() -> String {
    std::env::var("KAFKA_BROKERS").unwrap_or_else(|_| "127.0.0.1:9092".to_owned())
}

pub fn fixture(name: &str) -> Vec<u8> {
    let path = PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/shopify")
        .join(name);
    std::fs::read(&path).unwrap_or_else(|e| panic!("fixture {}: {e}", path.display()))
}

/// Posts `body` as a signed webhook of `topic` for `shop` to the ingress at `address`, asserts it was accepted, and
/// returns its webhook id.
pub async fn post_webhook(
    address: &str,
    shop: &streams::MerchantId,
    topic: &str,
    body: impl Into<Vec<u8>>,
) -> String {
    let (body, id) = (body.into(), unique("wh-"));
    let response = reqwest::Client::new()
        .post(format!("{address}/webhooks/shopify"))
        .header("X-Shopify-Topic", topic)
        .header("X-Shopify-Hmac-Sha256", sign(SECRET.as_bytes(), &body))
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", &id)
        .body(body)
        .send()
        .await
        .expect("the ingress answers");
    assert_eq!(response.status(), 200, "{topic} accepted");
    id
}

/// A GDPR fixture rewritten to name `shop`, as Shopify's body for that shop would.
pub fn gdpr_fixture(name: &str, shop: &str) -> Vec<u8> {
    let body = String::from_utf8(fixture(name)).expect("fixtures are UTF-8");
    body.replace("fixture-shop.myshopify.com", shop)
        .into_bytes()
}

pub fn unique(prefix: &str) -> String {
    format!(
        "{prefix}{}",
        &uuid::Uuid::new_v4().simple().to_string()[..12]
    )
}

pub async fn spawn_app() -> TestApp {
    spawn_app_with(&brokers(), &[]).await
}

/// Starts the app against `brokers`, with extra environment overrides.
/// Logs only when asked (`RUST_LOG=debug cargo test`), through the harness so they stay per test.
pub fn init_test_logs() {
    if let Ok(filter) = std::env::var("RUST_LOG") {
        let _ = tracing_subscriber::fmt()
            .with_test_writer()
            .with_env_filter(filter)
            .try_init();
    }
}

pub async fn spawn_app_with(brokers: &str, overrides: &[(&str, &str)]) -> TestApp {
    let app = spawn_app_on(brokers, overrides);
    create_topics(brokers, &app.topics).await;
    app
}

/// [`spawn_app_with`] without creating topics first: for a broker that is not there.
pub fn spawn_app_on(brokers: &str, overrides: &[(&str, &str)]) -> TestApp {
    init_test_logs();
    let prefix = unique("t");
    let prefix = format!("{prefix}.");
    let mut env: HashMap<String, String> = [
        ("HTTP_ADDR", "127.0.0.1:0"),
        ("KAFKA_BROKERS", brokers),
        ("KAFKA_TOPIC_PREFIX", prefix.as_str()),
        ("SHOPIFY_API_SECRET", SECRET),
        ("SHOPIFY_API_SECRET_PREVIOUS", PREVIOUS_SECRET),
        ("ENCRYPTION_KEYS", ENCRYPTION_KEYS),
        ("PII_INDEX_KEY", PII_INDEX_KEY),
        ("WEBHOOK_MAX_BODY_BYTES", "1048576"),
    ]
    .into_iter()
    .map(|(k, v)| (k.to_owned(), v.to_owned()))
    .collect();
    if let Ok(url) = std::env::var("REDIS_URL") {
        env.insert("REDIS_URL".into(), url);
    }
    for (k, v) in overrides {
        env.insert((*k).to_owned(), (*v).to_owned());
    }
    let settings = Settings::from_lookup(|k| env.get(k).cloned()).expect("test settings");
    let app = Application::build(&settings).expect("app starts");
    let port = app.port();
    tokio::spawn(app.run_until_stopped());
    TestApp {
        address: format!("http://127.0.0.1:{port}"),
        shop: format!("{}.myshopify.com", unique("shop-")),
        topics: settings.topics,
        brokers: brokers.to_owned(),
        client: reqwest::Client::new(),
    }
}

pub async fn create_topics(brokers: &str, topics: &Topics) {
    streams::admin::ensure_topics(brokers, topics, 1, 1)
        .await
        .expect("create topics");
}

/// A signed webhook request, the way Shopify sends it.
pub struct Webhook<'a> {
    pub topic: &'a str,
    pub body: Vec<u8>,
    pub id: String,
    pub secret: &'a str,
    /// `X-Shopify-*` when true, the prefix-less `Shopify-*` style otherwise.
    pub x_prefix: bool,
    /// A signature header to send instead of the body's HMAC under `secret` (forgery tests).
    pub signature: Option<String>,
}

impl<'a> Webhook<'a> {
    pub fn new(topic: &'a str, body: Vec<u8>) -> Self {
        Webhook {
            topic,
            body,
            id: unique("wh-"),
            secret: SECRET,
            x_prefix: true,
            signature: None,
        }
    }
}

impl TestApp {
    pub async fn post(&self, w: &Webhook<'_>) -> reqwest::Response {
        let p = if w.x_prefix { "X-Shopify-" } else { "Shopify-" };
        self.client
            .post(format!("{}/webhooks/shopify", self.address))
            .header("Content-Type", "application/json")
            .header(format!("{p}Topic"), w.topic)
            .header(
                format!("{p}Hmac-Sha256"),
                w.signature
                    .clone()
                    .unwrap_or_else(|| sign(w.secret.as_bytes(), &w.body)),
            )
            .header(format!("{p}Shop-Domain"), &self.shop)
            .header(format!("{p}Webhook-Id"), &w.id)
            .header(format!("{p}API-Version"), "2025-01")
            .body(w.body.clone())
            .send()
            .await
            .expect("request reaches the app")
    }

    /// Every `orders.create` record before a fresh marker order: what the requests under test produced there.
    pub async fn orders_before_marker(&self) -> Vec<Record> {
        let topic = self.topics.orders_create.clone();
        self.records_before_marker("orders/create", fixture("orders_create.json"), &topic)
            .await
    }

    /// Sends one more webhook (`topic`, `body`, a fresh id) as a marker and returns every record on `kafka_topic`
    /// before it. The marker lands on the same partition after the requests under test, so reading up to it shows
    /// everything those requests produced, without waiting on a clock.
    pub async fn records_before_marker(
        &self,
        topic: &str,
        body: Vec<u8>,
        kafka_topic: &str,
    ) -> Vec<Record> {
        let marker = Webhook::new(topic, body);
        assert_eq!(self.post(&marker).await.status(), 200, "marker accepted");
        let id = marker.id.clone();
        let mut records = read_records(
            &self.brokers,
            kafka_topic,
            move |r| r.value["event_id"] == id.as_str(),
            Duration::from_secs(20),
        )
        .await;
        let last = records.pop().expect("marker record");
        assert_eq!(last.value["event_id"], marker.id.as_str(), "marker arrived");
        records
    }
}

/// A consumer configuration for reading topics back: its own group, no commits.
fn reader(brokers: &str) -> ClientConfig {
    let mut config = ClientConfig::new();
    config
        .set("bootstrap.servers", brokers)
        .set("group.id", unique("reader-"))
        .set("enable.auto.commit", "false");
    config
}

/// Reads `topic` partition 0 from the beginning until `done` matches a record; panics after `timeout`.
pub async fn read_records(
    brokers: &str,
    topic: &str,
    done: impl Fn(&Record) -> bool + Send + 'static,
    timeout: Duration,
) -> Vec<Record> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = reader(&brokers).create().expect("consumer");
        let mut tpl = TopicPartitionList::new();
        tpl.add_partition_offset(&topic, 0, Offset::Beginning)
            .expect("partition");
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + timeout;
        let mut records = Vec::new();
        while Instant::now() < deadline {
            let Some(message) = consumer.poll(Duration::from_millis(100)) else {
                continue;
            };
            let record = to_record(&message.expect("record"));
            let finished = done(&record);
            records.push(record);
            if finished {
                return records;
            }
        }
        panic!(
            "{topic}: expected record not seen within {timeout:?}; read {} records",
            records.len()
        );
    })
    .await
    .expect("reader thread")
}

fn to_record(message: &rdkafka::message::BorrowedMessage<'_>) -> Record {
    let raw = message.payload().unwrap_or_default().to_vec();
    let headers = message
        .headers()
        .map(|h| {
            h.iter()
                .map(|x| {
                    (
                        x.key.to_owned(),
                        String::from_utf8_lossy(x.value.unwrap_or_default()).into_owned(),
                    )
                })
                .collect()
        })
        .unwrap_or_default();
    Record {
        key: String::from_utf8_lossy(message.key().unwrap_or_default()).into_owned(),
        value: serde_json::from_slice(&raw).unwrap_or(serde_json::Value::Null),
        raw,
        headers,
    }
}

/// Every record of every partition of `topic`, from the beginning to the end each partition has when its reader
/// gets there. The end is found by fetching (end-of-partition events), not by ListOffsets, which Tansu answers with
/// the base offset of the last batch.
pub async fn read_all_records(brokers: &str, topic: &str) -> Vec<Record> {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = reader(&brokers)
            .set("enable.partition.eof", "true")
            .create()
            .expect("consumer");
        let metadata = consumer
            .fetch_metadata(Some(&topic), Duration::from_secs(10))
            .expect("metadata");
        let mut tpl = TopicPartitionList::new();
        let mut open = std::collections::HashSet::new();
        for p in metadata.topics().iter().flat_map(|t| t.partitions()) {
            tpl.add_partition_offset(&topic, p.id(), Offset::Beginning)
                .expect("partition");
            open.insert(p.id());
        }
        consumer.assign(&tpl).expect("assign");
        let deadline = Instant::now() + Duration::from_secs(60);
        let mut records = Vec::new();
        while !open.is_empty() {
            assert!(
                Instant::now() < deadline,
                "{topic}: not read to the end within 60 s"
            );
            match consumer.poll(Duration::from_millis(100)) {
                None => {}
                Some(Err(rdkafka::error::KafkaError::PartitionEOF(p))) => {
                    open.remove(&p);
                }
                Some(Err(e)) => panic!("{topic}: {e}"),
                Some(Ok(message)) => records.push(to_record(&message)),
            }
        }
        records
    })
    .await
    .expect("reader thread")
}

/// A fresh, migrated database for one test, as zero2prod does: nothing a test writes is seen by another.
pub async fn fresh_database() -> String {
    use sqlx::Executor;
    let base = std::env::var("DATABASE_URL")
        .unwrap_or_else(|_| "postgres://postgres@127.0.0.1:5432/test".to_owned());
    let name = unique("t_");
    let admin = sqlx::PgPool::connect(&base)
        .await
        .expect("postgres reachable (DATABASE_URL)");
    admin
        .execute(format!(r#"CREATE DATABASE "{name}""#).as_str())
        .await
        .expect("create database");
    let url = match base.rsplit_once('/') {
        Some((server, _)) => format!("{server}/{name}"),
        None => panic!("DATABASE_URL has no database name"),
    };
    let store = loyalnest_rfm::store::Store::connect_lazy(&url).expect("pool");
    store.migrate().await.expect("migrations apply");
    url
}

/// The number of records on `topic`, over all its partitions (the sum of their high watermarks).
pub async fn record_count(brokers: &str, topic: &str) -> i64 {
    let (brokers, topic) = (brokers.to_owned(), topic.to_owned());
    tokio::task::spawn_blocking(move || {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", &brokers)
            .create()
            .expect("consumer");
        let timeout = Duration::from_secs(10);
        let metadata = consumer
            .fetch_metadata(Some(&topic), timeout)
            .expect("metadata");
        let partitions: Vec<i32> = metadata
            .topics()
            .iter()
            .flat_map(|t| t.partitions())
            .map(|p| p.id())
            .collect();
        partitions
            .into_iter()
            .map(|p| {
                consumer
                    .fetch_watermarks(&topic, p, timeout)
                    .expect("watermarks")
                    .1
            })
            .sum()
    })
    .await
    .expect("watermark thread")
}

/// Polls `check` until it returns true, failing after `timeout`. For waiting on another process's progress
/// (a counter, a row) — the condition is what the test waits for, not a guessed duration.
pub async fn eventually(what: &str, timeout: Duration, mut check: impl AsyncFnMut() -> bool) {
    let deadline = Instant::now() + timeout;
    while !check().await {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
}

/// A port nothing listens on now, for a private server or an instance to take.
pub fn free_port() -> u16 {
    let listener = std::net::TcpListener::bind("127.0.0.1:0").expect("a free port");
    listener.local_addr().expect("address").port()
}

/// A private Tansu broker on its own port, so stopping it does not disturb other tests.
pub struct PrivateBroker {
    pub port: u16,
    child: Option<Child>,
}

impl PrivateBroker {
    pub fn start(port: u16) -> PrivateBroker {
        let bin = std::env::var("TANSU_BIN").unwrap_or_else(|_| "tansu".to_owned());
        let url = format!("tcp://127.0.0.1:{port}");
        let child = Command::new(bin)
            .args([
                "broker",
                "--storage-engine",
                "memory://tansu/",
                "--listener-url",
                &url,
                "--advertised-listener-url",
                &url,
            ])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("tansu is installed (TANSU_BIN or PATH); .ci/run installs it");
        let deadline = Instant::now() + Duration::from_secs(15);
        while std::net::TcpStream::connect(("127.0.0.1", port)).is_err() {
            assert!(Instant::now() < deadline, "tansu did not listen on {port}");
            std::thread::sleep(Duration::from_millis(50));
        }
        PrivateBroker {
            port,
            child: Some(child),
        }
    }

    pub fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }

    /// SIGSTOP (`freeze`) or SIGCONT: a broker that stops answering and later answers again, with its log intact
    /// (its storage is memory, so a restart would lose it).
    pub fn set_frozen(&self, frozen: bool) {
        if let Some(child) = &self.child {
            let signal = if frozen { "-STOP" } else { "-CONT" };
            let sent = Command::new("kill")
                .args([signal, &child.id().to_string()])
                .status();
            assert!(sent.is_ok_and(|s| s.success()), "kill {signal}");
        }
    }

    pub fn address(&self) -> String {
        format!("127.0.0.1:{}", self.port)
    }
}

impl Drop for PrivateBroker {
    fn drop(&mut self) {
        self.stop();
    }
}
