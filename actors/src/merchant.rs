//! One merchant's live state: every customer's compact aggregate (in a slot of its [`CustomerTable`]), the
//! order → customer index that refunds need, and the segment counts the dashboard reads. Synchronous and
//! deterministic given `now`; the actor around it (see `partition`) owns the I/O.

use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};

use functions::money::{currency_exponent, Money};
use functions::{
    CustomerState, Evaluation, Fact, OrderRecord, RfmConfig, SegmentId, Timestamp, Transition,
    Update,
};
use streams::events::{ConfigChanged, InputEvent, OrderCreated, RefundCreated};
use streams::{event_key, MerchantId};

use crate::customer_table::CustomerTable;
use crate::order_index::OrderIndex;

mod orphans;
mod rescore;
pub(crate) use orphans::OrphanRefunds;
pub use orphans::MAX_ORPHAN_REFUNDS;

/// The customer's record of `order_id` if the order counts (created, not cancelled, not excluded).
fn counted_order(state: &CustomerState, order_id: u64) -> Option<&OrderRecord> {
    state.aggregate.order(order_id).filter(|o| o.counts())
}

/// What the engine must publish after applying events.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A customer's published evaluation changed.
    Changed {
        customer_id: u64,
        transition: Transition,
        /// The net amount of a valid order the fact added (a conversion's revenue), if it added one.
        order_added: Option<Money>,
    },
    /// A customer was erased (GDPR); downstream stores must forget it.
    Redacted { customer_id: u64 },
    /// The whole merchant was erased.
    ShopRedacted,
    /// A data request was received; the export is produced downstream.
    DataRequested {
        customer_id: u64,
        /// Shopify's id of the request, which the merchant sees in the Shopify admin.
        data_request_id: Option<u64>,
    },
}

/// Which state of a merchant's customers a reader saw. It moves on with every event applied, every boundary that
/// changed a customer, a new configuration and every customer a restore brings in, so whatever a reader derived
/// from one revision (a ranking, say) is current exactly while the revision is. The epoch is drawn anew for every
/// `MerchantState`, so a merchant restored or handed back to this instance never repeats an earlier revision.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Revision {
    epoch: u64,
    changes: u64,
}

impl Revision {
    /// Whether this is `seen` or a later revision of the same state.
    pub fn covers(self, seen: Revision) -> bool {
        self.epoch == seen.epoch && self.changes >= seen.changes
    }
}

static EPOCHS: AtomicU64 = AtomicU64::new(0);

pub struct MerchantState {
    pub id: MerchantId,
    pub config: RfmConfig,
    pub(crate) customers: CustomerTable,
    /// Refund payloads name the order only. Holds every order record of every customer.
    pub(crate) order_customers: OrderIndex,
    /// Refunds whose order has not arrived yet (delivery is unordered), applied when it does; bounded.
    pub(crate) orphan_refunds: OrphanRefunds,
    pub(crate) segment_counts: Vec<u64>,
    /// Decimals of the shop currency, learned from orders; refund events carry amounts without a currency.
    pub(crate) exponent: u8,
    /// Slots of the customers updated since the last `take_touched`, so the partition can schedule their next
    /// boundary.
    touched: Vec<u32>,
    /// Erased customers and when their erasure was requested (Unix seconds): events dated up to then are late
    /// deliveries, retries or replays of the old relationship and must not bring the customer back. A customer id
    /// and a time, no personal data; kept in snapshots.
    pub(crate) tombstones: HashMap<u64, i64>,
    /// When the whole shop was erased, with the same meaning for every event of the shop.
    pub(crate) shop_erased_at: Option<i64>,
    /// The save count of the configuration applied (`ConfigChanged::revision`), 0 before any; kept in snapshots.
    pub config_revision: u64,
    revision: Revision,
}

impl MerchantState {
    pub fn new(id: MerchantId, config: RfmConfig) -> Self {
        let segments = config.segments.len();
        MerchantState {
            id,
            config,
            customers: CustomerTable::default(),
            order_customers: OrderIndex::default(),
            orphan_refunds: OrphanRefunds::default(),
            segment_counts: vec![0; segments],
            exponent: 2,
            touched: Vec::new(),
            tombstones: HashMap::new(),
            shop_erased_at: None,
            config_revision: 0,
            revision: Revision {
                epoch: EPOCHS.fetch_add(1, Ordering::Relaxed),
                changes: 0,
            },
        }
    }

    /// The state readers see now (see [`Revision`]).
    pub fn revision(&self) -> Revision {
        self.revision
    }

    fn changed(&mut self) {
        self.revision.changes += 1;
    }

    pub fn customer(&self, customer_id: u64) -> Option<&CustomerState> {
        self.customers.get(customer_id)
    }

