//! One merchant's live state: every customer's compact aggregate (in a slot of its [`CustomerTable`]), the
//! order → customer index that refunds need, and the segment counts the dashboard reads. Synchronous and deterministic given `now`; the actor around it
//! (see `partition`) owns the I/O.

use std::collections::HashMap;

use functions::money::{currency_exponent, Money};
use functions::{
    CustomerState, Evaluation, Fact, RfmConfig, SegmentId, Timestamp, Transition, Update,
};
use streams::events::{InputEvent, RefundCreated};
use streams::{event_key, MerchantId};

use crate::customer_table::CustomerTable;
use crate::order_index::OrderIndex;

/// What the engine must publish after applying events.
#[derive(Debug, Clone, PartialEq)]
pub enum Effect {
    /// A customer's published evaluation changed.
    Changed {
        customer_id: u64,
        transition: Transition,
    },
    /// A customer was erased (GDPR); downstream stores must forget it.
    Redacted { customer_id: u64 },
    /// The whole merchant was erased.
    ShopRedacted,
    /// A data request was received; the export is produced downstream.
    DataRequested { customer_id: u64 },
}

pub struct MerchantState {
    pub id: MerchantId,
    pub config: RfmConfig,
    pub(crate) customers: CustomerTable,
    /// Refund payloads name the order only. Holds every order record of every customer.
    pub(crate) order_customers: OrderIndex,
    /// Refunds whose order has not arrived yet (delivery is unordered), applied when it does.
    pub(crate) orphan_refunds: HashMap<u64, Vec<(u64, Money)>>,
    pub(crate) segment_counts: Vec<u64>,
    /// Decimals of the shop currency, learned from orders; refund events carry amounts without a currency.
    pub(crate) exponent: u8,
    /// Slots of the customers updated since the last `take_touched`, so the partition can schedule their next
    /// boundary.
    touched: Vec<u32>,
}

