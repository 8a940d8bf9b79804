//! Recovery of the real binary, run as separate processes: killed with SIGKILL (`crash`), or sharing the group
//! with other instances that stop and start (`rebalance`). A checker that shares no code with the engine then
//! requires every customer's aggregates to equal the oracle (nothing lost, nothing counted twice), every
//! `(customer, version)` to appear once on `rfm.updated`, each customer's last published segment to be the
//! oracle's, and every delta row to agree with the record of its version.

mod broker_outage;
mod checks;
mod crash;
mod erasure_proof;
mod graceful;
mod idle_rounds;
mod outage;
mod postgres_outage;
mod rebalance;
mod redis_cluster;
mod retention;
mod split;
mod stale_incarnation;

use std::collections::HashMap;
use std::fs::OpenOptions;
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use sqlx::PgPool;
use streams::sink::Outgoing;
use streams::{InputEvent, MerchantId, SinkConfig, Topics};

use crate::helpers::{
    brokers, eventually, free_port, fresh_database, read_all_records, unique, Record, SECRET,
};
use crate::live::{token, API_KEY};
use crate::processor::{script, CustomerTruth};
use checks::{check_delta_rows, check_versions_unique, missing_delta_rows, until_agreed};

const SNAPSHOT_MS: u64 = 600;

/// How long the group waits for a silent member. Short, so a killed member's partitions move quickly; not shorter,
/// because on two loaded cores Tansu 0.6 then expires members between heartbeats, and a group that churns like that
/// can end with its only member never assigned again (docs/RECOVERY.md, Tansu notes).
const SESSION_TIMEOUT_MS: u64 = 10_000;

/// Where a customer with no published change stands: R1 F1 M1 under the default rules.
const INITIAL_SEGMENT: &str = "inactive";

/// Fresh topics (3 partitions), group, database, merchants and the scripted stream with its oracle.
struct Scenario {
    /// The broker of this scenario's topics and instances.
    brokers: String,
    topics: Topics,
    database: String,
    env: Vec<(&'static str, String)>,
    merchants: Vec<MerchantId>,
    events: Vec<InputEvent>,
    truth: HashMap<(String, u64), CustomerTruth>,
}

impl Scenario {
    async fn new(name: &str) -> Scenario {
        Scenario::on_broker(name, &brokers()).await
    }

    /// A scenario whose topics and instances live on `broker` (a private one the test may stop).
    async fn on_broker(name: &str, broker: &str) -> Scenario {
        let scenario = Scenario::without_topics(name, broker).await;
        streams::admin::ensure_topics(broker, &scenario.topics, 3, 1)
            .await
            .unwrap();
        scenario
    }

    /// A scenario on `broker` whose topics (3 partitions each) the caller creates: librdkafka's mock cluster has
    /// no CreateTopics.
    async fn without_topics(name: &str, broker: &str) -> Scenario {
        crate::helpers::init_test_logs();
        let prefix = format!("{}.", unique(name));
        let topics = Topics::with_prefix(&prefix);
        let database = fresh_database().await;
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        let env = vec![
            ("SHOPIFY_API_SECRET", SECRET.to_owned()),
            ("SHOPIFY_API_KEY", API_KEY.to_owned()),
            ("KAFKA_BROKERS", broker.to_owned()),
            ("KAFKA_TOPIC_PREFIX", prefix),
            ("KAFKA_GROUP_ID", unique(&format!("{name}-g-"))),
            ("KAFKA_CREATE_TOPICS", "false".into()),
            // A killed member's partitions move when its session expires; keep that short.
            ("KAFKA_SESSION_TIMEOUT_MS", SESSION_TIMEOUT_MS.to_string()),
            ("SNAPSHOT_INTERVAL_MS", SNAPSHOT_MS.to_string()),
            // The checks read every customer of a shop through the API, far faster than a merchant would.
            ("API_RATE_PER_SHOP", "0".into()),
            ("DATABASE_URL", database.clone()),
            ("REDIS_URL", redis),
            // What the instances log, for diagnosing a failure: their RUST_LOG and librdkafka debug contexts.
            (
                "RUST_LOG",
                std::env::var("INSTANCE_LOG").unwrap_or_else(|_| "info".into()),
            ),
            (
                "KAFKA_DEBUG",
                std::env::var("INSTANCE_KAFKA_DEBUG").unwrap_or_default(),
            ),
        ];
        let merchants: Vec<MerchantId> = (0..4)
            .map(|i| MerchantId::parse(&format!("{}-{i}.myshopify.com", unique(name))).unwrap())
            .collect();
        let (events, truth) = script(&merchants);
        Scenario {
            brokers: broker.to_owned(),
            topics,
            database,
            env,
            merchants,
            events,
            truth,
        }
    }

