//! Snapshots and restores (DESIGN.md §6, docs/RECOVERY.md).
//!
//! Every few seconds, with nothing in flight, each owned partition takes a snapshot round: the next input offset of
//! each topic, the output topic's high watermarks and the incarnation of the topics (the last record applied per
//! topic) go into a manifest, with the pieces of the merchants that changed since the last round (every merchant
//! for a store that keeps snapshots whole), and are written to the snapshot store; only once that write succeeds
//! are the covered offsets stored for commit, so the group's committed position never passes a snapshot. On
//! assignment the partition is restored from its snapshot (or from nothing), records it already holds
//! are skipped, records up to the input high watermark seen at assignment (the *frontier*) are applied quietly, and
//! then the versions the old owner published are read back and one net change per affected customer is published.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::time::Duration;

use actors::{Incarnation, RawRecord, RecordStamp, SnapshotOffsets};

use super::Processor;
use crate::snapshots::SnapshotStore;
use streams::source::REWIND;

mod rounds;

pub(super) use rounds::{Held, Lineage, Written};

/// Where one owned partition stands.
#[derive(Debug, Default)]
pub(super) struct Position {
    /// The next offset to apply, per input topic.
    next: HashMap<String, i64>,
    /// The input high watermarks when the snapshot was loaded: records below them are replayed quietly.
    frontier: HashMap<String, i64>,
    /// Where reading back the output topic starts, per output partition (from the snapshot).
    marks: BTreeMap<i32, i64>,
    /// Topics whose first record since the restore has not arrived yet. If it comes from past `next`, the consumer
    /// started after the snapshot (the snapshot was lost or is older than the commit), so it must seek back.
    awaiting: HashSet<String>,
    /// The incarnation of the topics this state was read from: the broker's cluster id and the last record applied
    /// per topic, which every snapshot carries (see `incarnation`).
    incarnation: Incarnation,
    /// What this owner knows of the partition's snapshot in the store.
    pub(super) lineage: Lineage,
}

impl Position {
    /// The position of a partition just loaded from `offsets` (empty without a snapshot), restoring up to the
    /// input high watermarks seen at loading. Every topic's first record is checked for a gap.
    pub(super) fn restored(
        offsets: &SnapshotOffsets,
        watermarks: &HashMap<String, (i64, i64)>,
    ) -> Position {
        let mut position = Position::default();
        let mut frontier = HashMap::new();
        for (topic, (low, high)) in watermarks {
            let next = offsets.inputs.get(topic).copied().unwrap_or(*low).max(*low);
            position.next.insert(topic.clone(), next);
            frontier.insert(topic.clone(), *high);
        }
        position.frontier = frontier;
        position.marks = offsets.marks.clone();
        position.resync();
        position
    }

    /// Binds the position to the incarnation its state was read from and to what the store holds of it.
    pub(super) fn bound_to(mut self, incarnation: Incarnation, lineage: Lineage) -> Position {
        self.incarnation = incarnation;
        self.lineage = lineage;
        self
    }

    /// Remembers the last admitted record of each topic: the last one a snapshot taken after them has applied.
    fn stamp(&mut self, admitted: &[RawRecord]) {
        let mut seen: Vec<&str> = Vec::new();
        for record in admitted.iter().rev() {
            if seen.contains(&record.topic.as_str()) {
                continue;
            }
            seen.push(&record.topic);
            let stamp = RecordStamp::of(
                record.offset,
                record.timestamp_ms,
                record.key.as_deref(),
                &record.payload,
            );
            self.incarnation.last.insert(record.topic.clone(), stamp);
        }
    }

    /// Checks the next record of every topic against `next`: the consumer may have moved past it (records
    /// dropped while paused or hydrating, a fetch that skipped part of a batch) and must then seek back.
    pub(super) fn resync(&mut self) {
        self.awaiting.extend(self.next.keys().cloned());
    }

    /// Where reading back the output topic starts, per output partition. Reading earlier than the marks only
    /// finds versions the snapshot already holds (see `REWIND`).
    pub(super) fn read_back_from(&self) -> BTreeMap<i32, i64> {
        self.marks
            .iter()
            .map(|(p, o)| (*p, (o - REWIND).max(0)))
            .collect()
    }

    /// Splits `records` (in offset order per topic) into those to apply and the topics the consumer must move
    /// back on: a record below `next` is already held; the first record of a topic awaiting its check that lies
    /// past `next` reveals a gap (the consumer started after the position), and that topic's later records in
    /// this batch are dropped too, to be fetched again after the seek.
    pub(super) fn admit(&mut self, records: Vec<RawRecord>) -> Admitted {
        let mut admitted = Admitted {
            records: Vec::with_capacity(records.len()),
            seeks: Vec::new(),
        };
        for record in records {
            if admitted
                .seeks
                .iter()
                .any(|(topic, _)| *topic == record.topic)
            {
                continue;
            }
            let next = self.next.get(&record.topic).copied().unwrap_or(0);
            if record.offset < next {
                continue;
            }
            if record.offset > next && self.awaiting.contains(&record.topic) {
                admitted.seeks.push((record.topic.clone(), next));
                continue;
            }
            self.awaiting.remove(&record.topic);
            self.next.insert(record.topic.clone(), record.offset + 1);
            admitted.records.push(record);
        }
        admitted
    }

    pub(super) fn reached_frontier(&self) -> bool {
        self.frontier
            .iter()
            .all(|(topic, high)| self.next.get(topic).is_some_and(|n| n >= high))
    }
}

/// Settings of the snapshot loop.
pub struct SnapshotSettings {
    pub store: SnapshotStore,
    pub every: Duration,
}

