//! History on install (issue 19): a Shopify bulk operation over the shop's orders, its JSONL result streamed into
//! the input topics, so every customer has a segment from the first minute instead of after their next order.
//!
//! `Backfill::run` starts the bulk query (or continues the shop's unfinished one), waits for Shopify to finish it
//! (polling `node(id:)`, woken early by the `bulk_operations/finish` webhook), then streams the result through
//! `download`. Progress is kept per shop (`progress`), in Postgres when there is one, so a crashed backfill
//! continues from its last acknowledged line; `runner` runs them as the instance's own tasks (after an install,
//! and the unfinished ones of any instance, one instance per shop at a time).

pub mod download;
pub mod lease;
pub mod lines;
pub mod progress;
pub mod runner;

use std::collections::HashMap;
use std::sync::{Arc, Mutex, OnceLock};
use std::time::Duration;

use backoff::backoff::Backoff;
use serde_json::{json, Value};
use streams::sink::{EventSink, ProduceError};
use streams::{MerchantId, Topics};
use tokio::sync::Notify;

use crate::configuration::Settings;
use crate::pii::KeyRing;
use crate::shop_keys::ShopKeys;
use crate::shopify::admin::{AdminClient, AdminError, GraphqlReply};
use crate::store::Store;
use lines::Sealer;
pub use progress::{Phase, Progress, ProgressStore};
pub use runner::{Backfills, Start};

/// Counter of records a backfill produced, by `kind` (order, cancellation, refund) and lines it skipped or could
/// not use (skipped, failed). HELP: Records produced from Shopify order history by backfills.
pub const BACKFILL_RECORDS_TOTAL: &str = "rfm_backfill_records_total";

/// The bulk query: every order with what the engine scores. `refunds` is a list field of `Order` (not a
/// connection), so refunds arrive nested in their order's line.
pub const ORDERS_QUERY: &str =
    "{ orders { edges { node { id createdAt processedAt cancelledAt test \
displayFinancialStatus totalPriceSet { shopMoney { amount currencyCode } } customer { id email } \
refunds { id createdAt totalRefundedSet { shopMoney { amount currencyCode } } } } } } }";

/// How long one Admin API call of a backfill keeps being tried while its failure is transient.
const RETRY_FOR: Duration = Duration::from_secs(300);

const RUN_MUTATION: &str =
    "mutation backfillOrders($query: String!) { bulkOperationRunQuery(query: $query) { \
bulkOperation { id status } userErrors { field message } } }";

const POLL_QUERY: &str =
    "query backfillOperation($id: ID!) { node(id: $id) { ... on BulkOperation { id status \
errorCode objectCount url } } }";

