//! Lifecycle stage and churn risk: the two customer labels besides the segment.

use serde::{Deserialize, Serialize};

use crate::aggregate::Totals;
use crate::config::RfmConfig;
use crate::time::{Timestamp, SECONDS_PER_DAY};

#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
#[repr(u8)]
pub enum LifecycleStage {
    NewLead = 0,
    OneTimeBuyer = 1,
    RepeatBuyer = 2,
    Vip = 3,
    Churned = 4,
}

impl LifecycleStage {
    pub fn as_str(self) -> &'static str {
        match self {
            LifecycleStage::NewLead => "new_lead",
            LifecycleStage::OneTimeBuyer => "one_time_buyer",
            LifecycleStage::RepeatBuyer => "repeat_buyer",
            LifecycleStage::Vip => "vip",
            LifecycleStage::Churned => "churned",
        }
    }

    /// The inverse of [`LifecycleStage::as_str`].
    pub fn parse(text: &str) -> Option<Self> {
        (0..5)
            .filter_map(Self::from_u8)
            .find(|stage| stage.as_str() == text)
    }

    pub fn from_u8(value: u8) -> Option<Self> {
        [
            LifecycleStage::NewLead,
            LifecycleStage::OneTimeBuyer,
            LifecycleStage::RepeatBuyer,
            LifecycleStage::Vip,
            LifecycleStage::Churned,
        ]
        .get(usize::from(value))
        .copied()
    }
}

/// Churned wins over VIP: a customer gone for a year is not treated as a VIP because of old spend.
pub fn lifecycle_stage(
    totals: &Totals,
    in_vip_segment: bool,
    config: &RfmConfig,
    now: Timestamp,
) -> LifecycleStage {
    let Some(last) = totals.last_order else {
        return LifecycleStage::NewLead;
    };
    if now.whole_days_since(last) > i64::from(config.churned_after_days) {
        LifecycleStage::Churned
    } else if in_vip_segment {
        LifecycleStage::Vip
    } else if totals.orders == 1 {
        LifecycleStage::OneTimeBuyer
    } else {
        LifecycleStage::RepeatBuyer
    }
}

/// An explainable churn risk: how many of the customer's own purchase rhythms have passed since the last order.
#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct ChurnRisk {
    /// In [0, 1].
    pub score: f64,
    pub days_since_last_order: f64,
    /// Mean days between the customer's orders, or the merchant's default for one-order customers.
    pub rhythm_days: f64,
}

/// How an SRE's dashboard buckets churn risk: `High` from two rhythms overdue (score 0.75), `Medium` from one
/// (0.5), `Low` above zero; `None` for a customer within their rhythm (or who never ordered).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ChurnLevel {
    High,
    Medium,
    Low,
}

impl ChurnLevel {
    pub fn of(score: f64) -> Option<ChurnLevel> {
        if score >= 0.75 {
            Some(ChurnLevel::High)
        } else if score >= 0.5 {
            Some(ChurnLevel::Medium)
        } else if score > 0.0 {
            Some(ChurnLevel::Low)
        } else {
            None
        }
    }

    pub fn as_str(self) -> &'static str {
        match self {
            ChurnLevel::High => "high",
            ChurnLevel::Medium => "medium",
            ChurnLevel::Low => "low",
        }
    }
}

/// Zero while the customer is within one rhythm of their last order; after that each further rhythm that passes
/// halves the estimated chance they are still active: `1 − 2^−(days/rhythm − 1)`. Monotone in days since the last
/// order, and lower for customers who habitually buy rarely. Customers who never ordered have no risk to lose.
pub fn churn_risk(totals: &Totals, config: &RfmConfig, now: Timestamp) -> ChurnRisk {
    let (Some(first), Some(last)) = (totals.first_order, totals.last_order) else {
        return ChurnRisk {
            score: 0.0,
            days_since_last_order: 0.0,
            rhythm_days: f64::from(config.default_rhythm_days),
        };
    };
    let day = SECONDS_PER_DAY as f64;
    let since = (now.unix() - last.unix()).max(0) as f64 / day;
    let rhythm = if totals.orders >= 2 {
        ((last.unix() - first.unix()) as f64 / day / f64::from(totals.orders - 1)).max(1.0)
    } else {
        f64::from(config.default_rhythm_days)
    };
    let overdue = (since / rhythm - 1.0).max(0.0);
    ChurnRisk {
        score: (1.0 - (-overdue).exp2()).clamp(0.0, 1.0),
        days_since_last_order: since,
        rhythm_days: rhythm,
    }
}

#[cfg(test)]
mod churn_level_tests {
    use super::ChurnLevel;

    #[test]
    fn levels_start_at_one_and_two_rhythms_overdue() {
        assert_eq!(ChurnLevel::of(0.0), None);
        assert_eq!(ChurnLevel::of(0.01), Some(ChurnLevel::Low));
        assert_eq!(ChurnLevel::of(0.5), Some(ChurnLevel::Medium));
        assert_eq!(ChurnLevel::of(0.74), Some(ChurnLevel::Medium));
        assert_eq!(ChurnLevel::of(0.75), Some(ChurnLevel::High));
        assert_eq!(ChurnLevel::of(1.0), Some(ChurnLevel::High));
    }
}
