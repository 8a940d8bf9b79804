//! Consumer lag per input partition, in records and in seconds, for `rfm_consumer_lag_records` and
//! `rfm_consumer_lag_seconds`.
//!
//! librdkafka's statistics (every `statistics.interval.ms`) give each fetched partition's high watermark; the
//! processor tells the book the last record it applied. Records lag is the high watermark minus the next offset to
//! apply, so records fetched but still waiting in a batch count as lag; librdkafka's own `consumer_lag` is measured
//! against the committed offset, which here trails by a snapshot interval on purpose (see `recovery`). Seconds lag
//! is how old the last applied record is while records wait behind it, and 0 once nothing waits: a quiet topic is
//! not late.

use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use rdkafka::statistics::Statistics;

use crate::metric_names::{CONSUMER_LAG_RECORDS, CONSUMER_LAG_SECONDS};

/// The last applied record of one partition of one topic.
#[derive(Debug, Clone, Copy)]
struct Applied {
    offset: i64,
    timestamp_ms: Option<i64>,
}

/// Where the processor stands in each input partition, and which series were exported.
#[derive(Debug, Default)]
pub struct LagBook {
    applied: Mutex<HashMap<(String, i32), Applied>>,
    exported: Mutex<HashSet<(String, i32)>>,
}

/// One partition's lag as last computed.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lag {
    pub records: i64,
    pub seconds: f64,
}

impl LagBook {
    /// Notes that `offset` of `topic`/`partition` was applied.
    pub fn applied(&self, topic: &str, partition: i32, offset: i64, timestamp_ms: Option<i64>) {
        let mut applied = lock(&self.applied);
        let entry = Applied {
            offset,
            timestamp_ms,
        };
        match applied.get_mut(&(topic.to_owned(), partition)) {
            Some(last) if last.offset >= offset => {}
            Some(last) => *last = entry,
            None => {
                applied.insert((topic.to_owned(), partition), entry);
            }
        }
    }

    /// Forgets a partition given away; its series drop to 0 at the next statistics.
    pub fn forget(&self, partition: i32) {
        lock(&self.applied).retain(|(_, p), _| *p != partition);
    }

    /// Lag of one partition given its high watermark and committed offset (`< 0`: none), as of `now_ms`.
    fn lag(&self, key: &(String, i32), high: i64, committed: i64, now_ms: i64) -> Lag {
        let last = lock(&self.applied).get(key).copied();
        let next = last.map_or(committed.max(0), |a| a.offset + 1);
        let records = (high - next).max(0);
        let seconds = match last.and_then(|a| a.timestamp_ms) {
            Some(ts) if records > 0 => (now_ms - ts).max(0) as f64 / 1e3,
            _ => 0.0,
        };
        Lag { records, seconds }
    }

    /// Exports the lag of every partition the consumer is fetching (`fetch_state` active), and zeroes the series of
    /// partitions it no longer fetches so a dashboard does not show a revoked partition's last value forever.
    pub fn export(&self, stats: &Statistics, inputs: &[String], now_ms: i64) {
        let mut seen = HashSet::new();
        for topic in inputs {
            let Some(t) = stats.topics.get(topic) else {
                continue;
            };
            for (partition, p) in &t.partitions {
                // -1 is librdkafka's internal "unassigned" partition.
                if *partition < 0 || p.fetch_state != "active" || p.hi_offset < 0 {
                    continue;
                }
                let key = (topic.clone(), *partition);
                let lag = self.lag(&key, p.hi_offset, p.committed_offset, now_ms);
                set(&key, lag);
                seen.insert(key);
            }
        }
        let mut exported = lock(&self.exported);
        for gone in exported.difference(&seen) {
            set(
                gone,
                Lag {
                    records: 0,
                    seconds: 0.0,
                },
            );
        }
        *exported = seen;
    }
}

fn set((topic, partition): &(String, i32), lag: Lag) {
    let labels = [
        ("topic", topic.clone()),
        ("partition", partition.to_string()),
    ];
    metrics::gauge!(CONSUMER_LAG_RECORDS, &labels).set(lag.records as f64);
    metrics::gauge!(CONSUMER_LAG_SECONDS, &labels).set(lag.seconds);
}

fn lock<T>(m: &Mutex<T>) -> std::sync::MutexGuard<'_, T> {
    m.lock().unwrap_or_else(|p| p.into_inner())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn key(p: i32) -> (String, i32) {
        ("orders".to_owned(), p)
    }

    #[test]
    fn records_lag_counts_from_the_next_offset_to_apply() {
        let book = LagBook::default();
        book.applied("orders", 0, 9, Some(1_000));
        // Offsets 10..15 wait: the applied record is 4 s old at 5_000.
        assert_eq!(
            book.lag(&key(0), 15, 3, 5_000),
            Lag {
                records: 5,
                seconds: 4.0
            }
        );
        // Caught up: no records wait, so no seconds either.
        assert_eq!(
            book.lag(&key(0), 10, 3, 5_000),
            Lag {
                records: 0,
                seconds: 0.0
            }
        );
    }

    #[test]
    fn an_untouched_partition_counts_from_its_committed_offset() {
        let book = LagBook::default();
        assert_eq!(book.lag(&key(1), 20, 12, 0).records, 8);
        assert_eq!(book.lag(&key(1), 20, -1001, 0).records, 20);
    }

    #[test]
    fn an_older_record_does_not_move_the_position_back_and_forget_clears_it() {
        let book = LagBook::default();
        book.applied("orders", 2, 30, None);
        book.applied("orders", 2, 10, None);
        assert_eq!(book.lag(&key(2), 31, 0, 0).records, 0);
        book.forget(2);
        assert_eq!(book.lag(&key(2), 31, 0, 0).records, 31);
    }
}
