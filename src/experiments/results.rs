//! The results of a merchant's nudges per kind, experiment and arm, computed from `nudges` and `nudge_events`:
//! shown, capped, viewed, clicked, dismissed, converted, revenue, the conversion rate with its 95 % interval and
//! the lift over the holdout with its p-value (`functions::nudge::stats`). [`results`] is the one place this is
//! computed; the REST route serves it and the dashboard's live frame can call it too.
//!
//! Counts are of nudges (each fired nudge is one assignment), an event counting once per nudge whatever its
//! repeats. An arm's rate is converted over shown; the holdout's is converted over assigned (see
//! `functions::nudge::attribution` for why that comparison is conservative). Nudges outside any experiment are
//! reported per kind with `experiment_id: null`.
//!
//! A computation reads every nudge and event of the merchant (by `nudge_events (merchant_id, nudge_id)`), so
//! [`ResultsCache`] serves one computation to every request and frame for [`RESULTS_FRESH_FOR`].

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::{Duration, Instant};

use dashmap::DashMap;

use functions::nudge::experiment::HOLDOUT;
use functions::nudge::stats::{evaluate, ArmCounts, ArmResult};
use functions::Money;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;
use streams::MerchantId;

use super::ledger::{Counted, Group, Ledger, NudgeLedger};
use super::store::StoredExperiment;
use crate::store::{Store, StoreError};

/// Revenue is summed from `NUMERIC(20, 3)`.
pub(crate) const REVENUE_EXPONENT: u8 = 3;

/// How long computed results are served before they are computed again: the dashboard asks every few seconds
/// and every frame may carry them, while a computation reads all of a merchant's nudges and events.
pub const RESULTS_FRESH_FOR: Duration = Duration::from_secs(2);

/// Results per merchant, computed at most once per [`RESULTS_FRESH_FOR`] on this instance; a save through this
/// instance clears its merchant's entry, so a new experiment shows at once.
#[derive(Clone)]
pub struct ResultsCache {
    ledger: Ledger,
    window_seconds: i64,
    cache: Arc<DashMap<MerchantId, (Instant, Arc<Results>)>>,
}

/// The most shops whose results one instance keeps; past it, stale entries go first.
const CAPACITY: usize = 10_000;

impl ResultsCache {
    pub fn new(ledger: Ledger, window_seconds: i64) -> ResultsCache {
        ResultsCache {
            ledger,
            window_seconds,
            cache: Arc::new(DashMap::new()),
        }
    }

    pub fn ledger(&self) -> &dyn NudgeLedger {
        &*self.ledger
    }

    /// The merchant's results, fresh within [`RESULTS_FRESH_FOR`].
    pub async fn get(&self, merchant: &MerchantId) -> Result<Arc<Results>, StoreError> {
        let started = Instant::now();
        if let Some(entry) = self.cache.get(merchant) {
            let (at, results) = entry.value();
            if started.saturating_duration_since(*at) < RESULTS_FRESH_FOR {
                return Ok(results.clone());
            }
        }
        let computed = Arc::new(results(&*self.ledger, merchant, self.window_seconds).await?);
        if self.cache.len() >= CAPACITY {
            self.cache
                .retain(|_, (at, _)| started.saturating_duration_since(*at) < RESULTS_FRESH_FOR);
        }
        // Stamped with the time the computation began, so an entry never looks fresher than its data.
        self.cache
            .insert(merchant.clone(), (started, computed.clone()));
        Ok(computed)
    }

    /// Forgets the merchant's results: the next read computes them.
    pub fn invalidate(&self, merchant: &MerchantId) {
        self.cache.remove(merchant);
    }
}

#[derive(Debug, Serialize)]
pub struct Results {
    pub merchant: MerchantId,
    pub attribution_window_days: f64,
    pub experiments: Vec<Value>,
}