    /// Points instances started from now on at another Redis.
    fn use_redis(&mut self, url: &str) {
        self.set_env("REDIS_URL", url);
    }

    /// Points instances started from now on, and the checks, at another Postgres.
    fn use_database(&mut self, url: &str) {
        self.set_env("DATABASE_URL", url);
        self.database = url.to_owned();
    }

    /// Sets (or adds) one variable for instances started from now on.
    fn set_env(&mut self, name: &'static str, to: &str) {
        match self.env.iter_mut().find(|(key, _)| *key == name) {
            Some((_, value)) => *value = to.to_owned(),
            None => self.env.push((name, to.to_owned())),
        }
    }

    /// An instance of the binary in this scenario's group, on its own port, not started yet.
    fn instance(&self) -> Instance {
        Instance {
            env: self.env.clone(),
            role: "all",
            port: free_port(),
            child: None,
            starts: 0,
        }
    }

    async fn produce(&self, events: &[InputEvent]) {
        produce(&self.brokers, &self.topics, events).await;
    }

    /// The stream in thirds, and a started instance that has taken the first third and snapshotted it.
    async fn first_third_snapshotted(&self) -> (Instance, Vec<&[InputEvent]>) {
        let parts: Vec<&[InputEvent]> = self.events.chunks(self.events.len().div_ceil(3)).collect();
        let mut instance = self.instance();
        instance.start();
        wait_for_snapshots_after_restore(&instance.address()).await;
        self.produce(parts[0]).await;
        wait_for_snapshots_after_restore(&instance.address()).await;
        (instance, parts)
    }

    /// The whole check, once the stream is in: served state, published segments, then versions and rows.
    async fn check(&self, addresses: &[String]) {
        self.check_state_and_outputs(addresses).await;
        // Rows first: each row's record was acknowledged before the row was written, so it is in the read after.
        let db = PgPool::connect(&self.database).await.unwrap();
        let rows: Vec<(String, i64, i32, String)> = sqlx::query_as(
            "SELECT merchant_id, customer_id, version, to_segment FROM rfm_segment_deltas",
        )
        .fetch_all(&db)
        .await
        .unwrap();
        let records = read_all_records(&self.brokers, &self.topics.rfm_updated).await;
        check_versions_unique(&records);
        check_delta_rows(rows, &records);
        // And the other way: every published move has its row, also when the process died between the broker's
        // acknowledgement and the database write (the next owner rewrites what it reads back).
        until_agreed(
            "every published segment move written to rfm_segment_deltas",
            Duration::from_secs(60),
            20,
            async || missing_delta_rows(&db, &records).await,
        )
        .await;
    }
}

/// The binary under test with one fixed environment, restarted on the same port after each kill.
struct Instance {
    env: Vec<(&'static str, String)>,
    /// `serve --role`: `all` unless a test splits the deployment.
    role: &'static str,
    port: u16,
    child: Option<Child>,
    starts: u32,
}

impl Instance {
    fn start(&mut self) {
        let log = OpenOptions::new()
            .create(true)
            .append(true)
            .open(format!("artifacts/recovery-instance-{}.log", self.port))
            .expect("instance log");
        let child = Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
            .args(["serve", "--role", self.role])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .env("HTTP_ADDR", format!("127.0.0.1:{}", self.port))
            .stdout(Stdio::from(log.try_clone().expect("log handle")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
        self.starts += 1;
    }

    fn pid(&self) -> Option<u32> {
        self.child.as_ref().map(Child::id)
    }

    fn address(&self) -> String {
        format!("http://127.0.0.1:{}", self.port)
    }

    /// SIGTERM: the graceful stop an orchestrator sends; the instance snapshots and commits before it exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
            child.wait().expect("reap");
        }
    }

