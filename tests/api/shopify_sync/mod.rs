//! Shopify write-back (issue 19) against the real binary, Tansu, Postgres and the Admin API stand-in: the stand-in
//! runs in the test process (so the test can read what was written and how deep the bucket was drawn), the
//! binary is started with `SHOPIFY_ADMIN_URL` pointing at it.

mod crash;
mod discount;
mod flow;
mod load;
mod race;

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use loyalnest_rfm::shopify::standin::StandinOptions;
use loyalnest_rfm::shopify::standin::{self as server, Standin};
use rdkafka::config::ClientConfig;
use rdkafka::producer::{FutureProducer, FutureRecord};
use serde_json::{json, Value};
use streams::{MerchantId, Topics};

use crate::helpers::{brokers, free_port, unique, ENCRYPTION_KEYS, PII_INDEX_KEY, SECRET};
use crate::live::{token, API_KEY};

/// The stand-in with the test app's credentials.
pub fn standin(configure: impl FnOnce(&mut StandinOptions)) -> Standin {
    let mut options = StandinOptions::new(API_KEY, SECRET);
    configure(&mut options);
    server::start(options, "127.0.0.1:0").expect("the stand-in starts")
}

/// The binary under test, killed when dropped.
pub struct Binary {
    pub env: Vec<(&'static str, String)>,
    pub role: &'static str,
    pub address: String,
    child: Option<Child>,
    log: String,
}

impl Binary {
    /// One instance on fresh topics (`prefix`) and `database`, talking to the stand-in at `admin`.
    pub fn new(role: &'static str, prefix: &str, database: &str, admin: &str) -> Binary {
        let port = free_port();
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Binary {
            env: vec![
                ("SHOPIFY_API_SECRET", SECRET.to_owned()),
                ("SHOPIFY_API_KEY", API_KEY.to_owned()),
                ("ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
                ("PII_INDEX_KEY", PII_INDEX_KEY.to_owned()),
                ("KAFKA_BROKERS", brokers()),
                ("KAFKA_TOPIC_PREFIX", prefix.to_owned()),
                ("KAFKA_GROUP_ID", unique("g-")),
                ("SYNC_GROUP_ID", unique("sync-")),
                ("KAFKA_CREATE_TOPICS", "false".into()),
                ("API_RATE_PER_SHOP", "0".into()),
                ("DATABASE_URL", database.to_owned()),
                ("REDIS_URL", redis),
                ("SHOPIFY_ADMIN_URL", admin.to_owned()),
                ("HTTP_ADDR", format!("127.0.0.1:{port}")),
            ],
            role,
            address: format!("http://127.0.0.1:{port}"),
            child: None,
            log: format!("artifacts/shopify-sync-{role}-{port}.log"),
        }
    }

    pub fn start(&mut self) {
        std::fs::create_dir_all("artifacts").expect("artifacts");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open(&self.log)
            .expect("log");
        // `LOYALNEST_RFM_BIN` runs a copy of the binary: a target directory shared by several worktrees may
        // have rebuilt the one cargo names from another checkout by the time the test runs.
        let program = std::env::var("LOYALNEST_RFM_BIN")
            .unwrap_or_else(|_| env!("CARGO_BIN_EXE_loyalnest-rfm").to_owned());
        let child = Command::new(program)
            .args(["serve", "--role", self.role])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
    }

    /// SIGKILL: no shutdown hook, no last commit.
    pub fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }

    /// SIGTERM, as an orchestrator stops an instance; returns whether the process exited 0.
    pub fn terminate(&mut self) -> bool {
        let Some(mut child) = self.child.take() else {
            return false;
        };
        let sent = Command::new("kill")
            .args(["-TERM", &child.id().to_string()])
            .status()
            .expect("kill runs");
        assert!(sent.success(), "SIGTERM sent");
        child.wait().expect("reap").success()
    }

