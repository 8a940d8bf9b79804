//! The numbers an A/B panel shows for each arm and the holdout: counts, the conversion rate with its 95 % Wilson
//! score interval, and the lift over the holdout with a two-sided two-proportion z-test.
//!
//! Wilson rather than the textbook normal interval because arms are often small and rates near zero, where the
//! normal interval leaves [0, 1] and covers far less than it claims. The test uses the pooled proportion, the
//! usual choice when the null hypothesis is "no difference".

use crate::money::Money;

/// The standard normal quantile of 0.975, for two-sided 95 %.
pub const Z95: f64 = 1.959_963_984_540_054;

/// What one arm (or the holdout) has so far.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub struct ArmCounts {
    /// The rate's denominator: nudges shown for an arm, customers assigned for the holdout.
    pub nudged: u64,
    /// Nudges the arm would have shown but the frequency cap held back (not in the denominator).
    pub capped: u64,
    pub viewed: u64,
    pub clicked: u64,
    pub dismissed: u64,
    /// Nudges of `nudged` credited with at least one order.
    pub converted: u64,
    pub revenue: Money,
}

/// A two-sided 95 % interval for a proportion.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Interval {
    pub low: f64,
    pub high: f64,
}

/// An arm against the holdout.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Lift {
    /// Arm rate minus holdout rate.
    pub absolute: f64,
    /// `absolute` over the holdout's rate; `None` when the holdout converted nobody.
    pub relative: Option<f64>,
    pub z: f64,
    /// Two-sided: the chance of a difference at least this large if the arm changed nothing.
    pub p_value: f64,
}

/// One arm's numbers.
#[derive(Debug, Clone, PartialEq)]
pub struct ArmResult {
    pub counts: ArmCounts,
    /// `None` before anything was nudged.
    pub rate: Option<f64>,
    pub interval: Option<Interval>,
    /// `None` without a holdout or before either side has nudged anyone.
    pub lift: Option<Lift>,
}

/// Conversion rate, interval and lift of each arm, and the holdout's own rate and interval.
pub fn evaluate(
    arms: &[ArmCounts],
    holdout: Option<&ArmCounts>,
) -> (Vec<ArmResult>, Option<ArmResult>) {
    let result = |counts: &ArmCounts, base: Option<&ArmCounts>| ArmResult {
        counts: *counts,
        rate: rate(counts.converted, counts.nudged),
        interval: wilson(counts.converted, counts.nudged),
        lift: base.and_then(|b| lift(counts.converted, counts.nudged, b.converted, b.nudged)),
    };
    let arms = arms.iter().map(|a| result(a, holdout)).collect();
    (arms, holdout.map(|h| result(h, None)))
}

pub fn rate(successes: u64, trials: u64) -> Option<f64> {
    (trials > 0).then(|| successes.min(trials) as f64 / trials as f64)
}

/// The 95 % Wilson score interval of `successes` in `trials`; `None` for no trials.
pub fn wilson(successes: u64, trials: u64) -> Option<Interval> {
    let p = rate(successes, trials)?;
    let n = trials as f64;
    let z2 = Z95 * Z95;
    let denominator = 1.0 + z2 / n;
    let centre = (p + z2 / (2.0 * n)) / denominator;
    let half = Z95 / denominator * (p * (1.0 - p) / n + z2 / (4.0 * n * n)).sqrt();
    Some(Interval {
        low: (centre - half).max(0.0),
        high: (centre + half).min(1.0),
    })
}

/// Arm (`x1` of `n1`) against holdout (`x0` of `n0`); `None` when either side has no trials.
pub fn lift(x1: u64, n1: u64, x0: u64, n0: u64) -> Option<Lift> {
    let (p1, p0) = (rate(x1, n1)?, rate(x0, n0)?);
    let pooled = (x1.min(n1) + x0.min(n0)) as f64 / (n1 + n0) as f64;
    let se = (pooled * (1.0 - pooled) * (1.0 / n1 as f64 + 1.0 / n0 as f64)).sqrt();
    // Both sides all-or-nothing: no variance, and no evidence of any difference.
    let z = if se > 0.0 { (p1 - p0) / se } else { 0.0 };
    Some(Lift {
        absolute: p1 - p0,
        relative: (p0 > 0.0).then(|| (p1 - p0) / p0),
        z,
        p_value: libm::erfc(z.abs() / std::f64::consts::SQRT_2).min(1.0),
    })
}

#[cfg(test)]
mod tests;
