//! The results of a merchant's nudges per kind, experiment and arm, computed from `nudges` and `nudge_events`:
//! shown, capped, viewed, clicked, dismissed, converted, revenue, the conversion rate with its 95 % interval and
//! the lift over the holdout with its p-value (`functions::nudge::stats`). [`results`] is the one place this is
//! computed; the REST route serves it and the dashboard's live frame can call it too.
//!
//! Counts are of nudges (each fired nudge is one assignment), an event counting once per nudge whatever its
//! repeats. An arm's rate is converted over shown; the holdout's is converted over assigned (see
//! `functions::nudge::attribution` for why that comparison is conservative). Nudges outside any experiment are
//! reported per kind with `experiment_id: null`.

use std::collections::BTreeMap;

use functions::nudge::experiment::HOLDOUT;
use functions::nudge::stats::{evaluate, ArmCounts, ArmResult};
use functions::Money;
use serde::Serialize;
use serde_json::{json, Value};
use sqlx::Row;
use streams::MerchantId;

use super::store::{of_merchant, StoredExperiment};
use crate::store::{Store, StoreError};

/// Revenue is summed from `NUMERIC(20, 3)`.
const REVENUE_EXPONENT: u8 = 3;

#[derive(Debug, Serialize)]
pub struct Results {
    pub merchant: MerchantId,
    pub attribution_window_days: f64,
    pub experiments: Vec<Value>,
}

/// A section of the results: one experiment of a kind, or the kind's nudges outside any (`experiment_id` none).
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
struct Group {
    kind: String,
    experiment_id: Option<String>,
}

/// The merchant's results; `window_seconds` is the attribution window the conversions were recorded under.
pub async fn results(
    store: &Store,
    merchant: &MerchantId,
    window_seconds: i64,
) -> Result<Results, StoreError> {
    let defined = of_merchant(store, merchant).await?;
    let counted = counts(store, merchant).await?;
    let mut groups: BTreeMap<Group, Vec<(String, String, ArmCounts)>> = BTreeMap::new();
    for (group, variant, status, counts) in counted {
        groups
            .entry(group)
            .or_default()
            .push((variant, status, counts));
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

/// Per (kind, experiment, variant, status): nudges, and how many of them were viewed, clicked, dismissed and
/// converted, and their conversions' revenue.
async fn counts(
    store: &Store,
    merchant: &MerchantId,
) -> Result<Vec<(Group, String, String, ArmCounts)>, StoreError> {
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
        out.push((
            group,
            row.try_get("variant")?,
            row.try_get("status")?,
            counts,
        ));
    }
    Ok(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn revenue_shows_cents_unless_a_third_decimal_is_needed() {
        assert_eq!(revenue(Money::from_minor(12_500)), "12.50");
        assert_eq!(revenue(Money::from_minor(12_505)), "12.505");
        assert_eq!(revenue(Money::ZERO), "0.00");
    }
}
