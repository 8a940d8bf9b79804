//! A local stand-in of Shopify's Admin API, for tests, benchmarks and the embedded demo (Shopify cannot be reached
//! from where they run). One server, one state: it answers what our client sends with Shopify's documented shapes
//! (token exchange; the GraphQL endpoint with `metafieldsSet` and its `compareDigest` check,
//! `metafieldDefinitionCreate`, a customer's metafields, and the bulk operations over a generated shop's orders with
//! their JSONL results), every GraphQL reply with its cost extension, every call of a shop charged to the shop's one
//! leaky bucket, which refuses (`THROTTLED`) what it cannot cover. Options inject faults (every Nth call a 502,
//! customers whose writes are refused) so retries and dead-letters are exercised.
//!
//! Every GraphQL call must carry an access token the stand-in knows: one it issued by token exchange, or one the
//! test, demo or benchmark registered for a shop (`register_token`). The shop of a call is the one its token
//! belongs to, so one stand-in serves every shop at one address (`SHOPIFY_ADMIN_URL=http://127.0.0.1:PORT`). Where
//! the stand-in and Shopify's documentation differ, the stand-in is wrong.

pub mod bulk;
pub mod metafields;
pub mod server;
pub mod shop_data;
pub mod throttle;
pub mod token_exchange;

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex, MutexGuard};

use crate::shopify::admin::throttle::ThrottlePlan;

pub use server::{start, Standin};

/// How the stand-in behaves.
#[derive(Debug, Clone)]
pub struct StandinOptions {
    pub plan: ThrottlePlan,
    /// The app's credentials, which token exchange checks (`SHOPIFY_API_KEY`, `SHOPIFY_API_SECRET`).
    pub client_id: String,
    pub client_secret: String,
    /// Every Nth GraphQL call answers 502 without running (0: never).
    pub fail_every: u64,
    /// Customers whose metafield writes are refused with a user error, for good.
    pub refuse_customers: HashSet<u64>,
    /// Status queries of a running bulk operation before it completes.
    pub bulk_polls: u32,
}

impl StandinOptions {
    pub fn new(client_id: &str, client_secret: &str) -> Self {
        StandinOptions {
            plan: ThrottlePlan::Standard,
            client_id: client_id.to_owned(),
            client_secret: client_secret.to_owned(),
            fail_every: 0,
            refuse_customers: HashSet::new(),
            bulk_polls: 1,
        }
    }
}

/// Counters a test reads.
#[derive(Debug, Default)]
pub struct Counters {
    pub calls: AtomicU64,
    pub throttled: AtomicU64,
    pub failed: AtomicU64,
    pub unauthorized: AtomicU64,
}

/// Everything the stand-in holds, shared by its workers and readable by the test that started it.
pub struct StandinState {
    pub options: StandinOptions,
    /// access token → shop.
    tokens: Mutex<HashMap<String, String>>,
    buckets: Mutex<HashMap<String, throttle::Bucket>>,
    shops: Mutex<HashMap<String, metafields::ShopMetafields>>,
    /// Generated shops' orders and the bulk operations over them.
    pub bulk: bulk::BulkState,
    pub counters: Counters,
}

fn lock<T>(mutex: &Mutex<T>) -> MutexGuard<'_, T> {
    mutex.lock().unwrap_or_else(|p| p.into_inner())
}

impl StandinState {
    pub fn new(options: StandinOptions) -> Arc<Self> {
        Arc::new(StandinState {
            bulk: bulk::BulkState::new(options.bulk_polls),
            options,
            tokens: Mutex::default(),
            buckets: Mutex::default(),
            shops: Mutex::default(),
            counters: Counters::default(),
        })
    }

    /// Issues a new offline token for `shop`.
    pub fn issue_token(&self, shop: &str) -> String {
        let token = format!("shpat_{}", uuid::Uuid::new_v4().simple());
        lock(&self.tokens).insert(token.clone(), shop.to_owned());
        token
    }

    /// Makes `token` an access token of `shop`, as if the shop had installed the app and the caller held the
    /// offline token it got: for tests, the demo and benchmarks that do not go through token exchange.
    /// A token names one shop, as at Shopify: registering one token for a second shop is refused, since the
    /// first shop's calls would silently act on the second.
    pub fn register_token(&self, shop: &str, token: &str) -> Result<(), String> {
        let mut tokens = lock(&self.tokens);
        match tokens.get(token) {
            Some(owner) if owner != shop => Err(format!("that token already belongs to {owner}")),
            _ => {
                tokens.insert(token.to_owned(), shop.to_owned());
                Ok(())
            }
        }
    }

    pub fn shop_of_token(&self, token: &str) -> Option<String> {
        lock(&self.tokens).get(token).cloned()
    }

    /// Charges the shop's bucket (created full at the plan's size on first use).
    pub fn charge(
        &self,
        shop: &str,
        requested: f64,
        actual: f64,
    ) -> Result<throttle::Charged, throttle::Charged> {
        let now = std::time::Instant::now();
        let mut buckets = lock(&self.buckets);
        let plan = self.options.plan;
        let bucket = buckets
            .entry(shop.to_owned())
            .or_insert_with(|| throttle::Bucket::new(plan, now));
        bucket.charge(requested, actual, now)
    }

    /// The most points a shop ever had in use at once, and its bucket's size.
    pub fn peak_used(&self, shop: &str) -> Option<(f64, f64)> {
        lock(&self.buckets)
            .get(shop)
            .map(|b| (b.peak_used, b.maximum))
    }

    /// Runs `f` over the shop's metafields (created empty on first use).
    pub fn with_shop<R>(
        &self,
        shop: &str,
        f: impl FnOnce(&mut metafields::ShopMetafields) -> R,
    ) -> R {
        let mut shops = lock(&self.shops);
        f(shops.entry(shop.to_owned()).or_default())
    }

    /// The value of one of a customer's metafields.
    pub fn metafield(
        &self,
        shop: &str,
        customer: u64,
        namespace: &str,
        key: &str,
    ) -> Option<String> {
        self.with_shop(shop, |s| {
            s.customers
                .get(&customer)?
                .get(&(namespace.to_owned(), key.to_owned()))
                .map(|stored| stored.value.clone())
        })
    }

    /// Customers with at least one metafield.
    pub fn customers_written(&self, shop: &str) -> usize {
        self.with_shop(shop, |s| s.customers.len())
    }

    pub fn count(&self, counter: &AtomicU64) -> u64 {
        counter.load(Ordering::Relaxed)
    }
}
