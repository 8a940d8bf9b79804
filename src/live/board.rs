//! One merchant's live dashboard state and the frame it renders to. Pure: time is passed in.
//!
//! A board folds in what the partition actors report after each batch (segment sizes, changes) and keeps what a
//! dashboard shows: current sizes, the last moves and deltas, events per second and moves per minute. Every frame
//! is complete, so a client that skipped frames (it was slow, or just connected) is exactly up to date with the
//! next one it reads; nothing has to be merged.

use std::collections::VecDeque;

use actors::{Change, LiveCounts};
use serde::{Deserialize, Serialize};

/// How many recent moves and deltas a frame carries.
const RECENT: usize = 20;
/// Seconds averaged for `events_per_second`.
const RATE_WINDOW: i64 = 10;

#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct SegmentSize {
    pub key: String,
    pub name: String,
    pub count: u64,
    pub share: f64,
}

/// A customer moving between segments.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Move {
    pub customer_id: u64,
    pub from: String,
    pub to: String,
    pub at: String,
}

/// A published change (an `rfm.updated`), with the broker time of the event that caused it, so a client can
/// measure accepted → shown.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Delta {
    pub customer_id: u64,
    pub version: u32,
    pub from: String,
    pub to: String,
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    pub score: f64,
    pub lifecycle_stage: String,
    pub event_ms: Option<i64>,
    /// The W3C trace id of the webhook that caused the change, when it carried or started one.
    #[serde(default)]
    pub trace_id: Option<String>,
}

/// What a dashboard socket receives.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
pub struct Frame {
    pub merchant: String,
    /// Rises by one per frame of this merchant from this publisher; a gap means frames were skipped.
    pub seq: u64,
    pub server_time: String,
    pub server_time_ms: i64,
    pub customers: u64,
    pub segments: Vec<SegmentSize>,
    /// How many of `deltas` (newest first) are new since the previous frame, for the webhook → frame latency.
    #[serde(default)]
    pub fresh: usize,
    pub moves: Vec<Move>,
    pub moves_per_minute: u64,
    pub events_per_second: f64,
    pub deltas: Vec<Delta>,
}

/// Per-second counts over the last minute, in a ring.
#[derive(Debug, Clone)]
struct PerSecond {
    buckets: [u64; 64],
    second: i64,
}

impl Default for PerSecond {
    fn default() -> Self {
        PerSecond {
            buckets: [0; 64],
            second: 0,
        }
    }
}

impl PerSecond {
    fn advance(&mut self, second: i64) {
        let gap = (second - self.second).clamp(0, 64);
        for s in 1..=gap {
            self.buckets[((self.second + s).rem_euclid(64)) as usize] = 0;
        }
        self.second = self.second.max(second);
    }

    fn add(&mut self, second: i64, n: u64) {
        self.advance(second);
        self.buckets[second.rem_euclid(64) as usize] += n;
    }

    /// Sum over the `window` seconds ending at `second`, the current one included.
    fn sum(&mut self, second: i64, window: i64) -> u64 {
        self.advance(second);
        (0..window)
            .map(|back| self.buckets[(second - back).rem_euclid(64) as usize])
            .sum()
    }
}

#[derive(Debug, Clone, Default)]
pub struct Board {
    segments: Vec<(String, String, u64)>,
    moves: VecDeque<Move>,
    deltas: VecDeque<Delta>,
    events: PerSecond,
    moved: PerSecond,
    seq: u64,
    /// Deltas added since the last frame.
    fresh: usize,
    /// Changed since the last frame.
    pub dirty: bool,
    pub last_frame_ms: i64,
}

impl Board {
    /// Folds in a batch's segment sizes and event count.
    pub fn counts(&mut self, live: &LiveCounts, now_ms: i64) {
        self.segments.clone_from(&live.segments);
        self.events.add(now_ms.div_euclid(1000), live.events);
        self.dirty = true;
    }

    /// Folds in one published change.
    pub fn change(&mut self, change: &Change, now_ms: i64) {
        if change.segment_changed() {
            push_recent(
                &mut self.moves,
                Move {
                    customer_id: change.customer_id,
                    from: change.from_segment.clone(),
                    to: change.to_segment.clone(),
                    at: utc_millis(change.occurred_at.unix() * 1000),
                },
            );
            self.moved.add(now_ms.div_euclid(1000), 1);
        }
        push_recent(&mut self.deltas, delta(change));
        self.fresh = (self.fresh + 1).min(self.deltas.len());
        self.dirty = true;
    }

    /// Drops an erased customer from the recent moves and deltas, so no later frame names them; the board is
    /// dirty, so the next frame (which overwrites the last one everywhere) goes out at once.
    pub fn forget(&mut self, customer_id: u64) {
        self.moves.retain(|m| m.customer_id != customer_id);
        self.deltas.retain(|d| d.customer_id != customer_id);
        self.fresh = self.fresh.min(self.deltas.len());
        self.dirty = true;
    }

