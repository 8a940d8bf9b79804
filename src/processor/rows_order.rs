//! The order in which outcomes' rows are written, as far as GDPR needs it.
//!
//! Up to eight outcomes are published at once, and each writes its rows (Postgres, score cache) once its own Kafka
//! records are acknowledged, so they finish out of order. An outcome holding only an erasure has no records to wait
//! for: without this, it could erase a customer whom an earlier, slower outcome then writes back. Outcomes are
//! numbered in start order; a watch channel carries the low-water mark below which every outcome has finished its
//! rows, and an outcome with erasures or data requests waits for the mark to reach it before doing them.

use std::collections::BTreeSet;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio::sync::watch;

#[derive(Clone)]
pub struct RowsOrder {
    inner: Arc<Inner>,
}

struct Inner {
    next: AtomicU64,
    /// Finished outcomes above the low-water mark.
    finished: Mutex<BTreeSet<u64>>,
    low: watch::Sender<u64>,
}

impl Default for RowsOrder {
    fn default() -> Self {
        RowsOrder {
            inner: Arc::new(Inner {
                next: AtomicU64::new(0),
                finished: Mutex::new(BTreeSet::new()),
                low: watch::Sender::new(0),
            }),
        }
    }
}

impl RowsOrder {
    /// The next outcome's number; called in start order.
    pub fn begin(&self) -> u64 {
        self.inner.next.fetch_add(1, Ordering::Relaxed)
    }

    /// Waits until every outcome started before `seq` has finished its rows.
    pub async fn after_earlier(&self, seq: u64) {
        let mut low = self.inner.low.subscribe();
        // The sender lives in `self`, so the wait ends only when the mark gets there.
        let _ = low.wait_for(|low| *low >= seq).await;
    }

    /// Records that outcome `seq` has finished its rows, and moves the mark past every finished run.
    pub fn finish(&self, seq: u64) {
        let mut finished = self
            .inner
            .finished
            .lock()
            .unwrap_or_else(|poisoned| poisoned.into_inner());
        finished.insert(seq);
        let mut low = *self.inner.low.borrow();
        while finished.remove(&low) {
            low += 1;
        }
        self.inner.low.send_if_modified(|mark| {
            let moved = *mark != low;
            *mark = low;
            moved
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn an_outcome_waits_for_every_earlier_one_and_no_later_one() {
        let order = RowsOrder::default();
        let (first, second, third) = (order.begin(), order.begin(), order.begin());
        let waiting = tokio::spawn({
            let order = order.clone();
            async move { order.after_earlier(third).await }
        });
        order.finish(second);
        tokio::task::yield_now().await;
        assert!(!waiting.is_finished(), "the first is still writing");
        order.finish(first);
        tokio::time::timeout(std::time::Duration::from_secs(1), waiting)
            .await
            .expect("both earlier outcomes finished")
            .unwrap();
        // The first outcome never waits, and a later one does not hold up an earlier one.
        order.after_earlier(first).await;
        let fourth = order.begin();
        order.finish(third);
        order.after_earlier(fourth).await;
    }
}
