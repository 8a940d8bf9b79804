//! Webhook deduplication in Redis: `processed:{<merchant_id>}:<webhook_id>` (the shop as the hash tag, like every
//! key of a shop; see `redis_link::target`).
//!
//! Shopify retries a webhook it did not see answered in time, so the same delivery can arrive twice, and sometimes
//! at once. A delivery first *claims* its id with one atomic `SET NX` (value `pending`, held for about as long as a
//! produce may take), so two concurrent copies cannot both pass a check and both produce. After Kafka acknowledged
//! the event the key becomes `done` for the full TTL; a failed produce releases the claim so Shopify's retry goes
//! through. Every Redis call is bounded in time: when Redis is slow or down we produce anyway (a duplicate record
//! is harmless, the consumer is idempotent), we never refuse or lose.

use std::time::Duration;

use redis::AsyncCommands;
use tokio::sync::OnceCell;

use streams::MerchantId;

use crate::redis_link::{tag, RedisConn, RedisTarget};

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
    /// How long a claim stands before it lapses by itself (a process that died between claim and produce).
    pub claim: Duration,
}

impl DedupeConfig {
    pub fn build(&self) -> Result<DedupeStore, DedupeError> {
        Ok(DedupeStore {
            target: RedisTarget::open(&self.redis_url)?,
            connection: OnceCell::new(),
            ttl: self.ttl,
            timeout: self.timeout,
            claim: self.claim,
        })
    }
}

pub struct DedupeStore {
    target: RedisTarget,
    // Established on first use and then kept; it reconnects by itself after Redis restarts.
    connection: OnceCell<RedisConn>,
    ttl: Duration,
    timeout: Duration,
    claim: Duration,
}

/// What claiming a webhook id found.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Claim {
    /// Nobody had it: this delivery goes on and produces.
    Fresh,
    /// Produced and acknowledged before: answer 200 without producing.
    Done,
    /// Another copy is being produced right now: answer a retryable error, so the retry sees `Done` or `Fresh`.
    InFlight,
}

const PENDING: &str = "pending";
const DONE: &str = "done";

fn key(merchant: &MerchantId, webhook_id: &str) -> String {
    format!("processed:{}:{webhook_id}", tag(merchant.as_str()))
}

impl DedupeStore {
    async fn connection(&self) -> Result<RedisConn, DedupeError> {
        let connect = self
            .connection
            .get_or_try_init(|| async { self.target.connect(self.timeout, 6).await });
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

    /// Claims `webhook_id` for this delivery, atomically.
    pub async fn claim(
        &self,
        merchant: &MerchantId,
        webhook_id: &str,
    ) -> Result<Claim, DedupeError> {
        let mut conn = self.connection().await?;
        let key = key(merchant, webhook_id);
        let mut set = redis::cmd("SET");
        set.arg(&key)
            .arg(PENDING)
            .arg("NX")
            .arg("EX")
            .arg(self.claim.as_secs().max(1));
        let claimed = self
            .bounded(set.query_async::<Option<String>>(&mut conn))
            .await?;
        if claimed.is_some() {
            return Ok(Claim::Fresh);
        }
        // A claim that lapsed between the two calls reads as nothing: still someone else's turn, so retry later.
        let held: Option<String> = self.bounded(conn.get(&key)).await?;
        Ok(match held.as_deref() {
            Some(DONE) => Claim::Done,
            _ => Claim::InFlight,
        })
    }

    /// Marks the id as produced, for the full dedupe TTL.
    pub async fn mark_processed(
        &self,
        merchant: &MerchantId,
        webhook_id: &str,
    ) -> Result<(), DedupeError> {
        let mut conn = self.connection().await?;
        let ttl = self.ttl.as_secs().max(1);
        self.bounded(conn.set_ex::<_, _, ()>(key(merchant, webhook_id), DONE, ttl))
            .await
    }

    /// Gives a claim back after a failed produce, so Shopify's retry is not taken for a duplicate.
    pub async fn release(
        &self,
        merchant: &MerchantId,
        webhook_id: &str,
    ) -> Result<(), DedupeError> {
        let mut conn = self.connection().await?;
        self.bounded(conn.del::<_, ()>(key(merchant, webhook_id)))
            .await
    }

    pub async fn ping(&self) -> Result<(), DedupeError> {
        let mut conn = self.connection().await?;
        self.bounded(redis::cmd("PING").query_async::<String>(&mut conn))
            .await
            .map(drop)
    }
}
