//! The binary against a three-master Redis Cluster that the test starts itself (`redis-server --cluster-enabled
//! yes` three times, `redis-cli --cluster create`): webhook dedupe, partition snapshots in Redis with a restore
//! after a stop, and dashboard frames fanned out to an instance that only serves HTTP, all through
//! `REDIS_URL=redis+cluster://…`. The cluster is stopped when the test ends, however it ends.

use std::path::PathBuf;

use redis::cluster::ClusterClient;

use super::*;
use crate::helpers::fixture;
use crate::live::{frames_until, open_socket, post_order};
use loyalnest_rfm::shopify::hmac::sign;

/// Three masters on free ports, each in its own directory under a temporary one, no persistence.
struct RedisCluster {
    ports: Vec<u16>,
    nodes: Vec<Child>,
    dir: PathBuf,
}

impl RedisCluster {
    async fn start() -> RedisCluster {
        let dir = std::env::temp_dir().join(unique("redis-cluster-"));
        let mut cluster = RedisCluster {
            ports: Vec::new(),
            nodes: Vec::new(),
            dir,
        };
        for _ in 0..3 {
            let port = free_port();
            let node_dir = cluster.dir.join(port.to_string());
            std::fs::create_dir_all(&node_dir).expect("node directory");
            let log = std::fs::File::create(node_dir.join("redis.log")).expect("node log");
            let child = Command::new("redis-server")
                .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
                .args([
                    "--cluster-enabled",
                    "yes",
                    "--cluster-config-file",
                    "nodes.conf",
                ])
                .args(["--save", "", "--appendonly", "no"])
                .arg("--dir")
                .arg(&node_dir)
                .stdout(Stdio::from(log.try_clone().expect("log handle")))
                .stderr(Stdio::from(log))
                .spawn()
                .expect("redis-server starts");
            cluster.ports.push(port);
            cluster.nodes.push(child);
        }
        for port in cluster.ports.clone() {
            eventually(
                "a cluster node to answer",
                Duration::from_secs(20),
                async || cli(port, &["ping"]).is_some_and(|out| out.contains("PONG")),
            )
            .await;
        }
        let addresses: Vec<String> = cluster
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        let created = Command::new("redis-cli")
            .args(["--cluster", "create"])
            .args(&addresses)
            .args(["--cluster-replicas", "0", "--cluster-yes"])
            .output()
            .expect("redis-cli runs");
        assert!(
            created.status.success(),
            "cluster create: {}",
            String::from_utf8_lossy(&created.stdout)
        );
        for port in cluster.ports.clone() {
            eventually(
                "every node to see the cluster ok",
                Duration::from_secs(30),
                async || {
                    cli(port, &["cluster", "info"])
                        .is_some_and(|out| out.contains("cluster_state:ok"))
                },
            )
            .await;
        }
        cluster
    }

    fn url(&self) -> String {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("127.0.0.1:{p}"))
            .collect();
        format!("redis+cluster://{}", seeds.join(","))
    }

    fn client(&self) -> ClusterClient {
        let seeds: Vec<String> = self
            .ports
            .iter()
            .map(|p| format!("redis://127.0.0.1:{p}"))
            .collect();
        ClusterClient::new(seeds).expect("cluster client")
    }
}

impl Drop for RedisCluster {
    fn drop(&mut self) {
        for node in &mut self.nodes {
            let _ = node.kill();
            let _ = node.wait();
        }
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

fn cli(port: u16, args: &[&str]) -> Option<String> {
    let out = Command::new("redis-cli")
        .args(["-p", &port.to_string()])
        .args(args)
        .output()
        .ok()?;
    Some(String::from_utf8_lossy(&out.stdout).into_owned())
}

/// Posts one `orders/create` webhook with a chosen id and returns the ingress's answer body.
async fn post_with_id(address: &str, shop: &MerchantId, id: &str) -> Value {
    let body = fixture("orders_create.json");
    let response = reqwest::Client::new()
        .post(format!("{address}/webhooks/shopify"))
        .header("X-Shopify-Topic", "orders/create")
        .header("X-Shopify-Hmac-Sha256", sign(SECRET.as_bytes(), &body))
        .header("X-Shopify-Shop-Domain", shop.as_str())
        .header("X-Shopify-Webhook-Id", id)
        .body(body)
        .send()
        .await
        .expect("the ingress answers");
    assert_eq!(response.status(), 200);
    response.json().await.expect("a JSON answer")
}

#[actix_web::test]
async fn dedupe_snapshots_and_fan_out_work_on_a_redis_cluster() {
    let cluster = RedisCluster::start().await;
    let mut scenario = Scenario::new("rcluster").await;
    scenario.use_redis(&cluster.url());
    scenario.set_env("SNAPSHOT_STORE", "redis");
    let (mut owner, parts) = scenario.first_third_snapshotted().await;
    let mut conn = cluster.client().get_async_connection().await.unwrap();

    // Dedupe: the second copy of one delivery is recognised, and its mark is in the cluster under the shop's tag.
    let shop = MerchantId::parse(&format!("{}.myshopify.com", unique("rc-"))).unwrap();
    let id = unique("wh-");
    assert_ne!(
        post_with_id(&owner.address(), &shop, &id).await["status"],
        "duplicate"
    );
    assert_eq!(
        post_with_id(&owner.address(), &shop, &id).await["status"],
        "duplicate"
    );
    let mark: Option<String> = redis::cmd("GET")
        .arg(format!("processed:{{{shop}}}:{id}"))
        .query_async(&mut conn)
        .await
        .unwrap();
    assert_eq!(mark.as_deref(), Some("done"));

    // Snapshots: every partition's is in the cluster.
    let group = scenario
        .env
        .iter()
        .find(|(k, _)| *k == "KAFKA_GROUP_ID")
        .map(|(_, v)| v.clone())
        .unwrap();
    for partition in 0..3 {
        let exists: bool = redis::cmd("EXISTS")
            .arg(format!("rfm:snapshot:{{{group}}}:{partition}"))
            .query_async(&mut conn)
            .await
            .unwrap();
        assert!(exists, "snapshot of partition {partition} in the cluster");
    }

    // Fan-out: an HTTP-only instance has no processor; its socket's frames can only come through the cluster.
    let mut reader = scenario.instance();
    reader.role = "ingress";
    reader.start();
    eventually(
        "the reader to listen",
        Duration::from_secs(30),
        async || {
            reqwest::get(format!("{}/health", reader.address()))
                .await
                .is_ok()
        },
    )
    .await;
    let fan = MerchantId::parse(&format!("{}.myshopify.com", unique("fan-"))).unwrap();
    post_order(&owner.address(), &fan, 1, 1, "40.00", 1).await;
    let (mut socket, _) = open_socket(&reader.address(), &crate::live::token(&fan))
        .await
        .expect("handshake");
    post_order(&owner.address(), &fan, 2, 2, "40.00", 1).await;
    frames_until(&mut socket, Duration::from_secs(60), |f| f.customers == 2).await;

    // Restore: a stop hands the partitions over through their snapshots in the cluster; the restarted instance
    // resumes from them, and the whole stream ends up equal to the oracle.
    owner.stop();
    owner.start();
    wait_until_live(&owner.address(), &scenario.merchants).await;
    scenario.produce(parts[1]).await;
    scenario.produce(parts[2]).await;
    scenario.check(&[owner.address()]).await;
}
