//! Bringing a partition back after it moved or its owner died (docs/RECOVERY.md): records the old owner may
//! already have acted on are applied *quietly* (state changes, nothing is published), then the versions the old
//! owner did publish are read back from the output topic, and one net change per customer is published where the
//! state at `now` differs from what was last published. That keeps every published `(customer, version)` unique
//! and avoids publishing intermediate moves the live run never made. The net changes come out in chunks of
//! [`RESTORE_CHUNK`] customers, so a partition of a million customers never holds all its records at once.
//!
//! Pure, like the rest of [`PartitionCore`]: the processor reads the output topic and publishes the outcome.

use std::collections::{BTreeSet, HashMap, VecDeque};

use actix::{Handler, Message, MessageResult};
use functions::{Evaluation, Timestamp, Transition};
use streams::InputEvent;

use super::{Configs, Outcome, PartitionActor, PartitionCore};
use crate::merchant::Effect;
pub use crate::vocab::PublishedVersion;

/// How many customers one chunk of a restore's net changes re-evaluates (see [`PartitionCore::next_restore_chunk`]).
pub const RESTORE_CHUNK: usize = 4096;

/// Customers a finished restore still has to re-evaluate and publish, and the trace their changes carry.
#[derive(Debug, Default)]
pub(crate) struct RestoreQueue {
    due: VecDeque<(u32, u64)>,
    trace: String,
}

/// A version the old owner published after the snapshot, to be written to Postgres again: it may have died
/// between the broker's acknowledgement and its database write.
struct Rewrite {
    slot: u32,
    customer_id: u64,
    transition: Transition,
    record: usize,
}

/// What each customer changed by a quiet replay had published before it: `(slot, customer) → (version, evaluation)`.
pub(crate) type QuietBefore = HashMap<(u32, u64), (u32, Evaluation)>;

impl PartitionCore {
    /// Applies events without publishing their changes. Erasures and data requests are still returned: their
    /// effects downstream are idempotent, and dropping one would lose it.
    pub fn apply_quietly(
        &mut self,
        events: &[InputEvent],
        now: Timestamp,
        configs: &Configs,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut effects = Vec::new();
        for event in events {
            let slot = self.slot(event.merchant_id(), configs);
            self.pieces.touch(slot);
            effects.clear();
            let old_rules = matches!(event, InputEvent::ConfigChanged(_))
                .then(|| self.merchants[slot as usize].config.segments.clone());
            self.merchants[slot as usize].apply(event, now, &mut effects);
            let before = self.quiet.get_or_insert_with(QuietBefore::default);
            effects.retain(|effect| match effect {
                Effect::Changed {
                    customer_id,
                    transition,
                    ..
                } => {
                    // The first quiet transition of a customer starts from what was last published.
                    before
                        .entry((slot, *customer_id))
                        .or_insert((transition.version - 1, transition.from));
                    false
                }
                _ => true,
            });
            if let Some(old_rules) = old_rules {
                let new_rules = &self.merchants[slot as usize].config.segments;
                remap_before(before, slot, &old_rules, new_rules);
            }
            self.collect(slot, &effects, now, event.event_id(), None, &mut outcome);
            self.schedule_touched(slot, now);
        }
        outcome
    }

    /// True while quietly applied changes wait for [`PartitionCore::finish_restore`], or its net changes for
    /// [`PartitionCore::next_restore_chunk`]. A snapshot taken meanwhile would hold customers whose change was
    /// never published, so the processor takes none.
    pub fn is_restoring(&self) -> bool {
        self.quiet.is_some() || !self.restore_queue.due.is_empty()
    }

    /// Ends a restore: undoes the quiet replay's versions, takes the versions the old owner published (`published`,
    /// in their topic's order, older ones ignored), and queues every customer they touched to be re-evaluated.
    /// Returns the versions taken over as `rewrites` (for the database only) and the first chunk of net changes;
    /// the rest come from [`PartitionCore::next_restore_chunk`] until [`PartitionCore::is_restoring`] is false.
    pub fn finish_restore(&mut self, published: &[PublishedVersion], now: Timestamp) -> Outcome {
        let mut pending: BTreeSet<(u32, u64)> = BTreeSet::new();
        for ((slot, customer_id), (version, evaluation)) in self.quiet.take().unwrap_or_default() {
            self.merchants[slot as usize].set_published(customer_id, version, evaluation);
            self.pieces.touch(slot);
            pending.insert((slot, customer_id));
        }
        let mut rewrites = Vec::new();
        for (index, record) in published.iter().enumerate() {
            let Some(&slot) = self.slots.get(&record.merchant) else {
                continue;
            };
            let merchant = &mut self.merchants[slot as usize];
            // A segment the current table does not have was published under another configuration; the
            // re-evaluation below publishes the customer's place in this one.
            let Some(segment) = merchant
                .config
                .segments
                .iter()
                .position(|s| s.key == record.segment)
            else {
                pending.insert((slot, record.customer_id));
                continue;
            };
            let Some(before) = merchant
                .customer(record.customer_id)
                .filter(|c| record.version > c.version)
                .map(|c| c.published)
            else {
                continue;
            };
            let evaluation = Evaluation::new(record.rfm, segment as u8, record.stage);
            merchant.set_published(record.customer_id, record.version, evaluation);
            self.pieces.touch(slot);
            pending.insert((slot, record.customer_id));
            rewrites.push(Rewrite {
                slot,
                customer_id: record.customer_id,
                transition: Transition {
                    version: record.version,
                    from: before,
                    to: evaluation,
                },
                record: index,
            });
        }
        self.restore_queue = RestoreQueue {
            due: pending.into_iter().collect(),
            trace: format!("restore:{}", now.unix()),
        };
        let mut outcome = self.next_restore_chunk(now).unwrap_or_default();
        outcome.rewrites = self.rewritten(rewrites, published);
        outcome
    }

