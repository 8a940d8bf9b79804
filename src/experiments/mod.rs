//! Nudge A/B experiments outside the pure domain: where experiments are stored and audited (`store`), how the
//! processors learn about them (`plans`), what the publisher records when a nudge fires (`delivery`: the frequency
//! cap and the `nudges` rows), and the results the API and the dashboard show (`results`). Orders become
//! conversions with the batch's changes (`store::conversions`). The rules themselves are in `functions::nudge`.
//!
//! Where each decision is made, and why:
//! - The arm is decided on the partition actor (`actors::experiments`), so `rfm.task` carries it.
//! - The frequency cap is decided by the publisher once the outcome's records are acknowledged, from the `nudges`
//!   table under a per-customer advisory lock, before the desk sees the nudge. Postgres is the one place every
//!   instance and every restart sees, and the lock orders two batches (or two instances during a hand-over)
//!   deciding for one customer. A replay finds its rows and keeps their decisions. The `rfm.task` record is
//!   encoded earlier, on the actor, so it announces every fired nudge; the cap's verdict is the row's `status`.
//! - Whether a change added an order is decided by the partition actor from the event stream
//!   (`Change::order_added`), so conversions depend on no stored state that in-flight batches could write out
//!   of order; they are recorded in the transaction of the batch's changes, under ids that make a replay a no-op.

pub mod delivery;
pub mod ledger;
pub mod memory;
pub mod plans;
pub mod results;
pub mod store;

use std::time::Duration;

use functions::nudge::attribution::AttributionWindow;
use functions::nudge::cap::FrequencyCap;

/// The merchant-independent nudge rules of one process (settings `NUDGE_CAP_SECS`, `NUDGE_ATTRIBUTION_DAYS`,
/// `NUDGE_PLAN_REFRESH_SECS`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct NudgeRules {
    pub cap: FrequencyCap,
    pub attribution: AttributionWindow,
    /// How often a processor reloads the running experiments, so one saved through another instance applies here
    /// within this time (one saved through this instance applies at once).
    pub plan_refresh: Duration,
}

impl Default for NudgeRules {
    fn default() -> Self {
        NudgeRules {
            cap: FrequencyCap::default(),
            attribution: AttributionWindow::default(),
            plan_refresh: Duration::from_secs(5),
        }
    }
}

/// Unix seconds as Postgres takes them.
pub(crate) fn to_time(t: functions::Timestamp) -> chrono::DateTime<chrono::Utc> {
    chrono::DateTime::from_timestamp(t.unix(), 0).unwrap_or_default()
}

/// Postgres time as the domain's whole seconds.
pub(crate) fn from_time(t: chrono::DateTime<chrono::Utc>) -> functions::Timestamp {
    functions::Timestamp::from_unix(t.timestamp())
}
