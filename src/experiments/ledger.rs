//! The nudge ledger: where experiments, the fate of each fired nudge (shown, held out, capped), the shopper's
//! reports and the conversions are kept, behind one interface with two implementations. [`PgLedger`] keeps them
//! in Postgres (`nudge_experiments`, `nudges`, `nudge_events`), which every instance and every restart sees: it
//! is the only one a deployment uses. [`MemoryLedger`](super::memory::MemoryLedger) keeps them in this process
//! and is used only when there is no `DATABASE_URL` in the embedded demo, so its A/B panel fills with nothing
//! installed; it forgets everything on exit and knows nothing of other instances.
//!
//! The routes, the publisher and the results ask the ledger, never the tables, so both implementations make the
//! same decisions: the cap's rule (`delivery::decide`), the credit of an order (`functions::nudge::attribution`)
//! and the arithmetic of the results (`results`) are shared; only the keeping differs.

use std::collections::HashSet;
use std::sync::Arc;

use actors::customer::{CustomerKey, PendingNudge};
use actors::Change;
use functions::nudge::cap::FrequencyCap;
use functions::nudge::experiment::Experiment;
use functions::nudge::stats::ArmCounts;
use futures_util::future::BoxFuture;
use futures_util::FutureExt;
use sqlx::Row;
use streams::MerchantId;

use super::store::{Saved, StoredExperiment};
use crate::store::{Store, StoreError};

/// A ledger call's answer.
pub type LedgerFuture<'a, T> = BoxFuture<'a, Result<T, StoreError>>;

/// A section of the results: one experiment of a kind, or the kind's nudges outside any (`experiment_id` none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Group {
    pub kind: String,
    pub experiment_id: Option<String>,
}

/// Nudges of one group, variant and status (`shown`, `holdout`, `capped`), with what became of them.
#[derive(Debug, Clone, PartialEq)]
pub struct Counted {
    pub group: Group,
    pub variant: String,
    pub status: String,
    pub counts: ArmCounts,
}

/// A shopper's report about a nudge, parsed at the edge (`widget::events`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Report<'a> {
    pub nudge_id: &'a str,
    /// `view`, `click` or `dismiss`.
    pub action: &'static str,
    /// The widget's id of the report, which makes a retry a no-op.
    pub event_id: uuid::Uuid,
}

/// What storing a shopper's report did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Recorded {
    /// Stored now.
    New,
    /// This event id was stored before (a retried report).
    Duplicate,
    /// The nudge was never shown to this customer (held out, capped, or not fired): nothing stored.
    NotShown,
}

/// Where nudge experiments and outcomes are kept (see the module docs).
pub trait NudgeLedger: Send + Sync {
    /// Saves `experiment` as the merchant's running experiment of its kind, ending the one running before.
    fn save_experiment<'a>(
        &'a self,
        merchant: &'a MerchantId,
        experiment: &'a Experiment,
        actor: &'a str,
    ) -> LedgerFuture<'a, Saved>;

    /// Every experiment of the merchant, running or ended, newest first.
    fn experiments<'a>(
        &'a self,
        merchant: &'a MerchantId,
    ) -> LedgerFuture<'a, Vec<StoredExperiment>>;

    /// Decides and records the fate of fired nudges (the cap, `delivery`), and of held-out ones; returns the ids
    /// of those to show. A replay keeps the fates decided the first time.
    fn record_fates<'a>(
        &'a self,
        cap: FrequencyCap,
        nudges: &'a [PendingNudge],
        held_out: &'a [PendingNudge],
    ) -> LedgerFuture<'a, HashSet<String>>;

    /// Stores a shopper's report, once per event id, and only about a nudge shown to that customer.
    fn record_event<'a>(
        &'a self,
        customer: &'a CustomerKey,
        report: Report<'a>,
    ) -> LedgerFuture<'a, Recorded>;

    /// Credits the orders `changes` added to the nudges they convert. Postgres does this inside the transaction
    /// that writes the changes (`store::conversions`), so there this does nothing.
    fn record_conversions<'a>(&'a self, changes: &'a [Change]) -> LedgerFuture<'a, ()>;

    /// Forgets an erased customer's nudges and events. Postgres erases them with the customer's other rows
    /// (`gdpr`), so there this does nothing.
    fn erase<'a>(&'a self, merchant: &'a MerchantId, customer_id: u64) -> LedgerFuture<'a, ()>;

    /// The merchant's nudges per group, variant and status, with their views, clicks, dismissals, conversions and
    /// revenue, each nudge counting once per kind of event.
    fn counts<'a>(&'a self, merchant: &'a MerchantId) -> LedgerFuture<'a, Vec<Counted>>;
}

