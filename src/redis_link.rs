//! A lazily connected Redis link with a bound on every call, for the writers that must never hold up the pipeline
//! (dashboard fan-out, score cache, snapshots): the process starts while Redis is down, and a call that fails drops
//! the connection so the next one connects afresh instead of waiting on a reconnect that may never finish. The
//! link works the same on one server and on a Redis Cluster (see [`target`]).

pub mod target;

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Mutex;

pub use target::{tag, RedisConn, RedisTarget};

#[derive(Clone)]
pub struct RedisLink {
    target: RedisTarget,
    connection: Arc<Mutex<Option<RedisConn>>>,
    timeout: Duration,
}

impl RedisLink {
    /// `url` as `REDIS_URL` gives it: one server, or `redis+cluster://` seeds.
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<RedisLink> {
        Ok(RedisLink::on(RedisTarget::open(url)?, timeout))
    }

    pub fn on(target: RedisTarget, timeout: Duration) -> RedisLink {
        RedisLink {
            target,
            connection: Arc::new(Mutex::new(None)),
            timeout,
        }
    }

    pub fn target(&self) -> &RedisTarget {
        &self.target
    }

    /// Runs `pipe` (whose replies are ignored); errors and timeouts come back as text for the caller's log line.
    pub async fn run(&self, pipe: &redis::Pipeline) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, conn.run_batch(pipe)).await;
        self.settle(result).await
    }

    /// Runs one command and returns its reply, with the same bounds as [`RedisLink::run`].
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.settle(result).await
    }

    /// Deletes every key matching the `SCAN` pattern, a page at a time (never `KEYS`, which blocks Redis). On a
    /// cluster the pattern must carry a hash tag (`tag`): the scan runs on the node that owns its slot.
    pub async fn delete_matching(&self, pattern: &str) -> Result<(), String> {
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1_000);
            let mut conn = self.connection().await?;
            let page = conn.query_at::<(u64, Vec<String>)>(pattern, &scan);
            let (next, keys) = self
                .settle(tokio::time::timeout(self.timeout, page).await)
                .await?;
            if !keys.is_empty() {
                self.run(redis::pipe().del(keys)).await?;
            }
            if next == 0 {
                return Ok(());
            }
            cursor = next;
        }
    }

    async fn settle<T>(
        &self,
        result: Result<redis::RedisResult<T>, tokio::time::error::Elapsed>,
    ) -> Result<T, String> {
        let outcome = match result {
            Ok(Ok(value)) => return Ok(value),
            Ok(Err(e)) => e.to_string(),
            Err(_) => "timed out".to_owned(),
        };
        *self.connection.lock().await = None;
        Err(outcome)
    }

    async fn connection(&self) -> Result<RedisConn, String> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // Our callers retry on their own schedule; the client's own retries would only stretch one call.
        let connect = self.target.connect(self.timeout, 1);
        let conn = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}