    fn kill_9(&mut self) {
        if let Some(mut child) = self.child.take() {
            // `Child::kill` is SIGKILL on Unix: no shutdown hook, no final snapshot, no commit.
            child.kill().expect("kill");
            child.wait().expect("reap");
        }
    }
}

impl Drop for Instance {
    fn drop(&mut self) {
        self.kill_9();
    }
}

/// A small deterministic generator, seeded from the clock and printed, so a failing schedule can be re-run.
fn rng() -> impl FnMut(u64) -> u64 {
    let seed = std::env::var("CRASH_SEED")
        .ok()
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| chrono::Utc::now().timestamp_micros() as u64);
    eprintln!("crash test seed: CRASH_SEED={seed}");
    let mut state = seed | 1;
    move |n| {
        state ^= state << 13;
        state ^= state >> 7;
        state ^= state << 17;
        state % n
    }
}

/// One Prometheus sample of the instance, 0 when absent.
async fn metric(address: &str, name: &str) -> f64 {
    let Ok(answer) = reqwest::get(format!("{address}/metrics")).await else {
        return 0.0;
    };
    let text = answer.text().await.unwrap_or_default();
    text.lines()
        .find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        })
        .unwrap_or(0.0)
}

/// Snapshot rounds of the instance's partitions, written or skipped because the store already held that state: after
/// N of each following an event, the store holds the state with that event.
async fn snapshot_rounds(address: &str) -> f64 {
    metric(address, "rfm_snapshots_total{outcome=\"written\"}").await
        + metric(address, "rfm_snapshots_total{outcome=\"unchanged\"}").await
}

/// Waits until the running instance has restored its partitions and then snapshotted each (or found the store
/// holding its state already).
async fn wait_for_snapshots_after_restore(address: &str) {
    eventually("restores to finish", Duration::from_secs(60), async || {
        snapshot_rounds(address).await > 0.0
            && metric(address, "processor_partitions_restoring").await == 0.0
    })
    .await;
    let before = snapshot_rounds(address).await;
    eventually(
        "a snapshot round after the restores",
        Duration::from_secs(60),
        async || snapshot_rounds(address).await >= before + 3.0,
    )
    .await;
}

/// Waits until the instance serves some merchant from live state, i.e. it was assigned partitions and restored them.
async fn wait_until_live(address: &str, merchants: &[MerchantId]) {
    let client = reqwest::Client::new();
    eventually(
        "the restarted instance to own partitions",
        Duration::from_secs(60),
        async || {
            for merchant in merchants {
                let answer = client
                    .get(format!("{address}/api/v1/rfm/segments"))
                    .bearer_auth(token(merchant))
                    .send()
                    .await;
                if let Ok(r) = answer {
                    let body: Value = r.json().await.unwrap_or_default();
                    if body["source"] == "live" {
                        return true;
                    }
                }
            }
            false
        },
    )
    .await;
}

async fn produce(brokers: &str, topics: &Topics, events: &[InputEvent]) {
    // The broker is shared with the whole suite and can be slow to acknowledge under load: waiting longer than
    // the ingress's 3 s is not what these tests check.
    let sink = SinkConfig {
        delivery_timeout: Duration::from_secs(30),
        ..SinkConfig::new(brokers.to_owned())
    }
    .build()
    .unwrap();
    for e in events {
        let payload = e.encode();
        let record = Outgoing {
            topic: e.kind().topic(topics),
            key: e.merchant_id().as_str(),
            payload: &payload,
            headers: &[],
        };
        sink.send(record).await.expect("broker acknowledges");
    }
}