    pub fn customers(&self) -> impl Iterator<Item = (u64, &CustomerState)> {
        self.customers.iter().map(|(_, id, state)| (id, state))
    }

    pub fn segment_counts(&self) -> &[u64] {
        &self.segment_counts
    }

    /// Applies one event at `now`, pushing what must be published onto `effects`. False when an erasure refused
    /// it (see `erased_before`), so whatever came with it (sealed personal data) is not kept either.
    pub fn apply(&mut self, event: &InputEvent, now: Timestamp, effects: &mut Vec<Effect>) -> bool {
        if self.erased_before(event) {
            return false;
        }
        self.changed();
        match event {
            InputEvent::OrderCreated(e) => self.order_created(e, now, effects),
            InputEvent::OrderCancelled(e) => {
                self.update(
                    e.customer_id,
                    &Fact::OrderCancelled {
                        order_id: e.order_id,
                    },
                    now,
                    effects,
                );
            }
            InputEvent::RefundCreated(e) => self.refund(e, now, effects),
            InputEvent::CustomerCreated(e) => {
                let fact = Fact::CustomerCreated {
                    at: Timestamp(e.created_at.timestamp()),
                };
                self.update(e.customer_id, &fact, now, effects);
            }
            InputEvent::PointsEarned(e) | InputEvent::PointsRedeemed(e) => {
                let sign = if matches!(event, InputEvent::PointsRedeemed(_)) {
                    -1
                } else {
                    1
                };
                let fact = Fact::Points {
                    event_key: event_key(&e.event_id),
                    delta: sign * e.points.saturating_abs(),
                    at: Timestamp(e.created_at.timestamp()),
                };
                self.update(e.customer_id, &fact, now, effects);
            }
            InputEvent::CustomerRedact(e) => {
                self.forget(e.customer_id);
                let at = e.requested_at.map_or(now.unix(), |t| t.timestamp());
                let line = self.tombstones.entry(e.customer_id).or_insert(at);
                *line = (*line).max(at);
                effects.push(Effect::Redacted {
                    customer_id: e.customer_id,
                });
            }
            InputEvent::CustomerDataRequest(e) => effects.push(Effect::DataRequested {
                customer_id: e.customer_id,
                data_request_id: e.data_request_id,
            }),
            InputEvent::ShopRedact(e) => {
                let at = e.requested_at.map_or(now.unix(), |t| t.timestamp());
                self.shop_erased_at = Some(self.shop_erased_at.map_or(at, |t| t.max(at)));
                // The shop's line covers every customer erased before it; one erased later (ingress clocks differ)
                // keeps its own, later line.
                let line = self.shop_erased_at.unwrap_or(at);
                self.tombstones.retain(|_, t| *t > line);
                self.customers.clear();
                self.order_customers.clear();
                self.orphan_refunds.clear();
                self.segment_counts.iter_mut().for_each(|c| *c = 0);
                // The shop's saved configuration is erased with it, and a reinstalled shop's saves count from 1
                // again: holding on to the old revision would ignore every one of them.
                let _no_customers_left = self.rescore_under(RfmConfig::default(), now);
                self.config_revision = 0;
                effects.push(Effect::ShopRedacted);
            }
            // Transitions name their "from" segment in the table being replaced; the partition renames them.
            InputEvent::ConfigChanged(e) => {
                if !self.accepts_config(e) {
                    tracing::info!(merchant = %self.id, revision = ?e.revision, held = self.config_revision,
                        "configuration older than the one applied, ignored");
                    return false;
                }
                self.config_revision = e.revision.unwrap_or(self.config_revision);
                self.reconfigure(e.config.clone(), now, effects);
            }
        }
        true
    }

    /// Whether a saved configuration is newer than the one applied: the outbox may send one again after a crash,
    /// behind a later save, and applying it would undo that save. A record without a revision (from before the
    /// outbox) is always applied.
    pub fn accepts_config(&self, e: &ConfigChanged) -> bool {
        e.revision.is_none_or(|r| r > self.config_revision)
    }

    fn order_created(&mut self, e: &OrderCreated, now: Timestamp, effects: &mut Vec<Effect>) {
        let exponent = currency_exponent(&e.currency);
        self.exponent = exponent;
        // The ingress validated the amount; a record from another producer with garbage counts as zero rather than
        // poisoning the customer.
        let total = Money::parse(&e.total_price, exponent).unwrap_or(Money::ZERO);
        let fact = Fact::OrderPlaced {
            order_id: e.order_id,
            total,
            placed_at: Timestamp(e.created_at.timestamp()),
            excluded: e.test || e.financial_status == "voided",
            cancelled: e.cancelled,
        };
        self.update(e.customer_id, &fact, now, effects);
        let waiting = self.orphan_refunds.take(e.order_id);
        for (refund_id, amount) in waiting {
            let fact = Fact::Refunded {
                order_id: e.order_id,
                refund_id,
                amount,
            };
            self.update(e.customer_id, &fact, now, effects);
        }
    }