    /// Re-evaluates the next [`RESTORE_CHUNK`] customers a finished restore queued, at `now`, and returns their
    /// changes; `None` once the queue is empty.
    pub fn next_restore_chunk(&mut self, now: Timestamp) -> Option<Outcome> {
        if self.restore_queue.due.is_empty() {
            return None;
        }
        let take = RESTORE_CHUNK.min(self.restore_queue.due.len());
        let chunk: Vec<(u32, u64)> = self.restore_queue.due.drain(..take).collect();
        let trace = self.restore_queue.trace.clone();
        Some(self.rescore_all(chunk, now, &trace))
    }

    /// The rows of versions taken over, as the old owner wrote them: its segments, time and trace, with today's
    /// aggregates (the `customers` row is version-guarded, so a newer change still wins).
    fn rewritten(
        &self,
        rewrites: Vec<Rewrite>,
        published: &[PublishedVersion],
    ) -> Vec<crate::Change> {
        let mut outcome = Outcome::default();
        for rewrite in rewrites {
            let record = &published[rewrite.record];
            let effect = Effect::Changed {
                customer_id: rewrite.customer_id,
                transition: rewrite.transition,
                order_added: None,
            };
            let at = record.occurred_at;
            self.collect(
                rewrite.slot,
                &[effect],
                at,
                &record.trace_id,
                None,
                &mut outcome,
            );
            if let Some(change) = outcome.changes.last_mut() {
                change.from_segment = record.from_segment.clone();
            }
        }
        outcome.changes
    }
}

/// Asks the actor to end its restore with the versions read back from the output topic.
#[derive(Message)]
#[rtype(result = "Outcome")]
pub struct FinishRestore {
    pub published: Vec<PublishedVersion>,
    pub now: Timestamp,
}

impl Handler<FinishRestore> for PartitionActor {
    type Result = MessageResult<FinishRestore>;

    fn handle(&mut self, msg: FinishRestore, _: &mut Self::Context) -> Self::Result {
        let outcome = self.core.finish_restore(&msg.published, msg.now);
        MessageResult(self.encoded_in_halves(outcome))
    }
}

/// Asks the actor for the next chunk of a finished restore's net changes; `None` once all are out.
#[derive(Message)]
#[rtype(result = "Option<Outcome>")]
pub struct NextRestoreChunk {
    pub now: Timestamp,
}

impl Handler<NextRestoreChunk> for PartitionActor {
    type Result = MessageResult<NextRestoreChunk>;

    fn handle(&mut self, msg: NextRestoreChunk, _: &mut Self::Context) -> Self::Result {
        let outcome = self.core.next_restore_chunk(msg.now);
        MessageResult(outcome.map(|o| self.encoded_in_halves(o)))
    }
}

/// A quiet replay crossed a configuration change: what the merchant's customers had published names segments of
/// the old table by index, and `finish_restore` reads it in the new one. A segment whose key the new table keeps
/// keeps its place; one the new table dropped becomes the segment its scores fall in now (the published change
/// then names that as its "from", the one detail a restore across a change of table cannot keep).
fn remap_before(
    before: &mut QuietBefore,
    slot: u32,
    old_rules: &[functions::SegmentRule],
    new_rules: &[functions::SegmentRule],
) {
    for ((s, _), (_, evaluation)) in before.iter_mut() {
        if *s != slot {
            continue;
        }
        let key = old_rules
            .get(usize::from(evaluation.segment))
            .map(|r| &r.key);
        let by_key = key.and_then(|k| new_rules.iter().position(|r| &r.key == k));
        let by_scores =
            || functions::segment::classify(new_rules, evaluation.rfm()).map(usize::from);
        let segment = by_key.or_else(by_scores).unwrap_or(0);
        *evaluation = Evaluation::new(evaluation.rfm(), segment as u8, evaluation.stage);
    }
}