#[derive(Debug, thiserror::Error)]
pub enum BackfillError {
    #[error(transparent)]
    Admin(#[from] AdminError),
    #[error("Shopify refused the bulk query: {0}")]
    Refused(String),
    #[error("the bulk operation ended {status} ({error_code})")]
    OperationFailed { status: String, error_code: String },
    #[error("the bulk operation did not finish within {0:?}")]
    TimedOut(Duration),
    #[error("reading the bulk result: {0}")]
    Download(String),
    #[error("producing events: {0}")]
    Produce(#[from] ProduceError),
    #[error(transparent)]
    Progress(#[from] progress::ProgressError),
}

/// Everything a backfill needs; cheap to share between shops.
pub struct Backfill {
    pub admin: AdminClient,
    pub sink: EventSink,
    pub topics: Topics,
    pub keys: KeyRing,
    pub shop_keys: Option<ShopKeys>,
    pub progress: ProgressStore,
    /// Time between two status queries while Shopify runs the query (the finish webhook cuts it short).
    pub poll_interval: Duration,
    /// Longest wait for Shopify to finish the query.
    pub max_wait: Duration,
    /// Lines per acknowledged batch (and progress checkpoint).
    pub batch_lines: usize,
}

impl Backfill {
    /// A backfill configured from the settings, producing through `sink`; progress in Postgres when `store` is
    /// given, else in this process's memory.
    pub fn from_settings(settings: &Settings, sink: EventSink, store: Option<&Store>) -> Backfill {
        let shop_keys = match (store, settings.keys.is_empty()) {
            (Some(store), false) => Some(ShopKeys::new(store.clone(), settings.keys.clone())),
            _ => None,
        };
        Backfill {
            admin: AdminClient::new(settings.shopify_admin.clone()),
            sink,
            topics: settings.topics.clone(),
            keys: settings.keys.clone(),
            shop_keys,
            progress: store.map_or_else(ProgressStore::memory, |s| {
                ProgressStore::Postgres(s.pool().clone())
            }),
            poll_interval: settings.backfill_poll_interval,
            max_wait: Duration::from_secs(6 * 3600),
            batch_lines: settings.backfill_batch_lines,
        }
    }
}

/// Wakes waiting backfills when the `bulk_operations/finish` webhook arrives, per shop, in this process.
fn waiters() -> &'static Mutex<HashMap<String, Arc<Notify>>> {
    static WAITERS: OnceLock<Mutex<HashMap<String, Arc<Notify>>>> = OnceLock::new();
    WAITERS.get_or_init(Mutex::default)
}

fn waiter(shop: &MerchantId) -> Arc<Notify> {
    let mut map = waiters().lock().unwrap_or_else(|p| p.into_inner());
    map.entry(shop.to_string()).or_default().clone()
}

/// Called by the webhook route: the shop's bulk operation finished, so a backfill waiting for it polls now.
pub fn bulk_operation_finished(shop: &MerchantId) {
    waiter(shop).notify_one();
}

struct Operation {
    status: String,
    error_code: Option<String>,
    object_count: Option<u64>,
    url: Option<String>,
}

fn operation(node: &Value) -> Operation {
    let text = |k: &str| node.get(k).and_then(Value::as_str).map(str::to_owned);
    Operation {
        status: text("status").unwrap_or_default(),
        error_code: text("errorCode"),
        // objectCount is an UnsignedInt64, a string in JSON.
        object_count: node.get("objectCount").and_then(|v| {
            v.as_u64()
                .or_else(|| v.as_str().and_then(|s| s.parse().ok()))
        }),
        url: text("url"),
    }
}

impl Backfill {
    /// Backfills `shop` to the end, continuing its unfinished run if there is one; `report` sees every
    /// checkpoint. Returns the final progress.
    pub async fn run(
        &self,
        shop: &MerchantId,
        token: &str,
        report: &(dyn Fn(&Progress) + Sync),
    ) -> Result<Progress, BackfillError> {
        let previous = self.progress.load(shop).await?;
        let mut progress = match previous {
            Some(p) if p.phase.resumable() && p.bulk_operation_id.is_some() => {
                tracing::info!(merchant = %shop, lines_done = p.lines_done, "continuing the unfinished backfill");
                p
            }
            _ => match self.start_operation(shop, token).await {
                Ok(id) => Progress::started(id),
                Err(e) => return Err(self.start_failed(shop, e).await),
            },
        };
        self.progress.save(shop, &progress).await?;
        report(&progress);
        let outcome = self.finish(shop, token, &mut progress, report).await;
        if let Err(e) = &outcome {
            progress.error = Some(e.to_string());
            // A failure Shopify reported ends the run; anything else (broker, network) leaves it resumable.
            if matches!(
                e,
                BackfillError::OperationFailed { .. } | BackfillError::Refused(_)
            ) {
                progress.phase = Phase::Failed;
            }
            self.progress.save(shop, &progress).await?;
        }
        outcome.map(|()| progress)
    }

    /// A start that will not succeed by trying again (refused, or the token refused) ends the run as failed, so
    /// the instances that resume unfinished runs stop claiming it; a transient failure leaves it to them.
    async fn start_failed(&self, shop: &MerchantId, e: BackfillError) -> BackfillError {
        let lasting = match &e {
            BackfillError::Refused(_) => true,
            BackfillError::Admin(admin) => !admin.is_transient(),
            _ => false,
        };
        if lasting {
            let progress = Progress::failed_to_start(e.to_string());
            if let Err(save) = self.progress.save(shop, &progress).await {
                tracing::warn!(merchant = %shop, error = %save, "could not record the failed start");
            }
        }
        e
    }

    async fn finish(
        &self,
        shop: &MerchantId,
        token: &str,
        progress: &mut Progress,
        report: &(dyn Fn(&Progress) + Sync),
    ) -> Result<(), BackfillError> {
        let id = progress.bulk_operation_id.clone().unwrap_or_default();
        let done = self.wait_for(shop, token, &id).await?;
        progress.phase = Phase::Downloading;
        progress.object_count = done.object_count;
        self.progress.save(shop, progress).await?;
        report(progress);
        if let Some(url) = &done.url {
            let response = reqwest::get(url)
                .await
                .and_then(reqwest::Response::error_for_status)
                // The URL is signed and opens the shop's orders: it stays out of errors, logs and the status route.
                .map_err(|e| BackfillError::Download(e.without_url().to_string()))?;
            let shop_key = match &self.shop_keys {
                Some(keys) => Some(
                    keys.for_sealing(shop)
                        .await
                        .map_err(|e| BackfillError::Download(format!("shop data key: {e}")))?,
                ),
                None => None,
            };
            let producing = download::Producing {
                sink: &self.sink,
                topics: &self.topics,
                merchant: shop,
                sealer: Sealer {
                    keys: &self.keys,
                    shop_key: shop_key.as_ref(),
                },
                batch_lines: self.batch_lines.max(1),
                store: &self.progress,
                report,
            };
            producing.run(response, progress).await?;
        }
        // No url: Shopify found no orders at all.
        progress.phase = Phase::Completed;
        progress.error = None;
        progress.finished_at = Some(chrono::Utc::now());
        self.progress.save(shop, progress).await?;
        report(progress);
        tracing::info!(merchant = %shop, lines = progress.lines_done, events = progress.events_produced,
            failed = progress.lines_failed, "backfill finished");
        Ok(())
    }

    /// One Admin API call, made again with capped exponential backoff while `retry` says the failure may pass
    /// (`THROTTLED` while a write-back drains the shop's bucket, a 5xx, a dropped connection), for at most
    /// [`RETRY_FOR`]; anything else, or a failure that outlasts it, ends the backfill (it resumes later).
    async fn admin_call(
        &self,
        shop: &MerchantId,
        token: &str,
        query: &str,
        variables: &Value,
        retry: impl Fn(&AdminError) -> bool,
    ) -> Result<GraphqlReply, BackfillError> {
        let mut pause = backoff::ExponentialBackoff {
            current_interval: Duration::from_millis(200),
            initial_interval: Duration::from_millis(200),
            max_interval: Duration::from_secs(10),
            max_elapsed_time: Some(RETRY_FOR),
            ..backoff::ExponentialBackoff::default()
        };
        loop {
            let answer = self
                .admin
                .graphql(shop.as_str(), token, query, variables.clone())
                .await;
            match answer {
                Ok(reply) => return Ok(reply),
                Err(e) if retry(&e) => match pause.next_backoff() {
                    Some(wait) => {
                        tracing::info!(merchant = %shop, error = %e, wait_ms = wait.as_millis() as u64,
                            "Admin API call of the backfill will be tried again");
                        tokio::time::sleep(wait).await;
                    }
                    None => return Err(e.into()),
                },
                Err(e) => return Err(e.into()),
            }
        }
    }

    async fn start_operation(
        &self,
        shop: &MerchantId,
        token: &str,
    ) -> Result<String, BackfillError> {
        // Only a throttled start is tried again: Shopify ran nothing then, whereas after a lost answer the
        // operation may be running, and a second start would be refused as one already in progress.
        let variables = json!({ "query": ORDERS_QUERY });
        let reply = self
            .admin_call(shop, token, RUN_MUTATION, &variables, |e| {
                matches!(e, AdminError::Throttled { .. })
            })
            .await?;
        let result = &reply.data["bulkOperationRunQuery"];
        let refusals: Vec<String> = result["userErrors"]
            .as_array()
            .into_iter()
            .flatten()
            .chain(&reply.errors)
            .filter_map(|e| e.get("message").and_then(Value::as_str).map(str::to_owned))
            .collect();
        match result.pointer("/bulkOperation/id").and_then(Value::as_str) {
            Some(id) if refusals.is_empty() => {
                tracing::info!(merchant = %shop, operation = id, "bulk query started");
                Ok(id.to_owned())
            }
            _ => Err(BackfillError::Refused(refusals.join("; "))),
        }
    }

    async fn wait_for(
        &self,
        shop: &MerchantId,
        token: &str,
        id: &str,
    ) -> Result<Operation, BackfillError> {
        let woken = waiter(shop);
        let deadline = tokio::time::Instant::now() + self.max_wait;
        loop {
            let variables = json!({ "id": id });
            let reply = self
                .admin_call(
                    shop,
                    token,
                    POLL_QUERY,
                    &variables,
                    AdminError::is_transient,
                )
                .await?;
            let op = operation(&reply.data["node"]);
            match op.status.as_str() {
                "COMPLETED" => return Ok(op),
                "CREATED" | "RUNNING" => {}
                _ => {
                    return Err(BackfillError::OperationFailed {
                        error_code: op.error_code.unwrap_or_else(|| "no error code".into()),
                        status: if op.status.is_empty() {
                            "unknown".into()
                        } else {
                            op.status
                        },
                    })
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(BackfillError::TimedOut(self.max_wait));
            }
            tokio::select! {
                _ = woken.notified() => {}
                _ = tokio::time::sleep(self.poll_interval) => {}
            }
        }
    }
}