/// The merchant's results; `window_seconds` is the attribution window the conversions were recorded under.
pub async fn results(
    ledger: &dyn NudgeLedger,
    merchant: &MerchantId,
    window_seconds: i64,
) -> Result<Results, StoreError> {
    let defined = ledger.experiments(merchant).await?;
    let counted = ledger.counts(merchant).await?;
    let mut groups: BTreeMap<Group, Vec<(String, String, ArmCounts)>> = BTreeMap::new();
    for c in counted {
        groups
            .entry(c.group)
            .or_default()
            .push((c.variant, c.status, c.counts));
    }
    for stored in &defined {
        let group = Group {
            kind: stored.experiment.kind.as_str().to_owned(),
            experiment_id: Some(stored.experiment.id.to_string()),
        };
        groups.entry(group).or_default();
    }
    let mut experiments: Vec<(bool, Value)> = groups
        .into_iter()
        .map(|(group, rows)| {
            let stored = defined
                .iter()
                .find(|s| Some(s.experiment.id.as_str()) == group.experiment_id.as_deref());
            (
                stored.is_some_and(|s| s.running),
                experiment(&group, stored, &rows),
            )
        })
        .collect();
    // Running experiments first; the rest by kind and id, as grouped.
    experiments.sort_by_key(|(running, _)| !running);
    Ok(Results {
        merchant: merchant.clone(),
        attribution_window_days: window_seconds as f64 / 86_400.0,
        experiments: experiments.into_iter().map(|(_, v)| v).collect(),
    })
}

/// One experiment's (or one kind's non-experiment nudges') section.
fn experiment(
    group: &Group,
    stored: Option<&StoredExperiment>,
    rows: &[(String, String, ArmCounts)],
) -> Value {
    // The defined arms in their order, then any variant only the rows know (an arm since renamed).
    let mut names: Vec<String> = stored
        .map(|s| s.experiment.arms.iter().map(|a| a.name.clone()).collect())
        .unwrap_or_default();
    for (variant, _, _) in rows {
        if variant != HOLDOUT && !names.contains(variant) {
            names.push(variant.clone());
        }
    }
    let arms: Vec<ArmCounts> = names.iter().map(|name| arm_counts(rows, name)).collect();
    let holdout = rows
        .iter()
        .find(|(v, s, _)| v == HOLDOUT && s == "holdout")
        .map(|(_, _, c)| *c)
        .or_else(|| {
            stored
                .filter(|s| s.experiment.holdout_bps > 0)
                .map(|_| ArmCounts::default())
        });
    let (arm_results, holdout_result) = evaluate(&arms, holdout.as_ref());
    let weight = |name: &str| {
        stored.and_then(|s| {
            s.experiment
                .arms
                .iter()
                .find(|a| a.name == name)
                .map(|a| a.weight)
        })
    };
    let arms: Vec<Value> = names
        .iter()
        .zip(&arm_results)
        .map(|(name, r)| {
            let mut v = numbers(r, "shown");
            v["variant"] = json!(name);
            v["weight"] = json!(weight(name));
            v
        })
        .collect();
    json!({
        "kind": group.kind,
        "experiment_id": group.experiment_id,
        "running": stored.is_some_and(|s| s.running),
        "holdout_percent": stored.map(|s| s.experiment.holdout_percent()),
        "started_at": stored.map(|s| s.created_at),
        "arms": arms,
        "holdout": holdout_result.map(|r| numbers(&r, "assigned")),
    })
}

/// An arm's counts: its shown nudges and their events, and how many the cap held back.
fn arm_counts(rows: &[(String, String, ArmCounts)], name: &str) -> ArmCounts {
    let of = |status: &str| {
        rows.iter()
            .find(|(v, s, _)| v == name && s == status)
            .map(|(_, _, c)| *c)
            .unwrap_or_default()
    };
    ArmCounts {
        capped: of("capped").nudged,
        ..of("shown")
    }
}

/// One arm's (or the holdout's) numbers; `denominator` names its `nudged` count.
fn numbers(r: &ArmResult, denominator: &str) -> Value {
    let c = r.counts;
    let mut v = json!({
        "capped": c.capped, "viewed": c.viewed, "clicked": c.clicked, "dismissed": c.dismissed,
        "converted": c.converted, "revenue": revenue(c.revenue),
        "conversion_rate": r.rate,
        "ci95": r.interval.map(|i| json!({ "low": i.low, "high": i.high })),
        "lift": r.lift.map(|l| json!({ "absolute": l.absolute, "relative": l.relative, "z": l.z, "p_value": l.p_value })),
    });
    v[denominator] = json!(c.nudged);
    v
}

