//! Redis stopped and restarted mid-stream, with Redis as the snapshot store (`SNAPSHOT_STORE=redis`, the store
//! without Postgres): processing goes on without snapshots (and without committing), snapshots
//! resume when Redis is back, and when the new Redis has lost every snapshot while offsets are committed, a
//! restarted instance seeks back and replays instead of starting past its state. Redis here is a private
//! `redis-server` the test owns.

use super::*;

/// A private Redis server on its own port, killed when dropped.
pub(super) struct PrivateRedis {
    port: u16,
    child: Option<Child>,
}

impl PrivateRedis {
    pub(super) async fn start(port: u16) -> PrivateRedis {
        let child = Command::new("redis-server")
            .args(["--port", &port.to_string(), "--bind", "127.0.0.1"])
            .args(["--save", "", "--appendonly", "no"])
            .stdout(Stdio::null())
            .spawn()
            .expect("redis-server starts");
        let redis = PrivateRedis {
            port,
            child: Some(child),
        };
        let client = redis::Client::open(redis.url()).unwrap();
        eventually(
            "the private Redis to answer",
            Duration::from_secs(10),
            async || {
                let Ok(mut conn) = client.get_multiplexed_async_connection().await else {
                    return false;
                };
                redis::cmd("PING")
                    .query_async::<String>(&mut conn)
                    .await
                    .is_ok()
            },
        )
        .await;
        redis
    }

    pub(super) fn url(&self) -> String {
        format!("redis://127.0.0.1:{}", self.port)
    }

    fn stop(&mut self) {
        if let Some(mut child) = self.child.take() {
            child.kill().expect("kill redis");
            child.wait().expect("reap redis");
        }
    }

    pub(super) async fn flush(&self) {
        let client = redis::Client::open(self.url()).unwrap();
        let mut conn = client.get_multiplexed_async_connection().await.unwrap();
        redis::cmd("FLUSHALL")
            .query_async::<()>(&mut conn)
            .await
            .unwrap();
    }
}

impl Drop for PrivateRedis {
    fn drop(&mut self) {
        self.stop();
    }
}

/// Waits until the counter `name` of the instance at `address` passes `above`.
async fn counter_passes(address: &str, name: &str, above: f64) {
    eventually(name, Duration::from_secs(60), async || {
        metric(address, name).await > above
    })
    .await;
}

#[actix_web::test]
async fn redis_down_and_back_and_lost_snapshots_lose_nothing() {
    let mut scenario = Scenario::new("redisout").await;
    let port = free_port();
    let mut redis = PrivateRedis::start(port).await;
    scenario.use_redis(&redis.url());
    // Snapshots go to Postgres when there is one; this test is about a Redis that keeps them.
    scenario.set_env("SNAPSHOT_STORE", "redis");
    let (mut instance, parts) = scenario.first_third_snapshotted().await;
    let address = instance.address();

    // Redis goes away: snapshots fail, the stream is still processed.
    redis.stop();
    let changes = metric(&address, "processor_changes_total").await;
    scenario.produce(parts[1]).await;
    counter_passes(&address, "rfm_snapshots_total{outcome=\"failed\"}", 0.0).await;
    counter_passes(&address, "processor_changes_total", changes).await;

    // Redis is back, empty: snapshots resume, every partition's once at least (none was written during the
    // outage, so none may be skipped as unchanged however idle it is).
    redis = PrivateRedis::start(port).await;
    let snapshots = metric(&address, "rfm_snapshots_total{outcome=\"written\"}").await;
    counter_passes(
        &address,
        "rfm_snapshots_total{outcome=\"written\"}",
        snapshots + 2.0,
    )
    .await;

    // The process dies and Redis loses every snapshot, while the group's offsets are committed past the start.
    instance.kill_9();
    redis.flush().await;
    instance.start();
    scenario.produce(parts[2]).await;

    scenario.check(&[address]).await;
}
