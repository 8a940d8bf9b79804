//! Admin API calls paced by the cost throttle and retried while the failure is transient: each call first takes
//! its estimated cost from the shop's bucket estimate, every reply's cost extension corrects the estimate, a
//! `THROTTLED` answer waits for the reported bucket to refill, and transport errors and 5xx back off exponentially
//! (capped). Only permanent failures (401/403, other 4xx, unreadable bodies) come back to the caller, who
//! dead-letters the input or drops the shop's token; a long Shopify outage stalls the caller rather than losing
//! anything.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use backoff::backoff::Backoff;
use serde_json::Value;

use super::throttle::CostThrottle;
use super::{AdminClient, AdminError, GraphqlReply};

/// What a mutation is charged before Shopify has told us otherwise (its documented base cost).
pub const MUTATION_COST: f64 = 10.0;

#[derive(Clone)]
pub struct PacedClient {
    pub client: AdminClient,
    pub throttle: Arc<CostThrottle>,
    /// The requested cost Shopify last reported per operation (the query text's first line), used as the estimate.
    costs: Arc<Mutex<HashMap<String, f64>>>,
    /// Longest pause between retries.
    pub max_backoff: Duration,
}

impl PacedClient {
    pub fn new(client: AdminClient, throttle: Arc<CostThrottle>) -> Self {
        PacedClient {
            client,
            throttle,
            costs: Arc::default(),
            max_backoff: Duration::from_secs(30),
        }
    }

    fn estimate(&self, query: &str) -> f64 {
        let costs = self.costs.lock().unwrap_or_else(|p| p.into_inner());
        costs
            .get(operation(query))
            .copied()
            .unwrap_or(MUTATION_COST)
    }

    fn learn(&self, shop: &str, query: &str, cost: Option<&super::QueryCost>) {
        let Some(cost) = cost else { return };
        self.throttle.observe(shop, cost, Instant::now());
        let mut costs = self.costs.lock().unwrap_or_else(|p| p.into_inner());
        costs.insert(operation(query).to_owned(), cost.requested);
    }

    /// One call, paced and retried until it succeeds or fails for good.
    pub async fn call(
        &self,
        shop: &str,
        token: &str,
        query: &str,
        variables: &Value,
    ) -> Result<GraphqlReply, AdminError> {
        let mut backoff = backoff::ExponentialBackoff {
            current_interval: Duration::from_millis(100),
            initial_interval: Duration::from_millis(100),
            max_interval: self.max_backoff,
            max_elapsed_time: None,
            ..backoff::ExponentialBackoff::default()
        };
        loop {
            let cost = self.estimate(query);
            self.throttle.acquire(shop, cost).await;
            let answer = self
                .client
                .graphql(shop, token, query, variables.clone())
                .await;
            self.throttle.release(shop, cost);
            match answer {
                Ok(reply) => {
                    self.learn(shop, query, reply.cost.as_ref());
                    return Ok(reply);
                }
                Err(AdminError::Throttled { cost }) => {
                    // The estimate was too high: take Shopify's word and wait for the refill it implies.
                    metrics::counter!(super::super::WRITES_TOTAL, "outcome" => "throttled")
                        .increment(1);
                    tracing::warn!(
                        shop,
                        "throttled by Shopify; waiting for the bucket to refill"
                    );
                    self.learn(shop, query, cost.as_ref());
                }
                Err(e) if e.is_transient() => {
                    let wait = backoff.next_backoff().unwrap_or(self.max_backoff);
                    metrics::counter!(super::super::WRITES_TOTAL, "outcome" => "retried")
                        .increment(1);
                    tracing::warn!(shop, error = %e, retry_in_ms = wait.as_millis() as u64, "Admin API call failed; retrying");
                    tokio::time::sleep(wait).await;
                }
                Err(e) => return Err(e),
            }
        }
    }
}

/// The operation a query text names (`mutation LoyalNestRfmSet(...)` → `mutation LoyalNestRfmSet`).
fn operation(query: &str) -> &str {
    let head = query.trim_start();
    let end = head.find(['(', '{']).unwrap_or(head.len()).min(head.len());
    head[..end].trim()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn operations_are_named_by_their_head() {
        assert_eq!(
            operation(super::super::metafields::METAFIELDS_SET),
            "mutation LoyalNestRfmSet"
        );
        assert_eq!(operation("{ shop { id } }"), "");
    }
}
