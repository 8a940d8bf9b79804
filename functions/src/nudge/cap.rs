//! The frequency cap: at most one nudge shown to a customer per window (24 hours unless the merchant's setting
//! says otherwise; the seeds call a refusal `NUDGE_LIMIT_EXCEEDED`). A pure decision over the time of the last
//! nudge shown; the caller keeps that time where every instance sees it.
//!
//! Only shown nudges count: a held-out customer saw nothing, and a capped nudge was not shown either.

use crate::time::Timestamp;

/// The default window: one shown nudge per customer per day.
pub const DEFAULT_CAP_SECONDS: i64 = 24 * 3_600;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct FrequencyCap {
    /// Seconds that must pass after a shown nudge before the next one may be shown.
    pub window_seconds: i64,
}

impl Default for FrequencyCap {
    fn default() -> Self {
        FrequencyCap {
            window_seconds: DEFAULT_CAP_SECONDS,
        }
    }
}

/// Whether a nudge fired now may be shown.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum CapDecision {
    Show,
    Capped,
}

impl FrequencyCap {
    /// A nudge firing at `now`, when the customer's last shown nudge was at `last_shown`. A last nudge dated after
    /// `now` (clocks of two instances apart) counts as just shown.
    pub fn decide(&self, last_shown: Option<Timestamp>, now: Timestamp) -> CapDecision {
        match last_shown {
            Some(last) if now.unix() - last.unix() < self.window_seconds => CapDecision::Capped,
            _ => CapDecision::Show,
        }
    }

    /// Decisions for one customer's nudges firing at `times`, in order, each shown one moving the window.
    pub fn decide_in_order(
        &self,
        mut last_shown: Option<Timestamp>,
        times: &[Timestamp],
    ) -> Vec<CapDecision> {
        times
            .iter()
            .map(|&at| {
                let decision = self.decide(last_shown, at);
                if decision == CapDecision::Show {
                    last_shown = Some(at);
                }
                decision
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000;

    #[test]
    fn one_nudge_per_window_and_the_window_edge_is_open_again() {
        let cap = FrequencyCap::default();
        assert_eq!(cap.decide(None, Timestamp(T)), CapDecision::Show);
        let last = Some(Timestamp(T));
        assert_eq!(cap.decide(last, Timestamp(T)), CapDecision::Capped);
        assert_eq!(
            cap.decide(last, Timestamp(T + DEFAULT_CAP_SECONDS - 1)),
            CapDecision::Capped
        );
        assert_eq!(
            cap.decide(last, Timestamp(T + DEFAULT_CAP_SECONDS)),
            CapDecision::Show
        );
        assert_eq!(
            cap.decide(last, Timestamp(T - 60)),
            CapDecision::Capped,
            "a last nudge in the future counts as just shown"
        );
    }

    #[test]
    fn a_shown_nudge_moves_the_window_and_a_capped_one_does_not() {
        let cap = FrequencyCap {
            window_seconds: 100,
        };
        let times = [T, T + 50, T + 99, T + 100, T + 150, T + 250];
        use CapDecision::{Capped, Show};
        assert_eq!(
            cap.decide_in_order(None, &times.map(Timestamp)),
            [Show, Capped, Capped, Show, Capped, Show]
        );
        assert_eq!(
            cap.decide_in_order(Some(Timestamp(T - 10)), &[Timestamp(T), Timestamp(T + 90)]),
            [Capped, Show]
        );
    }
}
