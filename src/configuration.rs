//! Process configuration from the environment (DESIGN.md §8). Parsed once at start-up into typed settings, so a
//! bad value stops the process with a message naming the variable instead of failing later on a request.

use std::net::SocketAddr;
use std::time::Duration;

use streams::Topics;

use functions::nudge::attribution::AttributionWindow;
use functions::nudge::cap::FrequencyCap;

use crate::customer_list::ExportLimits;
use crate::experiments::NudgeRules;
use crate::limits::LimitsConfig;
use crate::pii::{KeyRing, PiiError};
use crate::shopify::admin::throttle::ThrottlePlan;
use crate::shopify::admin::AdminSettings;
use crate::shopify::hmac::WebhookSecrets;
use crate::snapshots::SnapshotBackend;
use crate::store::PoolSettings;

#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub kafka_brokers: String,
    pub kafka_group_id: String,
    /// Consumer-group session timeout: how soon partitions of a crashed instance move.
    pub kafka_session_timeout: Duration,
    /// How long the processor may go without polling before librdkafka leaves the group for it.
    pub kafka_max_poll_interval: Duration,
    /// Static membership of the processor's consumer (`KAFKA_GROUP_INSTANCE_ID`, see docs/RECOVERY.md).
    pub kafka_group_instance_id: Option<String>,
    /// librdkafka properties from `KAFKA_CONFIG_*`, applied to every Kafka client (only [`Settings::from_env`]
    /// reads them: a lookup cannot list variables).
    pub kafka_client_props: Vec<streams::client_props::ClientProp>,
    /// librdkafka debug contexts for the processor's consumer (`KAFKA_DEBUG`).
    pub kafka_debug: Option<String>,
    /// Create missing topics at start-up, with this many partitions and replicas.
    pub kafka_create_topics: bool,
    pub kafka_partitions: i32,
    pub kafka_replication: i32,
    pub topics: Topics,
    pub redis_url: String,
    /// Redis is used (webhook dedupe, dashboard fan-out); the embedded demo turns it off when `REDIS_URL` is not
    /// set.
    pub redis_enabled: bool,
    pub database_url: Option<String>,
    /// The Postgres pool's size and timeouts (`PG_POOL_MAX`, `PG_ACQUIRE_TIMEOUT_MS`, `PG_STATEMENT_TIMEOUT_MS`).
    pub postgres: PoolSettings,
    pub shopify_api_key: String,
    pub webhook_secrets: WebhookSecrets,
    pub keys: KeyRing,
    pub webhook_max_body_bytes: usize,
    pub kafka_delivery_timeout: Duration,
    /// How long the processor's outputs may wait for the broker's acknowledgement before they are sent again as
    /// new records (`PROCESSOR_DELIVERY_TIMEOUT_MS`). Long: until then librdkafka's idempotent retries deliver a
    /// record once however late the broker answers, whereas a record sent again after a late acknowledgement
    /// lands twice. Nobody waits on these the way Shopify waits on a webhook.
    pub processor_delivery_timeout: Duration,
    /// How long the processor waits for more records after a batch's first (`PROCESSOR_BATCH_LINGER_MS`, default 0:
    /// a batch is what has arrived, and under load the consumer's queue fills batches anyway).
    pub processor_batch_linger: Duration,
    /// The output producer's `linger.ms` (`PROCESSOR_OUTPUT_LINGER_MS`, default 1): every batch waits for its
    /// outputs' acknowledgement, so the linger is added to each event → published time.
    pub processor_output_linger: Duration,
    pub dedupe_ttl: Duration,
    /// How long a data request's export is kept for the merchant to download.
    pub gdpr_export_retention: Duration,
    pub limits: LimitsConfig,
    pub redis_timeout: Duration,
    /// Shortest time between two dashboard frames of one merchant (coalescing window).
    pub live_frame_interval: Duration,
    /// How often each partition's state is snapshotted (and its offsets committed).
    pub snapshot_interval: Duration,
    /// Where snapshots go (`SNAPSHOT_STORE`); unset: Postgres with `DATABASE_URL`, else Redis.
    pub snapshot_store: Option<SnapshotBackend>,
    /// How long a fired nudge waits in memory for its shopper's widget.
    pub nudge_pending: Duration,
    /// Most nudges waiting at once; the oldest is evicted beyond it.
    pub nudge_pending_max: usize,
    /// How long a customer's actor outlives its last watcher.
    pub customer_actor_linger: Duration,
    /// Widget requests per second per customer and route (burst: twice that); 0 turns the limit off.
    pub widget_rate_per_customer: u32,
    /// Open widget sockets per customer on one instance.
    pub widget_sockets_per_customer: usize,
    /// `/proxy/widget-token` requests per second per peer address (burst: twice that), checked before the
    /// signature; 0 turns the limit off.
    pub widget_proxy_rate_per_ip: u32,
    /// Serve `/widget/demo` and its signer, which signs App Proxy requests for any customer (`WIDGET_DEMO`; the
    /// demo command turns it on; never in production).
    pub widget_demo: bool,
    /// Frequency cap, attribution window and experiment refresh of nudges.
    pub nudge_rules: NudgeRules,
    /// The Shopify Admin API: address (`SHOPIFY_ADMIN_URL`) and pinned version (`SHOPIFY_API_VERSION`).
    pub shopify_admin: AdminSettings,
    /// The plan whose bucket the write-back assumes before Shopify reports one (`SHOPIFY_THROTTLE_PLAN`).
    pub shopify_throttle_plan: ThrottlePlan,
    /// The write-back worker's consumer group and batching (`SYNC_GROUP_ID`, `SYNC_BATCH_MAX`, `SYNC_LINGER_MS`).
    pub sync: SyncSettings,
    /// How a stop (SIGTERM, Ctrl-C) unfolds (`SHUTDOWN_GRACE_SECS`, `SHUTDOWN_DELAY_MS`).
    pub shutdown: ShutdownSettings,
    /// Customer exports at once (per shop, per instance) and how long one may stream.
    pub exports: ExportLimits,
    /// How often the config outbox is checked for saves not sent yet (a failed send, a crashed instance).
    pub config_relay_interval: Duration,
    /// Time between two status queries of a backfill's bulk operation (`BACKFILL_POLL_MS`).
    pub backfill_poll_interval: Duration,
    /// JSONL lines per acknowledged batch and progress checkpoint of a backfill (`BACKFILL_BATCH_LINES`).
    pub backfill_batch_lines: usize,
    /// How long an instance's claim on a shop's backfill holds without renewal (`BACKFILL_LEASE_MS`).
    pub backfill_lease: Duration,
}

