//! Virtual per-customer actors. A customer's scores live compactly in its merchant's state; an actor of its own
//! exists only while someone is watching for the customer's nudges (a storefront widget socket), because an actix
//! actor costs more memory than the customer's data. The [`NudgeDesk`](crate::nudges::NudgeDesk) activates one on
//! the first watch and the actor passivates itself once its last watcher has been gone for the linger time, so a
//! page reload does not pay for a new activation.
//!
//! The actor pushes each newer nudge to its watchers as it arrives. A watcher whose buffer is full is
//! disconnected rather than skipped: its socket then reconnects and is handed the current nudge, so a shopper never
//! silently misses the latest one.

use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{
    Actor, ActorContext, ActorFutureExt, AsyncContext, Context, Handler, Message, SpawnHandle,
    WrapFuture,
};
use functions::NudgeKind;
use streams::outputs::output_event_id;
use streams::MerchantId;
use tokio::sync::mpsc;

use crate::vocab::Change;
pub use crate::vocab::{CustomerKey, PendingNudge};

/// Messages a customer actor can hold before senders see `Full`; the desk is its only data-path sender.
const MAILBOX: usize = 64;

use crate::experiments::NudgeArm;
pub use crate::experiments::DEFAULT_VARIANT;

impl PendingNudge {
    /// The nudge of a change that moved the customer to another segment, outside any experiment; `None` when the
    /// segment stayed or the move calls for no nudge (`NudgeKind::of_move`).
    pub fn of(change: &Change) -> Option<PendingNudge> {
        let kind = NudgeKind::of_move(&change.from_segment, &change.to_segment, change.stage)?;
        Some(PendingNudge::assigned(change, &NudgeArm::plain(kind)))
    }

    /// The nudge of a change, in the arm it was assigned (see `experiments::arm_of`).
    pub fn assigned(change: &Change, arm: &NudgeArm) -> PendingNudge {
        PendingNudge {
            key: CustomerKey {
                merchant: change.merchant.clone(),
                customer_id: change.customer_id,
            },
            version: change.version,
            segment: change.to_segment.clone(),
            kind: arm.kind,
            experiment_id: arm.experiment_id.clone(),
            variant: arm.variant.clone(),
            locale: change.locale.clone(),
            trace_id: change.trace_id.clone(),
            // When the change was made, by the processor's clock: the frequency cap and the `nudges` row go by it.
            // The desk stamps its own time when it takes the nudge, for how long it stays pending.
            fired_at: change.occurred_at,
            points: change.points,
        }
    }

    /// The id the `rfm.task` record carries, so a widget's view or click names the same nudge.
    pub fn nudge_id(&self) -> String {
        nudge_id(&self.key.merchant, self.key.customer_id, self.version)
    }
}

/// The deterministic id of the nudge a customer's version fired.
pub fn nudge_id(merchant: &MerchantId, customer_id: u64, version: u32) -> String {
    output_event_id("nudge", merchant, customer_id, version)
}

/// A newer nudge for the actor's customer.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Deliver(pub Arc<PendingNudge>);

/// A new watcher; the desk has already handed it the current nudge.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Attach(pub mpsc::Sender<Arc<PendingNudge>>);

/// Stop now (the customer was erased, or the desk is evicting it).
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Passivate;

/// A round trip behind everything already in the actor's mailbox.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Ping;

/// Sent to the desk as the actor stops, so the registry forgets exactly this activation.
#[derive(Message)]
#[rtype(result = "()")]
pub(crate) struct Passivated {
    pub key: CustomerKey,
    pub generation: u64,
}

struct Watcher {
    id: u64,
    tx: mpsc::Sender<Arc<PendingNudge>>,
    /// The future waiting for the receiver to close; it holds a clone of `tx`, so it is cancelled to disconnect.
    closed: SpawnHandle,
}

pub(crate) struct CustomerActor {
    key: CustomerKey,
    generation: u64,
    current: Option<u32>,
    watchers: Vec<Watcher>,
    next_watcher: u64,
    linger: Duration,
    idle: Option<SpawnHandle>,
    desk: actix::Recipient<Passivated>,
    /// Set by the desk when the customer is erased, before it asks the actor to stop: deliveries already in the
    /// mailbox must not reach a watcher after the erasure.
    erased: Arc<AtomicBool>,
}

