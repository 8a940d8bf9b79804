//! The durability check: every webhook answered 200 must be a record on the input topic. After the run the topic
//! is read from the beginning of every partition with a plain assigned consumer (no group, nothing committed) and
//! the `webhook_id` headers of this run's records are matched against the ids the service accepted.
//!
//! From the beginning, not from end offsets noted before the run: Tansu 0.6 can report an end offset that lies
//! inside a stored batch (see [`Marks::check`]), and its fetch from an offset inside a batch skips that batch, so a
//! read that starts at a noted end misses records that are there and counts others twice. Read from offset 0 on,
//! every fetch starts at a batch boundary. The cost is reading earlier runs' records again.

use std::collections::{HashMap, HashSet};
use std::time::{Duration, Instant};

use anyhow::{bail, Context};
use rdkafka::config::ClientConfig;
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::message::{Headers, Message};
use rdkafka::{Offset, TopicPartitionList};

pub struct Marks {
    consumer: BaseConsumer,
    topic: String,
    partitions: Vec<i32>,
}

#[derive(Debug, Default)]
pub struct Checked {
    pub accepted: usize,
    pub found: usize,
    pub missing: usize,
    pub first_missing: Option<String>,
    /// Records of this run on the topic more than once (a producer retry the broker did not deduplicate).
    pub duplicated: usize,
    /// Records of this run whose request did not get a 200 "accepted" (e.g. a produce that landed after a timeout).
    pub unanswered: usize,
    pub records_read: u64,
    /// Holes in the offsets read back, `(partition, first offset not returned, next offset returned)`. A topic
    /// written only by producers has contiguous offsets, so a hole is a batch the broker's fetch skipped or an
    /// offset it assigned without storing the batch.
    pub gaps: Vec<(i32, i64, i64)>,
    /// Records read at or past the end offset the broker reported after the run (see [`Marks::check`]).
    pub beyond_reported_end: u64,
    /// Records the broker returned a second time at an offset already read (not counted as duplicates).
    pub reread: u64,
    /// The read-back hit its time bound; `missing` may then include records not read yet.
    pub timed_out: bool,
}

fn partitions(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<Vec<i32>> {
    let metadata = consumer
        .fetch_metadata(Some(topic), Duration::from_secs(10))
        .context("topic metadata")?;
    let Some(t) = metadata.topics().iter().find(|t| t.name() == topic) else {
        bail!("topic {topic} not in the metadata");
    };
    if t.partitions().is_empty() {
        bail!("topic {topic} has no partitions (does it exist? start the service first)");
    }
    Ok(t.partitions().iter().map(|p| p.id()).collect())
}

fn ends(consumer: &BaseConsumer, topic: &str) -> anyhow::Result<HashMap<i32, i64>> {
    partitions(consumer, topic)?
        .into_iter()
        .map(|p| {
            let (_, high) = consumer
                .fetch_watermarks(topic, p, Duration::from_secs(10))
                .with_context(|| format!("watermarks of {topic}/{p}"))?;
            Ok((p, high))
        })
        .collect()
}

impl Marks {
    pub fn take(brokers: &str, topic: &str) -> anyhow::Result<Marks> {
        let consumer: BaseConsumer = ClientConfig::new()
            .set("bootstrap.servers", brokers)
            .set("group.id", "ingress-load-check")
            .set("enable.auto.commit", "false")
            .set("fetch.wait.max.ms", "50")
            .create()
            .context("Kafka consumer")?;
        let partitions = partitions(&consumer, topic)?;
        Ok(Marks {
            consumer,
            topic: topic.to_owned(),
            partitions,
        })
    }

    /// Reads this run's records and matches them with the accepted ids (each `{run_id}-…`).
    ///
    /// The end offsets the broker reports are not trusted as the place to stop: Tansu 0.6 answers ListOffsets
    /// (latest) with the end of the batch stored most recently by wall clock, and batches stored in the same
    /// millisecond tie, so it can report an end below records that are stored and fetchable (docs/PERFORMANCE.md).
    /// The read goes on past the reported ends until every accepted id is seen and every partition reached its
    /// reported end, or nothing new has arrived for [`QUIET`]; records found beyond the reported end are counted in
    /// `beyond_reported_end`. Past [`READ_LIMIT`] it stops and says so in `timed_out`, keeping what it counted.
    pub fn check(&self, run_id: &str, accepted: &[String]) -> anyhow::Result<Checked> {
        let reported_end = ends(&self.consumer, &self.topic)?;
        let mut assignment = TopicPartitionList::new();
        for &p in &self.partitions {
            assignment.add_partition_offset(&self.topic, p, Offset::Beginning)?;
        }
        self.consumer.assign(&assignment)?;
        let mut reading = Reading::new(run_id, accepted, &self.partitions, reported_end);
        let started = Instant::now();
        let mut last_record: Option<Instant> = None;
        while !reading.done() {
            // Before the first record the broker may still be busy with the run; after it, a pause means the end.
            let waited = last_record.unwrap_or(started).elapsed();
            if waited > last_record.map_or(FIRST_RECORD, |_| QUIET) {
                break;
            }
            if started.elapsed() > READ_LIMIT {
                reading.checked.timed_out = true;
                break;
            }
            if let Some(message) = self.consumer.poll(Duration::from_millis(200)) {
                reading.take(&message.context("reading the topic back")?);
                last_record = Some(Instant::now());
            }
        }
        Ok(reading.finish(accepted))
    }
}

/// The read-back's running count.
struct Reading<'a> {
    run_id: &'a str,
    wanted: HashSet<&'a str>,
    unseen: usize,
    seen: HashMap<String, u32>,
    /// Partition -> the offset expected next (topics here are never truncated, so every partition starts at 0).
    next: HashMap<i32, i64>,
    reported_end: HashMap<i32, i64>,
    /// Partitions not yet read to their reported end: duplicates and records without a 200 are counted up to there
    /// at least, even once every accepted id was seen.
    short_of_end: HashSet<i32>,
    checked: Checked,
}

