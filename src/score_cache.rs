//! The score cache other services read: `rfm:customer:{<merchant_id>}:<customer_id>` in Redis (the shop as the
//! hash tag, so on a Redis Cluster a shop's keys share one slot and its erasure scans one node), a small JSON value
//! with the customer's current scores, segment and stage, kept for 24 hours after its last change (DESIGN.md §7).
//!
//! Best effort by design: the processor writes it after a batch's outputs are published and never waits on it for
//! longer than the Redis timeout. While Redis is down processing goes on and the misses are counted; the next change
//! of each customer rewrites its entry. Redacted customers' entries are deleted.

use std::collections::HashSet;
use std::time::Duration;

use actors::Change;
use streams::MerchantId;

use crate::redis_link::{tag, RedisLink};

const TTL_SECS: u64 = 86_400;

pub fn key(merchant: &MerchantId, customer_id: u64) -> String {
    format!("rfm:customer:{}:{customer_id}", tag(merchant.as_str()))
}

#[derive(Clone)]
pub struct ScoreCache {
    link: RedisLink,
}

impl ScoreCache {
    pub fn new(url: &str, timeout: Duration) -> redis::RedisResult<ScoreCache> {
        Ok(ScoreCache {
            link: RedisLink::new(url, timeout)?,
        })
    }

    /// Writes the newest state of every changed customer and deletes the redacted ones, in round trips of at most
    /// [`PIPELINE_MAX`] commands. One pipeline of a restore's 4,096 changes could take longer than the Redis timeout
    /// on a busy machine and lose all of them; each smaller one fits, and the first that fails (Redis down) ends the
    /// write, so a dead Redis still costs one timeout. Deletions go first, and a customer (or any customer of a
    /// shop) erased in the same outcome is not written back: its change may come before its erasure. The erasure
    /// itself is made sure of by [`ScoreCache::erase`], retried by the publisher.
    pub async fn apply(&self, changes: &[Change], redacted: &[(MerchantId, Option<u64>, String)]) {
        let forget: HashSet<String> = redacted
            .iter()
            .filter_map(|(m, c, _)| c.map(|c| key(m, c)))
            .collect();
        let gone_shops: HashSet<&MerchantId> = redacted
            .iter()
            .filter(|(_, c, _)| c.is_none())
            .map(|(m, _, _)| m)
            .collect();
        let sets = changes
            .iter()
            .filter(|c| !gone_shops.contains(&c.merchant))
            .map(|c| (key(&c.merchant, c.customer_id), c))
            .filter(|(k, _)| !forget.contains(k))
            .map(|(k, c)| Command::Set(k, c));
        let forgets = forget.iter().map(|k| Command::Forget(k.clone()));
        let commands: Vec<Command<'_>> = forgets.chain(sets).collect();
        for (i, chunk) in commands.chunks(PIPELINE_MAX).enumerate() {
            let mut pipe = redis::pipe();
            for command in chunk {
                match command {
                    Command::Set(key, change) => pipe.set_ex(key, value(change), TTL_SECS).ignore(),
                    Command::Forget(key) => pipe.del(key).ignore(),
                };
            }
            if let Err(e) = self.link.run(&pipe).await {
                let missed = commands.len() - i * PIPELINE_MAX;
                streams::metric_names::error("score_cache", "redis");
                tracing::warn!(error = %e, missed, "score cache not updated");
                return;
            }
        }
    }
}

