//! The events the engine publishes (DESIGN.md §3): `rfm.updated`, `churn_risk.detected`, `rfm.task`, and the
//! headers of `rfm.dlq`. Every output carries the customer's state version, so consumers can discard a replayed
//! record they have already seen.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::MerchantId;

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentMove {
    pub from: String,
    pub to: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ScoreOut {
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    /// One decimal, e.g. 4.1.
    pub score: f64,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmUpdated {
    pub event_id: String,
    pub schema_version: u16,
    pub merchant_id: MerchantId,
    pub customer_id: u64,
    pub version: u32,
    pub segment: SegmentMove,
    pub score: ScoreOut,
    pub lifecycle_stage: String,
    pub occurred_at: DateTime<Utc>,
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct ChurnRiskDetected {
    pub event_id: String,
    pub schema_version: u16,
    pub merchant_id: MerchantId,
    pub customer_id: u64,
    pub version: u32,
    pub risk_score: f64,
    pub occurred_at: DateTime<Utc>,
    pub trace_id: String,
}

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct RfmTask {
    pub event_id: String,
    pub schema_version: u16,
    pub merchant_id: MerchantId,
    pub customer_id: u64,
    pub version: u32,
    pub task_type: String,
    pub nudge_id: String,
    /// The segment the nudge is for.
    pub segment: String,
    /// The transition type (`functions::NudgeKind`), which picks the template.
    pub kind: String,
    /// The A/B experiment the nudge was assigned in; absent outside any.
    #[serde(default)]
    pub experiment_id: Option<String>,
    /// The experiment's arm, `"A"` outside any, or `"holdout"`: a held-out customer is recorded here and shown
    /// nothing.
    pub variant: String,
    pub locale: Option<String>,
    pub trace_id: String,
}

/// Deterministic output ids: the same change always gets the same id, so a replayed output is recognisable.
pub fn output_event_id(
    kind: &str,
    merchant: &MerchantId,
    customer_id: u64,
    version: u32,
) -> String {
    format!("{kind}:{merchant}:{customer_id}:{version}")
}

/// Header names on `rfm.dlq` records.
pub mod dlq_headers {
    pub const REASON: &str = "dlq.reason";
    pub const ATTEMPTS: &str = "dlq.attempts";
    pub const TOPIC: &str = "dlq.original_topic";
    pub const PARTITION: &str = "dlq.original_partition";
    pub const OFFSET: &str = "dlq.original_offset";
}