    fn refund(&mut self, e: &RefundCreated, now: Timestamp, effects: &mut Vec<Effect>) {
        let amount = Money::parse(&e.amount, self.exponent).unwrap_or(Money::ZERO);
        match e.customer_id.or_else(|| self.order_customer(e.order_id)) {
            Some(customer_id) => {
                let fact = Fact::Refunded {
                    order_id: e.order_id,
                    refund_id: e.refund_id,
                    amount,
                };
                self.update(customer_id, &fact, now, effects);
            }
            None => {
                let evicted = self.orphan_refunds.hold(e.order_id, e.refund_id, amount);
                if evicted.refunds > 0 {
                    tracing::debug!(
                        merchant = %self.id,
                        orders = evicted.orders,
                        refunds = evicted.refunds,
                        held = self.orphan_refunds.refunds(),
                        "orphan refunds past the per-merchant bound; the lowest order ids' were dropped"
                    );
                }
            }
        }
    }

    /// The resident customer with a record of `order_id`, among the index's candidates. Two customers can both
    /// hold one (a create and a cancel naming different customers, or a refund carrying another customer id), and
    /// the choice must not depend on slots or arrival, which differ between a live run and a restore: the customer
    /// the order was created for, else the lowest id.
    pub(crate) fn order_customer(&self, order_id: u64) -> Option<u64> {
        let holders = self
            .order_customers
            .candidates(order_id)
            .filter_map(|slot| {
                let (id, state) = self.customers.by_slot(slot)?;
                let record = state.aggregate.order(order_id)?;
                Some((!record.created(), id))
            });
        holders.min().map(|(_, id)| id)
    }

    fn update(&mut self, customer_id: u64, fact: &Fact, now: Timestamp, effects: &mut Vec<Effect>) {
        let config = &self.config;
        let (slot, state) = self.customers.get_or_insert_with(customer_id, || {
            let fresh = CustomerState::new(config);
            self.segment_counts[usize::from(fresh.published.segment)] += 1;
            fresh
        });
        let orders_before = state.aggregate.orders().len();
        let counted_before = fact
            .order_id()
            .is_some_and(|id| counted_order(state, id).is_some());
        let update = state.apply(fact, config, now);
        // Only a create can make an order count; cancels and refunds never add one.
        let order_added = match fact {
            Fact::OrderPlaced { order_id, .. } if !counted_before => {
                counted_order(state, *order_id).map(OrderRecord::net)
            }
            _ => None,
        };
        if state.aggregate.orders().len() > orders_before {
            if let Some(order_id) = fact.order_id() {
                self.order_customers.insert(order_id, slot);
            }
        }
        match update {
            Update::Duplicate => {}
            Update::Unchanged => self.touched.push(slot),
            Update::Changed(transition) => {
                self.touched.push(slot);
                self.count_move(&transition);
                effects.push(Effect::Changed {
                    customer_id,
                    transition,
                    order_added,
                });
            }
        }
    }

    /// Decimals of the shop's currency, as learned from its orders (2 until an order says otherwise).
    pub fn currency_exponent(&self) -> u8 {
        self.exponent
    }

    pub fn take_touched(&mut self) -> Vec<u32> {
        std::mem::take(&mut self.touched)
    }

    /// When the evaluation of the customer in `slot` can next change without an event.
    pub fn next_change_in(&self, slot: u32, now: Timestamp) -> Option<Timestamp> {
        let (_, state) = self.customers.by_slot(slot)?;
        functions::next_change(&state.aggregate, &self.config, now)
    }

    /// The customer's slot in this merchant's table, which timers name it by.
    pub fn slot_of(&self, customer_id: u64) -> Option<u32> {
        self.customers.slot_of(customer_id)
    }

    /// The id of the customer in `slot`, if one is there.
    pub fn customer_in(&self, slot: u32) -> Option<u64> {
        self.customers.by_slot(slot).map(|(id, _)| id)
    }

    /// Live customers in memory.
    pub fn len(&self) -> usize {
        self.customers.len()
    }

    pub fn is_empty(&self) -> bool {
        self.customers.is_empty()
    }

    /// Bytes held for this merchant's customers: the customer table at its capacity, not just its length, each
    /// aggregate's heap, the order index and the refunds waiting for their orders.
    pub fn state_bytes(&self) -> usize {
        self.customers.heap_bytes()
            + self
                .customers
                .iter()
                .map(|(_, _, c)| c.aggregate.heap_bytes())
                .sum::<usize>()
            + self.order_customers.heap_bytes()
            + self.orphan_refunds.heap_bytes()
    }

