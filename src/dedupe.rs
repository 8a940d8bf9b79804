//! Webhook deduplication in Redis: `processed:{merchant_id}:{webhook_id}`.
//!
//! Shopify retries a webhook it did not see answered in time, so the same delivery can arrive twice. The key is
//! written only after Kafka acknowledged the event, and every Redis call is bounded in time: when Redis is slow or
//! down we produce anyway (a duplicate record is harmless, the consumer is idempotent), we never refuse or lose.

use std::time::Duration;

use redis::aio::ConnectionManager;
use redis::AsyncCommands;
use tokio::sync::OnceCell;

use streams::MerchantId;

#[derive(Debug, thiserror::Error)]
pub enum DedupeError {
    #[error("redis: {0}")]
    Redis(#[from] redis::RedisError),
    #[error("redis did not answer within {0:?}")]
    Timeout(Duration),
}

/// Settings for the dedupe store; `build()` does not connect, so the ingress starts while Redis is down.
#[derive(Debug, Clone)]
pub struct DedupeConfig {
    pub redis_url: String,
    pub ttl: Duration,
    pub timeout: Duration,
}

impl DedupeConfig {
    pub fn build(&self) -> Result<DedupeStore, DedupeError> {
        Ok(DedupeStore {
            client: redis::Client::open(self.redis_url.as_str())?,
            connection: OnceCell::new(),
            ttl: self.ttl,
            timeout: self.timeout,
        })
    }
}

pub struct DedupeStore {
    client: redis::Client,
    // Established on first use and then kept; the manager reconnects by itself after Redis restarts.
    connection: OnceCell<ConnectionManager>,
    ttl: Duration,
    timeout: Duration,
}

fn key(merchant: &MerchantId, webhook_id: &str) -> String {
    format!("processed:{merchant}:{webhook_id}")
}

impl DedupeStore {
    async fn connection(&self) -> Result<ConnectionManager, DedupeError> {
        let connect = self
            .connection
            .get_or_try_init(|| async { ConnectionManager::new(self.client.clone()).await });
        match tokio::time::timeout(self.timeout, connect).await {
            Ok(result) => Ok(result?.clone()),
            Err(_) => Err(DedupeError::Timeout(self.timeout)),
        }
    }

    async fn bounded<T>(
        &self,
        op: impl std::future::Future<Output = redis::RedisResult<T>>,
    ) -> Result<T, DedupeError> {
        match tokio::time::timeout(self.timeout, op).await {
            Ok(result) => Ok(result?),
            Err(_) => Err(DedupeError::Timeout(self.timeout)),
        }
    }

    pub async fn already_processed(
        &self,
        merchant: &MerchantId,
        webhook_id: &str,
    ) -> Result<bool, DedupeError> {
        let mut conn = self.connection().await?;
        self.bounded(conn.exists(key(merchant, webhook_id))).await
    }

    pub async fn mark_processed(
        &self,
        merchant: &MerchantId,
        webhook_id: &str,
    ) -> Result<(), DedupeError> {
        let mut conn = self.connection().await?;
        let ttl = self.ttl.as_secs().max(1);
        self.bounded(conn.set_ex::<_, _, ()>(key(merchant, webhook_id), 1u8, ttl))
            .await
    }

    pub async fn ping(&self) -> Result<(), DedupeError> {
        let mut conn = self.connection().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}
