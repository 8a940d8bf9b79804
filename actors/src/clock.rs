//! The processor's notion of "now". Production reads the system clock; tests hold a manual clock and move it past
//! recency boundaries without waiting days.

use std::sync::atomic::{AtomicI64, Ordering};
use std::sync::Arc;

use functions::Timestamp;

pub trait Clock: Send + Sync + 'static {
    fn now(&self) -> Timestamp;
}

#[derive(Debug, Clone, Copy, Default)]
pub struct SystemClock;

impl Clock for SystemClock {
    fn now(&self) -> Timestamp {
        let since_epoch = std::time::SystemTime::now()
            .duration_since(std::time::UNIX_EPOCH)
            .unwrap_or_default();
        Timestamp(since_epoch.as_secs() as i64)
    }
}

/// A clock that only moves when told to; clones share the same time.
#[derive(Debug, Clone)]
pub struct ManualClock(Arc<AtomicI64>);

impl ManualClock {
    pub fn new(start: Timestamp) -> Self {
        ManualClock(Arc::new(AtomicI64::new(start.unix())))
    }

    pub fn set(&self, to: Timestamp) {
        self.0.store(to.unix(), Ordering::SeqCst);
    }

    pub fn advance_days(&self, days: i64) {
        self.0
            .fetch_add(days * functions::time::SECONDS_PER_DAY, Ordering::SeqCst);
    }
}

impl Clock for ManualClock {
    fn now(&self) -> Timestamp {
        Timestamp(self.0.load(Ordering::SeqCst))
    }
}