impl MerchantState {
    pub fn new(id: MerchantId, config: RfmConfig) -> Self {
        let segments = config.segments.len();
        MerchantState {
            id,
            config,
            customers: CustomerTable::default(),
            order_customers: OrderIndex::default(),
            orphan_refunds: HashMap::new(),
            segment_counts: vec![0; segments],
            exponent: 2,
            touched: Vec::new(),
        }
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

    /// Applies one event at `now`, pushing what must be published onto `effects`.
    pub fn apply(&mut self, event: &InputEvent, now: Timestamp, effects: &mut Vec<Effect>) {
        match event {
            InputEvent::OrderCreated(e) => {
                let exponent = currency_exponent(&e.currency);
                self.exponent = exponent;
                // The ingress validated the amount; a record from another producer with garbage counts as zero
                // rather than poisoning the customer.
                let total = Money::parse(&e.total_price, exponent).unwrap_or(Money::ZERO);
                let fact = Fact::OrderPlaced {
                    order_id: e.order_id,
                    total,
                    placed_at: Timestamp(e.created_at.timestamp()),
                    excluded: e.test || e.financial_status == "voided",
                    cancelled: e.cancelled,
                };
                self.update(e.customer_id, &fact, now, effects);
                for (refund_id, amount) in
                    self.orphan_refunds.remove(&e.order_id).unwrap_or_default()
                {
                    let fact = Fact::Refunded {
                        order_id: e.order_id,
                        refund_id,
                        amount,
                    };
                    self.update(e.customer_id, &fact, now, effects);
                }
            }
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
                    delta: sign * e.points.abs(),
                    at: Timestamp(e.created_at.timestamp()),
                };
                self.update(e.customer_id, &fact, now, effects);
            }
            InputEvent::CustomerRedact(e) => {
                self.forget(e.customer_id);
                effects.push(Effect::Redacted {
                    customer_id: e.customer_id,
                });
            }
            InputEvent::CustomerDataRequest(e) => effects.push(Effect::DataRequested {
                customer_id: e.customer_id,
            }),
            InputEvent::ShopRedact(_) => {
                self.customers.clear();
                self.order_customers.clear();
                self.orphan_refunds.clear();
                self.segment_counts.iter_mut().for_each(|c| *c = 0);
                effects.push(Effect::ShopRedacted);
            }
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
                let pending = self.orphan_refunds.entry(e.order_id).or_default();
                if !pending.iter().any(|(id, _)| *id == e.refund_id) {
                    pending.push((e.refund_id, amount));
                }
            }
        }
    }

    /// The resident customer with a record of `order_id`, among the index's candidates.
    pub(crate) fn order_customer(&self, order_id: u64) -> Option<u64> {
        self.order_customers.candidates(order_id).find_map(|slot| {
            let (id, state) = self.customers.by_slot(slot)?;
            state.aggregate.has_order(order_id).then_some(id)
        })
    }

    fn update(&mut self, customer_id: u64, fact: &Fact, now: Timestamp, effects: &mut Vec<Effect>) {
        let config = &self.config;
        let (slot, state) = self.customers.get_or_insert_with(customer_id, || {
            let fresh = CustomerState::new(config);
            self.segment_counts[usize::from(fresh.published.segment)] += 1;
            fresh
        });
        let orders_before = state.aggregate.orders().len();
        let update = state.apply(fact, config, now);
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

    /// When this customer's evaluation can next change without an event.
    pub fn next_change(&self, customer_id: u64, now: Timestamp) -> Option<Timestamp> {
        self.next_change_in(self.customers.slot_of(customer_id)?, now)
    }

    /// [`MerchantState::next_change`] of the customer in `slot`.
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
    /// aggregate's heap, and the order index.
    pub fn state_bytes(&self) -> usize {
        self.customers.heap_bytes()
            + self
                .customers
                .iter()
                .map(|(_, _, c)| c.aggregate.heap_bytes())
                .sum::<usize>()
            + self.order_customers.heap_bytes()
    }

    /// Re-evaluates one customer at `now` (a recency boundary passed).
    pub fn rescore(&mut self, customer_id: u64, now: Timestamp, effects: &mut Vec<Effect>) {
        let Some(state) = self.customers.get_mut(customer_id) else {
            return;
        };
        if let Some(transition) = state.rescore(&self.config, now) {
            self.count_move(&transition);
            effects.push(Effect::Changed {
                customer_id,
                transition,
            });
        }
    }

    /// Replaces the configuration and re-scores every customer at once.
    pub fn reconfigure(&mut self, config: RfmConfig, now: Timestamp, effects: &mut Vec<Effect>) {
        self.segment_counts = vec![0; config.segments.len()];
        self.config = config;
        for (_, customer_id, state) in self.customers.iter_mut() {
            if let Some(transition) = state.rescore(&self.config, now) {
                effects.push(Effect::Changed {
                    customer_id,
                    transition,
                });
            }
            self.segment_counts[usize::from(state.published.segment)] += 1;
        }
        self.touched
            .extend(self.customers.iter().map(|(slot, _, _)| slot));
    }

    /// Sets what a customer last published (a restore learned it from the output topic or undoes a quiet
    /// replay), moving the segment counts with it. Unknown customers are ignored.
    pub(crate) fn set_published(&mut self, customer_id: u64, version: u32, published: Evaluation) {
        let Some(state) = self.customers.get_mut(customer_id) else {
            return;
        };
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

    fn forget(&mut self, customer_id: u64) {
        let Some(slot) = self.customers.slot_of(customer_id) else {
            return;
        };
        if let Some(state) = self.customers.remove(customer_id) {
            let seg = usize::from(state.published.segment);
            self.segment_counts[seg] = self.segment_counts[seg].saturating_sub(1);
            let orders = state.aggregate.orders().iter().map(|o| o.order_id());
            self.order_customers.remove(slot, orders);
        }
    }
}

#[cfg(test)]
mod tests {
    use chrono::DateTime;
    use streams::events::{OrderCreated, RefundCreated};
    use streams::SCHEMA_VERSION;

    use super::*;

    const T0: i64 = 1_780_000_000;

    fn merchant() -> MerchantState {
        MerchantState::new(
            MerchantId::parse("m.myshopify.com").unwrap(),
            RfmConfig::default(),
        )
    }

    fn order(customer_id: u64, order_id: u64, price: &str) -> InputEvent {
        InputEvent::OrderCreated(OrderCreated {
            event_id: format!("o{order_id}"),
            schema_version: SCHEMA_VERSION,
            merchant_id: MerchantId::parse("m.myshopify.com").unwrap(),
            customer_id,
            order_id,
            total_price: price.into(),
            currency: "USD".into(),
            created_at: DateTime::from_timestamp(T0, 0).unwrap(),
            financial_status: "paid".into(),
            test: false,
            cancelled: false,
            locale: None,
            pii: None,
        })
    }

    fn refund(order_id: u64, refund_id: u64, amount: &str) -> InputEvent {
        InputEvent::RefundCreated(RefundCreated {
            event_id: format!("r{refund_id}"),
            schema_version: SCHEMA_VERSION,
            merchant_id: MerchantId::parse("m.myshopify.com").unwrap(),
            customer_id: None,
            order_id,
            refund_id,
            amount: amount.into(),
            created_at: DateTime::from_timestamp(T0, 0).unwrap(),
        })
    }

    fn net(m: &MerchantState, customer: u64) -> i64 {
        m.customer(customer).unwrap().aggregate.totals().net.minor()
    }

    #[test]
    fn a_refund_before_its_order_waits_for_it() {
        let mut m = merchant();
        let mut effects = Vec::new();
        m.apply(&refund(9, 1, "20.00"), Timestamp(T0), &mut effects);
        assert!(
            effects.is_empty() && m.is_empty(),
            "nothing to attribute yet"
        );
        m.apply(&order(7, 9, "100.00"), Timestamp(T0), &mut effects);
        assert_eq!(net(&m, 7), 8_000);
        m.apply(&refund(9, 1, "20.00"), Timestamp(T0), &mut effects);
        assert_eq!(net(&m, 7), 8_000, "the redelivered refund counts once");
    }

    #[test]
    fn segment_counts_follow_moves_and_redactions() {
        let mut m = merchant();
        let mut effects = Vec::new();
        m.apply(&order(1, 1, "60.00"), Timestamp(T0), &mut effects);
        m.apply(&order(2, 2, "10.00"), Timestamp(T0), &mut effects);
        let new = m
            .config
            .segments
            .iter()
            .position(|s| s.key == "new")
            .unwrap();
        assert_eq!(m.segment_counts()[new], 2);
        assert_eq!(m.segment_counts().iter().sum::<u64>(), 2);
        let redact = InputEvent::CustomerRedact(streams::events::CustomerRedact {
            event_id: "g1".into(),
            schema_version: SCHEMA_VERSION,
            merchant_id: m.id.clone(),
            customer_id: 1,
            orders_to_redact: vec![1],
        });
        m.apply(&redact, Timestamp(T0), &mut effects);
        assert_eq!(m.segment_counts()[new], 1);
        assert!(m.customer(1).is_none());
        assert_eq!(effects.last(), Some(&Effect::Redacted { customer_id: 1 }));
    }

    #[test]
    fn a_refund_finds_its_customer_by_order_even_after_a_redaction_reused_the_slot() {
        let mut m = merchant();
        let mut effects = Vec::new();
        m.apply(&order(1, 10, "50.00"), Timestamp(T0), &mut effects);
        m.apply(&order(2, 20, "70.00"), Timestamp(T0), &mut effects);
        let slot = m.slot_of(1).unwrap();
        m.forget(1);
        m.apply(&order(3, 30, "90.00"), Timestamp(T0), &mut effects);
        assert_eq!(m.slot_of(3), Some(slot), "the freed slot is reused");
        m.apply(&refund(10, 1, "5.00"), Timestamp(T0), &mut effects);
        assert_eq!(
            net(&m, 3),
            9_000,
            "the erased customer's order is not the new one's"
        );
        assert!(m.customer(1).is_none() && m.orphan_refunds.contains_key(&10));
        m.apply(&refund(30, 2, "5.00"), Timestamp(T0), &mut effects);
        m.apply(&refund(20, 3, "5.00"), Timestamp(T0), &mut effects);
        assert_eq!((net(&m, 3), net(&m, 2)), (8_500, 6_500));
    }

    #[test]
    fn refunds_find_their_customers_where_order_fingerprints_collide() {
        // 100,000 orders over 16-bit fingerprints: most fingerprints are shared by one order or more.
        let mut m = merchant();
        let mut effects = Vec::new();
        let customer_of = |order: u64| order % 997 + 1;
        for order_id in 1..=100_000u64 {
            let event = order(customer_of(order_id), order_id, "10.00");
            m.apply(&event, Timestamp(T0), &mut effects);
        }
        for order in (1..=100_000u64).step_by(101) {
            m.apply(&refund(order, order, "1.00"), Timestamp(T0), &mut effects);
        }
        for customer in [1, 500, 997] {
            let state = m.customer(customer).unwrap();
            let refunded = (1..=100_000u64)
                .step_by(101)
                .filter(|o| customer_of(*o) == customer)
                .count() as i64;
            let orders = state.aggregate.orders().len() as i64;
            assert_eq!(
                state.aggregate.totals().net.minor(),
                orders * 1_000 - refunded * 100
            );
        }
        assert!(m.orphan_refunds.is_empty(), "every refund found its order");
    }

    #[test]
    fn reconfiguring_rescores_everyone_at_once() {
        let mut m = merchant();
        let mut effects = Vec::new();
        m.apply(&order(1, 1, "150.00"), Timestamp(T0), &mut effects);
        effects.clear();
        let small = RfmConfig::from_aov(functions::SizePreset::Small.aov());
        m.reconfigure(small, Timestamp(T0), &mut effects);
        assert_eq!(effects.len(), 1, "$150 is M3 at a $100 AOV and M5 at $20");
        let Effect::Changed { transition, .. } = &effects[0] else {
            panic!("{effects:?}")
        };
        assert_eq!(transition.to.rfm().monetary, 5);
    }
}
