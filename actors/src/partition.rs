//! The partition actor: owns every merchant whose key hashes to one Kafka partition (across all co-partitioned
//! input topics), applies batches of events in offset order, fires recency timers, and returns what must be
//! published. It performs no I/O itself: the caller publishes the changes and only then stores the offsets the
//! batch covered, which is what makes consumption at-least-once with idempotent effects.

use std::collections::HashMap;

use functions::{churn_risk, RfmConfig, Timestamp};
use streams::{InputEvent, MerchantId};

use crate::merchant::{Effect, MerchantState};
use crate::timers::TimerQueue;
pub use crate::vocab::{Change, Configs, LiveCounts, Outcome, RawRecord};

/// Stale timer entries tolerated beyond one per customer before the queue is rebuilt, so small partitions never
/// rebuild.
const STALE_TIMERS_SLACK: usize = 4096;

pub struct PartitionCore {
    pub partition: i32,
    pub(crate) slots: HashMap<MerchantId, u32>,
    pub(crate) merchants: Vec<MerchantState>,
    pub(crate) timers: TimerQueue,
    /// Set during a restore's quiet replay (see `restore`).
    pub(crate) quiet: Option<restore::QuietBefore>,
    /// A finished restore's customers whose net change is still to be published.
    pub(crate) restore_queue: restore::RestoreQueue,
    /// Which merchants changed since the last snapshot round (see `snapshot::pieces`).
    pub(crate) pieces: crate::ledger::PieceLedger,
    /// Re-scores whose moves are still being published (see `moves`).
    pub(crate) pending: Vec<moves::PendingMoves>,
}

impl PartitionCore {
    pub fn new(partition: i32) -> Self {
        PartitionCore {
            partition,
            slots: HashMap::new(),
            merchants: Vec::new(),
            timers: TimerQueue::default(),
            quiet: None,
            restore_queue: Default::default(),
            pieces: Default::default(),
            pending: Vec::new(),
        }
    }

    pub(crate) fn slot(&mut self, merchant: &MerchantId, configs: &Configs) -> u32 {
        if let Some(slot) = self.slots.get(merchant) {
            return *slot;
        }
        let config = configs.get(merchant).map(|c| c.clone()).unwrap_or_default();
        let slot = self.merchants.len() as u32;
        self.merchants
            .push(MerchantState::new(merchant.clone(), config));
        self.slots.insert(merchant.clone(), slot);
        slot
    }

    pub fn merchant(&self, merchant: &MerchantId) -> Option<&MerchantState> {
        self.slots
            .get(merchant)
            .map(|s| &self.merchants[*s as usize])
    }

    pub fn merchants(&self) -> impl Iterator<Item = &MerchantState> {
        self.merchants.iter()
    }

    pub fn timers(&self) -> &TimerQueue {
        &self.timers
    }

