//! The processor's operator gauges: input throughput and position (for lag), partitions paused, snapshot age and
//! restore time per partition, and the periodic census of segments and churn risk.
//!
//! Everything here reads what the loop already knows; the census walks the partitions' customers inside their
//! actors on a task of its own every `CENSUS_EVERY`, so no metric costs the hot path more than a counter.

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::{Duration, Instant};

use actors::census::{census, Census};
use actors::Clock;
use streams::metric_names::{self as names, labels};
use streams::source::RawRecord;

use super::Processor;
use crate::directory::{inspect_all, Registry};

/// How often segment sizes and churn levels are counted. Each census walks every customer this instance holds.
const CENSUS_EVERY: Duration = Duration::from_secs(10);

/// Per-partition times the gauges are computed from.
#[derive(Debug, Default)]
pub(super) struct PartitionClocks {
    /// When each owned partition was assigned, until it goes live (the restore's duration).
    restoring_since: HashMap<i32, Instant>,
    /// When each owned partition last had a durable snapshot, or was assigned, before its first.
    snapshot_at: HashMap<i32, Instant>,
}

impl PartitionClocks {
    pub(super) fn assigned(&mut self, partition: i32) {
        let now = Instant::now();
        self.restoring_since.insert(partition, now);
        self.snapshot_at.insert(partition, now);
    }

    pub(super) fn revoked(&mut self, partition: i32) {
        self.restoring_since.remove(&partition);
        if self.snapshot_at.remove(&partition).is_some() {
            metrics::gauge!(names::SNAPSHOT_AGE, "partition" => partition.to_string()).set(0.0);
        }
    }

    pub(super) fn snapshot_written(&mut self, partition: i32) {
        if let Some(at) = self.snapshot_at.get_mut(&partition) {
            *at = Instant::now();
        }
    }
}

impl Processor {
    /// Counts a share's records as processed, by topic, and tells the lag book how far the partition got.
    pub(super) fn note_applied(&self, partition: i32, records: &[RawRecord]) {
        let mut per_topic: Vec<(&str, u64)> = Vec::new();
        let mut last: HashMap<&str, (i64, Option<i64>)> = HashMap::new();
        for record in records {
            match per_topic.iter_mut().find(|(t, _)| *t == record.topic) {
                Some((_, n)) => *n += 1,
                None => per_topic.push((&record.topic, 1)),
            }
            last.insert(&record.topic, (record.offset, record.timestamp_ms));
        }
        for (topic, n) in per_topic {
            metrics::counter!(names::EVENTS_PROCESSED, "topic" => topic.to_owned()).increment(n);
        }
        for (topic, (offset, timestamp)) in last {
            self.source
                .lag()
                .applied(topic, partition, offset, timestamp);
        }
    }

    /// Partitions paused, snapshot ages, and the restore time of partitions that just went live; every tick.
    pub(super) fn update_partition_gauges(&mut self) {
        let paused = if self.paused {
            self.lifecycles.len()
        } else {
            self.config_wait.len()
        };
        metrics::gauge!(names::PARTITIONS_PAUSED).set(paused as f64);
        let clocks = &mut self.partition_clocks;
        for (partition, at) in &clocks.snapshot_at {
            metrics::gauge!(names::SNAPSHOT_AGE, "partition" => partition.to_string())
                .set(at.elapsed().as_secs_f64());
        }
        let live: Vec<i32> = clocks
            .restoring_since
            .keys()
            .filter(|p| self.lifecycles.get(p).is_some_and(|l| l.live()))
            .copied()
            .collect();
        for partition in live {
            if let Some(since) = clocks.restoring_since.remove(&partition) {
                let seconds = since.elapsed().as_secs_f64();
                tracing::info!(partition, seconds, "partition restored and live");
                metrics::histogram!(names::RESTORE_DURATION).record(seconds);
            }
        }
    }
}

/// A restore attempt that failed and will be tried again; `why` is a fixed phrase for the log.
pub(super) fn restore_failed(partition: i32, why: &'static str) {
    tracing::warn!(partition, why, "restore attempt failed; trying again");
    metrics::counter!(names::RESTORE_FAILURES).increment(1);
    names::error("processor", "restore");
}

/// The census task; stopped when dropped, so a processor that returns early (an error) leaves none behind.
pub(super) struct CensusTask(tokio::task::JoinHandle<()>);

impl Drop for CensusTask {
    fn drop(&mut self) {
        self.0.abort();
    }
}

/// Counts segments and churn levels over `registry` every `CENSUS_EVERY` while the returned task is held.
pub(super) fn spawn_census(registry: Registry, clock: Arc<dyn Clock>) -> CensusTask {
    CensusTask(tokio::task::spawn_local(async move {
        let mut labels = SegmentLabels::default();
        let mut every = tokio::time::interval(CENSUS_EVERY);
        every.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            every.tick().await;
            let now = clock.now();
            let mut total = Census::default();
            for part in inspect_all(&registry, move |core| census(core, now)).await {
                total.absorb(part);
            }
            labels.export(total);
        }
    }))
}

/// The `rfm_segment_customers` series this instance exports: built-in keys, then custom keys up to the cap.
#[derive(Debug)]
struct SegmentLabels {
    builtin: Vec<String>,
    custom: Vec<String>,
    exported: HashSet<String>,
}

impl Default for SegmentLabels {
    fn default() -> Self {
        let builtin = functions::RfmConfig::default().segments;
        SegmentLabels {
            builtin: builtin.into_iter().map(|r| r.key).collect(),
            custom: Vec::new(),
            exported: HashSet::new(),
        }
    }
}

impl SegmentLabels {
    /// Folds `census` onto bounded labels and sets the gauges; a label that had customers and has none now is
    /// set to 0 rather than left at its last value.
    fn export(&mut self, census: Census) {
        for (level, n) in labels::CHURN_LEVELS.iter().zip(census.churn) {
            metrics::gauge!(names::CHURN_RISK_CUSTOMERS, "level" => *level).set(n as f64);
        }
        let totals = self.fold(census.segments);
        let now: HashSet<String> = totals.keys().cloned().collect();
        for gone in self.exported.difference(&now) {
            metrics::gauge!(names::SEGMENTS, "segment" => gone.clone()).set(0.0);
        }
        for (label, n) in totals {
            metrics::gauge!(names::SEGMENTS, "segment" => label).set(n as f64);
        }
        self.exported = now;
    }

    fn fold(&mut self, segments: Vec<(String, u64)>) -> HashMap<String, u64> {
        let builtin: Vec<&str> = self.builtin.iter().map(String::as_str).collect();
        let mut totals = HashMap::new();
        for (key, n) in segments {
            let label = names::segment_label(&key, &builtin, &mut self.custom);
            *totals.entry(label).or_insert(0) += n;
        }
        totals
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn custom_keys_past_the_cap_are_summed_under_other() {
        let mut labels = SegmentLabels::default();
        let mut segments: Vec<(String, u64)> = (0..names::MAX_SEGMENT_LABELS + 3)
            .map(|i| (format!("custom_{i}"), 1))
            .collect();
        segments.push(("champions".into(), 5));
        segments.push(("other".into(), 2));
        let totals = labels.fold(segments);
        assert_eq!(totals["champions"], 5);
        // The built-in "other" plus the three custom keys past the cap.
        assert_eq!(totals["other"], 5);
        assert_eq!(totals.len(), names::MAX_SEGMENT_LABELS + 2);
    }
}
