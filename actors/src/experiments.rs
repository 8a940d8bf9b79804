//! Which arm of the merchant's running experiment a fired nudge belongs to, decided where the change is made (on
//! the partition actor's thread) so the `rfm.task` record and the desk's pending nudge carry the same arm.
//!
//! The plans are a read-only map for the actors, filled and refreshed by the caller (loading is I/O). They are
//! deliberately apart from the merchants' RFM configurations: an experiment changes which nudge a customer is
//! shown, never a score or a segment, so it stays out of the configuration fingerprint snapshots are checked
//! against, and saving one re-scores nobody. Assignment itself is the pure
//! [`Experiment::assign`], so the same customer gets the same arm on every instance and after every restart.

use std::sync::{Arc, LazyLock};

use dashmap::DashMap;
use functions::nudge::experiment::{Assignment, Experiment, HOLDOUT};
use functions::NudgeKind;
use streams::MerchantId;

use crate::vocab::Change;

/// The variant of a nudge outside any experiment.
pub const DEFAULT_VARIANT: &str = "A";

static DEFAULT_ARM: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(DEFAULT_VARIANT));
static HOLDOUT_ARM: LazyLock<Arc<str>> = LazyLock::new(|| Arc::from(HOLDOUT));

/// A running experiment as the actors use it: its names shared, so a nudge carries them without allocating.
#[derive(Debug)]
pub struct ExperimentPlan {
    pub experiment: Experiment,
    pub id: Arc<str>,
    /// The arms' names, in the experiment's order.
    pub arms: Vec<Arc<str>>,
    /// When the plan was saved (microseconds since the epoch), so a reload can tell a newer plan from an older.
    pub revision: i64,
}

impl ExperimentPlan {
    pub fn new(experiment: Experiment, revision: i64) -> Self {
        ExperimentPlan {
            id: Arc::from(experiment.id.as_str()),
            arms: experiment
                .arms
                .iter()
                .map(|a| Arc::from(a.name.as_str()))
                .collect(),
            experiment,
            revision,
        }
    }

    /// The arm of `customer_id` of `merchant` in this experiment.
    pub fn arm_for(&self, merchant: &MerchantId, customer_id: u64) -> NudgeArm {
        let variant = match self.experiment.assign(merchant.as_str(), customer_id) {
            Assignment::Arm(i) => self
                .arms
                .get(i)
                .cloned()
                .unwrap_or_else(|| HOLDOUT_ARM.clone()),
            Assignment::Holdout => HOLDOUT_ARM.clone(),
        };
        NudgeArm {
            kind: self.experiment.kind,
            experiment_id: Some(self.id.clone()),
            variant,
        }
    }
}

/// Each merchant's running experiments, at most one per nudge kind.
pub type NudgePlans = Arc<DashMap<MerchantId, Vec<Arc<ExperimentPlan>>>>;

/// The arm a fired nudge was assigned.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NudgeArm {
    pub kind: NudgeKind,
    /// The experiment the nudge belongs to; `None` outside any.
    pub experiment_id: Option<Arc<str>>,
    /// The arm's name, [`DEFAULT_VARIANT`] outside an experiment, or `"holdout"`.
    pub variant: Arc<str>,
}

impl NudgeArm {
    /// A nudge of `kind` outside any experiment.
    pub fn plain(kind: NudgeKind) -> NudgeArm {
        NudgeArm {
            kind,
            experiment_id: None,
            variant: DEFAULT_ARM.clone(),
        }
    }

    /// Held out: recorded, never shown.
    pub fn is_holdout(&self) -> bool {
        self.experiment_id.is_some() && &*self.variant == HOLDOUT
    }
}

/// The arm of the nudge `change` fires; `None` when it fires none.
pub fn arm_of(plans: &NudgePlans, change: &Change) -> Option<NudgeArm> {
    let kind = NudgeKind::of_move(&change.from_segment, &change.to_segment, change.stage)?;
    let plan = plans
        .get(&change.merchant)
        .and_then(|running| running.iter().find(|p| p.experiment.kind == kind).cloned());
    Some(match plan {
        Some(plan) => plan.arm_for(&change.merchant, change.customer_id),
        None => NudgeArm::plain(kind),
    })
}

