//! A lazily connected, auto-reconnecting Redis link with a bound on every call, for the best-effort writers
//! (dashboard fan-out, score cache): they must never hold up the pipeline for longer than the timeout, and the
//! process must start while Redis is down.

use std::sync::Arc;
use std::time::Duration;

use redis::aio::ConnectionManager;
use tokio::sync::OnceCell;

#[derive(Clone)]
pub struct RedisLink {
    client: redis::Client,
    connection: Arc<OnceCell<ConnectionManager>>,
    timeout: Duration,
}

impl RedisLink {
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<RedisLink> {
        Ok(RedisLink {
            client: redis::Client::open(url)?,
            connection: Arc::new(OnceCell::new()),
            timeout,
        })
    }

    /// Runs `pipe` (whose replies are ignored), connecting first if needed; errors and timeouts come back as text
    /// for the caller's log line.
    pub async fn run(&self, pipe: &redis::Pipeline) -> Result<(), String> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.timeout, pipe.query_async::<()>(&mut conn))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    /// Runs one command and returns its reply, with the same bounds as [`RedisLink::run`].
    pub async fn query<T: redis::FromRedisValue>(&self, cmd: &redis::Cmd) -> Result<T, String> {
        let mut conn = self.connection().await?;
        tokio::time::timeout(self.timeout, cmd.query_async::<T>(&mut conn))
            .await
            .map_err(|_| "timed out".to_owned())?
            .map_err(|e| e.to_string())
    }

    async fn connection(&self) -> Result<ConnectionManager, String> {
        let connect = || ConnectionManager::new(self.client.clone());
        Ok(
            tokio::time::timeout(self.timeout, self.connection.get_or_try_init(connect))
                .await
                .map_err(|_| "connect timed out".to_owned())?
                .map_err(|e| e.to_string())?
                .clone(),
        )
    }
}
