//! The nudge ledger kept in this process, for the embedded demo without `DATABASE_URL` (see `ledger` for when it is
//! chosen). It makes the decisions the Postgres ledger makes, with the same shared rules: one lock stands in for
//! the per-customer advisory locks, maps keyed like the tables' unique indexes make replays and retried reports
//! no-ops, and conversions are credited by `functions::nudge::attribution` from the same touches. Nothing here
//! outlives the process or is seen by another instance, and nothing is ever evicted: it is sized for a demo, not
//! for a shop's lifetime.

use std::collections::{BTreeMap, HashMap, HashSet};
use std::sync::{Mutex, MutexGuard};

use actors::customer::{CustomerKey, PendingNudge};
use actors::Change;
use functions::nudge::attribution::{credit, AttributionWindow};
use functions::nudge::cap::FrequencyCap;
use functions::nudge::experiment::Experiment;
use functions::nudge::stats::ArmCounts;
use functions::{Money, Timestamp};
use futures_util::future::{ready, FutureExt};
use streams::MerchantId;

use super::delivery::{decide, Customer, Status};
use super::ledger::{Counted, Group, LedgerFuture, NudgeLedger, Recorded, Report};
use super::results::REVENUE_EXPONENT;
use super::store::{Saved, StoredExperiment};
use crate::store::conversions::{candidates, conversion_id, Touched};

/// One fired nudge's row, as `nudges` keeps it.
#[derive(Debug, Clone)]
struct NudgeRow {
    customer: Customer,
    version: u32,
    kind: String,
    experiment_id: Option<String>,
    variant: String,
    status: Status,
    at: Timestamp,
}

/// One event's row, as `nudge_events` keeps it.
#[derive(Debug, Clone)]
struct EventRow {
    nudge_id: String,
    customer: Customer,
    kind: &'static str,
    at: Timestamp,
    /// In thousandths, like `NUMERIC(20, 3)`.
    revenue: Option<i64>,
}

/// (merchant, event id): how `events` is keyed.
type EventKey = (String, String);

/// One customer's nudge ids and event keys.
type Theirs = (Vec<String>, Vec<EventKey>);

#[derive(Default)]
struct Tables {
    experiments: HashMap<String, Vec<StoredExperiment>>,
    revision: i64,
    /// Keyed by nudge id, which names the merchant.
    nudges: HashMap<String, NudgeRow>,
    /// When each customer was last shown a nudge (the cap's input), kept as rows are added.
    last_shown: HashMap<Customer, Timestamp>,
    /// Each customer's nudge ids and event keys, so crediting an order reads only its customer's rows.
    by_customer: HashMap<Customer, Theirs>,
    /// Keyed by (merchant, event id), like `nudge_events_once`.
    events: HashMap<EventKey, EventRow>,
}

/// The in-memory ledger.
pub struct MemoryLedger {
    tables: Mutex<Tables>,
    window: AttributionWindow,
}

impl MemoryLedger {
    pub fn new(window: AttributionWindow) -> MemoryLedger {
        MemoryLedger {
            tables: Mutex::new(Tables::default()),
            window,
        }
    }

    fn tables(&self) -> MutexGuard<'_, Tables> {
        // Every change below completes before the guard drops, so a panic elsewhere leaves consistent maps.
        self.tables.lock().unwrap_or_else(|p| p.into_inner())
    }
}

fn now() -> Timestamp {
    Timestamp::from_unix(chrono::Utc::now().timestamp())
}

impl Tables {
    fn save(&mut self, merchant: &MerchantId, experiment: &Experiment) -> Saved {
        let kind = experiment.kind;
        let list = self.experiments.entry(merchant.to_string()).or_default();
        if let Some(other) = list
            .iter()
            .find(|s| s.experiment.id == experiment.id && s.experiment.kind != kind)
        {
            return Saved::IdOfAnotherKind(other.experiment.kind.as_str().to_owned());
        }
        let mut replaced = None;
        for stored in list.iter_mut() {
            if stored.running
                && stored.experiment.kind == kind
                && stored.experiment.id != experiment.id
            {
                stored.running = false;
                replaced = Some(stored.experiment.id.to_string());
            }
        }
        self.revision += 1;
        let revision = self.revision;
        match list.iter_mut().find(|s| s.experiment.id == experiment.id) {
            Some(stored) => {
                stored.experiment = experiment.clone();
                stored.running = true;
                stored.revision = revision;
            }
            None => list.insert(
                0,
                StoredExperiment {
                    experiment: experiment.clone(),
                    running: true,
                    revision,
                    created_at: chrono::Utc::now(),
                },
            ),
        }
        Saved::Running { revision, replaced }
    }

