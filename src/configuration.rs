//! Process configuration from the environment (DESIGN.md §8). Parsed once at start-up into typed settings, so a
//! bad value stops the process with a message naming the variable instead of failing later on a request.

use std::net::SocketAddr;
use std::time::Duration;

use streams::Topics;

use functions::nudge::attribution::AttributionWindow;
use functions::nudge::cap::FrequencyCap;

use crate::experiments::NudgeRules;
use crate::limits::LimitsConfig;
use crate::pii::{KeyRing, PiiError};
use crate::shopify::hmac::WebhookSecrets;
use crate::snapshots::SnapshotBackend;

#[derive(Debug, Clone)]
pub struct Settings {
    pub http_addr: SocketAddr,
    pub kafka_brokers: String,
    pub kafka_group_id: String,
    /// Consumer-group session timeout: how soon partitions of a crashed instance move.
    pub kafka_session_timeout: Duration,
    /// How long the processor may go without polling before librdkafka leaves the group for it.
    pub kafka_max_poll_interval: Duration,
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
    pub shopify_api_key: String,
    pub webhook_secrets: WebhookSecrets,
    pub keys: KeyRing,
    pub webhook_max_body_bytes: usize,
    pub kafka_delivery_timeout: Duration,
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
    /// Serve `/widget/demo` and its signer, which signs App Proxy requests for any customer (`WIDGET_DEMO`; the
    /// demo command turns it on; never in production).
    pub widget_demo: bool,
    /// Frequency cap, attribution window and experiment refresh of nudges.
    pub nudge_rules: NudgeRules,
    /// The Admin API's address (`SHOPIFY_ADMIN_URL`, `{shop}` replaced by the shop domain).
    pub shopify_admin_url: String,
    /// The pinned Admin API version (`SHOPIFY_API_VERSION`).
    pub shopify_api_version: String,
    /// Time between two status queries of a backfill's bulk operation (`BACKFILL_POLL_MS`).
    pub backfill_poll_interval: Duration,
    /// JSONL lines per acknowledged batch and progress checkpoint of a backfill (`BACKFILL_BATCH_LINES`).
    pub backfill_batch_lines: usize,
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
        Ok(Settings {
            http_addr: parse_or(&get, "HTTP_ADDR", "127.0.0.1:8080")?,
            kafka_brokers: get("KAFKA_BROKERS").unwrap_or_else(|| "127.0.0.1:9092".to_owned()),
            kafka_group_id: get("KAFKA_GROUP_ID").unwrap_or_else(|| "loyalnest-rfm".to_owned()),
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
            kafka_debug: get("KAFKA_DEBUG"),
            kafka_create_topics: parse_or(&get, "KAFKA_CREATE_TOPICS", "true")?,
            kafka_partitions: parse_or(&get, "KAFKA_PARTITIONS", "12")?,
            kafka_replication: parse_or(&get, "KAFKA_REPLICATION", "1")?,
            topics: Topics::with_prefix(&prefix).overridden(get),
            redis_url: get("REDIS_URL").unwrap_or_else(|| "redis://127.0.0.1:6379".to_owned()),
            redis_enabled: true,
            database_url: get("DATABASE_URL"),
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
            shopify_admin_url: get("SHOPIFY_ADMIN_URL")
                .unwrap_or_else(|| "https://{shop}".to_owned()),
            shopify_api_version: get("SHOPIFY_API_VERSION").unwrap_or_else(|| "2025-10".to_owned()),
            backfill_poll_interval: Duration::from_millis(
                parse_or::<u64>(&get, "BACKFILL_POLL_MS", "2000")?.max(10),
            ),
            backfill_batch_lines: parse_or::<usize>(&get, "BACKFILL_BATCH_LINES", "2000")?.max(1),
        })
    }

    pub fn from_env() -> Result<Self, ConfigError> {
        Settings::from_lookup(|var| std::env::var(var).ok())
    }
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
mod tests {
    use std::collections::HashMap;

    use super::*;

    fn settings(pairs: &[(&str, &str)]) -> Result<Settings, ConfigError> {
        let map: HashMap<String, String> = pairs
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        Settings::from_lookup(|k| map.get(k).cloned())
    }

    #[test]
    fn requires_the_app_secret() {
        assert_eq!(settings(&[]).unwrap_err().var, "SHOPIFY_API_SECRET");
    }

    #[test]
    fn defaults_and_overrides() {
        let s = settings(&[
            ("SHOPIFY_API_SECRET", "s"),
            ("KAFKA_TOPIC_PREFIX", "t."),
            ("HTTP_ADDR", "0.0.0.0:9"),
        ])
        .unwrap();
        assert_eq!(s.http_addr.port(), 9);
        assert_eq!(s.topics.orders_create, "t.orders.create");
        assert_eq!(s.webhook_max_body_bytes, 2 * 1024 * 1024);
    }

    #[test]
    fn the_snapshot_store_is_named_or_follows_the_database() {
        let base = [("SHOPIFY_API_SECRET", "s")];
        assert_eq!(settings(&base).unwrap().snapshot_store, None);
        let redis = settings(&[base[0], ("SNAPSHOT_STORE", "Redis")]).unwrap();
        assert_eq!(redis.snapshot_store, Some(SnapshotBackend::Redis));
        let lonely = settings(&[base[0], ("SNAPSHOT_STORE", "postgres")]).unwrap_err();
        assert_eq!(lonely.var, "SNAPSHOT_STORE", "postgres without a database");
        let odd = settings(&[base[0], ("SNAPSHOT_STORE", "kafka")]).unwrap_err();
        assert_eq!(odd.var, "SNAPSHOT_STORE");
    }

    #[test]
    fn shopify_admin_and_backfill_settings() {
        let s = settings(&[("SHOPIFY_API_SECRET", "s")]).unwrap();
        assert_eq!(
            (s.shopify_admin_url.as_str(), s.shopify_api_version.as_str()),
            ("https://{shop}", "2025-10")
        );
        assert_eq!(
            (s.backfill_poll_interval, s.backfill_batch_lines),
            (Duration::from_secs(2), 2000)
        );
        let s = settings(&[
            ("SHOPIFY_API_SECRET", "s"),
            ("SHOPIFY_ADMIN_URL", "http://127.0.0.1:9/shops/{shop}"),
            ("BACKFILL_BATCH_LINES", "10"),
        ])
        .unwrap();
        assert_eq!(
            (s.shopify_admin_url.as_str(), s.backfill_batch_lines),
            ("http://127.0.0.1:9/shops/{shop}", 10)
        );
        let e = settings(&[("SHOPIFY_API_SECRET", "s"), ("BACKFILL_POLL_MS", "soon")]).unwrap_err();
        assert_eq!(e.var, "BACKFILL_POLL_MS");
    }

    #[test]
    fn names_the_bad_variable() {
        let e = settings(&[
            ("SHOPIFY_API_SECRET", "s"),
            ("WEBHOOK_MAX_BODY_BYTES", "lots"),
        ])
        .unwrap_err();
        assert_eq!(e.var, "WEBHOOK_MAX_BODY_BYTES");
    }
}
