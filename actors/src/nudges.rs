//! The nudge desk: where a fired nudge waits for its shopper, and the registry of the virtual customer actors
//! that deliver it. The processor offers each published change's nudge once its `rfm.task` record is acknowledged;
//! the desk keeps the latest per customer for a window (the shopper who just ordered is likely still on the
//! storefront) and hands it to the customer's actor when one is active.
//!
//! Pending nudges are compact rows, not actors: at a catch-up every customer's segment may move at once, and an
//! actor each would cost more than the customers' whole state. An actor is activated only by a watcher (a widget
//! socket), starts with the pending nudge, and passivates itself when its watchers are gone. Both the table and the
//! registry are bounded: past `max_pending` the oldest nudge is evicted (its `rfm.task` record stays on Kafka).
//! The desk runs on its own arbiter so its work never lands on the consumer loop.

use std::collections::{HashMap, HashSet};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::Duration;

use actix::{Actor, Addr, Arbiter, AsyncContext, Context, Handler, Message, MessageResult};
use streams::MerchantId;
use tokio::sync::mpsc;

use crate::clock::Clock;
use crate::customer::{
    Attach, CustomerActor, CustomerKey, Deliver, Passivate, Passivated, PendingNudge,
};
use table::PendingTable;

/// Offers the processor may queue before its `send` waits, so a slow desk slows publishing instead of growing.
const MAILBOX: usize = 64;

/// How the desk keeps nudges and customer actors.
#[derive(Debug, Clone)]
pub struct NudgeDeskConfig {
    /// How long a fired nudge stays pending for its shopper.
    pub pending_for: Duration,
    /// Most nudges pending at once; the oldest is evicted beyond it.
    pub max_pending: usize,
    /// How long a customer actor outlives its last watcher.
    pub linger: Duration,
    /// Nudges a watcher may leave unread before it is disconnected.
    pub watcher_buffer: usize,
    /// How often expired nudges are dropped and deferred deliveries retried.
    pub sweep_every: Duration,
}

impl Default for NudgeDeskConfig {
    fn default() -> Self {
        NudgeDeskConfig {
            pending_for: Duration::from_secs(15 * 60),
            max_pending: 100_000,
            linger: Duration::from_secs(30),
            watcher_buffer: 8,
            sweep_every: Duration::from_secs(1),
        }
    }
}

impl NudgeDeskConfig {
    /// Starts the desk on an arbiter of its own; it stops when the last handle is dropped.
    pub fn build(self, clock: Arc<dyn Clock>) -> NudgeDesk {
        let arbiter = Arbiter::new();
        let addr = DeskActor::start_in_arbiter(&arbiter.handle(), move |ctx| {
            ctx.set_mailbox_capacity(MAILBOX);
            DeskActor::new(self, clock)
        });
        NudgeDesk {
            addr,
            _arbiter: Arc::new(StopOnDrop(arbiter)),
        }
    }
}

struct StopOnDrop(Arbiter);

impl Drop for StopOnDrop {
    fn drop(&mut self) {
        self.0.stop();
    }
}

/// A handle on the desk; clones share it.
#[derive(Clone)]
pub struct NudgeDesk {
    addr: Addr<DeskActor>,
    _arbiter: Arc<StopOnDrop>,
}

/// Why a watch could not start.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum WatchError {
    #[error("the customer's actor is busy; try again")]
    Busy,
    #[error("the nudge desk has stopped")]
    Stopped,
}

/// What a watcher gets: the nudge pending now, and every newer one as it fires. The stream ends when the customer
/// is erased or the watcher lagged behind (reconnect to get the current nudge).
#[derive(Debug)]
pub struct Watching {
    pub current: Option<PendingNudge>,
    /// Shared with the customer's other watchers.
    pub updates: mpsc::Receiver<Arc<PendingNudge>>,
}

/// Counts for tests, metrics and the closing of an activation story.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct DeskStats {
    /// Nudges offered to the desk, including replays it ignored.
    pub offered: u64,
    /// Erasures (of a customer or a shop) the desk has carried out.
    pub erasures: u64,
    pub pending: usize,
    pub active: usize,
    pub activations: u64,
    pub passivations: u64,
    pub evicted: u64,
    pub expired: u64,
}

impl NudgeDesk {
    /// Offers the nudges of published changes (`Outcome::nudges`), as fired now. Awaits the desk taking them,
    /// not their delivery to watchers (that is a `try_send` to each customer's actor).
    pub async fn offer(&self, nudges: Vec<PendingNudge>) {
        if nudges.is_empty() {
            return;
        }
        if self.addr.send(Offer(nudges)).await.is_err() {
            tracing::warn!("nudge desk stopped; nudges are not held for widgets");
        }
    }