    /// Applies events in order at `now`.
    pub fn apply(&mut self, events: &[InputEvent], now: Timestamp, configs: &Configs) -> Outcome {
        let mut outcome = Outcome::default();
        let mut effects = Vec::new();
        let mut touched: Vec<(u32, u64)> = Vec::new();
        // How many waiting moves this step may still publish (see `moves`).
        let mut budget = MOVES_CHUNK;
        for event in events {
            let slot = self.slot(event.merchant_id(), configs);
            self.pieces.touch(slot);
            // Batches are mostly runs of one merchant's events, so checking the last entry avoids a map.
            match touched.iter_mut().rev().find(|(s, _)| *s == slot) {
                Some((_, n)) => *n += 1,
                None => touched.push((slot, 1)),
            }
            self.publish_moves_before(slot, event, &mut outcome);
            effects.clear();
            let merchant = &mut self.merchants[slot as usize];
            let old_keys =
                config_change(event, merchant, configs).then(|| segment_keys(&merchant.config));
            if let (Some(old_keys), InputEvent::ConfigChanged(e)) = (&old_keys, event) {
                merchant.config_revision = e.revision.unwrap_or(merchant.config_revision);
                let moves = merchant.rescore_under(e.config.clone(), now);
                let trace = event.event_id().to_owned();
                let fits = moves.len() <= budget;
                self.queue_moves(slot, moves, old_keys.clone(), trace, now);
                // A small merchant's moves all come out here, in place. A big one's re-score is this step's whole
                // allowance: a chunk on top of re-scoring a million customers would double what the other
                // merchants of the partition wait, so its moves go out from the next step on.
                budget = if fits {
                    self.publish_moves_within(budget, &mut outcome)
                } else {
                    0
                };
                self.schedule_touched(slot, now);
                continue;
            }
            let applied = merchant.apply(event, now, &mut effects);
            // Not for an event an erasure refused: its personal data belongs to the ended relationship.
            if let (true, Some((customer, pii))) = (applied, sealed_pii(event)) {
                outcome
                    .pii
                    .push((merchant.id.clone(), customer, pii.clone()));
            }
            let locale = match event {
                InputEvent::OrderCreated(e) => e.locale.clone(),
                InputEvent::CustomerCreated(e) => e.locale.clone(),
                _ => None,
            };
            let first = outcome.changes.len();
            self.collect(slot, &effects, now, event.event_id(), locale, &mut outcome);
            if let Some(old_keys) = old_keys {
                rename_froms(&mut outcome.changes[first..], &effects, &old_keys);
            }
            self.schedule_touched(slot, now);
        }
        self.publish_moves_within(budget, &mut outcome);
        outcome.live = touched
            .into_iter()
            .map(|(slot, events)| self.live_counts(slot, events))
            .collect();
        outcome
    }

    pub(crate) fn live_counts(&self, slot: u32, events: u64) -> LiveCounts {
        let merchant = &self.merchants[slot as usize];
        let segments = merchant
            .config
            .segments
            .iter()
            .zip(merchant.segment_counts());
        LiveCounts {
            merchant: merchant.id.clone(),
            segments: segments
                .map(|(rule, n)| (rule.key.clone(), rule.display_name("en").to_owned(), *n))
                .collect(),
            events,
        }
    }

    /// Fires every recency boundary due at `now`.
    pub fn tick(&mut self, now: Timestamp) -> Outcome {
        let merchants = &self.merchants;
        let due: Vec<(u32, u64)> = self
            .timers
            .pop_due(now)
            .into_iter()
            .filter_map(|(slot, customer)| {
                let id = merchants.get(slot as usize)?.customer_in(customer)?;
                Some((slot, id))
            })
            .collect();
        // A boundary's change comes after the customer's waiting move, as an event's does.
        let mut outcome = Outcome::default();
        for (slot, customer) in &due {
            self.publish_move_of(*slot, *customer, &mut outcome);
        }
        let mut boundaries = self.rescore_all(due, now, &format!("timer:{}", now.unix()));
        outcome.changes.append(&mut boundaries.changes);
        outcome.live = boundaries.live;
        self.publish_moves(&mut outcome);
        // Not while moves wait: their boundaries are still being scheduled, so the queue is not complete.
        if self.pending.is_empty() {
            self.drop_stale_timers(now);
        }
        outcome
    }

    /// Rebuilds the timer queue from each customer's next boundary once stale entries make up a third of it.
    /// Only right after a tick: every boundary up to `now` has fired then, so each customer's next boundary after
    /// `now` is exactly the one its entries would have found.
    fn drop_stale_timers(&mut self, now: Timestamp) {
        let customers: usize = self.merchants.iter().map(MerchantState::len).sum();
        if self.timers.len() <= customers + customers / 2 + STALE_TIMERS_SLACK {
            return;
        }
        let merchants = &self.merchants;
        let entries = merchants.iter().enumerate().flat_map(|(slot, merchant)| {
            merchant
                .customers
                .iter()
                .filter_map(move |(customer, _, _)| {
                    merchant
                        .next_change_in(customer, now)
                        .map(|at| (at, slot as u32, customer))
                })
        });
        self.timers.rebuild(entries);
    }