    fn fates(
        &mut self,
        cap: FrequencyCap,
        nudges: &[PendingNudge],
        held_out: &[PendingNudge],
    ) -> HashSet<String> {
        let known: HashMap<String, Status> = nudges
            .iter()
            .filter_map(|n| {
                let id = n.nudge_id();
                self.nudges.get(&id).map(|row| (id, row.status))
            })
            .collect();
        let last: HashMap<Customer, Timestamp> = nudges
            .iter()
            .filter_map(|n| {
                let customer = (n.key.merchant.to_string(), n.key.customer_id as i64);
                let at = *self.last_shown.get(&customer)?;
                Some((customer, at))
            })
            .collect();
        let decided = decide(cap, nudges, &known, last);
        let rows = decided
            .iter()
            .map(|(n, s)| (*n, *s))
            .chain(held_out.iter().map(|n| (n, Status::Holdout)));
        for (n, status) in rows {
            if status == Status::Shown {
                let customer = (n.key.merchant.to_string(), n.key.customer_id as i64);
                let at = self.last_shown.entry(customer).or_insert(n.fired_at);
                *at = (*at).max(n.fired_at);
            }
            let id = n.nudge_id();
            if self.nudges.contains_key(&id) {
                continue;
            }
            let customer = (n.key.merchant.to_string(), n.key.customer_id as i64);
            self.by_customer
                .entry(customer.clone())
                .or_default()
                .0
                .push(id.clone());
            self.nudges.insert(
                id,
                NudgeRow {
                    customer,
                    version: n.version,
                    kind: n.kind.as_str().to_owned(),
                    experiment_id: n.experiment_id.as_deref().map(str::to_owned),
                    variant: n.variant.to_string(),
                    status,
                    at: n.fired_at,
                },
            );
        }
        decided
            .into_iter()
            .filter(|(_, s)| *s == Status::Shown)
            .map(|(n, _)| n.nudge_id())
            .collect()
    }

    fn event(&mut self, customer: &CustomerKey, event: Report<'_>) -> Recorded {
        let who = (customer.merchant.to_string(), customer.customer_id as i64);
        let shown = self
            .nudges
            .get(event.nudge_id)
            .is_some_and(|n| n.customer == who && n.status == Status::Shown);
        if !shown {
            return Recorded::NotShown;
        }
        let key = (who.0.clone(), event.event_id.to_string());
        if self.events.contains_key(&key) {
            return Recorded::Duplicate;
        }
        let theirs = self.by_customer.entry(who.clone()).or_default();
        theirs.1.push(key.clone());
        self.events.insert(
            key,
            EventRow {
                nudge_id: event.nudge_id.to_owned(),
                customer: who,
                kind: event.action,
                at: now(),
                revenue: None,
            },
        );
        Recorded::New
    }

    /// Views and clicks of shown nudges, and holdout assignments, of `customer` (the `touches` query's rows).
    fn touches(&self, customer: &Customer) -> Vec<Touched> {
        let Some((nudge_ids, event_keys)) = self.by_customer.get(customer) else {
            return Vec::new();
        };
        let events = event_keys
            .iter()
            .filter_map(|k| self.events.get(k))
            .filter(|e| e.kind == "view" || e.kind == "click");
        let shown = events.filter_map(|e| {
            let n = self.nudges.get(&e.nudge_id)?;
            (n.status == Status::Shown).then(|| touched(&e.nudge_id, n, e.at))
        });
        let held = nudge_ids.iter().filter_map(|id| {
            let n = self.nudges.get(id)?;
            (n.status == Status::Holdout).then(|| touched(id, n, n.at))
        });
        shown.chain(held).collect()
    }

    fn conversions(&mut self, changes: &[Change], window: AttributionWindow) {
        for change in changes {
            let Some(amount) = change.order_added else {
                continue;
            };
            let customer = (change.merchant.to_string(), change.customer_id as i64);
            let touches = self.touches(&customer);
            let Some(nudge_id) = credit(
                window,
                change.occurred_at,
                &candidates(&touches, change.version),
            )
            .map(|t| t.nudge_id.to_owned()) else {
                continue;
            };
            let key = (customer.0.clone(), conversion_id(change));
            if self.events.contains_key(&key) {
                continue;
            }
            let revenue = thousandths(amount, change.currency_exponent);
            let theirs = self.by_customer.entry(customer.clone()).or_default();
            theirs.1.push(key.clone());
            self.events.insert(
                key,
                EventRow {
                    nudge_id,
                    customer,
                    kind: "conversion",
                    at: change.occurred_at,
                    revenue: Some(revenue),
                },
            );
        }
    }

