//! Every metric family the engine exports, in one place: its name, type, unit and HELP text.
//!
//! Call sites use these constants, never a string of their own, so a dashboard or alert written against
//! docs/METRICS.md cannot silently lose its series to a typo or a rename. [`describe_all`] gives each family its
//! HELP text and creates the series whose label values are known at start at zero, so `/metrics` lists every
//! family before the first event (Prometheus' `absent()` and rate() both need the series to exist). Families whose
//! labels are only known later (a partition number) are registered by whoever learns them.
//!
//! Cardinality is bounded by construction: every label value is one of a fixed list below, a topic or partition of
//! the deployment, or a segment key folded into [`OTHER_SEGMENT`] past [`MAX_SEGMENT_LABELS`] distinct keys.

use metrics::Unit;

/// How a family is exported.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Counter,
    Gauge,
    Histogram,
}

/// One metric family: the name dashboards use, what it counts, and how.
#[derive(Debug, Clone, Copy)]
pub struct Family {
    pub name: &'static str,
    pub kind: Kind,
    pub unit: Unit,
    pub help: &'static str,
}

macro_rules! families {
    ($($(#[$doc:meta])* $konst:ident = $name:literal, $kind:ident, $unit:ident, $help:literal;)*) => {
        $($(#[$doc])* pub const $konst: &str = $name;)*
        /// Every family, in the order docs/METRICS.md lists them.
        pub const FAMILIES: &[Family] = &[
            $(Family { name: $name, kind: Kind::$kind, unit: Unit::$unit, help: $help },)*
        ];
    };
}

families! {
    // The contract names (dashboards and alerts in deploy/ are built on exactly these).
    EVENTS_PROCESSED = "rfm_events_processed_total", Counter, Count,
        "Input records applied by the processor, by input topic.";
    SEGMENTS = "rfm_segment_customers", Gauge, Count,
        "Customers per segment key, summed over the merchants of the partitions this instance owns.";
    SEGMENT_ENTRIES = "rfm_segments_total", Counter, Count,
        "Customers moved into a segment (published changes whose segment differs from the one before), by segment.";
    CHURN_RISK_CUSTOMERS = "rfm_churn_risk_customers", Gauge, Count,
        "Customers of this instance's partitions by churn-risk level (high >= 0.75, medium >= 0.5, low > 0).";
    CHURN_LATENCY = "rfm_churn_latency_seconds", Histogram, Seconds,
        "Input event time to its churn_risk.detected record acknowledged by Kafka.";
    EVENT_TO_PUBLISH = "rfm_event_to_publish_seconds", Histogram, Seconds,
        "Input event time to the rfm.updated records of its batch acknowledged by Kafka.";
    WEBHOOK_TO_FRAME = "rfm_webhook_to_frame_seconds", Histogram, Seconds,
        "Webhook accepted (its input record's timestamp) to the dashboard frame showing its change sent.";
    CONSUMER_LAG_RECORDS = "rfm_consumer_lag_records", Gauge, Count,
        "Records of an owned input partition not applied yet: high watermark minus the next offset to apply.";
    CONSUMER_LAG_SECONDS = "rfm_consumer_lag_seconds", Gauge, Seconds,
        "Age of the last applied record of an owned input partition while records wait behind it; 0 when none wait.";
    DLQ_SIZE = "rfm_dlq_size_total", Counter, Count,
        "Input records sent to the dead-letter topic, by the input topic they came from.";
    ERRORS = "rfm_errors_total", Counter, Count,
        "Errors the engine recovered from, by component and kind (both from fixed lists).";
    CACHE_HITS = "rfm_cache_hits_total", Counter, Count,
        "Cache lookups answered from the cache, by cache.";
    CACHE_MISSES = "rfm_cache_misses_total", Counter, Count,
        "Cache lookups that had to be computed or loaded, by cache.";
    SNAPSHOT_AGE = "rfm_snapshot_age_seconds", Gauge, Seconds,
        "Seconds since an owned partition's last durable snapshot (or since it was assigned, before the first).";
    SNAPSHOTS = "rfm_snapshots_total", Counter, Count,
        "Partition snapshot rounds, by outcome (written, failed, unchanged: skipped because the store holds that state).";
    RESTORE_DURATION = "rfm_restore_duration_seconds", Histogram, Seconds,
        "Assigned partition to restored and live: snapshot load plus catch-up replay.";
    RESTORE_FAILURES = "rfm_restore_failures_total", Counter, Count,
        "Restore attempts that failed and were retried (snapshot unreadable, store or broker unavailable).";
    PARTITIONS_OWNED = "rfm_partitions_owned", Gauge, Count,
        "Input partitions the consumer group gave this instance.";
    PARTITIONS_PAUSED = "rfm_partitions_paused", Gauge, Count,
        "Owned partitions paused: outputs not completing, or merchant configurations unreadable.";
    MAILBOX_DEPTH = "rfm_mailbox_depth", Gauge, Count,
        "Requests sent to this instance's actors and not answered yet, by actor kind.";
    SOCKETS_OPEN = "rfm_sockets_open", Gauge, Count,
        "Open push sockets, by kind (dashboard, widget).";
    NUDGES = "rfm_nudges_total", Counter, Count,
        "Nudges by outcome: shown to a shopper, capped by the frequency cap, held out by an experiment.";
    NUDGE_INTERACTIONS = "rfm_nudge_interactions_total", Counter, Count,
        "Shopper interactions with shown nudges, by action (view, click, dismiss).";
    INGRESS_WEBHOOKS = "ingress_webhooks_total", Counter, Count,
        "Webhooks answered, by Shopify topic and outcome.";
    INGRESS_WEBHOOK_DURATION = "ingress_webhook_duration_seconds", Histogram, Seconds,
        "Time to answer a webhook, by outcome.";

    // Finer-grained families kept under their original names.
    INGRESS_PRODUCE_ERRORS = "ingress_produce_errors_total", Counter, Count,
        "Webhooks answered 503 because Kafka did not acknowledge their record in time.";
    READY_CHECKS = "ready_checks_total", Counter, Count,
        "Readiness checks that asked the dependencies (cached answers not counted).";
    RATE_LIMITED = "rate_limited_total", Counter, Count,
        "Requests or sockets refused by a rate limit, by door.";
    API_AUTH_FAILURES = "api_auth_failures_total", Counter, Count,
        "API requests refused for their session token, by reason.";
    PARTITIONS_RESTORING = "processor_partitions_restoring", Gauge, Count,
        "Owned partitions still loading their snapshot or replaying.";
    PARTITIONS_REVOKED = "processor_partitions_revoked_total", Counter, Count,
        "Partitions the consumer group took from this instance.";
    ASSIGNMENTS_LOST = "processor_assignments_lost_total", Counter, Count,
        "Revocations that arrived after the group had already moved the partitions on.";
    FENCED_HANDOVERS = "processor_fenced_handovers_total", Counter, Count,
        "Hand-overs not snapshotted because the assignment was lost.";
    HANDOVER_SNAPSHOTS = "processor_handover_snapshots_total", Counter, Count,
        "Partitions snapshotted as they were handed to another instance (or found already held by the store).";
    GROUP_REJOINS = "processor_group_rejoins_total", Counter, Count,
        "Times this instance left and re-joined the consumer group after owning nothing for a session.";
    OUTPUT_QUEUE_FULL = "processor_output_queue_full_total", Counter, Count,
        "Output records the producer's local queue refused at first (sent again).";
    CHANGES = "processor_changes_total", Counter, Count,
        "Customer changes published (rfm.updated records).";
    OUTPUT_RETRIES = "processor_output_retries_total", Counter, Count,
        "Output records sent again after a failed delivery.";
    STORE_RETRIES = "processor_store_retries_total", Counter, Count,
        "Postgres writes retried.";
    CONFIG_INVALID = "processor_config_invalid_total", Counter, Count,
        "Stored merchant configurations that could not be parsed (the default was used).";
    CONFIG_LOAD_FAILURES = "processor_config_load_failures_total", Counter, Count,
        "Merchant configuration loads that failed; the merchant's records waited.";
    SNAPSHOTS_REFUSED = "processor_snapshots_refused_total", Counter, Count,
        "Snapshots refused at restore (stale, from another lineage, or unreadable); the partition replayed.";
    PAUSES = "processor_pauses_total", Counter, Count,
        "Times consumption paused because outputs were not completing.";
    PAUSED = "processor_paused", Gauge, Count,
        "1 while every owned partition is paused because outputs are not completing.";
    SNAPSHOT_PIECES = "processor_snapshot_pieces_total", Counter, Count,
        "Merchant pieces written in partition snapshots.";
    SNAPSHOT_BYTES = "processor_snapshot_bytes_total", Counter, Bytes,
        "Bytes written in partition snapshots.";
    LEGACY_SNAPSHOT_KEYS_DELETED = "processor_legacy_snapshot_keys_deleted_total", Counter, Count,
        "Redis snapshot keys of the pre-hash-tag layout deleted once their partition's tagged snapshot was written.";
    DEAD_LETTER_RETRIES = "processor_dead_letter_retries_total", Counter, Count,
        "Dead letters sent again after the broker did not acknowledge them.";
    PRODUCER_REPLACED = "kafka_producer_replaced_total", Counter, Count,
        "Kafka producers replaced because they were stuck.";
    PII_SEALS = "pii_seals_total", Counter, Count,
        "Personal-data fields sealed before they were written to Kafka.";
    NUDGE_PLAN_REFRESH_FAILURES = "nudge_plan_refresh_failures_total", Counter, Count,
        "Failed refreshes of the running nudge experiments.";
    NUDGE_CONVERSIONS = "nudge_conversions_total", Counter, Count,
        "Orders credited to a shown nudge.";
    NUDGES_EVICTED = "nudges_evicted_total", Counter, Count,
        "Pending nudges dropped because their window passed or the desk was full.";
    NUDGES_PENDING = "nudges_pending", Gauge, Count,
        "Nudges waiting for their shoppers on this instance.";
    NUDGE_RELAY_DROPPED = "nudge_relay_dropped_total", Counter, Count,
        "Nudges the widget relay dropped because its queue was full.";
    READ_RANKINGS_BUILT = "read_rankings_built_total", Counter, Count,
        "Customer rankings built for the read API.";
    DASHBOARD_SLOTS_DROPPED = "dashboard_slots_dropped_total", Counter, Count,
        "Dashboard fan-out slots dropped for lack of listeners.";
    DASHBOARD_BOARDS_DROPPED = "dashboard_boards_dropped_total", Counter, Count,
        "Dashboard boards dropped after an erasure or for lack of listeners.";
    DASHBOARD_FRAMES_SKIPPED = "dashboard_frames_skipped_total", Counter, Count,
        "Dashboard frames a slow socket skipped (it got the newest frame instead).";
    DASHBOARD_FRAMES_SENT = "dashboard_frames_sent_total", Counter, Count,
        "Frames sent on dashboard sockets.";
    DASHBOARD_SOCKETS_TOO_SLOW = "dashboard_sockets_too_slow_total", Counter, Count,
        "Dashboard sockets closed because a frame could not be sent within its deadline.";
    WIDGET_NUDGES_SENT = "widget_nudges_sent_total", Counter, Count,
        "Nudge frames sent on widget sockets.";
    WIDGET_SOCKETS_TOO_SLOW = "widget_sockets_too_slow_total", Counter, Count,
        "Widget sockets closed because a frame could not be sent within its deadline.";
    WIDGET_PROXY_REFUSED = "widget_proxy_refused_total", Counter, Count,
        "App-proxy requests refused, by reason.";
    WIDGET_AUTH_FAILURES = "widget_auth_failures_total", Counter, Count,
        "Widget requests refused for their signature or token, by reason.";
    WIDGET_NAMES_UNOPENED = "widget_names_unopened_total", Counter, Count,
        "Customer names the widget could not open (sealed data unavailable).";
    CUSTOMER_ACTORS_ACTIVE = "customer_actors_active", Gauge, Count,
        "Customer actors running (a customer with a watcher).";
    CUSTOMER_WATCHERS_DISCONNECTED = "customer_watchers_disconnected_total", Counter, Count,
        "Customer watchers dropped because they stopped listening.";
    ORPHAN_REFUNDS_EVICTED = "orphan_refunds_evicted_total", Counter, Count,
        "Refunds whose order never arrived, evicted from the waiting table.";

    // Shopify both ways (write-back and history).
    SHOPIFY_WRITES = "rfm_shopify_writes_total", Counter, Count,
        "Customer write-backs to Shopify by outcome (written, refused, stale, no_token, throttled, retried).";
    SHOPIFY_THROTTLE_AVAILABLE = "rfm_shopify_throttle_available", Gauge, Count,
        "Points of Shopify's cost bucket available as last reported (the last shop heard from).";
    SYNC_GROUP_REJOINS = "rfm_sync_group_rejoins_total", Counter, Count,
        "Times the write-back worker left and re-joined its group after owning nothing for two sessions.";
    BACKFILL_RECORDS = "rfm_backfill_records_total", Counter, Count,
        "Records read from Shopify bulk-operation results, by kind (order, cancellation, refund, skipped, failed).";
}

/// How many distinct custom segment keys get a series of their own; later keys are counted under `other`.
pub const MAX_SEGMENT_LABELS: usize = 16;
/// The segment label that collects keys past [`MAX_SEGMENT_LABELS`] (also a built-in key).
pub const OTHER_SEGMENT: &str = "other";

/// Label values fixed by the code, registered at start.
pub mod labels {
    pub const CHURN_LEVELS: [&str; 3] = ["high", "medium", "low"];
    pub const SHOPIFY_WRITE_OUTCOMES: [&str; 6] = [
        "written",
        "refused",
        "stale",
        "no_token",
        "throttled",
        "retried",
    ];
    pub const BACKFILL_KINDS: [&str; 5] = ["order", "cancellation", "refund", "skipped", "failed"];
    pub const CACHES: [&str; 4] = ["score", "preview", "templates", "plans"];
    pub const SNAPSHOT_OUTCOMES: [&str; 3] = ["written", "failed", "unchanged"];
    pub const SOCKET_KINDS: [&str; 2] = ["dashboard", "widget"];
    pub const NUDGE_OUTCOMES: [&str; 3] = ["shown", "capped", "held_out"];
    pub const NUDGE_ACTIONS: [&str; 3] = ["view", "click", "dismiss"];
    pub const ACTORS: [&str; 1] = ["partition"];
    pub const RATE_LIMIT_DOORS: [&str; 6] = [
        "webhook",
        "api",
        "dashboard_socket",
        "widget_event",
        "widget_read",
        "widget_socket",
    ];
    /// Why a session token (API, widget) was refused.
    pub const AUTH_REASONS: [&str; 4] = ["missing", "lifetime", "signature", "claims"];
    /// Why an App Proxy request was refused.
    pub const PROXY_REASONS: [&str; 4] = ["missing", "signature", "timestamp", "parameters"];
    /// The (component, kind) pairs `rfm_errors_total` may carry.
    pub const ERRORS: [(&str, &str); 13] = [
        ("ingress", "dedupe_unavailable"),
        ("ingress", "produce"),
        ("processor", "config_load"),
        ("processor", "output_delivery"),
        ("processor", "store"),
        ("processor", "snapshot"),
        ("processor", "restore"),
        ("processor", "dead_letter_delivery"),
        ("score_cache", "redis"),
        ("dashboard", "fanout"),
        ("dashboard", "erasure"),
        ("widget", "relay"),
        ("nudges", "plan_refresh"),
    ];
}

/// What [`describe_all`] needs to know about the deployment to create its labelled series.
#[derive(Debug, Clone, Copy)]
pub struct Known<'a> {
    /// Input topic names (`rfm_events_processed_total`, `rfm_dlq_size_total`).
    pub input_topics: &'a [&'a str],
    /// Segment keys of the built-in rule table.
    pub segments: &'a [&'a str],
}

/// Gives every family its HELP text and unit, and creates at zero every series whose labels are known now.
pub fn describe_all(known: Known<'_>) {
    for family in FAMILIES {
        match family.kind {
            Kind::Counter => metrics::describe_counter!(family.name, family.unit, family.help),
            Kind::Gauge => metrics::describe_gauge!(family.name, family.unit, family.help),
            Kind::Histogram => {
                metrics::describe_histogram!(family.name, family.unit, family.help)
            }
        }
    }
    register_known(known);
}

fn register_known(known: Known<'_>) {
    let one = |name: &'static str, label: &'static str, values: &[&str]| {
        for value in values {
            let labels = [(label, (*value).to_owned())];
            match kind_of(name) {
                Some(Kind::Gauge) => metrics::gauge!(name, &labels).increment(0.0),
                Some(Kind::Histogram) => drop(metrics::histogram!(name, &labels)),
                _ => metrics::counter!(name, &labels).increment(0),
            }
        }
    };
    one(EVENTS_PROCESSED, "topic", known.input_topics);
    one(DLQ_SIZE, "topic", known.input_topics);
    let mut segments = known.segments.to_vec();
    if !segments.contains(&OTHER_SEGMENT) {
        segments.push(OTHER_SEGMENT);
    }
    one(SEGMENTS, "segment", &segments);
    one(SEGMENT_ENTRIES, "segment", &segments);
    one(SHOPIFY_WRITES, "outcome", &labels::SHOPIFY_WRITE_OUTCOMES);
    one(BACKFILL_RECORDS, "kind", &labels::BACKFILL_KINDS);
    one(CHURN_RISK_CUSTOMERS, "level", &labels::CHURN_LEVELS);
    one(CACHE_HITS, "cache", &labels::CACHES);
    one(CACHE_MISSES, "cache", &labels::CACHES);
    one(SNAPSHOTS, "outcome", &labels::SNAPSHOT_OUTCOMES);
    one(SOCKETS_OPEN, "kind", &labels::SOCKET_KINDS);
    one(NUDGES, "outcome", &labels::NUDGE_OUTCOMES);
    one(NUDGE_INTERACTIONS, "action", &labels::NUDGE_ACTIONS);
    one(MAILBOX_DEPTH, "actor", &labels::ACTORS);
    one(RATE_LIMITED, "door", &labels::RATE_LIMIT_DOORS);
    one(API_AUTH_FAILURES, "reason", &labels::AUTH_REASONS);
    one(WIDGET_AUTH_FAILURES, "reason", &labels::AUTH_REASONS);
    one(WIDGET_PROXY_REFUSED, "reason", &labels::PROXY_REASONS);
    one(INGRESS_WEBHOOK_DURATION, "outcome", &["accepted"]);
    for (component, kind) in labels::ERRORS {
        metrics::counter!(ERRORS, "component" => component, "kind" => kind).increment(0);
    }
    // Unlabelled families: touching the handle creates the series at zero. Counters are incremented by zero, so a
    // family already counted keeps its value.
    for family in FAMILIES.iter().filter(|f| !LABELLED.contains(&f.name)) {
        match family.kind {
            Kind::Counter => metrics::counter!(family.name).increment(0),
            Kind::Gauge => metrics::gauge!(family.name).increment(0.0),
            Kind::Histogram => drop(metrics::histogram!(family.name)),
        }
    }
}

/// Families whose every series carries labels: created with their known label values (or by their first event)
/// rather than as an unlabelled zero.
const LABELLED: &[&str] = &[
    EVENTS_PROCESSED,
    DLQ_SIZE,
    SEGMENTS,
    SEGMENT_ENTRIES,
    SHOPIFY_WRITES,
    BACKFILL_RECORDS,
    CHURN_RISK_CUSTOMERS,
    CONSUMER_LAG_RECORDS,
    CONSUMER_LAG_SECONDS,
    ERRORS,
    CACHE_HITS,
    CACHE_MISSES,
    SNAPSHOT_AGE,
    SNAPSHOTS,
    MAILBOX_DEPTH,
    SOCKETS_OPEN,
    NUDGES,
    NUDGE_INTERACTIONS,
    INGRESS_WEBHOOKS,
    INGRESS_WEBHOOK_DURATION,
    RATE_LIMITED,
    API_AUTH_FAILURES,
    WIDGET_PROXY_REFUSED,
    WIDGET_AUTH_FAILURES,
];

fn kind_of(name: &str) -> Option<Kind> {
    FAMILIES.iter().find(|f| f.name == name).map(|f| f.kind)
}

/// An `rfm_errors_total` increment; `component` and `kind` must be one of [`labels::ERRORS`].
pub fn error(component: &'static str, kind: &'static str) {
    debug_assert!(
        labels::ERRORS.contains(&(component, kind)),
        "unlisted error label {component}/{kind}"
    );
    metrics::counter!(ERRORS, "component" => component, "kind" => kind).increment(1);
}

/// A cache lookup: `rfm_cache_hits_total` or `rfm_cache_misses_total`; `cache` must be one of [`labels::CACHES`].
pub fn cache_lookup(cache: &'static str, hit: bool) {
    debug_assert!(
        labels::CACHES.contains(&cache),
        "unlisted cache label {cache}"
    );
    let name = if hit { CACHE_HITS } else { CACHE_MISSES };
    metrics::counter!(name, "cache" => cache).increment(1);
}

/// [`segment_label`] over one process-wide list of custom keys, for counters updated from many places.
pub fn shared_segment_label(key: &str, builtin: &[&str]) -> String {
    static SEEN: std::sync::Mutex<Vec<String>> = std::sync::Mutex::new(Vec::new());
    match SEEN.lock() {
        Ok(mut seen) => segment_label(key, builtin, &mut seen),
        // A poisoned list only means another thread panicked mid-push; fold rather than grow without bound.
        Err(_) if builtin.contains(&key) => key.to_owned(),
        Err(_) => OTHER_SEGMENT.to_owned(),
    }
}

/// The `rfm_segment_customers` label for a segment key: built-in keys and the first [`MAX_SEGMENT_LABELS`] custom
/// keys `seen` keep their own label; the rest fold into [`OTHER_SEGMENT`]. `seen` grows as keys arrive.
pub fn segment_label(key: &str, builtin: &[&str], seen: &mut Vec<String>) -> String {
    if builtin.contains(&key) || seen.iter().any(|s| s == key) {
        return key.to_owned();
    }
    if seen.len() < MAX_SEGMENT_LABELS {
        seen.push(key.to_owned());
        return key.to_owned();
    }
    OTHER_SEGMENT.to_owned()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn names_are_unique_and_described() {
        let mut names: Vec<&str> = FAMILIES.iter().map(|f| f.name).collect();
        names.sort_unstable();
        let before = names.len();
        names.dedup();
        assert_eq!(names.len(), before, "a family is listed twice");
        for family in FAMILIES {
            assert!(!family.help.is_empty(), "{} has no HELP", family.name);
            if family.kind == Kind::Counter {
                assert!(
                    family.name.ends_with("_total"),
                    "{} is a counter without _total",
                    family.name
                );
            }
        }
    }

    #[test]
    fn custom_segment_keys_past_the_cap_fold_into_other() {
        let builtin = ["champions", "other"];
        let mut seen = Vec::new();
        for i in 0..MAX_SEGMENT_LABELS {
            assert_eq!(
                segment_label(&format!("custom{i}"), &builtin, &mut seen),
                format!("custom{i}")
            );
        }
        assert_eq!(segment_label("one_too_many", &builtin, &mut seen), "other");
        assert_eq!(segment_label("champions", &builtin, &mut seen), "champions");
        assert_eq!(segment_label("custom3", &builtin, &mut seen), "custom3");
    }
}
