//! The pure RFM domain of LoyalNest: money, a merchant's thresholds and segment rules, the per-customer aggregate,
//! scoring, lifecycle stage and churn risk.
//!
//! Nothing here performs I/O, spawns a task or reads a clock; time is always an argument. That keeps the rules
//! testable to the day, makes replays deterministic, and lets the same crate compile to `wasm32-unknown-unknown`.

pub mod aggregate;
pub mod config;
pub mod customer;
pub mod lifecycle;
pub mod locale;
pub mod money;
pub mod nudge;
pub mod rfm;
pub mod score;
pub mod segment;
pub mod time;

pub use aggregate::{AggregateParts, CustomerAggregate, Fact, OrderRecord, Totals};
pub use config::{FieldError, Measured, RfmConfig, SizePreset};
pub use customer::{evaluate, CustomerState, Evaluation, Transition, Update};
pub use lifecycle::{churn_risk, ChurnLevel, ChurnRisk, LifecycleStage};
pub use money::Money;
pub use nudge::NudgeKind;
pub use score::{next_change, Rfm};
pub use segment::{SegmentId, SegmentRule};
pub use time::Timestamp;