/// What `Position::admit` made of a fetched batch.
#[derive(Debug)]
pub(super) struct Admitted {
    pub(super) records: Vec<RawRecord>,
    /// Topics to move back, with the position to fetch from again.
    pub(super) seeks: Vec<(String, i64)>,
}

impl Processor {
    /// Moves every input topic of `partition` back to its position (rewound past Tansu's batch gap, see
    /// `REWIND`) and checks the first record of each again. After a pause or a hydration, records that were
    /// delivered and dropped are fetched again even when nothing new arrives to reveal the gap.
    pub(super) fn rewind_to_position(&mut self, partition: i32) {
        let Some(position) = self.positions.get_mut(&partition) else {
            return;
        };
        position.resync();
        for (topic, next) in &position.next {
            let from = (next - REWIND).max(0);
            if let Err(e) = self.source.seek(topic, partition, from) {
                // The first record's gap check seeks again if this one did not take.
                tracing::warn!(partition, topic, error = %e, "could not rewind to the position");
            }
        }
    }

    /// Drops records the restored state already holds, and seeks back when the consumer started past it.
    pub(super) fn admit(&mut self, partition: i32, records: Vec<RawRecord>) -> Vec<RawRecord> {
        let Some(position) = self.positions.get_mut(&partition) else {
            return Vec::new();
        };
        let Admitted { records, seeks } = position.admit(records);
        for (topic, next) in seeks {
            tracing::info!(
                partition,
                topic,
                from = next,
                "seeking back to the position"
            );
            if let Err(e) = self.source.seek(&topic, partition, (next - REWIND).max(0)) {
                tracing::warn!(partition, error = %e, "seek failed; will retry on the next record");
            }
        }
        position.stamp(&records);
        records
    }
}

/// The first input topic whose snapshot position lies past the end of its log (the topic was recreated, or the
/// broker lost records): such a snapshot holds state Kafka cannot replay and must not be trusted. Tansu reports
/// the end up to one producer batch short (see `readback`), so only a position more than `REWIND` records past
/// the reported end counts; a recreated topic shorter than that is not caught.
pub(super) fn ahead_of_log<'a>(
    offsets: &SnapshotOffsets,
    watermarks: &'a HashMap<String, (i64, i64)>,
) -> Option<(&'a str, i64, i64)> {
    watermarks.iter().find_map(|(topic, (_, high))| {
        let next = *offsets.inputs.get(topic)?;
        (next > high + REWIND).then_some((topic.as_str(), next, *high))
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn record(topic: &str, offset: i64) -> RawRecord {
        RawRecord {
            kind: None,
            topic: topic.to_owned(),
            offset,
            key: None,
            payload: Vec::new(),
            timestamp_ms: None,
            traceparent: None,
        }
    }

    fn position_at(next: &[(&str, i64)], high: &[(&str, i64)]) -> Position {
        let offsets = SnapshotOffsets::of_inputs(next.iter().copied());
        let watermarks = high.iter().map(|(t, h)| (t.to_string(), (0, *h))).collect();
        Position::restored(&offsets, &watermarks)
    }

    fn offsets(admitted: &Admitted) -> Vec<(String, i64)> {
        admitted
            .records
            .iter()
            .map(|r| (r.topic.clone(), r.offset))
            .collect()
    }

    #[test]
    fn records_the_snapshot_holds_are_skipped_and_the_rest_advance_the_position() {
        let mut position = position_at(&[("a", 5)], &[("a", 8)]);
        let admitted = position.admit((3..8).map(|o| record("a", o)).collect());
        assert!(admitted.seeks.is_empty());
        assert_eq!(offsets(&admitted), [5, 6, 7].map(|o| ("a".to_owned(), o)));
        assert!(position.reached_frontier());
    }

    #[test]
    fn a_first_record_past_the_position_seeks_back_and_drops_that_topics_batch() {
        let mut position = position_at(&[("a", 5), ("b", 0)], &[("a", 20), ("b", 2)]);
        let admitted = position.admit(vec![record("a", 9), record("b", 0), record("a", 10)]);
        assert_eq!(admitted.seeks, vec![("a".to_owned(), 5)]);
        assert_eq!(
            offsets(&admitted),
            vec![("b".to_owned(), 0)],
            "other topics go on"
        );
        assert!(!position.reached_frontier());
        // Fetched again from the position, the topic is admitted; once checked, a later gap (records the broker
        // compacted away) is not a reason to seek again.
        let admitted = position.admit(vec![record("a", 5), record("a", 7)]);
        assert!(admitted.seeks.is_empty());
        assert_eq!(offsets(&admitted).len(), 2);
    }

    #[test]
    fn after_a_resync_the_next_record_is_checked_again() {
        let mut position = position_at(&[("a", 0)], &[("a", 0)]);
        position.admit(vec![record("a", 0)]);
        position.resync();
        let admitted = position.admit(vec![record("a", 4)]);
        assert_eq!(admitted.seeks, vec![("a".to_owned(), 1)]);
    }

    #[test]
    fn a_snapshot_past_the_end_of_its_log_is_found() {
        let marks: HashMap<String, (i64, i64)> =
            [("a".to_owned(), (0, 10)), ("b".to_owned(), (5, 20))].into();
        let at = |a: i64, b: i64| SnapshotOffsets::of_inputs([("a", a), ("b", b)]);
        let slack = REWIND;
        assert_eq!(ahead_of_log(&at(10, 20), &marks), None, "at the end");
        assert_eq!(
            ahead_of_log(&at(10, 20 + slack), &marks),
            None,
            "within a batch of the reported end (Tansu)"
        );
        assert_eq!(ahead_of_log(&SnapshotOffsets::default(), &marks), None);
        assert_eq!(
            ahead_of_log(&at(3, 21 + slack), &marks),
            Some(("b", 21 + slack, 20))
        );
    }
}