    /// Erases a customer's pending nudge and actor, or (`None`) every one of the shop's (GDPR).
    pub async fn forget(&self, merchant: &MerchantId, customer_id: Option<u64>) {
        let forget = Forget {
            merchant: merchant.clone(),
            customer_id,
        };
        if self.addr.send(forget).await.is_err() {
            tracing::warn!("nudge desk stopped before an erasure reached it");
        }
    }

    /// Watches a customer's nudges, activating its actor if it has none.
    pub async fn watch(&self, key: CustomerKey) -> Result<Watching, WatchError> {
        self.addr
            .send(Watch(key))
            .await
            .map_err(|_| WatchError::Stopped)?
    }

    /// The customer's pending nudge, if one is.
    pub async fn current(&self, key: CustomerKey) -> Option<PendingNudge> {
        self.addr.send(Current(key)).await.ok().flatten()
    }

    pub async fn stats(&self) -> DeskStats {
        self.addr.send(Stats).await.unwrap_or_default()
    }

    /// Waits until every active customer actor has handled what the desk sent it so far (mailboxes are in
    /// order, so a round trip behind them is enough).
    pub async fn settle(&self) {
        let Ok(actors) = self.addr.send(Actives).await else {
            return;
        };
        for actor in actors {
            let _ = actor.send(crate::customer::Ping).await;
        }
    }

    /// Drops expired nudges and retries deferred deliveries now rather than at the next periodic sweep.
    pub async fn sweep(&self) {
        let _ = self.addr.send(Sweep).await;
    }
}

#[derive(Message)]
#[rtype(result = "()")]
struct Offer(Vec<PendingNudge>);

#[derive(Message)]
#[rtype(result = "()")]
struct Forget {
    merchant: MerchantId,
    customer_id: Option<u64>,
}

#[derive(Message)]
#[rtype(result = "Result<Watching, WatchError>")]
struct Watch(CustomerKey);

#[derive(Message)]
#[rtype(result = "Option<PendingNudge>")]
struct Current(CustomerKey);

#[derive(Message)]
#[rtype(result = "DeskStats")]
struct Stats;

#[derive(Message)]
#[rtype(result = "()")]
struct Sweep;

#[derive(Message)]
#[rtype(result = "Vec<Addr<CustomerActor>>")]
struct Actives;

struct Active {
    addr: Addr<CustomerActor>,
    generation: u64,
    erased: Arc<AtomicBool>,
}

struct DeskActor {
    config: NudgeDeskConfig,
    clock: Arc<dyn Clock>,
    pending: PendingTable,
    active: HashMap<CustomerKey, Active>,
    /// Customers whose actor's mailbox was full when their nudge came; retried at the next sweep.
    deferred: HashSet<CustomerKey>,
    generation: u64,
    stats: DeskStats,
}

impl DeskActor {
    fn new(config: NudgeDeskConfig, clock: Arc<dyn Clock>) -> Self {
        DeskActor {
            config,
            clock,
            pending: PendingTable::default(),
            active: HashMap::new(),
            deferred: HashSet::new(),
            generation: 0,
            stats: DeskStats::default(),
        }
    }

    fn hold(&mut self, nudge: PendingNudge) {
        if !self.pending.hold(&nudge) {
            return;
        }
        if self.active.contains_key(&nudge.key) {
            self.deliver(Arc::new(nudge));
        }
        let evicted = self.pending.evict_beyond(self.config.max_pending);
        if evicted > 0 {
            self.stats.evicted += evicted;
            metrics::counter!(streams::metric_names::NUDGES_EVICTED).increment(evicted);
        }
    }

    fn deliver(&mut self, nudge: Arc<PendingNudge>) {
        let Some(active) = self.active.get(&nudge.key) else {
            return;
        };
        match active.addr.try_send(Deliver(nudge)) {
            Ok(()) => {}
            Err(actix::dev::SendError::Full(Deliver(nudge))) => {
                self.deferred.insert(nudge.key.clone());
            }
            Err(actix::dev::SendError::Closed(Deliver(nudge))) => {
                self.active.remove(&nudge.key);
            }
        }
    }

    fn sweep(&mut self) {
        let window = self.config.pending_for.as_secs() as i64;
        self.stats.expired += self.pending.expire(self.clock.now(), window);
        for key in std::mem::take(&mut self.deferred) {
            if let Some(nudge) = self.pending.get(&key) {
                self.deliver(Arc::new(nudge));
            }
        }
        metrics::gauge!(streams::metric_names::NUDGES_PENDING).set(self.pending.len() as f64);
    }

