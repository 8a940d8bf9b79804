//! Recency, frequency and monetary scores, the weighted score, and when the recency score will next change.

use crate::aggregate::CustomerAggregate;
use crate::config::RfmConfig;
use crate::time::{Timestamp, SECONDS_PER_DAY};

pub use crate::rfm::Rfm;

impl Rfm {
    /// Weighted score in tenths (41 means 4.1), rounded half up.
    pub fn score_tenths(self, config: &RfmConfig) -> u8 {
        let [wr, wf, wm] = config.weights.basis_points();
        let sum = wr * u32::from(self.recency)
            + wf * u32::from(self.frequency)
            + wm * u32::from(self.monetary);
        ((sum + 500) / 1_000).min(50) as u8
    }
}

/// R from whole days since the last valid order; no order is R1.
pub fn recency_score(days_since_last_order: Option<i64>, config: &RfmConfig) -> u8 {
    let Some(days) = days_since_last_order else {
        return 1;
    };
    let bounds = config.recency_days;
    match bounds.iter().position(|b| days <= i64::from(*b)) {
        Some(i) => 5 - i as u8,
        None => 1,
    }
}

/// F from the (possibly time-weighted) number of valid orders.
pub fn frequency_score(orders: f64, config: &RfmConfig) -> u8 {
    let bounds = config.frequency_orders;
    match bounds.iter().position(|b| orders <= f64::from(*b)) {
        Some(i) => 1 + i as u8,
        None => 5,
    }
}

/// M from net spend in minor units; net ≤ 0 is M1 whatever the thresholds.
pub fn monetary_score(net_minor: f64, config: &RfmConfig) -> u8 {
    let [m2, m3, m4, m5] = config.monetary.map(|m| m.minor() as f64);
    if net_minor <= 0.0 || net_minor < m2 {
        1
    } else if net_minor < m3 {
        2
    } else if net_minor < m4 {
        3
    } else if net_minor <= m5 {
        4
    } else {
        5
    }
}

/// Scores a customer's aggregate at `now`.
pub fn score(aggregate: &CustomerAggregate, config: &RfmConfig, now: Timestamp) -> Rfm {
    let totals = aggregate.totals();
    let days = totals.last_order.map(|l| now.whole_days_since(l));
    let (orders, net) = match config.recency_decay {
        None => (f64::from(totals.orders), totals.net.minor() as f64),
        Some(decay) => decayed(aggregate, decay.half_life_days, now),
    };
    Rfm::new(
        recency_score(days, config),
        frequency_score(orders, config),
        monetary_score(net, config),
    )
}

/// Frequency and spend with each order weighted by 2^(−age / half-life). Weighting is done in `f64` only for the
/// comparison with thresholds; the stored amounts stay exact.
fn decayed(aggregate: &CustomerAggregate, half_life_days: f64, now: Timestamp) -> (f64, f64) {
    aggregate
        .orders()
        .iter()
        .filter(|o| o.counts())
        .fold((0.0, 0.0), |(orders, net), o| {
            let age_days =
                (now.unix() - o.placed_at().unix()).max(0) as f64 / SECONDS_PER_DAY as f64;
            let weight = (-age_days / half_life_days).exp2();
            (orders + weight, net + weight * o.net().minor() as f64)
        })
}

/// The scores a customer's segment is chosen by under a demotion grace: today's, or those of
/// `grace_period_days` ago if they weigh more. Without new events scores only fall as time passes, so this keeps a
/// customer in the segment they had before a time-driven drop until the grace has run out; a drop caused by an
/// event (a refund, a cancel) shows at once, because the scores of back then are computed from today's aggregate.
pub fn graced(
    aggregate: &CustomerAggregate,
    config: &RfmConfig,
    now: Timestamp,
    today: Rfm,
) -> Rfm {
    graced_by(config, now, today, |at| score(aggregate, config, at))
}

/// The grace rule over any way of scoring a customer at an instant (`score_at`): the scores of
/// `grace_period_days` before `now` when they weigh more than `today`'s. `score_at` is called only with a grace.
pub fn graced_by(
    config: &RfmConfig,
    now: Timestamp,
    today: Rfm,
    score_at: impl FnOnce(Timestamp) -> Rfm,
) -> Rfm {
    if config.grace_period_days == 0 {
        return today;
    }
    let then = score_at(now.plus_days(-i64::from(config.grace_period_days)));
    if then.score_tenths(config) > today.score_tenths(config) {
        then
    } else {
        today
    }
}

/// The next instant after `now` at which the customer's scores, segment or lifecycle stage can change without a
/// new event: a recency boundary, the churn boundary, (with decay) tomorrow, or any of those reached by the
/// scores of `grace_period_days` ago that [`graced`] looks at. `None` when nothing will change by itself.
pub fn next_change(
    aggregate: &CustomerAggregate,
    config: &RfmConfig,
    now: Timestamp,
) -> Option<Timestamp> {
    let today = next_boundary(aggregate, config, now);
    if config.grace_period_days == 0 {
        return today;
    }
    let grace = i64::from(config.grace_period_days);
    let then = next_boundary(aggregate, config, now.plus_days(-grace)).map(|t| t.plus_days(grace));
    today.into_iter().chain(then).min()
}

fn next_boundary(
    aggregate: &CustomerAggregate,
    config: &RfmConfig,
    now: Timestamp,
) -> Option<Timestamp> {
    let last = aggregate.totals().last_order?;
    let days = now.whole_days_since(last);
    let boundary = config
        .recency_days
        .iter()
        .chain(std::iter::once(&config.churned_after_days))
        .map(|b| i64::from(*b) + 1)
        .filter(|b| *b > days)
        .min()
        .map(|b| last.plus_days(b).max(Timestamp(now.unix() + 1)));
    match config.recency_decay {
        // Decayed F and M drift daily; a daily re-check is enough for whole-day thresholds.
        Some(_) => Some(boundary.map_or(now.plus_days(1), |b| b.min(now.plus_days(1)))),
        None => boundary,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn weighted_score_is_exact() {
        let c = RfmConfig::default();
        assert_eq!(Rfm::new(5, 3, 4).score_tenths(&c), 41);
        assert_eq!(Rfm::new(1, 1, 1).score_tenths(&c), 10);
        assert_eq!(Rfm::new(5, 5, 5).score_tenths(&c), 50);
    }
}