/// `SHUTDOWN_GRACE_SECS` and `SHUTDOWN_DELAY_MS` (the stop sequence is described in `runtime`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ShutdownSettings {
    /// Everything from the signal to the exit must fit in this; keep it under the orchestrator's own grace
    /// (Kubernetes' `terminationGracePeriodSeconds`, 30 s by default).
    pub grace: Duration,
    /// How long the instance keeps working with `/ready` at 503 before it stops accepting.
    pub delay: Duration,
}

/// The write-back worker's consumer group and batching (`SYNC_GROUP_ID`, `SYNC_BATCH_MAX`, `SYNC_LINGER_MS`).
#[derive(Debug, Clone)]
pub struct SyncSettings {
    pub group_id: String,
    /// Most records coalesced into one batch.
    pub batch_max: usize,
    /// How long a batch waits for more records after its first.
    pub linger: Duration,
    /// The group's session (`SYNC_SESSION_TIMEOUT_MS`): how soon a killed worker's partitions move.
    pub session_timeout: Duration,
}

#[derive(Debug, thiserror::Error)]
#[error("configuration: {var}: {message}")]
pub struct ConfigError {
    pub var: &'static str,
    pub message: String,
}

fn err(var: &'static str, message: impl Into<String>) -> ConfigError {
    ConfigError {
        var,
        message: message.into(),
    }
}

