//! The actix actor around a [`PartitionCore`]: its bounded mailbox, the messages it takes (a batch of raw
//! records, a tick, a new configuration, an inspection) and the encoding of each outcome's output records on the
//! actor's own thread.

use actix::{Actor, Context, Handler, Message, MessageResult};
use functions::{NudgeKind, RfmConfig, Timestamp};
use streams::{InputEvent, MerchantId, Topics};

use super::{Change, Configs, Outcome, PartitionCore, RawRecord};
use crate::customer::PendingNudge;
use crate::experiments::{arm_of, NudgeArm, NudgePlans};
use streams::dlq::DeadLetter;
use streams::traceparent::TraceParent;

/// The actix actor around [`PartitionCore`]. Its mailbox is small and callers `send` (never `do_send`) and await,
/// so a slow downstream slows the consumer instead of growing a queue.
pub struct PartitionActor {
    pub(crate) core: PartitionCore,
    configs: Configs,
    /// The merchants' running nudge experiments; read here, filled by the caller.
    plans: NudgePlans,
    topics: Topics,
    sink: Option<streams::EventSink>,
}

impl PartitionActor {
    pub fn new(partition: i32, configs: Configs, topics: Topics) -> Self {
        PartitionActor {
            core: PartitionCore::new(partition),
            configs,
            plans: NudgePlans::default(),
            topics,
            sink: None,
        }
    }

    /// An actor around restored state (a decoded snapshot).
    pub fn with_core(core: PartitionCore, configs: Configs, topics: Topics) -> Self {
        PartitionActor {
            core,
            configs,
            plans: NudgePlans::default(),
            topics,
            sink: None,
        }
    }

    /// Has the actor hand each outcome's records to `sink` as soon as it encoded them, so enqueueing runs on the
    /// actor threads in parallel rather than on the consumer loop. A partition's records keep their order: one
    /// actor computes, encodes and enqueues them in sequence.
    pub fn publishing_to(mut self, sink: streams::EventSink) -> Self {
        self.sink = Some(sink);
        self
    }

    /// Has the actor assign fired nudges to the arms of the merchants' experiments in `plans` (by default every
    /// nudge is outside any experiment).
    pub fn planning_with(mut self, plans: NudgePlans) -> Self {
        self.plans = plans;
        self
    }

    /// The arm of each change's nudge, decided once so its record and its pending nudge agree even if the plans
    /// change meanwhile.
    fn arms(&self, changes: &[Change]) -> Vec<Option<NudgeArm>> {
        if self.plans.is_empty() {
            return changes.iter().map(plain_arm).collect();
        }
        changes.iter().map(|c| arm_of(&self.plans, c)).collect()
    }

    /// Encodes the outcome's output records here, on the actor's thread, rather than on the consumer loop, and
    /// enqueues them when the actor publishes (`publishing_to`).
    pub(crate) fn encoded(&self, mut outcome: Outcome) -> Outcome {
        let arms = self.arms(&outcome.changes);
        let (records, enqueued) =
            encode_and_enqueue(&self.topics, self.sink.as_ref(), &outcome.changes, &arms);
        outcome.records = records;
        outcome.enqueued = enqueued;
        with_nudges(outcome, &arms)
    }

    /// [`PartitionActor::encoded`] for an outcome whose changes are of distinct customers (a restore chunk), whose
    /// records may go out in any order: the second half is encoded and enqueued on a scoped thread while this one
    /// does the first. Encoding and enqueueing are most of a chunk's cost, and when one partition's restore
    /// publishes alone (the end of a catch-up) the other core is otherwise idle.
    pub(crate) fn encoded_in_halves(&self, mut outcome: Outcome) -> Outcome {
        if outcome.changes.len() < MIN_SPLIT {
            return self.encoded(outcome);
        }
        let (topics, sink) = (&self.topics, self.sink.as_ref());
        let arms = self.arms(&outcome.changes);
        let half = outcome.changes.len() / 2;
        let (first, second) = outcome.changes.split_at(half);
        let (first_arms, second_arms) = arms.split_at(half);
        let ((mut records, enqueued), (more, more_enqueued)) = std::thread::scope(|scope| {
            let other = std::thread::Builder::new().spawn_scoped(scope, || {
                encode_and_enqueue(topics, sink, second, second_arms)
            });
            let mine = encode_and_enqueue(topics, sink, first, first_arms);
            // Without a thread to be had (the process at its thread limit) this one does the second half too. A
            // panic there is passed on as if it had happened here: encoding is deterministic, so a retry would
            // panic the same way.
            let theirs = match other {
                Ok(handle) => handle
                    .join()
                    .unwrap_or_else(|panic| std::panic::resume_unwind(panic)),
                Err(_) => encode_and_enqueue(topics, sink, second, second_arms),
            };
            (mine, theirs)
        });
        records.extend(more);
        // A half without records has no deliveries either, so the two lists stay aligned.
        outcome.enqueued = match (enqueued, more_enqueued) {
            (Some(mut all), Some(more)) => {
                all.0.extend(more.0);
                Some(all)
            }
            (one, None) | (None, one) => one,
        };
        outcome.records = records;
        with_nudges(outcome, &arms)
    }
}