/// A shared ledger.
pub type Ledger = Arc<dyn NudgeLedger>;

/// The ledger in Postgres.
#[derive(Clone)]
pub struct PgLedger(pub Store);

impl NudgeLedger for PgLedger {
    fn save_experiment<'a>(
        &'a self,
        merchant: &'a MerchantId,
        experiment: &'a Experiment,
        actor: &'a str,
    ) -> LedgerFuture<'a, Saved> {
        super::store::save(&self.0, merchant, experiment, actor).boxed()
    }

    fn experiments<'a>(
        &'a self,
        merchant: &'a MerchantId,
    ) -> LedgerFuture<'a, Vec<StoredExperiment>> {
        super::store::of_merchant(&self.0, merchant).boxed()
    }

    fn record_fates<'a>(
        &'a self,
        cap: FrequencyCap,
        nudges: &'a [PendingNudge],
        held_out: &'a [PendingNudge],
    ) -> LedgerFuture<'a, HashSet<String>> {
        super::delivery::record(&self.0, cap, nudges, held_out).boxed()
    }

    fn record_event<'a>(
        &'a self,
        customer: &'a CustomerKey,
        report: Report<'a>,
    ) -> LedgerFuture<'a, Recorded> {
        store_report(&self.0, customer, report).boxed()
    }

    fn record_conversions<'a>(&'a self, _changes: &'a [Change]) -> LedgerFuture<'a, ()> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn erase<'a>(&'a self, _merchant: &'a MerchantId, _customer_id: u64) -> LedgerFuture<'a, ()> {
        futures_util::future::ready(Ok(())).boxed()
    }

    fn counts<'a>(&'a self, merchant: &'a MerchantId) -> LedgerFuture<'a, Vec<Counted>> {
        super::results::pg_counts(&self.0, merchant).boxed()
    }
}

/// The ledger a process uses: Postgres when it has a store, else the in-memory one when `memory` (the demo),
/// else none (experiments and events then answer 503, and every fired nudge is shown).
pub fn ledger(store: Option<&Store>, memory: bool, settings: super::NudgeRules) -> Option<Ledger> {
    match store {
        Some(store) => Some(Arc::new(PgLedger(store.clone()))),
        None if memory => Some(Arc::new(super::memory::MemoryLedger::new(
            settings.attribution,
        ))),
        None => None,
    }
}

/// Stores a report in Postgres, only when the nudge was shown to this customer (a held-out, capped or unknown
/// nudge stores nothing, so no report can inflate an arm it was never part of), once per event id; one statement.
async fn store_report(
    store: &Store,
    customer: &CustomerKey,
    report: Report<'_>,
) -> Result<Recorded, StoreError> {
    let row = sqlx::query(
        "WITH shown AS (
             SELECT 1 FROM nudges
             WHERE merchant_id = $1 AND nudge_id = $2 AND customer_id = $4 AND status = 'shown'),
         ins AS (
             INSERT INTO nudge_events (merchant_id, nudge_id, kind, customer_id, event_id)
             SELECT $1, $2, $3, $4, $5 WHERE EXISTS (SELECT 1 FROM shown)
             ON CONFLICT (merchant_id, event_id) DO NOTHING
             RETURNING 1)
         SELECT EXISTS (SELECT 1 FROM shown) AS shown, EXISTS (SELECT 1 FROM ins) AS inserted",
    )
    .bind(customer.merchant.as_str())
    .bind(report.nudge_id)
    .bind(report.action)
    .bind(customer.customer_id as i64)
    .bind(report.event_id.to_string())
    .fetch_one(store.pool())
    .await?;
    let (shown, inserted): (bool, bool) = (row.try_get("shown")?, row.try_get("inserted")?);
    Ok(match (shown, inserted) {
        (false, _) => Recorded::NotShown,
        (true, true) => Recorded::New,
        (true, false) => Recorded::Duplicate,
    })
}