impl Settings {
    /// Reads settings through `lookup` (the process environment in `main`, a map in tests).
    pub fn from_lookup(lookup: impl Fn(&str) -> Option<String>) -> Result<Self, ConfigError> {
        let get = |var: &str| lookup(var).filter(|v| !v.trim().is_empty());
        let secret =
            get("SHOPIFY_API_SECRET").ok_or_else(|| err("SHOPIFY_API_SECRET", "is required"))?;
        let keys = match get("ENCRYPTION_KEYS") {
            Some(spec) => {
                let index = get("PII_INDEX_KEY").ok_or_else(|| {
                    err(
                        "PII_INDEX_KEY",
                        "is required with ENCRYPTION_KEYS (base64 of 32 bytes)",
                    )
                })?;
                KeyRing::parse(&spec, &index).map_err(|e| match e {
                    PiiError::BadIndexKey => err("PII_INDEX_KEY", e.to_string()),
                    e => err("ENCRYPTION_KEYS", e.to_string()),
                })?
            }
            None => KeyRing::empty(),
        };
        let prefix = get("KAFKA_TOPIC_PREFIX").unwrap_or_default();
        let snapshot_store = get("SNAPSHOT_STORE")
            .map(|raw| raw.parse::<SnapshotBackend>())
            .transpose()
            .map_err(|e| err("SNAPSHOT_STORE", e))?;
        if snapshot_store == Some(SnapshotBackend::Postgres) && get("DATABASE_URL").is_none() {
            return Err(err("SNAPSHOT_STORE", "postgres needs DATABASE_URL"));
        }
        let kafka_group_id = get("KAFKA_GROUP_ID").unwrap_or_else(|| "loyalnest-rfm".to_owned());
        Ok(Settings {
            http_addr: parse_or(&get, "HTTP_ADDR", "0.0.0.0:8080")?,
            kafka_brokers: get("KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            kafka_group_id: kafka_group_id.clone(),
            kafka_session_timeout: Duration::from_millis(parse_or(
                &get,
                "KAFKA_SESSION_TIMEOUT_MS",
                "45000",
            )?),
            kafka_max_poll_interval: Duration::from_millis(parse_or(
                &get,
                "KAFKA_MAX_POLL_INTERVAL_MS",
                "300000",
            )?),
            kafka_group_instance_id: get("KAFKA_GROUP_INSTANCE_ID").map(|id| id.trim().to_owned()),
            kafka_client_props: Vec::new(),
            kafka_debug: get("KAFKA_DEBUG"),
            kafka_create_topics: parse_or(&get, "KAFKA_CREATE_TOPICS", "true")?,
            kafka_partitions: parse_or(&get, "KAFKA_PARTITIONS", "12")?,
            kafka_replication: parse_or(&get, "KAFKA_REPLICATION", "1")?,
            topics: Topics::with_prefix(&prefix).overridden(get),
            redis_url: get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            redis_enabled: true,
            database_url: get("DATABASE_URL"),
            postgres: PoolSettings {
                max_connections: parse_or::<u32>(&get, "PG_POOL_MAX", "8")?.max(1),
                acquire_timeout: Duration::from_millis(parse_or(
                    &get,
                    "PG_ACQUIRE_TIMEOUT_MS",
                    "3000",
                )?),
                statement_timeout: Some(parse_or::<u64>(&get, "PG_STATEMENT_TIMEOUT_MS", "0")?)
                    .filter(|ms| *ms > 0)
                    .map(Duration::from_millis),
            },
            shopify_api_key: get("SHOPIFY_API_KEY").unwrap_or_else(|| "loyalnest-dev".to_owned()),
            webhook_secrets: WebhookSecrets::new(
                secret.into_bytes(),
                get("SHOPIFY_API_SECRET_PREVIOUS").map(String::into_bytes),
            ),
            keys,
            webhook_max_body_bytes: parse_or(&get, "WEBHOOK_MAX_BODY_BYTES", "2097152")?,
            kafka_delivery_timeout: Duration::from_millis(parse_or(
                &get,
                "KAFKA_DELIVERY_TIMEOUT_MS",
                "3000",
            )?),
            processor_delivery_timeout: Duration::from_millis(parse_or(
                &get,
                "PROCESSOR_DELIVERY_TIMEOUT_MS",
                "20000",
            )?),
            processor_batch_linger: Duration::from_millis(parse_or(
                &get,
                "PROCESSOR_BATCH_LINGER_MS",
                "0",
            )?),
            processor_output_linger: Duration::from_millis(parse_or(
                &get,
                "PROCESSOR_OUTPUT_LINGER_MS",
                "1",
            )?),
            dedupe_ttl: Duration::from_secs(parse_or(&get, "WEBHOOK_DEDUPE_TTL_SECS", "172800")?),
            gdpr_export_retention: Duration::from_secs(
                parse_or::<u64>(&get, "GDPR_EXPORT_RETENTION_DAYS", "30")?
                    .checked_mul(86_400)
                    .ok_or_else(|| err("GDPR_EXPORT_RETENTION_DAYS", "too large"))?,
            ),
            limits: LimitsConfig {
                webhook_per_ip: parse_or(&get, "WEBHOOK_RATE_PER_IP", "10000")?,
                api_per_shop: parse_or(&get, "API_RATE_PER_SHOP", "50")?,
                dashboard_sockets_per_shop: parse_or(&get, "DASHBOARD_SOCKETS_PER_SHOP", "50")?,
                body_deadline: Duration::from_millis(parse_or(
                    &get,
                    "WEBHOOK_BODY_TIMEOUT_MS",
                    "5000",
                )?),
                max_connections: parse_or(&get, "HTTP_MAX_CONNECTIONS", "65536")?,
                listen_backlog: parse_or(&get, "HTTP_LISTEN_BACKLOG", "4096")?,
            },
            redis_timeout: Duration::from_millis(parse_or(&get, "REDIS_TIMEOUT_MS", "250")?),
            live_frame_interval: Duration::from_millis(parse_or(
                &get,
                "LIVE_FRAME_INTERVAL_MS",
                "100",
            )?),
            snapshot_interval: Duration::from_millis(parse_or(
                &get,
                "SNAPSHOT_INTERVAL_MS",
                "5000",
            )?),
            snapshot_store,
            nudge_pending: Duration::from_secs(parse_or(&get, "NUDGE_PENDING_SECS", "900")?),
            nudge_pending_max: parse_or(&get, "NUDGE_PENDING_MAX", "100000")?,
            customer_actor_linger: Duration::from_millis(parse_or(
                &get,
                "CUSTOMER_ACTOR_LINGER_MS",
                "30000",
            )?),
            widget_rate_per_customer: parse_or(&get, "WIDGET_RATE_PER_CUSTOMER", "5")?,
            widget_sockets_per_customer: parse_or(&get, "WIDGET_SOCKETS_PER_CUSTOMER", "4")?,
            widget_proxy_rate_per_ip: parse_or(&get, "WIDGET_PROXY_RATE_PER_IP", "50")?,
            widget_demo: parse_or(&get, "WIDGET_DEMO", "false")?,
            nudge_rules: NudgeRules {
                cap: FrequencyCap {
                    window_seconds: parse_or(&get, "NUDGE_CAP_SECS", "86400")?,
                },
                attribution: AttributionWindow::days(parse_or(
                    &get,
                    "NUDGE_ATTRIBUTION_DAYS",
                    "7",
                )?),
                plan_refresh: Duration::from_secs(
                    parse_or::<u64>(&get, "NUDGE_PLAN_REFRESH_SECS", "5")?.max(1),
                ),
            },
            shopify_admin: AdminSettings {
                base_url: get("SHOPIFY_ADMIN_URL").unwrap_or_else(|| "https://{shop}".to_owned()),
                api_version: get("SHOPIFY_API_VERSION").unwrap_or_else(|| "2025-10".to_owned()),
            },
            shopify_throttle_plan: parse_or(&get, "SHOPIFY_THROTTLE_PLAN", "standard")?,
            sync: SyncSettings {
                // Derived from the processor's group, so instances of separate deployments stay apart by default.
                group_id: get("SYNC_GROUP_ID").unwrap_or_else(|| format!("{kafka_group_id}-sync")),
                batch_max: parse_or::<usize>(&get, "SYNC_BATCH_MAX", "5000")?.max(1),
                linger: Duration::from_millis(parse_or(&get, "SYNC_LINGER_MS", "200")?),
                session_timeout: Duration::from_millis(
                    parse_or::<u64>(&get, "SYNC_SESSION_TIMEOUT_MS", "10000")?.max(6_000),
                ),
            },
            shutdown: ShutdownSettings {
                grace: Duration::from_secs(parse_or(&get, "SHUTDOWN_GRACE_SECS", "25")?),
                delay: Duration::from_millis(parse_or(&get, "SHUTDOWN_DELAY_MS", "0")?),
            },
            exports: exports(&get)?,
            config_relay_interval: Duration::from_millis(
                parse_or::<u64>(&get, "CONFIG_RELAY_INTERVAL_MS", "1000")?.max(10),
            ),
            backfill_poll_interval: Duration::from_millis(
                parse_or::<u64>(&get, "BACKFILL_POLL_MS", "2000")?.max(10),
            ),
            backfill_batch_lines: parse_or::<usize>(&get, "BACKFILL_BATCH_LINES", "2000")?.max(1),
            backfill_lease: Duration::from_millis(
                parse_or::<u64>(&get, "BACKFILL_LEASE_MS", "30000")?.max(300),
            ),
        })
    }

    /// The process environment, `KAFKA_CONFIG_*` included.
    pub fn from_env() -> Result<Self, ConfigError> {
        let mut settings = Settings::from_lookup(|var| std::env::var(var).ok())?;
        settings.kafka_client_props = streams::client_props::from_vars(std::env::vars());
        Ok(settings)
    }
}

fn exports(get: &impl Fn(&str) -> Option<String>) -> Result<ExportLimits, ConfigError> {
    let limits = ExportLimits {
        total: parse_or(get, "EXPORT_CONCURRENCY", "3")?,
        per_shop: parse_or(get, "EXPORT_CONCURRENCY_PER_SHOP", "2")?,
        time_limit: Duration::from_secs(parse_or(get, "EXPORT_TIME_LIMIT_SECS", "600")?),
    };
    if limits.total == 0 || limits.per_shop == 0 || limits.time_limit.is_zero() {
        return Err(err(
            "EXPORT_CONCURRENCY",
            "EXPORT_CONCURRENCY, EXPORT_CONCURRENCY_PER_SHOP and EXPORT_TIME_LIMIT_SECS must be above 0",
        ));
    }
    Ok(limits)
}

fn parse_or<T: std::str::FromStr>(
    get: &impl Fn(&str) -> Option<String>,
    var: &'static str,
    default: &str,
) -> Result<T, ConfigError>
where
    T::Err: std::fmt::Display,
{
    let raw = get(var).unwrap_or_else(|| default.to_owned());
    raw.trim()
        .parse()
        .map_err(|e| err(var, format!("{raw:?}: {e}")))
}

#[cfg(test)]
mod tests;
