//! Instants as plain numbers. The domain never reads a clock: callers pass `now`, which is what lets tests move
//! time past a recency boundary and lets replays score exactly as the live run did.

use serde::{Deserialize, Serialize};

pub const SECONDS_PER_DAY: i64 = 86_400;

/// Seconds since the Unix epoch, UTC.
#[derive(
    Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, Deserialize,
)]
#[serde(transparent)]
pub struct Timestamp(pub i64);

/// Compact per-customer times are stored as `u32` seconds since 2000-01-01, which is before Shopify existed and
/// leaves room until 2136.
const COMPACT_EPOCH: i64 = 946_684_800;

impl Timestamp {
    pub const fn from_unix(seconds: i64) -> Self {
        Timestamp(seconds)
    }

    pub const fn unix(self) -> i64 {
        self.0
    }

    pub fn plus_days(self, days: i64) -> Self {
        Timestamp(self.0.saturating_add(days.saturating_mul(SECONDS_PER_DAY)))
    }

    /// Whole days from `earlier` to `self`, rounded down; an `earlier` in the future counts as day 0 so clock skew
    /// between Shopify and us never produces a negative recency.
    pub fn whole_days_since(self, earlier: Timestamp) -> i64 {
        (self.0 - earlier.0).max(0) / SECONDS_PER_DAY
    }

    /// Seconds since 2000-01-01 in 32 bits (until 2136), clamped at both ends, for state kept per customer or
    /// per order.
    pub fn to_compact(self) -> u32 {
        (self.0 - COMPACT_EPOCH).clamp(0, i64::from(u32::MAX)) as u32
    }

    pub fn from_compact(compact: u32) -> Self {
        Timestamp(COMPACT_EPOCH + i64::from(compact))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn whole_days_round_down_and_never_go_negative() {
        let t = Timestamp(1_700_000_000);
        assert_eq!(t.plus_days(8).whole_days_since(t), 8);
        assert_eq!(
            Timestamp(t.0 + 8 * SECONDS_PER_DAY - 1).whole_days_since(t),
            7
        );
        assert_eq!(t.whole_days_since(t.plus_days(2)), 0);
    }

    #[test]
    fn compact_round_trip() {
        let t = Timestamp(1_700_000_123);
        assert_eq!(Timestamp::from_compact(t.to_compact()), t);
    }
}