    /// Re-evaluates the customer in `slot` at `now` (a recency boundary passed).
    pub fn rescore(&mut self, slot: u32, now: Timestamp, effects: &mut Vec<Effect>) {
        let Some((customer_id, state)) = self.customers.by_slot_mut(slot) else {
            return;
        };
        if let Some(transition) = state.rescore(&self.config, now) {
            self.changed();
            self.count_move(&transition);
            effects.push(Effect::Changed {
                customer_id,
                transition,
                order_added: None,
            });
        }
    }

    /// Sets what a customer last published (a restore learned it from the output topic or undoes a quiet
    /// replay), moving the segment counts with it. Unknown customers are ignored.
    pub(crate) fn set_published(&mut self, customer_id: u64, version: u32, published: Evaluation) {
        let Some(state) = self.customers.get_mut(customer_id) else {
            return;
        };
        self.revision.changes += 1;
        let from = state.published.segment;
        state.version = version;
        state.published = published;
        self.move_count(from, published.segment);
    }

    fn count_move(&mut self, t: &Transition) {
        self.move_count(t.from.segment, t.to.segment);
    }

    fn move_count(&mut self, from: SegmentId, to: SegmentId) {
        if from != to {
            let from = usize::from(from);
            self.segment_counts[from] = self.segment_counts[from].saturating_sub(1);
            self.segment_counts[usize::from(to)] += 1;
        }
    }

    /// Adds a customer as a snapshot stored it and counts its segment; [`MerchantState::reindex_orders`] indexes
    /// the orders of all of them at once afterwards.
    pub(crate) fn insert_restored(&mut self, customer_id: u64, state: CustomerState) {
        self.changed();
        self.segment_counts[usize::from(state.published.segment)] += 1;
        self.customers.insert(customer_id, state);
    }

    /// Rebuilds the order index from every customer's order records.
    pub(crate) fn reindex_orders(&mut self) {
        let entries = self.customers.iter().flat_map(|(slot, _, state)| {
            state
                .aggregate
                .orders()
                .iter()
                .map(move |o| (o.order_id(), slot))
        });
        self.order_customers.rebuild(entries);
    }

    /// Whether `event` belongs to a relationship that an erasure ended: dated up to the erasure request of its
    /// customer (or shop), or a cancel or refund of an erased customer who has not come back. A cancel or refund
    /// names an order of the old relationship, and its date says nothing about the order's, so for a customer
    /// erased and absent it is refused whatever its date. (A cancel that arrives before the new order it cancels,
    /// delivery being unordered, is refused as well: the one case this rule gets wrong.) Erasure and data requests
    /// always apply.
    fn erased_before(&self, event: &InputEvent) -> bool {
        // Almost every merchant has erased nobody: no hashing on the hot path for them.
        if self.tombstones.is_empty() && self.shop_erased_at.is_none() {
            return false;
        }
        let (customer, at, names_old_order) = match event {
            InputEvent::OrderCreated(e) => (Some(e.customer_id), e.created_at, false),
            InputEvent::OrderCancelled(e) => (Some(e.customer_id), e.cancelled_at, true),
            InputEvent::CustomerCreated(e) => (Some(e.customer_id), e.created_at, false),
            InputEvent::PointsEarned(e) | InputEvent::PointsRedeemed(e) => {
                (Some(e.customer_id), e.created_at, false)
            }
            // Without a customer id the refund's order decides: an erased customer's orders left the index.
            InputEvent::RefundCreated(e) => (e.customer_id, e.created_at, true),
            // A configuration is the merchant's, not a customer's: it applies even after a shop erasure (a shop
            // that reinstalls starts from the configuration it saved last).
            InputEvent::CustomerRedact(_)
            | InputEvent::CustomerDataRequest(_)
            | InputEvent::ShopRedact(_)
            | InputEvent::ConfigChanged(_) => return false,
        };
        let line = customer
            .and_then(|c| self.tombstones.get(&c).copied())
            .max(self.shop_erased_at);
        let Some(line) = line else { return false };
        let gone = customer.is_none_or(|c| self.customers.get(c).is_none());
        at.timestamp() <= line || (names_old_order && gone)
    }

    fn forget(&mut self, customer_id: u64) {
        if let Some((slot, state)) = self.customers.remove(customer_id) {
            let seg = usize::from(state.published.segment);
            self.segment_counts[seg] = self.segment_counts[seg].saturating_sub(1);
            let orders = state.aggregate.orders().iter().map(|o| o.order_id());
            self.order_customers.remove(slot, orders);
        }
    }
}

#[cfg(test)]
mod tests;