/// A change's nudge outside any experiment.
fn plain_arm(change: &Change) -> Option<NudgeArm> {
    NudgeKind::of_move(&change.from_segment, &change.to_segment, change.stage).map(NudgeArm::plain)
}

/// The outcome's nudges as the desk holds them, built here on the actor's thread like its records; held-out ones
/// apart, so they can never reach the desk.
fn with_nudges(mut outcome: Outcome, arms: &[Option<NudgeArm>]) -> Outcome {
    for (change, arm) in outcome.changes.iter().zip(arms) {
        let Some(arm) = arm else { continue };
        let nudge = PendingNudge::assigned(change, arm);
        if arm.is_holdout() {
            outcome.held_out.push(nudge);
        } else {
            outcome.nudges.push(nudge);
        }
    }
    outcome
}

/// Below this many changes a chunk is encoded on the actor's thread alone. Low on purpose: a scoped thread costs
/// tens of microseconds once per restore chunk, and the recovery tests' small restores then take the split path.
const MIN_SPLIT: usize = 16;

/// The changes' output records and, with a sink, their enqueueing (records and deliveries in the same order).
fn encode_and_enqueue(
    topics: &Topics,
    sink: Option<&streams::EventSink>,
    changes: &[Change],
    arms: &[Option<NudgeArm>],
) -> (
    Vec<crate::outputs::Record>,
    Option<crate::outputs::Enqueued>,
) {
    let records: Vec<crate::outputs::Record> = changes
        .iter()
        .zip(arms)
        .flat_map(|(c, arm)| crate::outputs::records_with(topics, c, arm.as_ref()))
        .collect();
    let enqueued = sink
        .filter(|_| !records.is_empty())
        .map(|sink| crate::outputs::enqueue(sink, &records));
    (records, enqueued)
}

impl Actor for PartitionActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Self::Context) {
        ctx.set_mailbox_capacity(4);
    }
}

#[derive(Message)]
#[rtype(result = "Outcome")]
pub struct ApplyBatch {
    pub records: Vec<RawRecord>,
    pub now: Timestamp,
    /// Restoring: apply without publishing changes (`PartitionCore::apply_quietly`).
    pub quiet: bool,
}

#[derive(Message)]
#[rtype(result = "Outcome")]
pub struct Tick {
    pub now: Timestamp,
}

#[derive(Message)]
#[rtype(result = "Outcome")]
pub struct Reconfigure {
    pub merchant: MerchantId,
    pub config: RfmConfig,
    pub now: Timestamp,
}

/// Reads from the partition's live state without copying it out: the closure runs inside the actor.
#[derive(Message)]
#[rtype(result = "R")]
pub struct Inspect<R: 'static, F: FnOnce(&PartitionCore) -> R + Send + 'static>(pub F);

impl Handler<ApplyBatch> for PartitionActor {
    type Result = MessageResult<ApplyBatch>;

    fn handle(&mut self, msg: ApplyBatch, _: &mut Self::Context) -> Self::Result {
        let mut events = Vec::with_capacity(msg.records.len());
        let mut timestamps = Vec::with_capacity(msg.records.len());
        let mut traces = Vec::with_capacity(msg.records.len());
        let mut rejected = Vec::new();
        for record in msg.records {
            let timestamp = record.timestamp_ms;
            match decode_record(&record) {
                Ok(event) => {
                    events.push(event);
                    timestamps.push(timestamp);
                    traces.push(record.traceparent);
                }
                Err(reason) => rejected.push(DeadLetter {
                    partition: self.core.partition,
                    topic: record.topic,
                    offset: record.offset,
                    key: record.key,
                    payload: record.payload,
                    reason,
                }),
            }
        }
        let mut outcome = if msg.quiet {
            self.core.apply_quietly(&events, msg.now, &self.configs)
        } else {
            self.core.apply(&events, msg.now, &self.configs)
        };
        stamp_event_times(&mut outcome.changes, &events, &timestamps, &traces);
        outcome.rejected = rejected;
        MessageResult(self.encoded(outcome))
    }
}

/// Decodes an input record. Its key must be the merchant its value names: the key decides which partition (and
/// so which instance) holds the merchant, and a record filed under another key would be counted apart from the
/// merchant's state, or let a producer for one shop slip an event into another's partition unnoticed.
fn decode_record(record: &RawRecord) -> Result<InputEvent, String> {
    let kind = record
        .kind
        .ok_or_else(|| format!("not an input topic: {}", record.topic))?;
    let event = InputEvent::decode(kind, &record.payload).map_err(|e| e.to_string())?;
    if record.key.as_deref() != Some(event.merchant_id().as_str().as_bytes()) {
        return Err("record key is not the value's merchant_id".to_owned());
    }
    Ok(event)
}

