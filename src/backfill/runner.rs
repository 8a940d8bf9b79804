//! The backfills one instance runs, as tasks it owns: those it starts after an install, and the unfinished ones
//! (of any instance) it finds in `backfill_runs` with nobody holding them: at start, and again every half lease,
//! so a backfill whose instance was redeployed or died is continued by another from its last acknowledged line.
//!
//! Each task holds its shop's lease (`lease`) and renews it while it works; a lost lease (renewals failing for a
//! whole lease, or another owner after it expired) ends the task. On a stop the tasks are cancelled between two
//! awaits (what the broker acknowledged is recorded; the rest is produced again by whoever continues, with the
//! same ids), their leases released so another instance continues at once, and joined.

use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use dashmap::DashSet;
use streams::MerchantId;
use tokio::sync::watch;
use tokio::task::JoinSet;

use super::lease::Leases;
use super::progress::ProgressError;
use super::Backfill;

/// What a start after an install did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Start {
    Started,
    /// This instance or another already runs the shop's backfill.
    Running,
    /// The instance is stopping; the next instance's scan continues what is unfinished.
    Stopping,
}

/// The instance's backfill tasks.
pub struct Backfills {
    pub backfill: Arc<Backfill>,
    /// `None` without Postgres (the embedded demo): one process, nothing to share or resume.
    leases: Option<Leases>,
    /// Shops this instance runs, so a second install call or a scan does not start another.
    running: DashSet<MerchantId>,
    tasks: Mutex<JoinSet<()>>,
    stop: watch::Sender<bool>,
}

impl Backfills {
    pub fn new(backfill: Arc<Backfill>, leases: Option<Leases>) -> Arc<Backfills> {
        Arc::new(Backfills {
            backfill,
            leases,
            running: DashSet::new(),
            tasks: Mutex::default(),
            stop: watch::Sender::new(false),
        })
    }

    /// Starts `shop`'s backfill unless it runs here or under another instance's lease.
    pub async fn start(
        self: &Arc<Self>,
        shop: &MerchantId,
        token: String,
    ) -> Result<Start, ProgressError> {
        if *self.stop.borrow() {
            return Ok(Start::Stopping);
        }
        // `insert` is the check: two install calls at once start one backfill.
        if !self.running.insert(shop.clone()) {
            return Ok(Start::Running);
        }
        let claimed_at = Instant::now();
        let claimed = match &self.leases {
            Some(leases) => leases.claim_for_start(shop).await,
            None => Ok(true),
        };
        match claimed {
            Ok(true) if self.spawn(shop.clone(), token, claimed_at) => Ok(Start::Started),
            Ok(true) => {
                self.let_go(shop).await;
                Ok(Start::Stopping)
            }
            Ok(false) => {
                self.running.remove(shop);
                Ok(Start::Running)
            }
            Err(e) => {
                self.running.remove(shop);
                Err(e.into())
            }
        }
    }

    /// Starts the task that continues unfinished backfills (only with Postgres: elsewhere nothing survives the
    /// process to be continued).
    pub fn resume_unfinished(self: &Arc<Self>) {
        if self.leases.is_none() {
            return;
        }
        let this = self.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        if !*self.stop.borrow() {
            tasks.spawn(this.scan_forever());
        }
    }

    /// Cancels every task, releases its lease and waits for all of them.
    pub async fn shutdown(&self) {
        self.stop.send_replace(true);
        let mut tasks = std::mem::take(&mut *self.tasks.lock().unwrap_or_else(|p| p.into_inner()));
        while let Some(done) = tasks.join_next().await {
            if let Err(e) = done {
                tracing::warn!(error = %e, "a backfill task ended abnormally");
            }
        }
    }