impl ScoreCache {
    /// Erases a redacted customer's entry, or, for a redacted shop, every key that names it: its entries, its
    /// preview and the ingress's dedupe marks `processed:{shop}:*` (found with `SCAN`, since a shop's customers are
    /// not listed anywhere else once its state is gone; late copies of its old webhooks are kept out by the
    /// processor's tombstone). Unlike the writes above, an erasure must not be dropped: errors come back so the
    /// caller retries until it is done.
    pub async fn erase(&self, merchant: &MerchantId, customer: Option<u64>) -> Result<(), String> {
        if let Some(customer) = customer {
            return self
                .link
                .run(redis::pipe().del(key(merchant, customer)))
                .await;
        }
        let shop = tag(&glob_escape(merchant.as_str()));
        for pattern in [
            format!("rfm:customer:{shop}:*"),
            format!("processed:{shop}:*"),
            // Previews, one per saved and proposed configuration (`crate::preview`).
            format!("rfm:preview:{shop}:*"),
        ] {
            self.link.delete_matching(&pattern).await?;
        }
        self.link
            .run(redis::pipe().del(format!("rfm:preview:{merchant}")))
            .await
    }
}

/// A shop domain as a literal in a `SCAN MATCH` pattern (domains have no glob characters, but the pattern must
/// not depend on that).
fn glob_escape(literal: &str) -> String {
    let mut out = String::with_capacity(literal.len());
    for c in literal.chars() {
        if matches!(c, '*' | '?' | '[' | ']' | '\\') {
            out.push('\\');
        }
        out.push(c);
    }
    out
}

/// Commands per round trip: a few hundred kilobytes at most.
const PIPELINE_MAX: usize = 512;

enum Command<'a> {
    /// The customer's key, computed once for the erasure check and the write.
    Set(String, &'a Change),
    Forget(String),
}

/// The cached value. A typed struct rather than `json!`: this runs for every change on the consumer loop, and
/// building a `serde_json::Value` allocated a map entry per field. Fields are in the alphabetical order `json!`
/// produced, so the bytes did not change.
#[derive(serde::Serialize)]
struct Cached<'a> {
    customer_id: u64,
    frequency: u8,
    lifecycle_stage: &'a str,
    monetary: u8,
    net_spend: String,
    orders: u32,
    recency: u8,
    score: f64,
    segment: &'a str,
    updated_at: Option<chrono::DateTime<chrono::Utc>>,
    version: u32,
}

fn value(change: &Change) -> String {
    let cached = Cached {
        customer_id: change.customer_id,
        frequency: change.rfm.frequency,
        lifecycle_stage: change.stage.as_str(),
        monetary: change.rfm.monetary,
        net_spend: change.net_spend.to_decimal_string(change.currency_exponent),
        orders: change.orders,
        recency: change.rfm.recency,
        score: f64::from(change.score_tenths) / 10.0,
        segment: &change.to_segment,
        updated_at: chrono::DateTime::from_timestamp(change.occurred_at.unix(), 0),
        version: change.version,
    };
    // A struct of numbers and strings always serialises.
    serde_json::to_string(&cached).unwrap_or_default()
}

#[cfg(test)]
mod tests {
    use super::*;

    /// The value other services parse, written out by hand: a change to the struct shows up here.
    #[test]
    fn the_cached_value_keeps_its_shape() {
        let change = actors::Change {
            merchant: MerchantId::parse("cache.myshopify.com").unwrap(),
            customer_id: 42,
            version: 3,
            from_segment: "new".into(),
            to_segment: "loyal".into(),
            rfm: functions::Rfm::new(5, 2, 3),
            score_tenths: 34,
            stage: functions::LifecycleStage::RepeatBuyer,
            orders: 2,
            net_spend: functions::Money::from_minor(12_345),
            currency_exponent: 2,
            last_order: None,
            churn_risk: None,
            occurred_at: functions::Timestamp(1_790_000_000),
            trace_id: "t".into(),
            locale: None,
            event_ms: None,
            traceparent: None,
            order_added: None,
            points: 0,
        };
        let expected = serde_json::json!({
            "customer_id": 42, "version": 3, "segment": "loyal", "recency": 5, "frequency": 2, "monetary": 3,
            "score": 3.4, "lifecycle_stage": "repeat_buyer", "orders": 2, "net_spend": "123.45",
            "updated_at": "2026-09-21T14:13:20Z",
        });
        assert_eq!(value(&change), expected.to_string());
    }
}
