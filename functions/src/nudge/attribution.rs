//! Which nudge an order is credited to. Conversion is a valid order within the attribution window (7 days by
//! default) after the customer viewed or clicked a nudge; the order is credited to the latest such nudge.
//!
//! A held-out customer sees nothing, so it cannot view or click: its order is credited to the holdout assignment
//! when it falls within the window after the assignment. This is the intent-to-treat side of the comparison: the
//! holdout counts every customer assigned to it, while an arm counts only orders after an engagement. An arm's
//! customer who never opened the widget and bought anyway is therefore not a conversion of the arm, which makes
//! the measured lift conservative (it can understate the nudge's effect, never overstate it).

use crate::time::{Timestamp, SECONDS_PER_DAY};

pub const DEFAULT_WINDOW_DAYS: i64 = 7;

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct AttributionWindow {
    pub seconds: i64,
}

impl Default for AttributionWindow {
    fn default() -> Self {
        AttributionWindow::days(DEFAULT_WINDOW_DAYS)
    }
}

impl AttributionWindow {
    pub fn days(days: i64) -> Self {
        AttributionWindow {
            seconds: days.saturating_mul(SECONDS_PER_DAY),
        }
    }

    /// Whether an order at `order_at` falls within the window after a touch at `touch_at` (both ends included).
    pub fn covers(&self, touch_at: Timestamp, order_at: Timestamp) -> bool {
        let elapsed = order_at.unix() - touch_at.unix();
        (0..=self.seconds).contains(&elapsed)
    }
}

/// A moment an order can be credited to: a view or click of a shown nudge, or a holdout assignment.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Touch<'a> {
    pub nudge_id: &'a str,
    pub at: Timestamp,
}

/// The touch an order at `order_at` is credited to: the latest within the window before it (ties go to the
/// greater nudge id, so the choice never depends on the order the touches were read in).
pub fn credit<'t, 'a>(
    window: AttributionWindow,
    order_at: Timestamp,
    touches: &'t [Touch<'a>],
) -> Option<&'t Touch<'a>> {
    touches
        .iter()
        .filter(|t| window.covers(t.at, order_at))
        .max_by(|a, b| (a.at, a.nudge_id).cmp(&(b.at, b.nudge_id)))
}

#[cfg(test)]
mod tests {
    use super::*;

    const T: i64 = 1_800_000_000;
    const WEEK: i64 = 7 * SECONDS_PER_DAY;

    fn touch(nudge_id: &str, at: i64) -> Touch<'_> {
        Touch {
            nudge_id,
            at: Timestamp(at),
        }
    }

    #[test]
    fn the_window_includes_both_edges_and_nothing_beyond() {
        let w = AttributionWindow::default();
        assert_eq!(w.seconds, WEEK);
        assert!(
            w.covers(Timestamp(T), Timestamp(T)),
            "an order in the same second"
        );
        assert!(
            w.covers(Timestamp(T), Timestamp(T + WEEK)),
            "exactly seven days later"
        );
        assert!(
            !w.covers(Timestamp(T), Timestamp(T + WEEK + 1)),
            "a second too late"
        );
        assert!(
            !w.covers(Timestamp(T), Timestamp(T - 1)),
            "an order before the view"
        );
    }

    #[test]
    fn the_latest_touch_within_the_window_gets_the_credit() {
        let w = AttributionWindow::default();
        let touches = [
            touch("old", T - WEEK - 1),
            touch("edge", T - WEEK),
            touch("late", T + 1),
        ];
        assert_eq!(
            credit(w, Timestamp(T), &touches).map(|t| t.nudge_id),
            Some("edge")
        );
        let more = [
            touches[0].clone(),
            touch("b", T - 10),
            touch("a", T - 10),
            touch("c", T - 20),
        ];
        assert_eq!(
            credit(w, Timestamp(T), &more).map(|t| t.nudge_id),
            Some("b")
        );
        assert_eq!(credit(w, Timestamp(T), &touches[..1]), None);
        assert_eq!(credit(w, Timestamp(T), &[]), None);
    }
}