impl CustomerActor {
    pub(crate) fn new(
        key: CustomerKey,
        generation: u64,
        current: Option<u32>,
        linger: Duration,
        desk: actix::Recipient<Passivated>,
        erased: Arc<AtomicBool>,
    ) -> Self {
        CustomerActor {
            key,
            generation,
            current,
            watchers: Vec::new(),
            next_watcher: 0,
            linger,
            idle: None,
            desk,
            erased,
        }
    }

    /// Starts the actor on the current arbiter with its bounded mailbox in place from the first message.
    pub(crate) fn activate(self) -> actix::Addr<Self> {
        CustomerActor::create(|ctx| {
            ctx.set_mailbox_capacity(MAILBOX);
            self
        })
    }

    /// Starts the linger timer when nobody watches; the actor stops when it runs out.
    fn idle_check(&mut self, ctx: &mut Context<Self>) {
        if self.watchers.is_empty() && self.idle.is_none() {
            self.idle = Some(ctx.run_later(self.linger, |_, ctx| ctx.stop()));
        }
    }

    fn watcher_left(&mut self, id: u64, ctx: &mut Context<Self>) {
        self.watchers.retain(|w| w.id != id);
        self.idle_check(ctx);
    }
}

impl Actor for CustomerActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        self.idle_check(ctx);
        metrics::gauge!(streams::metric_names::CUSTOMER_ACTORS_ACTIVE).increment(1.0);
    }

    fn stopped(&mut self, _: &mut Context<Self>) {
        metrics::gauge!(streams::metric_names::CUSTOMER_ACTORS_ACTIVE).decrement(1.0);
        tracing::debug!(merchant = %self.key.merchant, customer_id = self.key.customer_id, "customer actor passivated");
        // A control message the desk must see to free the slot; the desk's mailbox is never the bottleneck here.
        self.desk.do_send(Passivated {
            key: self.key.clone(),
            generation: self.generation,
        });
    }
}

impl Handler<Attach> for CustomerActor {
    type Result = ();

    fn handle(&mut self, Attach(tx): Attach, ctx: &mut Context<Self>) {
        if let Some(idle) = self.idle.take() {
            ctx.cancel_future(idle);
        }
        let id = self.next_watcher;
        self.next_watcher += 1;
        let probe = tx.clone();
        // Wakes the actor when the watcher's receiver is dropped (its socket closed), instead of polling.
        let closed = ctx.spawn(
            async move { probe.closed().await }
                .into_actor(self)
                .map(move |_, act, ctx| act.watcher_left(id, ctx)),
        );
        self.watchers.push(Watcher { id, tx, closed });
    }
}

impl Handler<Deliver> for CustomerActor {
    type Result = ();

    fn handle(&mut self, Deliver(nudge): Deliver, ctx: &mut Context<Self>) {
        if self.erased.load(Ordering::Acquire) || self.current.is_some_and(|v| v >= nudge.version) {
            return;
        }
        self.current = Some(nudge.version);
        let (kept, lagging): (Vec<_>, Vec<_>) = std::mem::take(&mut self.watchers)
            .into_iter()
            .partition(|w| w.tx.try_send(nudge.clone()).is_ok());
        self.watchers = kept;
        if !lagging.is_empty() {
            metrics::counter!(streams::metric_names::CUSTOMER_WATCHERS_DISCONNECTED)
                .increment(lagging.len() as u64);
        }
        // The probe's clone of the sender is the last one left: cancelling it closes the lagging stream.
        for w in lagging {
            ctx.cancel_future(w.closed);
        }
        self.idle_check(ctx);
    }
}

impl Handler<Passivate> for CustomerActor {
    type Result = ();

    fn handle(&mut self, _: Passivate, ctx: &mut Context<Self>) {
        // Dropping the senders closes every watcher's stream, which is how a widget learns its nudges are gone.
        self.watchers.clear();
        ctx.stop();
    }
}

impl Handler<Ping> for CustomerActor {
    type Result = ();

    fn handle(&mut self, _: Ping, _: &mut Context<Self>) {}
}