    /// Resolves once a stop was asked for.
    fn stopped(&self) -> impl std::future::Future<Output = ()> + Send + 'static {
        let mut rx = self.stop.subscribe();
        async move {
            let _ = rx.wait_for(|stopped| *stopped).await;
        }
    }

    async fn scan_forever(self: Arc<Self>) {
        let Some(leases) = self.leases.clone() else {
            return;
        };
        let every = (leases.ttl / 2).max(Duration::from_millis(50));
        let stopped = self.stopped();
        tokio::pin!(stopped);
        loop {
            if let Err(e) = self.scan(&leases).await {
                tracing::warn!(error = %e, "could not look for unfinished backfills");
            }
            tokio::select! {
                _ = &mut stopped => return,
                _ = tokio::time::sleep(every) => {}
            }
        }
    }

    /// Claims and continues every unfinished backfill nobody holds.
    async fn scan(self: &Arc<Self>, leases: &Leases) -> Result<(), sqlx::Error> {
        for shop in leases.unclaimed().await? {
            if !self.running.insert(shop.clone()) {
                continue;
            }
            let claimed_at = Instant::now();
            match leases.claim_unfinished(&shop).await {
                Ok(true) => {}
                // Another instance was quicker.
                Ok(false) => {
                    self.running.remove(&shop);
                    continue;
                }
                // Not marked as running here, or no later scan (and no install) would ever try the shop again.
                Err(e) => {
                    self.running.remove(&shop);
                    return Err(e);
                }
            }
            let keys = &self.backfill.keys;
            match crate::shopify::access::offline_token(&leases.pool, keys, &shop).await {
                Ok(Some(token)) => {
                    tracing::info!(merchant = %shop, "continuing an unfinished backfill");
                    if !self.spawn(shop.clone(), token, claimed_at) {
                        self.let_go(&shop).await;
                    }
                }
                outcome => {
                    let why = outcome
                        .err()
                        .map_or_else(|| "no token".into(), |e| e.to_string());
                    tracing::warn!(merchant = %shop, error = %why, "cannot continue the backfill without the shop's token");
                    self.let_go(&shop).await;
                }
            }
        }
        Ok(())
    }

    /// Runs the backfill as an owned task; false when the instance is stopping (the caller lets the shop go).
    fn spawn(self: &Arc<Self>, shop: MerchantId, token: String, claimed_at: Instant) -> bool {
        let this = self.clone();
        let mut tasks = self.tasks.lock().unwrap_or_else(|p| p.into_inner());
        // Under the lock `shutdown` takes the set with, so no task is spawned into a set nobody joins.
        if *self.stop.borrow() {
            return false;
        }
        while tasks.try_join_next().is_some() {}
        tasks.spawn(this.drive(shop, token, claimed_at));
        true
    }

    async fn drive(self: Arc<Self>, shop: MerchantId, token: String, claimed_at: Instant) {
        let stopped = self.stopped();
        tokio::select! {
            outcome = self.backfill.run(&shop, &token, &|_| {}) => match outcome {
                // `Backfill::run` logged the outcome.
                Ok(_) => {}
                // Left resumable unless Shopify failed it: the next scan (any instance) tries again.
                Err(e) => tracing::warn!(merchant = %shop, error = %e, "backfill did not finish"),
            },
            () = self.hold(&shop, claimed_at) => {
                tracing::warn!(merchant = %shop, "backfill lease lost; another instance continues it");
            }
            () = stopped => tracing::info!(merchant = %shop, "backfill paused by the stop"),
        }
        self.let_go(&shop).await;
    }

    /// Renews the shop's lease every third of it; resolves when it is lost or may be.
    ///
    /// The holder's own deadline is counted from when its last successful claim or renewal was *sent*, which is
    /// no later than the `now()` Postgres stamped the lease with: the holder therefore stops before any other
    /// instance can claim the shop, however slow Postgres answers (a renewal that has not come back by then counts
    /// as failed).
    async fn hold(&self, shop: &MerchantId, claimed_at: Instant) {
        let Some(leases) = &self.leases else {
            return std::future::pending().await;
        };
        // A fifth of the lease is kept in hand: a timer that fires late, or work that does not yield for a moment,
        // must still end before Postgres's `lease_until` lets another instance claim the shop.
        let margin = leases.ttl / 5;
        let mut valid_until = claimed_at + leases.ttl - margin;
        let mut next = claimed_at + leases.ttl / 3;
        loop {
            tokio::time::sleep_until(next.into()).await;
            let sent = Instant::now();
            match tokio::time::timeout_at(valid_until.into(), leases.renew(shop)).await {
                Ok(Ok(true)) => {
                    valid_until = sent + leases.ttl - margin;
                    next = sent + leases.ttl / 3;
                }
                Ok(Ok(false)) => return,
                Ok(Err(e)) if Instant::now() < valid_until => {
                    tracing::warn!(merchant = %shop, error = %e, "backfill lease renewal failed; retrying");
                    next = Instant::now() + leases.ttl / 10;
                }
                Ok(Err(_)) | Err(_) => {
                    tracing::warn!(merchant = %shop, "backfill lease not renewed in time");
                    return;
                }
            }
        }
    }

    async fn let_go(&self, shop: &MerchantId) {
        if let Some(leases) = &self.leases {
            if let Err(e) = leases.release(shop).await {
                // The lease then runs out by itself.
                tracing::warn!(merchant = %shop, error = %e, "could not release the backfill lease");
            }
        }
        self.running.remove(shop);
    }
}
