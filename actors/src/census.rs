//! A partition's head count for the operator's gauges: customers per segment key and per churn-risk level.
//!
//! Runs inside the partition actor (through `Inspect`) every few seconds rather than on every change, so the hot
//! path pays nothing for it; one walk over the partition's customers per census.

use functions::{churn_risk, ChurnLevel, Timestamp};

use crate::partition::PartitionCore;

/// Customers of one partition, by segment key (in each merchant's rule order) and by churn level.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Census {
    pub segments: Vec<(String, u64)>,
    /// High, medium, low (see `functions::ChurnLevel`).
    pub churn: [u64; 3],
}

impl Census {
    /// Adds `other`'s counts to this one.
    pub fn absorb(&mut self, other: Census) {
        for (key, n) in other.segments {
            match self.segments.iter_mut().find(|(k, _)| *k == key) {
                Some((_, total)) => *total += n,
                None => self.segments.push((key, n)),
            }
        }
        for (total, n) in self.churn.iter_mut().zip(other.churn) {
            *total += n;
        }
    }
}

/// Counts `core`'s customers as of `now`.
pub fn census(core: &PartitionCore, now: Timestamp) -> Census {
    let mut out = Census::default();
    for merchant in core.merchants() {
        let keys = merchant.config.segments.iter().map(|r| r.key.clone());
        out.absorb(Census {
            segments: keys
                .zip(merchant.segment_counts().iter().copied())
                .collect(),
            churn: [0; 3],
        });
        for (_, customer) in merchant.customers() {
            let risk = churn_risk(&customer.aggregate.totals(), &merchant.config, now);
            match ChurnLevel::of(risk.score) {
                Some(ChurnLevel::High) => out.churn[0] += 1,
                Some(ChurnLevel::Medium) => out.churn[1] += 1,
                Some(ChurnLevel::Low) => out.churn[2] += 1,
                None => {}
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn absorbing_sums_keys_and_levels() {
        let mut a = Census {
            segments: vec![("champions".into(), 2), ("loyal".into(), 1)],
            churn: [1, 0, 2],
        };
        a.absorb(Census {
            segments: vec![("loyal".into(), 3), ("vip_custom".into(), 4)],
            churn: [0, 5, 1],
        });
        assert_eq!(
            a.segments,
            vec![
                ("champions".into(), 2),
                ("loyal".into(), 4),
                ("vip_custom".into(), 4)
            ]
        );
        assert_eq!(a.churn, [1, 5, 3]);
    }
}