    /// Re-evaluates each `(slot, customer)` at `now`, schedules its next boundary, and returns the changes.
    pub(crate) fn rescore_all(
        &mut self,
        due: impl IntoIterator<Item = (u32, u64)>,
        now: Timestamp,
        trace: &str,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let mut effects = Vec::new();
        let mut touched: Vec<u32> = Vec::new();
        for (slot, customer_id) in due {
            if !touched.contains(&slot) {
                touched.push(slot);
            }
            effects.clear();
            let merchant = &mut self.merchants[slot as usize];
            if let Some(customer) = merchant.slot_of(customer_id) {
                merchant.rescore(customer, now, &mut effects);
                if let Some(next) = merchant.next_change_in(customer, now) {
                    self.timers.schedule(next, slot, customer);
                }
            }
            // A boundary that moved nobody changed nothing a snapshot holds.
            if !effects.is_empty() {
                self.pieces.touch(slot);
            }
            self.collect(slot, &effects, now, trace, None, &mut outcome);
        }
        outcome.live = touched
            .into_iter()
            .map(|slot| self.live_counts(slot, 0))
            .collect();
        outcome
    }

    /// A new configuration for one merchant: re-score all of its customers now.
    pub fn reconfigure(
        &mut self,
        merchant: &MerchantId,
        config: RfmConfig,
        now: Timestamp,
    ) -> Outcome {
        let mut outcome = Outcome::default();
        let Some(slot) = self.slots.get(merchant).copied() else {
            return outcome;
        };
        let mut effects = Vec::new();
        self.publish_all_moves_of(slot, &mut outcome);
        // Transitions name their "from" segment by its index in the table being replaced.
        let old_keys: Vec<String> = segment_keys(&self.merchants[slot as usize].config);
        self.pieces.touch(slot);
        self.merchants[slot as usize].reconfigure(config, now, &mut effects);
        let first = outcome.changes.len();
        self.collect(
            slot,
            &effects,
            now,
            &format!("config:{}", now.unix()),
            None,
            &mut outcome,
        );
        rename_froms(&mut outcome.changes[first..], &effects, &old_keys);
        self.schedule_touched(slot, now);
        outcome.live.push(self.live_counts(slot, 0));
        outcome
    }

    pub(crate) fn schedule_touched(&mut self, slot: u32, now: Timestamp) {
        let merchant = &mut self.merchants[slot as usize];
        for customer in merchant.take_touched() {
            if let Some(next) = merchant.next_change_in(customer, now) {
                self.timers.schedule(next, slot, customer);
            }
        }
    }

    pub(crate) fn collect(
        &self,
        slot: u32,
        effects: &[Effect],
        now: Timestamp,
        trace_id: &str,
        locale: Option<String>,
        outcome: &mut Outcome,
    ) {
        let merchant = &self.merchants[slot as usize];
        for effect in effects {
            match effect {
                Effect::Changed {
                    customer_id,
                    transition,
                    order_added,
                } => {
                    // `get`: after a reconfiguration the "from" index may be outside the new table; the caller
                    // renames it from the old one.
                    let key = |i: u8| {
                        let rule = merchant.config.segments.get(usize::from(i));
                        rule.map_or_else(String::new, |r| r.key.clone())
                    };
                    let customer = merchant.customer(*customer_id);
                    let totals = customer.map(|c| c.aggregate.totals()).unwrap_or_default();
                    let points = customer.map_or(0, |c| c.aggregate.points());
                    let to_segment = key(transition.to.segment);
                    let rfm = transition.to.rfm();
                    let entered_at_risk = to_segment == "at_risk" && transition.segment_changed();
                    outcome.changes.push(Change {
                        merchant: merchant.id.clone(),
                        customer_id: *customer_id,
                        version: transition.version,
                        from_segment: key(transition.from.segment),
                        to_segment,
                        rfm,
                        score_tenths: rfm.score_tenths(&merchant.config),
                        stage: transition.to.stage,
                        orders: totals.orders,
                        net_spend: totals.net,
                        currency_exponent: merchant.currency_exponent(),
                        last_order: totals.last_order,
                        churn_risk: entered_at_risk
                            .then(|| churn_risk(&totals, &merchant.config, now).score),
                        occurred_at: now,
                        trace_id: trace_id.to_owned(),
                        locale: locale.clone(),
                        event_ms: None,
                        traceparent: None,
                        order_added: *order_added,
                        points,
                    });
                }
                Effect::Redacted { customer_id } => outcome.redactions.push((
                    merchant.id.clone(),
                    Some(*customer_id),
                    trace_id.to_owned(),
                )),
                Effect::ShopRedacted => {
                    outcome
                        .redactions
                        .push((merchant.id.clone(), None, trace_id.to_owned()))
                }
                Effect::DataRequested {
                    customer_id,
                    data_request_id,
                } => outcome.data_requests.push(crate::held::DataRequest {
                    merchant: merchant.id.clone(),
                    customer_id: *customer_id,
                    data_request_id: *data_request_id,
                    event_id: trace_id.to_owned(),
                    held: merchant
                        .customer(*customer_id)
                        .map(|state| crate::held::HeldCustomer::of(state, &merchant.config)),
                }),
            }
        }
    }
}

