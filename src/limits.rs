//! A limit on every door: request rates per client, sockets per shop, and the settings that bound a connection.
//!
//! Rates are GCRA buckets from `governor`, keyed by what a request can be attributed to before it costs anything:
//! the TCP peer for the webhook route (checked before the body is read or hashed), the verified shop for the
//! merchant API and the dashboard socket (checked after the token, so nobody can spend another shop's budget by
//! naming it). A refused request gets 429 with `Retry-After`. The peer address is the one the socket came from:
//! forwarded-for headers are not trusted, because any client can write them. Keyed buckets are pruned every
//! `PRUNE_EVERY` checks, so a scan from many addresses does not grow memory without bound.

use std::hash::Hash;
use std::net::IpAddr;
use std::num::NonZeroU32;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use dashmap::DashMap;
use governor::clock::{Clock, DefaultClock};
use governor::{DefaultKeyedRateLimiter, Quota, RateLimiter};
use streams::MerchantId;

const PRUNE_EVERY: u64 = 4_096;

/// The limits, from configuration; `build()` makes the shared state.
#[derive(Debug, Clone)]
pub struct LimitsConfig {
    /// Webhook requests per second per peer address (burst: twice that); 0 turns the limit off.
    pub webhook_per_ip: u32,
    /// Merchant API requests per second per shop (burst: twice that); 0 turns the limit off.
    pub api_per_shop: u32,
    /// Open dashboard sockets per shop on one instance.
    pub dashboard_sockets_per_shop: usize,
    /// How long a webhook body may take to arrive once its headers have (slow senders get 408).
    pub body_deadline: Duration,
    /// Open connections on one instance, over all workers.
    pub max_connections: usize,
    /// Connections the kernel queues for `accept` (capped by `net.core.somaxconn`). std listens with 128, so a
    /// burst of thousands of new connections overflowed it and each dropped SYN cost its client a second.
    pub listen_backlog: i32,
}

impl LimitsConfig {
    pub fn build(&self) -> Limits {
        Limits {
            webhooks: Bucket::new(self.webhook_per_ip),
            api: Bucket::new(self.api_per_shop),
            sockets: Arc::new(DashMap::new()),
            sockets_per_shop: self.dashboard_sockets_per_shop,
            body_deadline: self.body_deadline,
        }
    }
}

pub struct Limits {
    webhooks: Option<Bucket<IpAddr>>,
    api: Option<Bucket<MerchantId>>,
    sockets: Arc<DashMap<MerchantId, usize>>,
    sockets_per_shop: usize,
    pub body_deadline: Duration,
}

/// How long a refused client should wait, for `Retry-After` (whole seconds, at least one).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct RetryAfter(pub u64);

impl Limits {
    pub fn webhook(&self, peer: Option<IpAddr>) -> Result<(), RetryAfter> {
        match (&self.webhooks, peer) {
            (Some(bucket), Some(ip)) => bucket.check(&ip, "webhook"),
            _ => Ok(()),
        }
    }

    pub fn api(&self, shop: &MerchantId) -> Result<(), RetryAfter> {
        match &self.api {
            Some(bucket) => bucket.check(shop, "api"),
            None => Ok(()),
        }
    }

    /// A place for one more dashboard socket of `shop`, held until the permit is dropped.
    pub fn dashboard_socket(&self, shop: &MerchantId) -> Option<SocketPermit> {
        let mut open = self.sockets.entry(shop.clone()).or_insert(0);
        if *open >= self.sockets_per_shop {
            metrics::counter!(streams::metric_names::RATE_LIMITED, "door" => "dashboard_socket")
                .increment(1);
            return None;
        }
        *open += 1;
        Some(SocketPermit {
            sockets: self.sockets.clone(),
            shop: shop.clone(),
        })
    }
}

/// One open dashboard socket; gives its place back when dropped.
pub struct SocketPermit {
    sockets: Arc<DashMap<MerchantId, usize>>,
    shop: MerchantId,
}

impl Drop for SocketPermit {
    fn drop(&mut self) {
        // Shops with no socket left are removed, so the map holds only shops that are watching now.
        self.sockets.remove_if_mut(&self.shop, |_, open| {
            *open = open.saturating_sub(1);
            *open == 0
        });
    }
}

pub(crate) struct Bucket<K: Hash + Eq + Clone> {
    limiter: DefaultKeyedRateLimiter<K>,
    checks: AtomicU64,
}

impl<K: Hash + Eq + Clone> Bucket<K> {
    pub(crate) fn new(per_second: u32) -> Option<Self> {
        let rate = NonZeroU32::new(per_second)?;
        let burst = NonZeroU32::new(per_second.saturating_mul(2)).unwrap_or(rate);
        Some(Bucket {
            limiter: RateLimiter::keyed(Quota::per_second(rate).allow_burst(burst)),
            checks: AtomicU64::new(0),
        })
    }

    pub(crate) fn check(&self, key: &K, door: &'static str) -> Result<(), RetryAfter> {
        if self.checks.fetch_add(1, Ordering::Relaxed) % PRUNE_EVERY == PRUNE_EVERY - 1 {
            self.limiter.retain_recent();
        }
        self.limiter.check_key(key).map_err(|not_until| {
            metrics::counter!(streams::metric_names::RATE_LIMITED, "door" => door).increment(1);
            let wait = not_until.wait_time_from(DefaultClock::default().now());
            RetryAfter(wait.as_secs_f64().ceil().max(1.0) as u64)
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn limits(per_second: u32, sockets: usize) -> Limits {
        LimitsConfig {
            webhook_per_ip: per_second,
            api_per_shop: per_second,
            dashboard_sockets_per_shop: sockets,
            body_deadline: Duration::from_secs(1),
            max_connections: 10,
            listen_backlog: 128,
        }
        .build()
    }

    #[test]
    fn a_burst_passes_then_the_client_is_told_to_wait() {
        let l = limits(5, 1);
        let ip: IpAddr = "127.0.0.1".parse().unwrap();
        for _ in 0..10 {
            assert!(l.webhook(Some(ip)).is_ok(), "the burst is twice the rate");
        }
        assert_eq!(l.webhook(Some(ip)), Err(RetryAfter(1)));
        let other: IpAddr = "127.0.0.2".parse().unwrap();
        assert!(
            l.webhook(Some(other)).is_ok(),
            "another peer has its own bucket"
        );
    }

    #[test]
    fn shops_have_separate_budgets_and_zero_means_off() {
        let l = limits(1, 1);
        let (a, b) = (
            MerchantId::parse("a.myshopify.com").unwrap(),
            MerchantId::parse("b.myshopify.com").unwrap(),
        );
        assert!(l.api(&a).is_ok() && l.api(&a).is_ok());
        assert!(l.api(&a).is_err());
        assert!(l.api(&b).is_ok());
        let off = limits(0, 1);
        assert!((0..1_000).all(|_| off.api(&a).is_ok()));
    }

    #[test]
    fn socket_permits_are_capped_per_shop_and_given_back() {
        let l = limits(1, 2);
        let a = MerchantId::parse("a.myshopify.com").unwrap();
        let first = l.dashboard_socket(&a).unwrap();
        let _second = l.dashboard_socket(&a).unwrap();
        assert!(l.dashboard_socket(&a).is_none());
        drop(first);
        assert!(l.dashboard_socket(&a).is_some());
        assert!(l
            .dashboard_socket(&MerchantId::parse("b.myshopify.com").unwrap())
            .is_some());
    }
}
