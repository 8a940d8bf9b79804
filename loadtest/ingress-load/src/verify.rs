//! The durability check: every webhook answered 200 must be a record on the input topic. Before the run the
//! topic's end offsets are noted; after it, everything from those offsets to the new end is read back with a plain
//! assigned consumer (no group, nothing committed) and the records' `webhook_id` headers are matched against the
//! ids the service accepted.

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
    /// Partition -> end offset before the run.
    start: HashMap<i32, i64>,
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
        let start = ends(&consumer, topic)?;
        Ok(Marks {
            consumer,
            topic: topic.to_owned(),
            start,
        })
    }

    /// Reads this run's records and matches them with the accepted ids (each `{run_id}-…`).
    pub fn check(&self, run_id: &str, accepted: &[String]) -> anyhow::Result<Checked> {
        let end = ends(&self.consumer, &self.topic)?;
        let mut assignment = TopicPartitionList::new();
        let mut remaining: HashMap<i32, i64> = HashMap::new();
        for (&p, &from) in &self.start {
            let to = end.get(&p).copied().unwrap_or(from);
            if to > from {
                assignment.add_partition_offset(&self.topic, p, Offset::Offset(from))?;
                remaining.insert(p, to);
            }
        }
        self.consumer.assign(&assignment)?;
        let mut seen: HashMap<String, u32> = HashMap::with_capacity(accepted.len());
        let mut records_read = 0u64;
        let deadline = Instant::now() + Duration::from_secs(120);
        while !remaining.is_empty() && Instant::now() < deadline {
            let Some(message) = self.consumer.poll(Duration::from_millis(200)) else {
                continue;
            };
            let message = message.context("reading the topic back")?;
            records_read += 1;
            if remaining
                .get(&message.partition())
                .is_some_and(|&to| message.offset() + 1 >= to)
            {
                remaining.remove(&message.partition());
            }
            let id = message.headers().and_then(|h| {
                h.iter()
                    .find(|h| h.key == "webhook_id")
                    .and_then(|h| h.value)
                    .and_then(|v| std::str::from_utf8(v).ok())
                    .map(str::to_owned)
            });
            if let Some(id) = id.filter(|id| id.starts_with(run_id)) {
                *seen.entry(id).or_default() += 1;
            }
        }
        if !remaining.is_empty() {
            bail!("could not read the topic back to its end within 120 s: {remaining:?}");
        }
        Ok(tally(seen, accepted, records_read))
    }
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
