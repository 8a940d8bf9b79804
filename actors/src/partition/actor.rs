//! The actix actor around a [`PartitionCore`]: its bounded mailbox, the messages it takes (a batch of raw
//! records, a tick, a new configuration, an inspection) and the encoding of each outcome's output records on the
//! actor's own thread.

use actix::{Actor, Context, Handler, Message, MessageResult};
use functions::{RfmConfig, Timestamp};
use streams::{InputEvent, MerchantId, Topics};

use super::{Change, Configs, Outcome, PartitionCore, RawRecord, Rejected};

/// The actix actor around [`PartitionCore`]. Its mailbox is small and callers `send` (never `do_send`) and await,
/// so a slow downstream slows the consumer instead of growing a queue.
pub struct PartitionActor {
    pub(crate) core: PartitionCore,
    configs: Configs,
    topics: Topics,
    sink: Option<streams::EventSink>,
}

impl PartitionActor {
    pub fn new(partition: i32, configs: Configs, topics: Topics) -> Self {
        PartitionActor {
            core: PartitionCore::new(partition),
            configs,
            topics,
            sink: None,
        }
    }

    /// An actor around restored state (a decoded snapshot).
    pub fn with_core(core: PartitionCore, configs: Configs, topics: Topics) -> Self {
        PartitionActor {
            core,
            configs,
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

    /// Encodes the outcome's output records here, on the actor's thread, rather than on the consumer loop, and
    /// enqueues them when the actor publishes (`publishing_to`).
    pub(crate) fn encoded(&self, mut outcome: Outcome) -> Outcome {
        outcome.records = outcome
            .changes
            .iter()
            .flat_map(|c| crate::outputs::records(&self.topics, c))
            .collect();
        if let Some(sink) = self.sink.as_ref().filter(|_| !outcome.records.is_empty()) {
            outcome.enqueued = Some(crate::outputs::enqueue(sink, &outcome.records));
        }
        outcome
    }
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
        let mut rejected = Vec::new();
        for record in msg.records {
            let timestamp = record.timestamp_ms;
            let decoded = match record.kind {
                Some(kind) => InputEvent::decode(kind, &record.payload).map_err(|e| e.to_string()),
                None => Err(format!("not an input topic: {}", record.topic)),
            };
            match decoded {
                Ok(event) => {
                    events.push(event);
                    timestamps.push(timestamp);
                }
                Err(reason) => rejected.push(Rejected { record, reason }),
            }
        }
        let mut outcome = if msg.quiet {
            self.core.apply_quietly(&events, msg.now, &self.configs)
        } else {
            self.core.apply(&events, msg.now, &self.configs)
        };
        stamp_event_times(&mut outcome.changes, &events, &timestamps);
        outcome.rejected = rejected;
        MessageResult(self.encoded(outcome))
    }
}

/// Changes come out in event order and carry their event's id, so one forward walk pairs each with its record's
/// timestamp without a lookup table on the hot path.
fn stamp_event_times(changes: &mut [Change], events: &[InputEvent], timestamps: &[Option<i64>]) {
    let mut at = 0;
    for change in changes {
        while at < events.len() && events[at].event_id() != change.trace_id {
            at += 1;
        }
        change.event_ms = timestamps.get(at).copied().flatten();
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