/// Changes come out in event order and carry their event's id, so one forward walk pairs each with its record's
/// timestamp and trace context without a lookup table on the hot path. A change of no event in the batch (a
/// configuration's move published now, `moves`) gets neither and does not move the walk.
fn stamp_event_times(
    changes: &mut [Change],
    events: &[InputEvent],
    timestamps: &[Option<i64>],
    traces: &[Option<TraceParent>],
) {
    let mut at = 0;
    for change in changes {
        let found = events[at.min(events.len())..]
            .iter()
            .position(|e| e.event_id() == change.trace_id);
        (change.event_ms, change.traceparent) = match found {
            Some(ahead) => {
                at += ahead;
                (
                    timestamps.get(at).copied().flatten(),
                    traces.get(at).cloned().flatten(),
                )
            }
            None => (None, None),
        };
    }
}

impl Handler<Tick> for PartitionActor {
    type Result = MessageResult<Tick>;

    fn handle(&mut self, msg: Tick, _: &mut Self::Context) -> Self::Result {
        let outcome = self.core.tick(msg.now);
        MessageResult(self.encoded(outcome))
    }
}

impl Handler<Reconfigure> for PartitionActor {
    type Result = MessageResult<Reconfigure>;

    fn handle(&mut self, msg: Reconfigure, _: &mut Self::Context) -> Self::Result {
        let outcome = self.core.reconfigure(&msg.merchant, msg.config, msg.now);
        MessageResult(self.encoded(outcome))
    }
}

impl<R: 'static, F: FnOnce(&PartitionCore) -> R + Send + 'static> Handler<Inspect<R, F>>
    for PartitionActor
{
    type Result = MessageResult<Inspect<R, F>>;

    fn handle(&mut self, msg: Inspect<R, F>, _: &mut Self::Context) -> Self::Result {
        MessageResult((msg.0)(&self.core))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn change(customer_id: u64) -> Change {
        // Every other customer moves segment, so some changes carry a nudge task and some do not.
        let to = if customer_id % 2 == 0 { "loyal" } else { "new" };
        crate::partition::test_change("halves.myshopify.com", customer_id, 2, "new", to)
    }

    #[test]
    fn a_chunk_encoded_in_halves_has_the_records_of_one_encoded_whole() {
        let actor = PartitionActor::new(0, Configs::default(), Topics::default());
        for customers in [10, MIN_SPLIT, 3 * MIN_SPLIT + 1] {
            let outcome = || Outcome {
                changes: (1..=customers as u64).map(change).collect(),
                ..Outcome::default()
            };
            let whole = actor.encoded(outcome());
            let halves = actor.encoded_in_halves(outcome());
            let payloads = |o: &Outcome| -> Vec<(String, Vec<u8>)> {
                o.records
                    .iter()
                    .map(|r| (r.topic.clone(), r.payload.clone()))
                    .collect()
            };
            assert_eq!(payloads(&halves), payloads(&whole), "{customers} changes");
            assert_eq!(whole.records.len(), customers + customers / 2);
        }
    }

    #[test]
    fn task_records_and_pending_nudges_carry_the_same_arm_and_held_out_ones_stay_off_the_desk() {
        use functions::nudge::experiment::{Arm, Experiment, ExperimentId};
        let arm = |name: &str| Arm {
            name: name.into(),
            weight: 1,
            texts: Default::default(),
        };
        let experiment = Experiment {
            id: ExperimentId::parse("halves-exp").unwrap(),
            kind: NudgeKind::Loyal,
            arms: vec![arm("red"), arm("blue")],
            holdout_bps: 4_000,
        };
        let merchant = streams::MerchantId::parse("halves.myshopify.com").unwrap();
        let plans = NudgePlans::default();
        let plan = std::sync::Arc::new(crate::ExperimentPlan::new(experiment.clone(), 1));
        crate::experiments::install(&plans, &merchant, plan);
        let actor =
            PartitionActor::new(0, Configs::default(), Topics::default()).planning_with(plans);
        let outcome = Outcome {
            changes: (1..=3 * MIN_SPLIT as u64).map(change).collect(),
            ..Outcome::default()
        };
        let outcome = actor.encoded_in_halves(outcome);
        let tasks: Vec<streams::outputs::RfmTask> = outcome
            .records
            .iter()
            .filter(|r| r.topic == Topics::default().rfm_task)
            .map(|r| serde_json::from_slice(&r.payload).unwrap())
            .collect();
        assert_eq!(tasks.len(), 3 * MIN_SPLIT / 2, "a task per move into loyal");
        assert_eq!(outcome.nudges.len() + outcome.held_out.len(), tasks.len());
        assert!(!outcome.held_out.is_empty() && !outcome.nudges.is_empty());
        for task in &tasks {
            let expected =
                experiment.variant(experiment.assign(merchant.as_str(), task.customer_id));
            assert_eq!(task.variant, expected, "customer {}", task.customer_id);
            assert_eq!(task.experiment_id.as_deref(), Some("halves-exp"));
            let pending = outcome
                .nudges
                .iter()
                .chain(&outcome.held_out)
                .find(|n| n.key.customer_id == task.customer_id)
                .unwrap();
            assert_eq!(&*pending.variant, task.variant.as_str());
        }
        assert!(outcome.nudges.iter().all(|n| &*n.variant != "holdout"));
        assert!(outcome.held_out.iter().all(|n| &*n.variant == "holdout"));
    }
}
