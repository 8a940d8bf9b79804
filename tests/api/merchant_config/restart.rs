//! The real binary restarted after a configuration change, with Postgres made to disagree with the engine: the
//! partition comes back from its snapshot (format 6 carries each merchant's configuration), is not refused, and
//! every customer is in the oracle's segment under the configuration that came through the stream.

use std::process::{Child, Command, Stdio};
use std::time::Duration;

use serde_json::Value;
use streams::{MerchantId, Topics};

use super::oracle::{post_customers, segment, Customer};
use super::{get_config, put_config, tiers};
use crate::helpers::{brokers, eventually, free_port, fresh_database, unique, SECRET};
use crate::live::{shop, token, API_KEY};

struct Binary {
    env: Vec<(&'static str, String)>,
    address: String,
    child: Option<Child>,
}

impl Binary {
    /// One instance of its own group on fresh topics (`prefix`) and `database`, snapshotting every 500 ms.
    fn new(port: u16, prefix: &str, database: &str) -> Binary {
        let redis = std::env::var("REDIS_URL").unwrap_or_else(|_| "redis://127.0.0.1:6379".into());
        Binary {
            env: vec![
                ("SHOPIFY_API_SECRET", SECRET.to_owned()),
                ("SHOPIFY_API_KEY", API_KEY.to_owned()),
                ("KAFKA_BROKERS", brokers()),
                ("KAFKA_TOPIC_PREFIX", prefix.to_owned()),
                ("KAFKA_GROUP_ID", unique("rc-g-")),
                ("KAFKA_CREATE_TOPICS", "false".into()),
                ("SNAPSHOT_INTERVAL_MS", "500".into()),
                ("API_RATE_PER_SHOP", "0".into()),
                ("DATABASE_URL", database.to_owned()),
                ("REDIS_URL", redis),
                ("HTTP_ADDR", format!("127.0.0.1:{port}")),
            ],
            address: format!("http://127.0.0.1:{port}"),
            child: None,
        }
    }

    fn start(&mut self) {
        std::fs::create_dir_all("artifacts").expect("artifacts");
        let log = std::fs::OpenOptions::new()
            .create(true)
            .append(true)
            .open("artifacts/merchant-config-restart.log")
            .expect("log");
        let child = Command::new(env!("CARGO_BIN_EXE_loyalnest-rfm"))
            .args(["serve", "--role", "all"])
            .envs(self.env.iter().map(|(k, v)| (*k, v.as_str())))
            .stdout(Stdio::from(log.try_clone().expect("log")))
            .stderr(Stdio::from(log))
            .spawn()
            .expect("the binary starts");
        self.child = Some(child);
    }

    /// SIGTERM: the instance snapshots its partitions and commits before it exits.
    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let pid = child.id().to_string();
            let sent = Command::new("kill").args(["-TERM", &pid]).status();
            assert!(sent.is_ok_and(|s| s.success()), "SIGTERM sent");
            child.wait().expect("reap");
        }
    }

    /// Snapshot rounds, written or skipped because the store already held that state.
    async fn snapshot_rounds(&self) -> f64 {
        self.metric("rfm_snapshots_total{outcome=\"written\"}")
            .await
            + self
                .metric("rfm_snapshots_total{outcome=\"unchanged\"}")
                .await
    }

    async fn metric(&self, name: &str) -> f64 {
        let Ok(answer) = reqwest::get(format!("{}/metrics", self.address)).await else {
            return -1.0;
        };
        let text = answer.text().await.unwrap_or_default();
        let value = text.lines().find_map(|line| {
            line.strip_prefix(name)?
                .strip_prefix(' ')?
                .trim()
                .parse()
                .ok()
        });
        value.unwrap_or(0.0)
    }
}

impl Drop for Binary {
    fn drop(&mut self) {
        if let Some(mut child) = self.child.take() {
            let _ = child.kill();
            let _ = child.wait();
        }
    }
}

/// Every customer live on `address` in the oracle's segment under `config`.
async fn wait_for_oracle(address: &str, shop: &MerchantId, customers: &[Customer], config: &Value) {
    let client = reqwest::Client::new();
    eventually(
        "every customer live in the oracle's segment",
        Duration::from_secs(90),
        async || {
            for c in customers {
                let answer = client
                    .get(format!("{address}/api/v1/rfm/customers/{}", c.id))
                    .bearer_auth(token(shop))
                    .send()
                    .await;
                let Ok(answer) = answer else { return false };
                let body: Value = answer.json().await.unwrap_or_default();
                if body["source"] != "live" || body["segment"] != segment(config, c).as_str() {
                    return false;
                }
            }
            true
        },
    )
    .await;
}

#[actix_web::test]
async fn a_restart_takes_the_configuration_from_the_snapshot_not_from_postgres() {
    let prefix = format!("{}.", unique("rc"));
    let database = fresh_database().await;
    let topics = Topics::with_prefix(&prefix);
    streams::admin::ensure_topics(&brokers(), &topics, 1, 1)
        .await
        .expect("topics");
    let port = free_port();
    let address = format!("http://127.0.0.1:{port}");
    let mut binary = Binary::new(port, &prefix, &database);
    binary.start();
    eventually(
        "the instance to own its partition",
        Duration::from_secs(60),
        async || binary.metric("rfm_partitions_owned").await >= 1.0,
    )
    .await;
    let a = shop();
    let customers = Customer::spread(16);
    post_customers(&address, &a, &customers).await;
    let (tag, before) = get_config(&address, &a).await;
    wait_for_oracle(&address, &a, &customers, &before["config"]).await;
    let (status, _, body) = put_config(&address, &a, Some(&tag), &tiers()).await;
    assert_eq!(status, 200, "{body}");
    wait_for_oracle(&address, &a, &customers, &tiers()).await;
    let rounds = binary.snapshot_rounds().await;
    eventually(
        "snapshot rounds after the change",
        Duration::from_secs(60),
        async || binary.snapshot_rounds().await >= rounds + 2.0,
    )
    .await;
    binary.stop();

    // Postgres now says the default: only the snapshot knows the tiers.
    let db = sqlx::PgPool::connect(&database).await.expect("postgres");
    sqlx::query("UPDATE program_settings SET rfm_thresholds = $2 WHERE merchant_id = $1")
        .bind(a.as_str())
        .bind(&before["config"])
        .execute(&db)
        .await
        .expect("the row");
    binary.start();
    wait_for_oracle(&address, &a, &customers, &tiers()).await;
    assert_eq!(
        binary.metric("processor_snapshots_refused_total").await,
        0.0,
        "the snapshot was taken"
    );
}