    /// Renders the current state as the next frame and marks the board clean.
    pub fn frame(&mut self, merchant: &str, now_ms: i64) -> Frame {
        self.seq += 1;
        self.dirty = false;
        let fresh = std::mem::take(&mut self.fresh);
        self.last_frame_ms = now_ms;
        let second = now_ms.div_euclid(1000);
        let customers: u64 = self.segments.iter().map(|(_, _, n)| n).sum();
        let share = |n: u64| {
            if customers == 0 {
                0.0
            } else {
                (n as f64 / customers as f64 * 1e4).round() / 1e4
            }
        };
        Frame {
            merchant: merchant.to_owned(),
            seq: self.seq,
            server_time: utc_millis(now_ms),
            server_time_ms: now_ms,
            customers,
            segments: self
                .segments
                .iter()
                .map(|(key, name, count)| SegmentSize {
                    key: key.clone(),
                    name: name.clone(),
                    count: *count,
                    share: share(*count),
                })
                .collect(),
            fresh,
            moves: self.moves.iter().rev().cloned().collect(),
            moves_per_minute: self.moved.sum(second, 60),
            events_per_second: self.events.sum(second, RATE_WINDOW) as f64 / RATE_WINDOW as f64,
            deltas: self.deltas.iter().rev().cloned().collect(),
        }
    }
}

fn utc_millis(ms: i64) -> String {
    chrono::DateTime::from_timestamp_millis(ms)
        .unwrap_or_default()
        .to_rfc3339_opts(chrono::SecondsFormat::Millis, true)
}

fn push_recent<T>(ring: &mut VecDeque<T>, item: T) {
    if ring.len() == RECENT {
        ring.pop_front();
    }
    ring.push_back(item);
}

fn delta(change: &Change) -> Delta {
    Delta {
        customer_id: change.customer_id,
        version: change.version,
        from: change.from_segment.clone(),
        to: change.to_segment.clone(),
        recency: change.rfm.recency,
        frequency: change.rfm.frequency,
        monetary: change.rfm.monetary,
        score: f64::from(change.score_tenths) / 10.0,
        lifecycle_stage: change.stage.as_str().to_owned(),
        event_ms: change.event_ms,
        trace_id: change
            .traceparent
            .as_ref()
            .map(|tp| tp.trace_id().to_owned()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::{LifecycleStage, Money, Rfm, Timestamp};
    use streams::MerchantId;

    fn counts(champions: u64, other: u64, events: u64) -> LiveCounts {
        LiveCounts {
            merchant: MerchantId::parse("a.myshopify.com").unwrap(),
            segments: vec![
                ("champions".into(), "Champions".into(), champions),
                ("other".into(), "Other".into(), other),
            ],
            events,
        }
    }

    fn change(customer_id: u64, from: &str, to: &str) -> Change {
        Change {
            merchant: MerchantId::parse("a.myshopify.com").unwrap(),
            customer_id,
            version: 2,
            from_segment: from.into(),
            to_segment: to.into(),
            rfm: Rfm::new(5, 4, 4),
            score_tenths: 44,
            stage: LifecycleStage::Vip,
            orders: 6,
            net_spend: Money::ZERO,
            currency_exponent: 2,
            last_order: None,
            churn_risk: None,
            occurred_at: Timestamp::from_unix(1_790_000_000),
            trace_id: "e".into(),
            locale: None,
            event_ms: Some(1_790_000_000_000),
            traceparent: None,
            order_added: None,
            points: 0,
        }
    }

    #[test]
    fn a_frame_carries_sizes_shares_moves_and_rates() {
        let mut board = Board::default();
        let t = 1_790_000_000_000;
        board.counts(&counts(1, 3, 40), t);
        board.change(&change(7, "other", "champions"), t);
        board.change(&change(8, "other", "other"), t);
        let frame = board.frame("a.myshopify.com", t + 500);
        assert_eq!(frame.customers, 4);
        assert_eq!(frame.segments[0].share, 0.25);
        assert_eq!(
            frame.moves.len(),
            1,
            "a change within a segment is not a move"
        );
        assert_eq!(frame.moves[0].to, "champions");
        assert_eq!(frame.deltas.len(), 2);
        assert_eq!(frame.deltas[0].customer_id, 8, "newest first");
        assert_eq!(frame.events_per_second, 4.0);
        assert_eq!(frame.moves_per_minute, 1);
        assert!(!board.dirty);
        assert_eq!(board.frame("a.myshopify.com", t + 600).seq, frame.seq + 1);
    }

    #[test]
    fn rates_forget_old_seconds_and_rings_stay_bounded() {
        let mut board = Board::default();
        let t = 1_790_000_000_000;
        board.counts(&counts(0, 1, 100), t);
        for c in 0..50 {
            board.change(&change(c, "other", "champions"), t);
        }
        let later = board.frame("a", t + 61_000);
        assert_eq!(later.events_per_second, 0.0);
        assert_eq!(later.moves_per_minute, 0);
        assert_eq!(later.moves.len(), RECENT);
        assert_eq!(later.moves[0].customer_id, 49);
    }
}
