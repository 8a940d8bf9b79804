//! Binding a snapshot to the incarnation of the topics it covers (docs/RECOVERY.md). A snapshot holds offsets, and
//! offsets only mean something in the log they were read from: against a fresh broker, or topics deleted and
//! created again, with the same group id and snapshot store, an old snapshot would be restored over the new log,
//! its customers would appear, and the new log's first records (below its offsets) would be dropped as held.
//!
//! So a snapshot carries the broker's cluster id (when the broker gives one) and, per input topic, a stamp of the
//! last record it applied (offset, timestamp, digest of key and payload). Before it is trusted, the record at that
//! offset is read back with a small assigned consumer; the snapshot is refused when the cluster id differs, or the
//! record is missing although the log starts at or before it, or is another record. A stamp below the log's start
//! cannot be checked (retention deleted the record) and is trusted: that is the case snapshots exist for.

use std::collections::{BTreeMap, HashMap};
use std::ffi::CString;
use std::time::{Duration, Instant};

use actors::{Incarnation, RecordStamp};
use rdkafka::consumer::{BaseConsumer, Consumer};
use rdkafka::error::KafkaError;
use rdkafka::message::Message;
use rdkafka::{Offset, TopicPartitionList};

use streams::source::REWIND;
use streams::tail::{fetched_high_watermark, reader};

/// How long reading the stamped records may take before the restore is postponed.
const DEADLINE: Duration = Duration::from_secs(10);