    fn erase(&mut self, merchant: &MerchantId, customer_id: u64) {
        let who = (merchant.to_string(), customer_id as i64);
        let Some((nudge_ids, event_keys)) = self.by_customer.remove(&who) else {
            return;
        };
        for id in nudge_ids {
            self.nudges.remove(&id);
        }
        for key in event_keys {
            self.events.remove(&key);
        }
        self.last_shown.remove(&who);
    }

    fn counts(&self, merchant: &MerchantId) -> Vec<Counted> {
        let mut per_nudge: HashMap<&str, (ArmCounts, i64)> = HashMap::new();
        for e in self
            .events
            .values()
            .filter(|e| e.customer.0 == merchant.as_str())
        {
            let (c, revenue) = per_nudge.entry(e.nudge_id.as_str()).or_default();
            match e.kind {
                "view" => c.viewed = 1,
                "click" => c.clicked = 1,
                "dismiss" => c.dismissed = 1,
                _ => c.converted = 1,
            }
            *revenue += e.revenue.unwrap_or(0);
        }
        let mut groups: BTreeMap<(Group, String, &'static str), (ArmCounts, i64)> = BTreeMap::new();
        let mine = self
            .nudges
            .iter()
            .filter(|(_, n)| n.customer.0 == merchant.as_str());
        for (id, n) in mine {
            let group = Group {
                kind: n.kind.clone(),
                experiment_id: n.experiment_id.clone(),
            };
            let (sum, revenue) = groups
                .entry((group, n.variant.clone(), n.status.as_str()))
                .or_default();
            let (one, its_revenue) = per_nudge.get(id.as_str()).copied().unwrap_or_default();
            sum.nudged += 1;
            sum.viewed += one.viewed;
            sum.clicked += one.clicked;
            sum.dismissed += one.dismissed;
            sum.converted += one.converted;
            *revenue += its_revenue;
        }
        groups
            .into_iter()
            .map(|((group, variant, status), (counts, revenue))| Counted {
                group,
                variant,
                status: status.to_owned(),
                counts: ArmCounts {
                    revenue: Money::from_minor(revenue),
                    ..counts
                },
            })
            .collect()
    }
}

fn touched(nudge_id: &str, n: &NudgeRow, at: Timestamp) -> Touched {
    Touched {
        nudge_id: nudge_id.to_owned(),
        version: n.version as i32,
        at,
    }
}

/// An amount in its currency's minor units as thousandths (the revenue column's scale).
fn thousandths(amount: Money, exponent: u8) -> i64 {
    let shift = i32::from(REVENUE_EXPONENT) - i32::from(exponent);
    match shift {
        0.. => amount
            .minor()
            .saturating_mul(10i64.saturating_pow(shift as u32)),
        _ => amount.minor() / 10i64.saturating_pow(shift.unsigned_abs()),
    }
}

impl NudgeLedger for MemoryLedger {
    fn save_experiment<'a>(
        &'a self,
        merchant: &'a MerchantId,
        experiment: &'a Experiment,
        _actor: &'a str,
    ) -> LedgerFuture<'a, Saved> {
        ready(Ok(self.tables().save(merchant, experiment))).boxed()
    }

    fn experiments<'a>(
        &'a self,
        merchant: &'a MerchantId,
    ) -> LedgerFuture<'a, Vec<StoredExperiment>> {
        let list = self.tables().experiments.get(merchant.as_str()).cloned();
        ready(Ok(list.unwrap_or_default())).boxed()
    }

    fn record_fates<'a>(
        &'a self,
        cap: FrequencyCap,
        nudges: &'a [PendingNudge],
        held_out: &'a [PendingNudge],
    ) -> LedgerFuture<'a, HashSet<String>> {
        ready(Ok(self.tables().fates(cap, nudges, held_out))).boxed()
    }

    fn record_event<'a>(
        &'a self,
        customer: &'a CustomerKey,
        report: Report<'a>,
    ) -> LedgerFuture<'a, Recorded> {
        ready(Ok(self.tables().event(customer, report))).boxed()
    }

    fn record_conversions<'a>(&'a self, changes: &'a [Change]) -> LedgerFuture<'a, ()> {
        self.tables().conversions(changes, self.window);
        ready(Ok(())).boxed()
    }

    fn erase<'a>(&'a self, merchant: &'a MerchantId, customer_id: u64) -> LedgerFuture<'a, ()> {
        self.tables().erase(merchant, customer_id);
        ready(Ok(())).boxed()
    }

    fn counts<'a>(&'a self, merchant: &'a MerchantId) -> LedgerFuture<'a, Vec<Counted>> {
        ready(Ok(self.tables().counts(merchant))).boxed()
    }
}

#[cfg(test)]
#[path = "memory_tests.rs"]
mod tests;