/// A revenue sum as a decimal string, with two decimals unless a third is needed.
fn revenue(sum: Money) -> String {
    if sum.minor() % 10 == 0 {
        Money::from_minor(sum.minor() / 10).to_decimal_string(2)
    } else {
        sum.to_decimal_string(REVENUE_EXPONENT)
    }
}

/// Per (kind, experiment, variant, status), from Postgres: nudges, and how many of them were viewed, clicked,
/// dismissed and converted, and their conversions' revenue.
pub(crate) async fn pg_counts(
    store: &Store,
    merchant: &MerchantId,
) -> Result<Vec<Counted>, StoreError> {
    let rows = sqlx::query(
        "WITH ev AS (
             SELECT nudge_id,
                    bool_or(kind = 'view') AS viewed, bool_or(kind = 'click') AS clicked,
                    bool_or(kind = 'dismiss') AS dismissed, bool_or(kind = 'conversion') AS converted,
                    sum(revenue) FILTER (WHERE kind = 'conversion') AS revenue
             FROM nudge_events WHERE merchant_id = $1 GROUP BY nudge_id)
         SELECT n.kind, n.experiment_id, n.variant, n.status, count(*) AS nudged,
                count(*) FILTER (WHERE ev.viewed) AS viewed, count(*) FILTER (WHERE ev.clicked) AS clicked,
                count(*) FILTER (WHERE ev.dismissed) AS dismissed,
                count(*) FILTER (WHERE ev.converted) AS converted,
                coalesce(sum(ev.revenue), 0)::text AS revenue
         FROM nudges n LEFT JOIN ev ON ev.nudge_id = n.nudge_id
         WHERE n.merchant_id = $1 AND n.kind IS NOT NULL
         GROUP BY 1, 2, 3, 4",
    )
    .bind(merchant.as_str())
    .fetch_all(store.pool())
    .await?;
    let mut out = Vec::with_capacity(rows.len());
    for row in rows {
        let group = Group {
            kind: row.try_get("kind")?,
            experiment_id: row.try_get("experiment_id")?,
        };
        let count = |name: &str| row.try_get::<i64, _>(name).map(|n| n.max(0) as u64);
        let revenue: String = row.try_get("revenue")?;
        let counts = ArmCounts {
            nudged: count("nudged")?,
            capped: 0,
            viewed: count("viewed")?,
            clicked: count("clicked")?,
            dismissed: count("dismissed")?,
            converted: count("converted")?,
            revenue: Money::parse(&revenue, REVENUE_EXPONENT).unwrap_or_default(),
        };
        out.push(Counted {
            group,
            variant: row.try_get("variant")?,
            status: row.try_get("status")?,
            counts,
        });
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::experiments::memory::MemoryLedger;
    use functions::nudge::attribution::AttributionWindow;

    #[tokio::test]
    async fn results_are_computed_once_while_fresh_and_again_after_a_save() {
        let ledger: Ledger = Arc::new(MemoryLedger::new(AttributionWindow::default()));
        let cache = ResultsCache::new(ledger.clone(), 7 * 86_400);
        let shop = MerchantId::parse("cached.myshopify.com").unwrap();
        assert!(cache.get(&shop).await.unwrap().experiments.is_empty());
        let doc = json!({"id": "exp", "kind": "new", "variants": [{"name": "A", "weight": 1}, {"name": "B", "weight": 1}]});
        let experiment = functions::nudge::experiment::Experiment::from_json(&doc, "x").unwrap();
        ledger
            .save_experiment(&shop, &experiment, "t")
            .await
            .unwrap();
        assert!(
            cache.get(&shop).await.unwrap().experiments.is_empty(),
            "served from the cache while fresh"
        );
        cache.invalidate(&shop);
        assert_eq!(cache.get(&shop).await.unwrap().experiments.len(), 1);
    }

    #[test]
    fn revenue_shows_cents_unless_a_third_decimal_is_needed() {
        assert_eq!(revenue(Money::from_minor(12_500)), "12.50");
        assert_eq!(revenue(Money::from_minor(12_505)), "12.505");
        assert_eq!(revenue(Money::ZERO), "0.00");
    }
}
