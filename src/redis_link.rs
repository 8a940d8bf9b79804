//! A lazily connected Redis link with a bound on every call, for the writers that must never hold up the pipeline
//! (dashboard fan-out, score cache, snapshots): the process starts while Redis is down, and a call that fails drops
//! the connection so the next one connects afresh instead of waiting on a reconnect that may never finish.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::{ConnectionManager, ConnectionManagerConfig};
use tokio::sync::Mutex;

#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    connection: Arc<Mutex<Option<ConnectionManager>>>,
    timeout: Duration,
}

impl RedisLink {
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<RedisLink> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
            connection: Arc::new(Mutex::new(None)),
            timeout,
        })
    }

    /// Runs `pipe` (whose replies are ignored); errors and timeouts come back as text for the caller's log line.
    pub async fn run(&self, pipe: &redis::Pipeline) -> Result<(), String> {
        let mut conn = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn)).await;
        self.settle(result).await
    }

    /// Runs one command and returns its reply, with the same bounds as [`RedisLink::run`].
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection().await?;
        let result = tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn)).await;
        self.settle(result).await
    }

    /// Deletes every key matching the `SCAN` pattern, a page at a time (never `KEYS`, which blocks Redis).
    pub async fn delete_matching(&self, pattern: &str) -> Result<(), String> {
        let mut cursor = 0u64;
        loop {
            let mut scan = redis::cmd("SCAN");
            scan.arg(cursor)
                .arg("MATCH")
                .arg(pattern)
                .arg("COUNT")
                .arg(1_000);
            let (next, keys): (u64, Vec<String>) = self.query(&scan).await?;
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

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let mut slot = self.connection.lock().await;
        if let Some(conn) = slot.as_ref() {
            return Ok(conn.clone());
        }
        // Our callers retry on their own schedule; the manager's own retries would only stretch one call.
        let config = ConnectionManagerConfig::new()
            .set_connection_timeout(self.timeout)
            .set_response_timeout(self.timeout)
            .set_number_of_retries(1);
        let connect = ConnectionManager::new_with_config(self.client.clone(), config);
        let conn = tokio::time::timeout(self.timeout, connect)
            .await
            .map_err(|_| "connect timed out".to_owned())?
            .map_err(|e| e.to_string())?;
        *slot = Some(conn.clone());
        Ok(conn)
    }
}