#[derive(Debug, thiserror::Error)]
pub enum IncarnationError {
    #[error(transparent)]
    Kafka(#[from] KafkaError),
    #[error("the stamped records were not read within {0:?}")]
    Timeout(Duration),
}

/// What the broker says about a snapshot's incarnation.
#[derive(Debug, Default, PartialEq)]
pub(super) struct Verdict {
    /// The broker's cluster id now, if it gave one.
    pub(super) cluster: Option<String>,
    /// Why the snapshot covers another incarnation of the topics; `None` when it may be trusted.
    pub(super) refused: Option<String>,
}

/// Checks `incarnation` for `partition` against the broker at `brokers`, whose cluster id is `cluster` and whose
/// input topics have the low and high watermarks `watermarks`. Blocks for broker round trips: run it on a blocking
/// thread.
pub(super) fn verify(
    brokers: &str,
    partition: i32,
    cluster: Option<String>,
    incarnation: &Incarnation,
    watermarks: &HashMap<String, (i64, i64)>,
) -> Result<Verdict, IncarnationError> {
    if let (Some(was), Some(now)) = (&incarnation.cluster_id, &cluster) {
        if was != now {
            let refused = Some(format!(
                "taken on cluster {was}, the broker is cluster {now}"
            ));
            return Ok(Verdict { cluster, refused });
        }
    }
    let wanted = checkable(incarnation, watermarks);
    if wanted.is_empty() {
        return Ok(Verdict {
            cluster,
            refused: None,
        });
    }
    let consumer = reader(brokers, "loyalnest-rfm-incarnation")?;
    let found = read_stamps(&consumer, partition, &wanted)?;
    let refused = wanted.iter().find_map(|(topic, (stamp, _))| {
        let what = match found.get(topic).copied().flatten() {
            None => "no record",
            Some(seen) if seen != *stamp => "another record",
            Some(_) => return None,
        };
        Some(format!(
            "{topic} has {what} at offset {}, where the snapshot's last record was",
            stamp.offset
        ))
    });
    Ok(Verdict { cluster, refused })
}

/// The stamps that can be checked, with the offset reading starts from: those at or past the start of their log.
/// A stamp below it names a record retention deleted, which cannot be read, so it is trusted.
fn checkable(
    incarnation: &Incarnation,
    watermarks: &HashMap<String, (i64, i64)>,
) -> BTreeMap<String, (RecordStamp, i64)> {
    incarnation
        .last
        .iter()
        .filter_map(|(topic, stamp)| {
            let (low, _) = watermarks.get(topic)?;
            // Tansu skips the batch a fetch starts inside of (see `REWIND`), so reading starts well before.
            let from = (stamp.offset - REWIND).max(*low);
            (stamp.offset >= *low).then(|| (topic.clone(), (*stamp, from)))
        })
        .collect()
}

/// The stamp of the record at each wanted offset, or `None` where the log has no record there (it ends before, or
/// skips it).
fn read_stamps(
    consumer: &BaseConsumer,
    partition: i32,
    wanted: &BTreeMap<String, (RecordStamp, i64)>,
) -> Result<HashMap<String, Option<RecordStamp>>, IncarnationError> {
    let mut found: HashMap<String, Option<RecordStamp>> = HashMap::new();
    let mut assignment = TopicPartitionList::new();
    let mut next: HashMap<&str, i64> = HashMap::new();
    for (topic, (_, from)) in wanted {
        assignment.add_partition_offset(topic, partition, Offset::Offset(*from))?;
        next.insert(topic, *from);
    }
    consumer.assign(&assignment)?;
    let started = Instant::now();
    while found.len() < wanted.len() {
        for (topic, (stamp, _)) in wanted {
            if !found.contains_key(topic)
                && ended_before(
                    consumer,
                    topic,
                    partition,
                    next[topic.as_str()],
                    stamp.offset,
                )
            {
                found.insert(topic.clone(), None);
            }
        }
        if started.elapsed() > DEADLINE {
            return Err(IncarnationError::Timeout(DEADLINE));
        }
        let Some(message) = consumer.poll(Duration::from_millis(20)) else {
            continue;
        };
        let message = message?;
        let Some((topic, (stamp, _))) = wanted.get_key_value(message.topic()) else {
            continue;
        };
        next.insert(topic, message.offset() + 1);
        if message.offset() >= stamp.offset && !found.contains_key(topic) {
            let seen = (message.offset() == stamp.offset).then(|| {
                RecordStamp::of(
                    message.offset(),
                    message.timestamp().to_millis(),
                    message.key(),
                    message.payload().unwrap_or_default(),
                )
            });
            found.insert(topic.clone(), seen);
        }
    }
    Ok(found)
}

/// Whether the log of `topic` ends at or before `target`: everything up to the high watermark the fetches reported
/// was read (`next`). Not ListOffsets, which Tansu answers short of the end (see `readback`).
fn ended_before(
    consumer: &BaseConsumer,
    topic: &str,
    partition: i32,
    next: i64,
    target: i64,
) -> bool {
    let Ok(name) = CString::new(topic) else {
        return false;
    };
    fetched_high_watermark(consumer.client(), &name, partition)
        .is_some_and(|high| high <= target && next >= high)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_snapshot_of_another_cluster_is_refused_and_an_unknown_cluster_is_not_compared() {
        let incarnation = Incarnation {
            cluster_id: Some("cluster-old".into()),
            last: BTreeMap::from([(
                "orders".to_owned(),
                RecordStamp::of(7, Some(1), Some(b"k"), b"v"),
            )]),
        };
        // No watermarks: no stamp is checkable, so nothing is read and no broker is needed.
        let none = HashMap::new();
        let verdict = |cluster: Option<&str>, incarnation: &Incarnation| {
            verify(
                "unused:1",
                0,
                cluster.map(str::to_owned),
                incarnation,
                &none,
            )
            .unwrap()
        };
        let other = verdict(Some("cluster-new"), &incarnation);
        assert!(
            other
                .refused
                .as_deref()
                .is_some_and(|r| r.contains("cluster-old")),
            "{other:?}"
        );
        assert_eq!(other.cluster.as_deref(), Some("cluster-new"));
        assert_eq!(verdict(Some("cluster-old"), &incarnation).refused, None);
        assert_eq!(
            verdict(None, &incarnation).refused,
            None,
            "the broker gave none"
        );
        let older = Incarnation {
            cluster_id: None,
            ..incarnation.clone()
        };
        assert_eq!(
            verdict(Some("cluster-new"), &older).refused,
            None,
            "taken before stamps"
        );
    }

    #[test]
    fn stamps_below_the_start_of_their_log_are_trusted_unread() {
        let stamp = |offset| RecordStamp::of(offset, Some(1), Some(b"k"), b"v");
        let incarnation = Incarnation {
            cluster_id: None,
            last: BTreeMap::from([
                ("deleted".to_owned(), stamp(40)),
                ("kept".to_owned(), stamp(40)),
                ("long".to_owned(), stamp(40_000)),
                ("gone".to_owned(), stamp(3)),
            ]),
        };
        let watermarks = HashMap::from([
            ("deleted".to_owned(), (41, 90)),
            ("kept".to_owned(), (40, 90)),
            ("long".to_owned(), (0, 50_000)),
        ]);
        let wanted = checkable(&incarnation, &watermarks);
        assert_eq!(
            wanted.keys().collect::<Vec<_>>(),
            ["kept", "long"],
            "below the log start (deleted) or no longer an input topic (gone): nothing to read"
        );
        assert_eq!(wanted["kept"].1, 40, "reading starts at the log start");
        assert_eq!(wanted["long"].1, 40_000 - REWIND);
    }
}
