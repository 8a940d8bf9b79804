//! The words the actors and their callers share: what comes in (`RawRecord`), what a batch or tick asks to be
//! published (`Outcome`, `Change`, `Record`, `PendingNudge`), what a restore reads back (`PublishedVersion`), and
//! the configurations a caller loads (`Configs`). Plain data with no behaviour beyond trivial accessors, and a
//! leaf: it imports nothing else of this crate but `held` (a leaf too), so the modules that produce and consume these types never import
//! each other in a circle.

use std::sync::Arc;

use dashmap::DashMap;
use functions::{LifecycleStage, Money, NudgeKind, Rfm, RfmConfig, Timestamp};
use streams::sink::{DeliveryFuture, Outgoing};
pub use streams::source::RawRecord;
use streams::MerchantId;

use crate::held::DataRequest;

/// A published change, resolved to names so publishers need no configuration.
#[derive(Debug, Clone, PartialEq)]
pub struct Change {
    pub merchant: MerchantId,
    pub customer_id: u64,
    pub version: u32,
    pub from_segment: String,
    pub to_segment: String,
    pub rfm: Rfm,
    pub score_tenths: u8,
    pub stage: LifecycleStage,
    pub orders: u32,
    pub net_spend: Money,
    /// Decimals of the shop currency, for rendering `net_spend`.
    pub currency_exponent: u8,
    pub last_order: Option<Timestamp>,
    /// Set when the customer entered a segment whose key is `at_risk`.
    pub churn_risk: Option<f64>,
    pub occurred_at: Timestamp,
    /// The event that caused the change, or `timer:<instant>` for a recency boundary.
    pub trace_id: String,
    pub locale: Option<String>,
    /// Broker timestamp (ms) of the record that caused the change, so the dashboard can measure accepted → shown.
    pub event_ms: Option<i64>,
    /// The W3C trace context of the record that caused the change, carried onto its outputs and frames.
    pub traceparent: Option<streams::traceparent::TraceParent>,
    /// The net amount of the valid order the change's event added, if it added one: what a nudge's conversion
    /// is credited with.
    pub order_added: Option<Money>,
    /// The customer's loyalty points balance after the change (`points.earned` less `points.redeemed`), for a
    /// nudge's `{points}`.
    pub points: i64,
}

impl Change {
    pub fn segment_changed(&self) -> bool {
        self.from_segment != self.to_segment
    }
}

/// Everything a batch or a tick asks the caller to publish.
#[derive(Debug, Default)]
pub struct Outcome {
    pub changes: Vec<Change>,
    /// GDPR erasures: merchant, customer (`None`: the whole shop), and the request's event id.
    pub redactions: Vec<(MerchantId, Option<u64>, String)>,
    pub data_requests: Vec<DataRequest>,
    /// Records that could not be decoded, for the dead-letter topic.
    pub rejected: Vec<streams::dlq::DeadLetter>,
    /// The Kafka records of `changes`, encoded by the actor.
    pub records: Vec<Record>,
    /// `records` already handed to the producer by the actor (see `PartitionActor::publishing_to`).
    pub enqueued: Option<Enqueued>,
    /// The nudges of `changes`, for the desk where they wait for their shoppers (after the frequency cap).
    pub nudges: Vec<PendingNudge>,
    /// Nudges of `changes` whose customers an experiment holds out: recorded, never handed to the desk.
    pub held_out: Vec<PendingNudge>,
    /// Versions already on Kafka whose database rows are written again (a restore's read-back): no records, no
    /// live moves.
    pub rewrites: Vec<Change>,
    /// Live segment counts of every merchant this batch or tick touched, for the dashboards.
    pub live: Vec<LiveCounts>,
    /// Sealed personal data that arrived with applied events, for the customer's row (never opened here).
    pub pii: Vec<(MerchantId, u64, streams::events::SealedPii)>,
}