    /// Waits for `/health` to answer.
    pub async fn wait_healthy(&self) {
        let url = format!("{}/health", self.address);
        crate::helpers::eventually(
            "the binary to answer /health",
            Duration::from_secs(60),
            async || reqwest::get(&url).await.is_ok_and(|r| r.status() == 200),
        )
        .await;
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// Installs `shop` through `POST /api/v1/shop/install` of the app at `address` (token exchange with the
/// stand-in); returns the answer's body.
pub async fn install(address: &str, shop: &MerchantId) -> Value {
    let response = reqwest::Client::new()
        .post(format!("{address}/api/v1/shop/install"))
        .bearer_auth(token(shop))
        .send()
        .await
        .expect("the app answers");
    let status = response.status();
    let body: Value = response.json().await.expect("JSON");
    assert_eq!(status, 200, "installed: {body}");
    body
}

/// An in-process ingress on `database` pointed at the stand-in, for installs in tests that run `--role sync`.
pub fn ingress(database: &str, admin: &str, prefix: &str) -> String {
    let settings = crate::live::test_settings(&[
        ("DATABASE_URL", database.to_owned()),
        ("SHOPIFY_ADMIN_URL", admin.to_owned()),
        ("ENCRYPTION_KEYS", ENCRYPTION_KEYS.to_owned()),
        ("PII_INDEX_KEY", PII_INDEX_KEY.to_owned()),
        ("KAFKA_TOPIC_PREFIX", prefix.to_owned()),
        ("API_RATE_PER_SHOP", "0".to_owned()),
    ]);
    let app = loyalnest_rfm::startup::Application::build(&settings).expect("ingress starts");
    let address = format!("http://127.0.0.1:{}", app.port());
    tokio::spawn(app.run_until_stopped());
    address
}

/// An `rfm.updated` record of `customer` at `version`; the values encode the version, so what the stand-in
/// stored tells which version it came from.
pub fn update(shop: &MerchantId, customer: u64, version: u32) -> Value {
    json!({
        "event_id": format!("rfm.updated:{shop}:{customer}:{version}"),
        "schema_version": 1,
        "merchant_id": shop.as_str(),
        "customer_id": customer,
        "version": version,
        "segment": { "from": "other", "to": segment_of(customer, version) },
        "score": { "recency": 3, "frequency": 3, "monetary": 3, "score": version as f64 / 10.0 },
        "lifecycle_stage": stage_of(version),
        "occurred_at": chrono::Utc::now().to_rfc3339(),
        "trace_id": "t",
    })
}

pub fn segment_of(customer: u64, version: u32) -> String {
    ["champions", "loyal", "at_risk", "new", "hibernating"]
        [((customer + version as u64) % 5) as usize]
        .to_owned()
}

pub fn stage_of(version: u32) -> String {
    format!("stage-v{version}")
}

/// The version a stored stage came from.
pub fn version_of_stage(stage: &str) -> u32 {
    stage
        .strip_prefix("stage-v")
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("a stage the test wrote: {stage}"))
}

/// Produces `records` to `rfm.updated`, keyed by shop like the processor does, and waits for every
/// acknowledgement.
pub async fn produce(topics: &Topics, records: &[Value]) {
    let producer: FutureProducer = ClientConfig::new()
        .set("bootstrap.servers", brokers())
        .set("linger.ms", "20")
        .set("message.timeout.ms", "120000")
        .set("queue.buffering.max.messages", "1000000")
        .create()
        .expect("producer");
    for chunk in records.chunks(10_000) {
        let mut waiting = Vec::with_capacity(chunk.len());
        for record in chunk {
            let payload = record.to_string();
            let key = record["merchant_id"].as_str().unwrap_or("").to_owned();
            let future = producer
                .send_result(
                    FutureRecord::to(&topics.rfm_updated)
                        .key(&key)
                        .payload(&payload),
                )
                .map_err(|(e, _)| e)
                .expect("queued");
            waiting.push(future);
        }
        for delivery in waiting {
            delivery
                .await
                .expect("not cancelled")
                .expect("acknowledged");
        }
    }
}

/// Fresh topics under a new prefix; returns the prefix and the names.
pub async fn fresh_topics() -> (String, Topics) {
    let prefix = format!("{}.", unique("s"));
    let topics = Topics::with_prefix(&prefix);
    streams::admin::ensure_topics(&brokers(), &topics, 1, 1)
        .await
        .expect("topics");
    (prefix, topics)
}

pub fn shop() -> MerchantId {
    crate::live::shop()
}

/// Every version the stand-in stored for `customer`, in the order written (each from its stage value).
pub fn written_versions(standin: &Standin, shop: &MerchantId, customer: u64) -> Vec<u32> {
    standin.state.with_shop(shop.as_str(), |s| {
        s.history
            .get(&customer)
            .into_iter()
            .flatten()
            .filter_map(|call| call.iter().find(|(k, _)| k == "rfm_stage"))
            .map(|(_, stage)| version_of_stage(stage))
            .collect()
    })
}
