//! A new configuration's moves, published a chunk at a time. Re-scoring a big merchant is quick (every customer
//! evaluated under the new table: about 60 ms at 1,000,000 customers), but turning each move into a `Change` and
//! its records, and scheduling every customer's next boundary under the new thresholds, is not (about a second
//! at that size). Done in the step that applied the configuration, it would stall every other merchant of the
//! partition for that long. So the state changes at once, and its moves wait here: each step of the partition
//! (a batch or a tick) publishes at most [`MOVES_CHUNK`] of them and schedules as many boundaries after its own
//! work, and other merchants' records are applied in between. The step that re-scored a merchant with more moves
//! than a chunk publishes none of them: the re-score is that step's allowance.
//!
//! Each customer's records stay in version order: before an event or a boundary of a customer with a move still
//! waiting, that move is published first, in the same step and ahead of the event's own change. An event that
//! concerns the whole merchant (another configuration, a shop erasure) publishes all its waiting moves first. A
//! snapshot is not taken while moves wait (`has_pending_moves`): it would hold versions never published.

use std::ops::Range;

use functions::Timestamp;
use streams::InputEvent;

use super::{rename_froms, Outcome, PartitionCore};
use crate::merchant::Effect;
pub use crate::vocab::Move;

/// Moves published (and boundaries scheduled) per step of the partition, over all waiting merchants.
pub const MOVES_CHUNK: usize = 25_000;

/// A merchant's re-score whose moves are not all published yet.
#[derive(Debug)]
pub(crate) struct PendingMoves {
    merchant: u32,
    /// In table-slot order, so a customer's is found by its slot.
    moves: Vec<Move>,
    /// Which of `moves` are published.
    sent: Vec<bool>,
    next: usize,
    left: usize,
    /// Table slots whose next boundary under the new configuration is not scheduled yet.
    unscheduled: Range<u32>,
    /// The replaced table's keys, which the moves' "from" indexes name.
    old_keys: Vec<String>,
    trace: String,
    at: Timestamp,
}

impl PendingMoves {
    fn done(&self) -> bool {
        self.left == 0 && self.unscheduled.is_empty()
    }

    /// The customer in `slot`'s move, unless it has none or it is published.
    fn take(&mut self, slot: u32) -> Option<Move> {
        let i = self.moves.binary_search_by_key(&slot, |m| m.slot).ok()?;
        if std::mem::replace(&mut self.sent[i], true) {
            return None;
        }
        self.left -= 1;
        Some(self.moves[i])
    }

    /// The next `budget` unpublished moves in order.
    fn take_next(&mut self, budget: usize) -> Vec<Move> {
        let mut chunk = Vec::new();
        while chunk.len() < budget && self.next < self.moves.len() {
            if !std::mem::replace(&mut self.sent[self.next], true) {
                chunk.push(self.moves[self.next]);
            }
            self.next += 1;
        }
        self.left -= chunk.len();
        chunk
    }
}

/// Which waiting moves an event needs published before it.
enum Scope {
    Customers([Option<u64>; 2]),
    Merchant,
}

impl PartitionCore {
    /// Whether a re-score still has moves to publish or boundaries to schedule.
    pub fn has_pending_moves(&self) -> bool {
        !self.pending.is_empty()
    }

    /// Takes a merchant's re-score: published in place when it fits the step's allowance, else a chunk per later step.
    pub(crate) fn queue_moves(
        &mut self,
        merchant: u32,
        moves: Vec<Move>,
        old_keys: Vec<String>,
        trace: String,
        at: Timestamp,
    ) {
        let left = moves.len();
        let bound = self.merchants[merchant as usize].slot_bound();
        self.pending.push(PendingMoves {
            merchant,
            sent: vec![false; left],
            moves,
            next: 0,
            left,
            unscheduled: 0..bound,
            old_keys,
            trace,
            at,
        });
    }

    /// Publishes the next chunk of waiting moves and schedules as many boundaries.
    pub(crate) fn publish_moves(&mut self, outcome: &mut Outcome) {
        self.publish_moves_within(MOVES_CHUNK, outcome);
    }

