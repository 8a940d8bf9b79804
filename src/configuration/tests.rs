//! The settings as read from variables: defaults, overrides and the errors that name the variable.

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
fn the_widget_proxy_rate_defaults_and_can_be_turned_off() {
    let base = [("SHOPIFY_API_SECRET", "s")];
    assert_eq!(settings(&base).unwrap().widget_proxy_rate_per_ip, 50);
    let off = settings(&[base[0], ("WIDGET_PROXY_RATE_PER_IP", "0")]).unwrap();
    assert_eq!(off.widget_proxy_rate_per_ip, 0);
    let bad = settings(&[base[0], ("WIDGET_PROXY_RATE_PER_IP", "-1")]);
    assert_eq!(bad.unwrap_err().var, "WIDGET_PROXY_RATE_PER_IP");
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
fn shopify_admin_and_sync_settings() {
    let base = [("SHOPIFY_API_SECRET", "s")];
    let s = settings(&base).unwrap();
    assert_eq!(
        s.shopify_admin.base_for("a.myshopify.com"),
        "https://a.myshopify.com"
    );
    assert_eq!(s.shopify_admin.api_version, "2025-10");
    assert_eq!(s.shopify_throttle_plan, ThrottlePlan::Standard);
    assert_eq!(
        (s.sync.group_id.as_str(), s.sync.batch_max),
        ("loyalnest-rfm-sync", 5000)
    );
    assert_eq!(s.sync.session_timeout, Duration::from_secs(10));
    let plus = settings(&[
        base[0],
        ("SHOPIFY_THROTTLE_PLAN", "plus"),
        ("SHOPIFY_ADMIN_URL", "http://127.0.0.1:9"),
        ("SYNC_LINGER_MS", "50"),
        ("SYNC_SESSION_TIMEOUT_MS", "6000"),
        ("KAFKA_GROUP_ID", "blue"),
    ])
    .unwrap();
    assert_eq!(plus.shopify_throttle_plan, ThrottlePlan::Plus);
    assert_eq!(
        plus.shopify_admin.base_for("a.myshopify.com"),
        "http://127.0.0.1:9"
    );
    assert_eq!(plus.sync.linger, Duration::from_millis(50));
    assert_eq!(plus.sync.session_timeout, Duration::from_secs(6));
    assert_eq!(plus.sync.group_id, "blue-sync");
    let odd = settings(&[base[0], ("SHOPIFY_THROTTLE_PLAN", "gold")]).unwrap_err();
    assert_eq!(odd.var, "SHOPIFY_THROTTLE_PLAN");
}

#[test]
fn runtime_settings_have_defaults_and_overrides() {
    let base = [("SHOPIFY_API_SECRET", "s")];
    let s = settings(&base).unwrap();
    assert_eq!(s.http_addr.to_string(), "0.0.0.0:8080");
    assert_eq!(s.shutdown.grace, Duration::from_secs(25));
    assert_eq!(s.shutdown.delay, Duration::ZERO);
    assert_eq!(s.postgres.max_connections, 8);
    assert_eq!(s.postgres.acquire_timeout, Duration::from_secs(3));
    assert_eq!(s.postgres.statement_timeout, None);
    assert_eq!(s.kafka_group_instance_id, None);
    let s = settings(&[
        base[0],
        ("SHUTDOWN_GRACE_SECS", "10"),
        ("SHUTDOWN_DELAY_MS", "1500"),
        ("PG_POOL_MAX", "20"),
        ("PG_ACQUIRE_TIMEOUT_MS", "500"),
        ("PG_STATEMENT_TIMEOUT_MS", "2000"),
        ("KAFKA_GROUP_INSTANCE_ID", "processor-0"),
    ])
    .unwrap();
    assert_eq!(s.shutdown.grace, Duration::from_secs(10));
    assert_eq!(s.shutdown.delay, Duration::from_millis(1500));
    assert_eq!(s.postgres.max_connections, 20);
    assert_eq!(s.postgres.acquire_timeout, Duration::from_millis(500));
    assert_eq!(s.postgres.statement_timeout, Some(Duration::from_secs(2)));
    assert_eq!(s.kafka_group_instance_id.as_deref(), Some("processor-0"));
    let bad = settings(&[base[0], ("SHUTDOWN_GRACE_SECS", "soon")]).unwrap_err();
    assert_eq!(bad.var, "SHUTDOWN_GRACE_SECS");
}

#[test]
fn export_caps_default_below_the_pool_and_refuse_zero() {
    let base = ("SHOPIFY_API_SECRET", "s");
    let s = settings(&[base]).unwrap();
    assert_eq!(s.exports, ExportLimits::default());
    assert_eq!((s.exports.total, s.exports.per_shop), (3, 2));
    let s = settings(&[
        base,
        ("EXPORT_CONCURRENCY_PER_SHOP", "1"),
        ("EXPORT_TIME_LIMIT_SECS", "5"),
    ])
    .unwrap();
    assert_eq!(s.exports.per_shop, 1);
    assert_eq!(s.exports.time_limit, Duration::from_secs(5));
    let zero = settings(&[base, ("EXPORT_CONCURRENCY", "0")]).unwrap_err();
    assert_eq!(zero.var, "EXPORT_CONCURRENCY");
    assert_eq!(s.config_relay_interval, Duration::from_secs(1));
}

#[test]
fn shopify_admin_and_backfill_settings() {
    let s = settings(&[("SHOPIFY_API_SECRET", "s")]).unwrap();
    assert_eq!(
        (
            s.backfill_poll_interval,
            s.backfill_batch_lines,
            s.backfill_lease
        ),
        (Duration::from_secs(2), 2000, Duration::from_secs(30))
    );
    let s = settings(&[
        ("SHOPIFY_API_SECRET", "s"),
        ("SHOPIFY_ADMIN_URL", "http://127.0.0.1:9/shops/{shop}"),
        ("BACKFILL_BATCH_LINES", "10"),
    ])
    .unwrap();
    assert_eq!(
        (s.shopify_admin.base_url.as_str(), s.backfill_batch_lines),
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

#[test]
fn processor_lingers_default_to_latency_and_can_be_raised() {
    let s = settings(&[("SHOPIFY_API_SECRET", "s")]).unwrap();
    assert_eq!(s.processor_batch_linger, Duration::ZERO);
    assert_eq!(s.processor_output_linger, Duration::from_millis(1));
    let s = settings(&[
        ("SHOPIFY_API_SECRET", "s"),
        ("PROCESSOR_BATCH_LINGER_MS", "5"),
        ("PROCESSOR_OUTPUT_LINGER_MS", "20"),
    ])
    .unwrap();
    assert_eq!(s.processor_batch_linger, Duration::from_millis(5));
    assert_eq!(s.processor_output_linger, Duration::from_millis(20));
    let e = settings(&[
        ("SHOPIFY_API_SECRET", "s"),
        ("PROCESSOR_BATCH_LINGER_MS", "-1"),
    ])
    .unwrap_err();
    assert_eq!(e.var, "PROCESSOR_BATCH_LINGER_MS");
}