/// One merchant's segment sizes after a batch, in rule order, and how many of the batch's events were its.
#[derive(Debug, Clone, PartialEq)]
pub struct LiveCounts {
    pub merchant: MerchantId,
    /// (segment key, English display name, customers).
    pub segments: Vec<(String, String, u64)>,
    pub events: u64,
}

/// Merchant configurations, loaded by the caller before it hands a batch over (loading is I/O).
pub type Configs = Arc<DashMap<MerchantId, RfmConfig>>;

/// One encoded record, owned so many can be in flight at once.
#[derive(Debug, Clone)]
pub struct Record {
    pub topic: String,
    pub key: String,
    pub payload: Vec<u8>,
    pub trace_id: String,
    /// The W3C trace context of the change's input record, sent as the `traceparent` header.
    pub traceparent: Option<streams::traceparent::TraceParent>,
}

impl Record {
    /// The record as the producer takes it; `headers` is built by the caller because it borrows from `self`.
    pub fn outgoing<'a>(&'a self, headers: &'a [(&'a str, &'a str)]) -> Outgoing<'a> {
        Outgoing {
            topic: &self.topic,
            key: &self.key,
            payload: &self.payload,
            headers,
        }
    }

    /// The headers every output record carries: `trace_id` (the causing event), and `traceparent` when the input
    /// record had one.
    pub fn headers(&self) -> Vec<(&str, &str)> {
        let mut headers = Vec::with_capacity(2);
        headers.push(("trace_id", self.trace_id.as_str()));
        if let Some(tp) = &self.traceparent {
            headers.push((streams::traceparent::HEADER, tp.as_str()));
        }
        headers
    }
}

/// The records of an outcome as the actor handed them to the producer, in order: each one's acknowledgement, or
/// `None` where the producer's local queue was full (the publisher sends those again).
pub struct Enqueued(pub Vec<Option<DeliveryFuture>>);

impl std::fmt::Debug for Enqueued {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        write!(f, "Enqueued({} records)", self.0.len())
    }
}

/// A customer of a merchant, the key of everything per customer outside the merchant's state.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct CustomerKey {
    pub merchant: MerchantId,
    pub customer_id: u64,
}

/// A nudge that fired and waits to be shown: the `rfm.task` the change published, as a widget needs it.
#[derive(Debug, Clone, PartialEq)]
pub struct PendingNudge {
    pub key: CustomerKey,
    /// The customer's version whose segment change fired the nudge; a newer version replaces an older nudge.
    pub version: u32,
    /// The segment key the nudge is for.
    pub segment: String,
    /// The transition type, which picks the template.
    pub kind: NudgeKind,
    /// The A/B experiment the nudge was assigned in, if one runs for its kind.
    pub experiment_id: Option<Arc<str>>,
    /// The experiment's arm, `"A"` outside any, or `"holdout"` (only in `Outcome::held_out`, never pending).
    pub variant: Arc<str>,
    pub locale: Option<String>,
    pub trace_id: String,
    /// When the change fired it; the desk re-stamps it with the time it took the nudge, which starts the window
    /// the nudge stays pending for.
    pub fired_at: Timestamp,
    /// The customer's points balance when the nudge fired, for `{points}` (a count, not personal data).
    pub points: i64,
}

/// One `rfm.updated` record as read back from the output topic.
#[derive(Debug, Clone, PartialEq)]
pub struct PublishedVersion {
    pub merchant: MerchantId,
    pub customer_id: u64,
    pub version: u32,
    /// The segment key the customer moved from.
    pub from_segment: String,
    /// The segment key the customer moved to.
    pub segment: String,
    pub rfm: Rfm,
    pub stage: LifecycleStage,
    pub occurred_at: Timestamp,
    pub trace_id: String,
}

/// One customer's change under a new configuration, by its slot in the merchant's table (`MerchantState`
/// re-scores, `partition::moves` publishes).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Move {
    pub slot: u32,
    pub customer_id: u64,
    pub transition: functions::Transition,
}
