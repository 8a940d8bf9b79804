//! Live dashboards: from the processor's outcomes to frames on merchants' sockets (DESIGN.md §5, §6).
//!
//! The processor hands every batch's outcome to a [`LiveFeed`], which folds it into one [`Board`] per merchant.
//! A flusher renders a dirty board at most every `min_interval` (100 ms: ten frames a second), leading-edge, so
//! a quiet merchant's first change goes out within a flush tick instead of waiting out a window. Frames go to the
//! [`fanout`]: through Redis pub/sub when configured, so a dashboard on any instance sees every merchant, or
//! straight to this process's sockets otherwise (the embedded demo).

mod board;
mod bounds;
pub mod fanout;

use std::collections::HashMap;
use std::sync::atomic::{AtomicI64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use actors::Outcome;
use streams::MerchantId;

pub use board::{Board, Delta, Frame, Move, SegmentSize};
pub use bounds::LiveBound;
pub use fanout::{Channels, Erasure, FrameSink, LiveFrame};

/// The default bound of the feed's boards: a board holds about 6 KB of recent moves, deltas and rates, which adds
/// up over a hundred thousand quiet shops. Idle 15 minutes it goes, and at most 4,096 are kept without a frame to
/// send or a socket on this instance. A dropped shop's next batch starts a fresh board with its full counts.
pub const BOARD_BOUND: LiveBound = LiveBound {
    idle_ms: 15 * 60 * 1000,
    max_unpinned: 4096,
};

/// How often boards are swept for idle ones when no flood of new merchants calls for it sooner.
const SWEEP_EVERY_MS: i64 = 1_000;

/// Settings for the flusher.
#[derive(Debug, Clone)]
pub struct LiveConfig {
    /// Shortest time between two frames of one merchant.
    pub min_interval: Duration,
    /// How often dirty boards are looked at; bounds the delay a frame can add.
    pub flush_every: Duration,
    /// Which boards are forgotten (a board with a frame still to send, or a socket on this instance, never is).
    pub boards: LiveBound,
}

impl Default for LiveConfig {
    fn default() -> Self {
        LiveConfig {
            min_interval: Duration::from_millis(100),
            flush_every: Duration::from_millis(5),
            boards: BOARD_BOUND,
        }
    }
}

/// The processor side: boards per merchant, fed by outcomes, flushed to a [`FrameSink`].
pub struct LiveFeed {
    boards: Mutex<HashMap<MerchantId, Board>>,
    /// Erasures not yet carried out on the frames outside this process (Redis, other instances' slots).
    erasures: Mutex<Vec<Erasure>>,
    sink: FrameSink,
    config: LiveConfig,
    last_sweep_ms: AtomicI64,
    /// Boards left by the last sweep (see `LiveBound::overfull`).
    left_by_sweep: AtomicUsize,
}

impl LiveFeed {
    pub fn new(sink: FrameSink, config: LiveConfig) -> Arc<LiveFeed> {
        Arc::new(LiveFeed {
            boards: Mutex::new(HashMap::new()),
            erasures: Mutex::new(Vec::new()),
            sink,
            config,
            last_sweep_ms: AtomicI64::new(0),
            left_by_sweep: AtomicUsize::new(0),
        })
    }

    /// Folds a batch's or a tick's outcome into the boards. Cheap: no I/O, one lock.
    pub fn observe(&self, outcome: &Outcome) {
        if outcome.live.is_empty() && outcome.changes.is_empty() && outcome.redactions.is_empty() {
            return;
        }
        let now_ms = chrono::Utc::now().timestamp_millis();
        let mut boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        for live in &outcome.live {
            boards
                .entry(live.merchant.clone())
                .or_default()
                .counts(live, now_ms);
        }
        for change in &outcome.changes {
            boards
                .entry(change.merchant.clone())
                .or_default()
                .change(change, now_ms);
        }
        let mut erasures = Vec::new();
        for (merchant, customer, _) in &outcome.redactions {
            match (customer, boards.get_mut(merchant)) {
                // The board's next frame no longer names the customer and replaces the last one everywhere.
                (Some(customer), Some(board)) => board.forget(*customer),
                // No board here: the last frame elsewhere may still name the customer, so it is cleared.
                (Some(_), None) => erasures.push(Erasure::Clear(merchant.clone())),
                (None, _) => {
                    boards.remove(merchant);
                    erasures.push(Erasure::Gone(merchant.clone()));
                }
            }
        }
        drop(boards);
        if !erasures.is_empty() {
            self.erasures
                .lock()
                .unwrap_or_else(|p| p.into_inner())
                .extend(erasures);
        }
    }

    /// Carries out pending erasures; those that fail (Redis down) are kept for the next tick.
    async fn erase(&self) {
        let pending = std::mem::take(&mut *self.erasures.lock().unwrap_or_else(|p| p.into_inner()));
        if pending.is_empty() {
            return;
        }
        if let Err(e) = self.sink.erase(&pending).await {
            streams::metric_names::error("dashboard", "erasure");
            tracing::warn!(error = %e, erasures = pending.len(), "dashboard erasure failed; retrying");
            let mut queue = self.erasures.lock().unwrap_or_else(|p| p.into_inner());
            queue.splice(0..0, pending);
        }
    }

    /// Renders the frames that are due now, then forgets boards within the bound (see `BOARD_BOUND`).
    fn due(&self, now_ms: i64) -> Vec<(MerchantId, LiveFrame)> {
        let min_ms = self.config.min_interval.as_millis() as i64;
        let mut boards = self.boards.lock().unwrap_or_else(|p| p.into_inner());
        let frames = boards
            .iter_mut()
            .filter(|(_, b)| b.dirty && now_ms - b.last_frame_ms >= min_ms)
            .map(|(merchant, board)| {
                let frame = board.frame(merchant.as_str(), now_ms);
                (merchant.clone(), LiveFrame::render(&frame))
            })
            .collect();
        let last = self.last_sweep_ms.load(Ordering::Relaxed);
        let left = self.left_by_sweep.load(Ordering::Relaxed);
        if now_ms - last >= SWEEP_EVERY_MS || self.config.boards.overfull(boards.len(), left) {
            self.last_sweep_ms.store(now_ms, Ordering::Relaxed);
            self.sweep(&mut boards, now_ms);
        }
        frames
    }

    /// Drops the boards the bound lets go. A dirty board still owes a frame; a watched one would lose the moves
    /// its socket shows.
    fn sweep(&self, boards: &mut HashMap<MerchantId, Board>, now_ms: i64) {
        let uses = boards.iter().map(|(merchant, board)| bounds::Use {
            key: merchant.clone(),
            pinned: board.dirty || self.sink.watched(merchant),
            last_used_ms: board.last_frame_ms,
        });
        let dropped = bounds::evictions(uses.collect::<Vec<_>>(), self.config.boards, now_ms);
        for merchant in &dropped {
            boards.remove(merchant);
        }
        self.left_by_sweep.store(boards.len(), Ordering::Relaxed);
        if !dropped.is_empty() {
            metrics::counter!(streams::metric_names::DASHBOARD_BOARDS_DROPPED)
                .increment(dropped.len() as u64);
            tracing::debug!(
                dropped = dropped.len(),
                held = boards.len(),
                "idle dashboard boards dropped"
            );
        }
    }

    /// Flushes due frames until `shutdown` resolves.
    pub async fn run(self: Arc<Self>, shutdown: impl std::future::Future<Output = ()>) {
        let mut ticker = tokio::time::interval(self.config.flush_every);
        ticker.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Skip);
        tokio::pin!(shutdown);
        loop {
            tokio::select! {
                _ = &mut shutdown => {
                    // Erasures already marked complete must not be left to a process that is going away.
                    self.erase().await;
                    break;
                }
                _ = ticker.tick() => {}
            }
            self.erase().await;
            let due = self.due(chrono::Utc::now().timestamp_millis());
            if !due.is_empty() {
                self.sink.publish(due).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::LiveCounts;

    fn outcome(merchant: &MerchantId, events: u64) -> Outcome {
        Outcome {
            live: vec![LiveCounts {
                merchant: merchant.clone(),
                segments: vec![("other".into(), "Other".into(), 1)],
                events,
            }],
            ..Outcome::default()
        }
    }

    #[test]
    fn frames_are_throttled_per_merchant_and_idle_boards_are_forgotten() {
        let feed = LiveFeed::new(
            FrameSink::local(Arc::new(Channels::default())),
            LiveConfig::default(),
        );
        let (a, b) = (
            MerchantId::parse("a.myshopify.com").unwrap(),
            MerchantId::parse("b.myshopify.com").unwrap(),
        );
        let t = chrono::Utc::now().timestamp_millis();
        feed.observe(&outcome(&a, 1));
        assert_eq!(
            feed.due(t).len(),
            1,
            "a quiet merchant's first change goes out at once"
        );
        feed.observe(&outcome(&a, 1));
        feed.observe(&outcome(&b, 1));
        let due: Vec<MerchantId> = feed.due(t + 50).into_iter().map(|(m, _)| m).collect();
        assert_eq!(
            due,
            vec![b.clone()],
            "a's second frame waits out its window; b is not held back"
        );
        assert_eq!(
            feed.due(t + 100).len(),
            1,
            "a's frame once 100 ms have passed"
        );
        assert!(feed.due(t + 200).is_empty(), "nothing new, nothing sent");
        feed.due(t + BOARD_BOUND.idle_ms + 1_000);
        assert!(
            feed.boards.lock().unwrap().is_empty(),
            "idle boards are dropped"
        );
    }

    #[test]
    fn boards_stay_bounded_while_a_watched_merchant_keeps_its_board() {
        let channels = Arc::new(Channels::default());
        let feed = LiveFeed::new(FrameSink::local(channels.clone()), LiveConfig::default());
        let watched = MerchantId::parse("watched.myshopify.com").unwrap();
        let _socket = channels.subscribe(&watched);
        let t = chrono::Utc::now().timestamp_millis();
        feed.observe(&outcome(&watched, 1));
        feed.due(t);
        let cap = BOARD_BOUND.max_unpinned;
        for round in 0..4 {
            for n in 0..cap {
                let shop = MerchantId::parse(&format!("s{round}-{n}.myshopify.com")).unwrap();
                feed.observe(&outcome(&shop, 1));
            }
            feed.due(t + 1 + round as i64);
        }
        let boards = feed.boards.lock().unwrap();
        assert!(
            boards.len() <= cap + cap / 8 + 1,
            "{} boards for {} merchants",
            boards.len(),
            4 * cap + 1
        );
        assert!(
            boards.contains_key(&watched),
            "the oldest board, but a socket watches it"
        );
    }
}