impl<'a> Reading<'a> {
    fn new(
        run_id: &'a str,
        accepted: &'a [String],
        partitions: &[i32],
        reported_end: HashMap<i32, i64>,
    ) -> Self {
        let wanted: HashSet<&str> = accepted.iter().map(String::as_str).collect();
        Reading {
            run_id,
            unseen: wanted.len(),
            wanted,
            seen: HashMap::with_capacity(accepted.len()),
            next: partitions.iter().map(|&p| (p, 0)).collect(),
            short_of_end: reported_end
                .iter()
                .filter(|&(_, &end)| end > 0)
                .map(|(&p, _)| p)
                .collect(),
            reported_end,
            checked: Checked::default(),
        }
    }

    fn done(&self) -> bool {
        self.unseen == 0 && self.short_of_end.is_empty()
    }

    fn take<M: Message>(&mut self, message: &M) {
        let (partition, offset) = (message.partition(), message.offset());
        self.checked.records_read += 1;
        let expected = self.next.get(&partition).copied().unwrap_or(0);
        if offset < expected {
            // The broker returned a record again (a fetch that began inside a batch): not a second copy on the log.
            self.checked.reread += 1;
            return;
        }
        if offset > expected && self.checked.gaps.len() < MAX_GAPS {
            self.checked.gaps.push((partition, expected, offset));
        }
        self.next.insert(partition, offset + 1);
        if let Some(&end) = self.reported_end.get(&partition) {
            if offset >= end {
                self.checked.beyond_reported_end += 1;
            }
            if offset + 1 >= end {
                self.short_of_end.remove(&partition);
            }
        }
        let Some(id) = webhook_id(message).filter(|id| id.starts_with(self.run_id)) else {
            return;
        };
        let count = self.seen.entry(id.to_owned()).or_default();
        *count += 1;
        if *count == 1 && self.wanted.contains(id) {
            self.unseen -= 1;
        }
    }

    fn finish(self, accepted: &[String]) -> Checked {
        let counted = tally(self.seen, accepted, self.checked.records_read);
        Checked {
            missing: counted.missing,
            found: counted.found,
            first_missing: counted.first_missing,
            duplicated: counted.duplicated,
            unanswered: counted.unanswered,
            accepted: counted.accepted,
            ..self.checked
        }
    }
}

/// How long the read-back waits for the first record.
const FIRST_RECORD: Duration = Duration::from_secs(30);
/// The whole read-back's bound.
const READ_LIMIT: Duration = Duration::from_secs(300);
/// Gaps listed in the report (all are counted in `records_read` and `missing` anyway).
const MAX_GAPS: usize = 20;

/// How long the read-back waits for one more record before it calls the topic read.
const QUIET: Duration = Duration::from_secs(3);

fn webhook_id<M: Message>(message: &M) -> Option<&str> {
    message.headers().and_then(|h| {
        h.iter()
            .find(|h| h.key == "webhook_id")
            .and_then(|h| h.value)
            .and_then(|v| std::str::from_utf8(v).ok())
    })
}

fn tally(seen: HashMap<String, u32>, accepted: &[String], records_read: u64) -> Checked {
    let accepted_set: HashSet<&str> = accepted.iter().map(String::as_str).collect();
    let mut checked = Checked {
        accepted: accepted.len(),
        records_read,
        ..Checked::default()
    };
    for id in accepted {
        if seen.contains_key(id) {
            checked.found += 1;
        } else {
            checked.missing += 1;
            checked.first_missing.get_or_insert_with(|| id.clone());
        }
    }
    checked.duplicated = seen.values().filter(|&&n| n > 1).count();
    checked.unanswered = seen
        .keys()
        .filter(|id| !accepted_set.contains(id.as_str()))
        .count();
    checked
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn missing_duplicated_and_unanswered_are_told_apart() {
        let seen: HashMap<String, u32> = [("r-0-0", 1), ("r-0-1", 2), ("r-1-0", 1)]
            .into_iter()
            .map(|(k, v)| (k.to_owned(), v))
            .collect();
        let accepted = vec!["r-0-0".to_owned(), "r-0-1".to_owned(), "r-0-2".to_owned()];
        let c = tally(seen, &accepted, 4);
        assert_eq!(
            (c.found, c.missing, c.duplicated, c.unanswered),
            (2, 1, 1, 1)
        );
        assert_eq!(c.first_missing.as_deref(), Some("r-0-2"));
    }
}