/// Installs `plan` as the merchant's experiment of its kind, unless the one running is a newer revision. True
/// when it was installed.
pub fn install(plans: &NudgePlans, merchant: &MerchantId, plan: Arc<ExperimentPlan>) -> bool {
    let mut running = plans.entry(merchant.clone()).or_default();
    let kind = plan.experiment.kind;
    match running.iter_mut().find(|p| p.experiment.kind == kind) {
        Some(current) if current.revision > plan.revision => false,
        Some(current) => {
            *current = plan;
            true
        }
        None => {
            running.push(plan);
            true
        }
    }
}

/// Stops the merchant's experiment of `kind`, if `id` is the one running.
pub fn end(plans: &NudgePlans, merchant: &MerchantId, kind: NudgeKind, id: &str) {
    if let Some(mut running) = plans.get_mut(merchant) {
        running.retain(|p| !(p.experiment.kind == kind && &*p.id == id));
    }
    plans.remove_if(merchant, |_, running| running.is_empty());
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::nudge::experiment::{Arm, ExperimentId};

    fn plan(kind: NudgeKind, id: &str, revision: i64) -> Arc<ExperimentPlan> {
        let arm = |name: &str| Arm {
            name: name.into(),
            weight: 1,
            texts: Default::default(),
        };
        let experiment = Experiment {
            id: ExperimentId::parse(id).unwrap(),
            kind,
            arms: vec![arm("red"), arm("blue")],
            holdout_bps: 3_000,
        };
        Arc::new(ExperimentPlan::new(experiment, revision))
    }

    #[test]
    fn a_change_gets_the_arm_the_pure_assignment_gives_and_other_kinds_the_default() {
        let plans = NudgePlans::default();
        let p = plan(NudgeKind::Loyal, "e1", 1);
        let merchant = MerchantId::parse("arms.myshopify.com").unwrap();
        install(&plans, &merchant, p.clone());
        let mut seen_holdout = false;
        for customer in 0..200 {
            let change =
                crate::partition::test_change(merchant.as_str(), customer, 3, "new", "loyal");
            let arm = arm_of(&plans, &change).unwrap();
            let expected = p
                .experiment
                .variant(p.experiment.assign(merchant.as_str(), customer));
            assert_eq!(&*arm.variant, expected);
            assert_eq!(arm.experiment_id.as_deref(), Some("e1"));
            assert_eq!(arm.is_holdout(), expected == HOLDOUT);
            seen_holdout |= arm.is_holdout();
        }
        assert!(seen_holdout, "30 % of 200 customers include some held out");
        let other = crate::partition::test_change(merchant.as_str(), 1, 3, "loyal", "at_risk");
        assert_eq!(
            arm_of(&plans, &other),
            Some(NudgeArm::plain(NudgeKind::AtRisk))
        );
        let none = crate::partition::test_change(merchant.as_str(), 1, 3, "new", "other");
        assert_eq!(arm_of(&plans, &none), None);
    }

    #[test]
    fn an_older_revision_never_replaces_a_newer_and_ending_names_the_experiment() {
        let plans = NudgePlans::default();
        let merchant = MerchantId::parse("revisions.myshopify.com").unwrap();
        assert!(install(&plans, &merchant, plan(NudgeKind::Loyal, "new", 5)));
        assert!(!install(
            &plans,
            &merchant,
            plan(NudgeKind::Loyal, "old", 4)
        ));
        assert!(install(
            &plans,
            &merchant,
            plan(NudgeKind::AtRisk, "risk", 1)
        ));
        end(&plans, &merchant, NudgeKind::Loyal, "old");
        assert_eq!(
            plans.get(&merchant).unwrap().len(),
            2,
            "not the running one"
        );
        end(&plans, &merchant, NudgeKind::Loyal, "new");
        end(&plans, &merchant, NudgeKind::AtRisk, "risk");
        assert!(plans.get(&merchant).is_none());
    }
}
