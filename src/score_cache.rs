//! The score cache other services read: `rfm:customer:{merchant_id}:{customer_id}` in Redis, a small JSON value
//! with the customer's current scores, segment and stage, kept for 24 hours after its last change (DESIGN.md §7).
//!
//! Best effort by design: the processor writes it after a batch's outputs are published and never waits on it for
//! longer than the Redis timeout. While Redis is down processing goes on and the misses are counted; the next change
//! of each customer rewrites its entry. Redacted customers' entries are deleted.

use std::collections::HashSet;
use std::time::Duration;

use actors::Change;
use serde_json::json;
use streams::MerchantId;

use crate::redis_link::RedisLink;

const TTL_SECS: u64 = 86_400;

pub fn key(merchant: &MerchantId, customer_id: u64) -> String {
    format!("rfm:customer:{merchant}:{customer_id}")
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
    /// write, so a dead Redis still costs one timeout. Deletions go first, so that failure cannot skip them, and a
    /// customer erased in the same outcome is not written back: its change may come before its erasure.
    pub async fn apply(&self, changes: &[Change], redacted: &[(MerchantId, Option<u64>, String)]) {
        let forget: HashSet<String> = redacted
            .iter()
            .filter_map(|(m, c, _)| c.map(|c| key(m, c)))
            .collect();
        let sets = changes
            .iter()
            .filter(|c| forget.is_empty() || !forget.contains(&key(&c.merchant, c.customer_id)))
            .map(Command::Set);
        let forgets = forget.iter().map(|k| Command::Forget(k.clone()));
        let commands: Vec<Command<'_>> = forgets.chain(sets).collect();
        for (i, chunk) in commands.chunks(PIPELINE_MAX).enumerate() {
            let mut pipe = redis::pipe();
            for command in chunk {
                match command {
                    Command::Set(change) => pipe
                        .set_ex(
                            key(&change.merchant, change.customer_id),
                            value(change),
                            TTL_SECS,
                        )
                        .ignore(),
                    Command::Forget(key) => pipe.del(key).ignore(),
                };
            }
            if let Err(e) = self.link.run(&pipe).await {
                let missed = commands.len() - i * PIPELINE_MAX;
                metrics::counter!("score_cache_errors_total").increment(1);
                tracing::warn!(error = %e, missed, "score cache not updated");
                return;
            }
        }
    }
}

/// Commands per round trip: a few hundred kilobytes at most.
const PIPELINE_MAX: usize = 512;

enum Command<'a> {
    Set(&'a Change),
    Forget(String),
}

fn value(change: &Change) -> String {
    json!({
        "customer_id": change.customer_id,
        "version": change.version,
        "segment": change.to_segment,
        "recency": change.rfm.recency,
        "frequency": change.rfm.frequency,
        "monetary": change.rfm.monetary,
        "score": f64::from(change.score_tenths) / 10.0,
        "lifecycle_stage": change.stage.as_str(),
        "orders": change.orders,
        "net_spend": change.net_spend.to_decimal_string(change.currency_exponent),
        "updated_at": chrono::DateTime::from_timestamp(change.occurred_at.unix(), 0),
    })
    .to_string()
}