fn sealed_pii(event: &InputEvent) -> Option<(u64, &streams::events::SealedPii)> {
    match event {
        InputEvent::OrderCreated(e) => Some((e.customer_id, e.pii.as_ref()?)),
        InputEvent::CustomerCreated(e) => Some((e.customer_id, e.pii.as_ref()?)),
        _ => None,
    }
}

/// Whether `event` is a saved configuration `merchant` will apply (not an older revision); if so it also becomes
/// the one a merchant seen for the first time after this (on this instance) starts from.
fn config_change(event: &InputEvent, merchant: &MerchantState, configs: &Configs) -> bool {
    if let InputEvent::ShopRedact(e) = event {
        // The erased shop's saved configuration goes with it (the merchant state resets to the default too).
        configs.remove(&e.merchant_id);
        return false;
    }
    let InputEvent::ConfigChanged(e) = event else {
        return false;
    };
    if !merchant.accepts_config(e) {
        return false;
    }
    configs.insert(e.merchant_id.clone(), e.config.clone());
    true
}

/// Transitions of a reconfiguration name their "from" segment by its index in the replaced table: `changes` (the
/// changes `effects` produced, in order) get the old table's keys.
fn rename_froms(changes: &mut [Change], effects: &[Effect], old_keys: &[String]) {
    let froms = effects.iter().filter_map(|e| match e {
        Effect::Changed { transition, .. } => Some(usize::from(transition.from.segment)),
        _ => None,
    });
    for (change, from) in changes.iter_mut().zip(froms) {
        change.from_segment = old_keys.get(from).cloned().unwrap_or_default();
    }
}

fn segment_keys(config: &RfmConfig) -> Vec<String> {
    config.segments.iter().map(|s| s.key.clone()).collect()
}

mod actor;
pub(crate) mod moves;
pub mod restore;
pub use actor::{ApplyBatch, Inspect, PartitionActor, Reconfigure, Tick};
pub use moves::MOVES_CHUNK;

/// A change with plausible scores, for tests of what is done with changes.
#[cfg(test)]
pub(crate) fn test_change(
    shop: &str,
    customer_id: u64,
    version: u32,
    from: &str,
    to: &str,
) -> Change {
    Change {
        merchant: MerchantId::parse(shop).expect("a test shop domain"),
        customer_id,
        version,
        from_segment: from.into(),
        to_segment: to.into(),
        rfm: functions::Rfm::new(3, 2, 4),
        score_tenths: 30,
        stage: functions::LifecycleStage::RepeatBuyer,
        orders: 2,
        net_spend: functions::Money::from_minor(4_200),
        currency_exponent: 2,
        last_order: None,
        churn_risk: None,
        occurred_at: Timestamp::from_unix(1_790_000_000),
        trace_id: "test".into(),
        locale: None,
        event_ms: None,
        traceparent: None,
        order_added: None,
        points: 0,
    }
}