    /// Publishes at most `budget` waiting moves and schedules at most as many boundaries; returns the budget left.
    pub(crate) fn publish_moves_within(&mut self, budget: usize, outcome: &mut Outcome) -> usize {
        let mut pending = std::mem::take(&mut self.pending);
        let mut budget = budget;
        for p in pending.iter_mut() {
            if budget == 0 {
                break;
            }
            let chunk = p.take_next(budget);
            let end = p
                .unscheduled
                .end
                .min(p.unscheduled.start.saturating_add(budget as u32));
            budget -= chunk.len();
            self.emit(p, chunk, outcome);
            let merchant = &self.merchants[p.merchant as usize];
            for slot in p.unscheduled.start..end {
                if let Some(next) = merchant.next_change_in(slot, p.at) {
                    self.timers.schedule(next, p.merchant, slot);
                }
            }
            p.unscheduled.start = end;
        }
        pending.retain(|p| !p.done());
        self.pending = pending;
        budget
    }

    /// Publishes the moves waiting for what `event` concerns, ahead of the event's own changes.
    pub(crate) fn publish_moves_before(
        &mut self,
        merchant: u32,
        event: &InputEvent,
        outcome: &mut Outcome,
    ) {
        if !self.pending.iter().any(|p| p.merchant == merchant) {
            return;
        }
        match self.scope(merchant, event) {
            Scope::Merchant => self.publish_all_moves_of(merchant, outcome),
            Scope::Customers(ids) => {
                for id in ids.into_iter().flatten() {
                    self.publish_move_of(merchant, id, outcome);
                }
            }
        }
    }

    fn scope(&self, merchant: u32, event: &InputEvent) -> Scope {
        let one = |id: u64| Scope::Customers([Some(id), None]);
        match event {
            InputEvent::OrderCreated(e) => one(e.customer_id),
            InputEvent::OrderCancelled(e) => one(e.customer_id),
            InputEvent::CustomerCreated(e) => one(e.customer_id),
            InputEvent::PointsEarned(e) | InputEvent::PointsRedeemed(e) => one(e.customer_id),
            InputEvent::CustomerRedact(e) => one(e.customer_id),
            InputEvent::CustomerDataRequest(e) => one(e.customer_id),
            // The refund's customer is the one holding its order, whatever the record names.
            InputEvent::RefundCreated(e) => {
                let holder = self.merchants[merchant as usize].order_customer(e.order_id);
                Scope::Customers([e.customer_id, holder])
            }
            InputEvent::ShopRedact(_) | InputEvent::ConfigChanged(_) => Scope::Merchant,
        }
    }

    /// Publishes one customer's waiting move, if it has one (before its event or boundary).
    pub(crate) fn publish_move_of(
        &mut self,
        merchant: u32,
        customer_id: u64,
        outcome: &mut Outcome,
    ) {
        if self.pending.is_empty() {
            return;
        }
        let Some(slot) = self.merchants[merchant as usize].slot_of(customer_id) else {
            return;
        };
        let mut pending = std::mem::take(&mut self.pending);
        if let Some(p) = pending.iter_mut().find(|p| p.merchant == merchant) {
            if let Some(m) = p.take(slot) {
                self.emit(p, vec![m], outcome);
            }
        }
        pending.retain(|p| !p.done());
        self.pending = pending;
    }

    /// Publishes every waiting move of `merchant` and schedules its remaining boundaries.
    pub(crate) fn publish_all_moves_of(&mut self, merchant: u32, outcome: &mut Outcome) {
        let mut pending = std::mem::take(&mut self.pending);
        for p in pending.iter_mut().filter(|p| p.merchant == merchant) {
            let chunk = p.take_next(usize::MAX);
            self.emit(p, chunk, outcome);
            let m = &self.merchants[merchant as usize];
            for slot in p.unscheduled.clone() {
                if let Some(next) = m.next_change_in(slot, p.at) {
                    self.timers.schedule(next, merchant, slot);
                }
            }
            p.unscheduled.start = p.unscheduled.end;
        }
        pending.retain(|p| !p.done());
        self.pending = pending;
    }

    fn emit(&self, p: &PendingMoves, chunk: Vec<Move>, outcome: &mut Outcome) {
        if chunk.is_empty() {
            return;
        }
        let effects: Vec<Effect> = chunk
            .into_iter()
            .map(|m| Effect::Changed {
                customer_id: m.customer_id,
                transition: m.transition,
                order_added: None,
            })
            .collect();
        let first = outcome.changes.len();
        self.collect(p.merchant, &effects, p.at, &p.trace, None, outcome);
        rename_froms(&mut outcome.changes[first..], &effects, &p.old_keys);
    }
}