    fn activate(&mut self, key: &CustomerKey, ctx: &mut Context<Self>) -> Addr<CustomerActor> {
        if let Some(active) = self.active.get(key).filter(|a| a.addr.connected()) {
            return active.addr.clone();
        }
        self.generation += 1;
        let erased = Arc::new(AtomicBool::new(false));
        let addr = CustomerActor::new(
            key.clone(),
            self.generation,
            self.pending.version(key),
            self.config.linger,
            ctx.address().recipient(),
            erased.clone(),
        )
        .activate();
        self.active.insert(
            key.clone(),
            Active {
                addr: addr.clone(),
                generation: self.generation,
                erased,
            },
        );
        self.stats.activations += 1;
        tracing::debug!(merchant = %key.merchant, customer_id = key.customer_id, "customer actor activated");
        addr
    }
}

impl Actor for DeskActor {
    type Context = Context<Self>;

    fn started(&mut self, ctx: &mut Context<Self>) {
        ctx.run_interval(self.config.sweep_every, |desk, _| desk.sweep());
    }
}

impl Handler<Offer> for DeskActor {
    type Result = ();

    fn handle(&mut self, Offer(nudges): Offer, _: &mut Context<Self>) {
        let now = self.clock.now();
        self.stats.offered += nudges.len() as u64;
        for mut nudge in nudges {
            nudge.fired_at = now;
            self.hold(nudge);
        }
    }
}

impl Handler<Forget> for DeskActor {
    type Result = ();

    fn handle(&mut self, forget: Forget, _: &mut Context<Self>) {
        let erased = |k: &CustomerKey| {
            k.merchant == forget.merchant && forget.customer_id.is_none_or(|c| c == k.customer_id)
        };
        self.pending.forget(&forget.merchant, forget.customer_id);
        self.stats.erasures += 1;
        self.deferred.retain(|k| !erased(k));
        let gone: Vec<CustomerKey> = self.active.keys().filter(|k| erased(k)).cloned().collect();
        for key in gone {
            if let Some(active) = self.active.remove(&key) {
                active.erased.store(true, Ordering::Release);
                // Must arrive even when the actor's mailbox is full: an erasure is not a delivery to back off from.
                active.addr.do_send(Passivate);
            }
        }
    }
}

impl Handler<Watch> for DeskActor {
    type Result = Result<Watching, WatchError>;

    fn handle(&mut self, Watch(key): Watch, ctx: &mut Context<Self>) -> Self::Result {
        let (tx, updates) = mpsc::channel(self.config.watcher_buffer.max(1));
        let attach = self.activate(&key, ctx).try_send(Attach(tx));
        match attach {
            Ok(()) => {}
            Err(actix::dev::SendError::Full(_)) => return Err(WatchError::Busy),
            // The actor was passivating as the watch came: a fresh activation takes it.
            Err(actix::dev::SendError::Closed(Attach(tx))) => {
                self.active.remove(&key);
                let retry = self.activate(&key, ctx).try_send(Attach(tx));
                retry.map_err(|_| WatchError::Busy)?;
            }
        }
        Ok(Watching {
            current: self.pending.get(&key),
            updates,
        })
    }
}

impl Handler<Current> for DeskActor {
    type Result = Option<PendingNudge>;

    fn handle(&mut self, Current(key): Current, _: &mut Context<Self>) -> Self::Result {
        self.pending.get(&key)
    }
}

impl Handler<Stats> for DeskActor {
    type Result = MessageResult<Stats>;

    fn handle(&mut self, _: Stats, _: &mut Context<Self>) -> Self::Result {
        MessageResult(DeskStats {
            pending: self.pending.len(),
            active: self.active.len(),
            ..self.stats
        })
    }
}

impl Handler<Sweep> for DeskActor {
    type Result = ();

    fn handle(&mut self, _: Sweep, _: &mut Context<Self>) {
        self.sweep();
    }
}

impl Handler<Actives> for DeskActor {
    type Result = MessageResult<Actives>;

    fn handle(&mut self, _: Actives, _: &mut Context<Self>) -> Self::Result {
        MessageResult(self.active.values().map(|a| a.addr.clone()).collect())
    }
}

impl Handler<Passivated> for DeskActor {
    type Result = ();

    fn handle(&mut self, gone: Passivated, _: &mut Context<Self>) {
        self.stats.passivations += 1;
        if self
            .active
            .get(&gone.key)
            .is_some_and(|a| a.generation == gone.generation)
        {
            self.active.remove(&gone.key);
        }
    }
}

mod table;

#[cfg(test)]
mod tests;
