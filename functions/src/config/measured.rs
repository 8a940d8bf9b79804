//! What the engine measures about a merchant's customers for the configuration page and "reset to measured":
//! the average order value (net spend over valid orders, refunds included) and the typical days between orders.

use crate::aggregate::Totals;
use crate::money::Money;
use crate::time::SECONDS_PER_DAY;

/// Measured over every customer the engine holds for one merchant.
#[derive(Debug, Clone, Copy, Default, PartialEq)]
pub struct Measured {
    /// Customers with at least one valid order.
    pub buyers: u64,
    pub orders: u64,
    /// Net spend of all buyers.
    pub net: Money,
    /// Sum over repeat buyers of the seconds between their first and last order, and of their gaps (orders − 1):
    /// pooled, so a customer with ten orders weighs ten times one with two.
    span_seconds: i64,
    gaps: u64,
}

impl Measured {
    pub fn add(&mut self, totals: &Totals) {
        if totals.orders == 0 {
            return;
        }
        self.buyers += 1;
        self.orders += u64::from(totals.orders);
        self.net = self.net.saturating_add(totals.net);
        if let (Some(first), Some(last)) = (totals.first_order, totals.last_order) {
            if totals.orders >= 2 {
                self.span_seconds += (last.unix() - first.unix()).max(0);
                self.gaps += u64::from(totals.orders - 1);
            }
        }
    }

    pub fn of<'a>(totals: impl IntoIterator<Item = &'a Totals>) -> Self {
        let mut m = Measured::default();
        totals.into_iter().for_each(|t| m.add(t));
        m
    }

    /// Net spend per valid order, rounded down to the minor unit; `None` without orders or without positive spend
    /// (thresholds derived from it would be zero and fail validation).
    pub fn aov(&self) -> Option<Money> {
        let orders = i64::try_from(self.orders).ok().filter(|o| *o > 0)?;
        let aov = self.net.minor() / orders;
        (aov > 0).then(|| Money::from_minor(aov))
    }

    /// Mean days between consecutive orders of repeat buyers; `None` without any.
    pub fn purchase_interval_days(&self) -> Option<f64> {
        (self.gaps > 0)
            .then(|| self.span_seconds as f64 / SECONDS_PER_DAY as f64 / self.gaps as f64)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::time::Timestamp;

    fn totals(orders: u32, net: i64, first_day: i64, last_day: i64) -> Totals {
        Totals {
            orders,
            net: Money::from_minor(net),
            first_order: (orders > 0).then(|| Timestamp::from_unix(first_day * SECONDS_PER_DAY)),
            last_order: (orders > 0).then(|| Timestamp::from_unix(last_day * SECONDS_PER_DAY)),
        }
    }

    #[test]
    fn aov_and_interval_are_pooled_over_buyers() {
        let all = [
            totals(0, 0, 0, 0),
            totals(1, 3_000, 10, 10),
            totals(3, 9_000, 0, 40),
            totals(2, 1_000, 5, 15),
        ];
        let m = Measured::of(&all);
        assert_eq!((m.buyers, m.orders), (3, 6));
        assert_eq!(m.aov(), Some(Money::from_minor(2_166)));
        // (40 + 10) days over (2 + 1) gaps.
        assert_eq!(m.purchase_interval_days(), Some(50.0 / 3.0));
    }

    #[test]
    fn nothing_measured_without_orders_or_spend() {
        assert_eq!(Measured::of(&[totals(0, 0, 0, 0)]).aov(), None);
        assert_eq!(Measured::of(&[totals(1, -500, 1, 1)]).aov(), None);
        assert_eq!(
            Measured::of(&[totals(1, 500, 1, 1)]).purchase_interval_days(),
            None
        );
    }
}
