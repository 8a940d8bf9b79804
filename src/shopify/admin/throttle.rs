//! Client-side pacing for Shopify's cost-based throttle: a leaky bucket per shop, estimated from the
//! `throttleStatus` of the last reply and refilled at its `restoreRate`, so a call is sent only when the points it
//! requests are believed available. Shopify refuses calls the bucket cannot cover (`THROTTLED`); sending only what
//! fits keeps us from ever being refused, and the bucket from ever being overdrawn.
//!
//! A shop we know nothing about yet (first call, or after a restart while an earlier process may have drained the
//! bucket) is assumed empty: the first call waits for its own cost to refill, and the reply then says the truth.

use std::collections::HashMap;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use super::QueryCost;

use streams::metric_names::SHOPIFY_THROTTLE_AVAILABLE as THROTTLE_AVAILABLE;

/// The shop's plan, which sets the bucket before Shopify has told us (`SHOPIFY_THROTTLE_PLAN`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum ThrottlePlan {
    Standard,
    Advanced,
    Plus,
}

impl ThrottlePlan {
    /// Points restored per second (Shopify's published GraphQL Admin API limits).
    pub fn restore_rate(self) -> f64 {
        match self {
            ThrottlePlan::Standard => 100.0,
            ThrottlePlan::Advanced => 200.0,
            ThrottlePlan::Plus => 1000.0,
        }
    }

    /// The bucket's size in points.
    pub fn bucket(self) -> f64 {
        self.restore_rate() * 10.0
    }
}

impl std::str::FromStr for ThrottlePlan {
    type Err = String;

    fn from_str(raw: &str) -> Result<Self, String> {
        match raw.trim().to_ascii_lowercase().as_str() {
            "standard" => Ok(ThrottlePlan::Standard),
            "advanced" => Ok(ThrottlePlan::Advanced),
            "plus" => Ok(ThrottlePlan::Plus),
            other => Err(format!("{other:?} is not standard, advanced or plus")),
        }
    }
}

#[derive(Debug, Clone, Copy)]
struct Estimate {
    available: f64,
    maximum: f64,
    rate: f64,
    at: Instant,
    /// Points taken by calls not answered yet: Shopify may not have seen them when it reports its bucket.
    in_flight: f64,
    /// Shopify has reported this shop's bucket at least once.
    observed: bool,
}

impl Estimate {
    fn refilled(mut self, now: Instant) -> Self {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.available = (self.available + elapsed * self.rate).min(self.maximum);
        self.at = now;
        self
    }
}

/// Per-shop estimates of Shopify's bucket.
pub struct CostThrottle {
    plan: ThrottlePlan,
    shops: Mutex<HashMap<String, Estimate>>,
}

impl CostThrottle {
    pub fn new(plan: ThrottlePlan) -> Self {
        CostThrottle {
            plan,
            shops: Mutex::new(HashMap::new()),
        }
    }

    /// Waits until `cost` points are believed available to `shop`, then takes them.
    pub async fn acquire(&self, shop: &str, cost: f64) {
        while let Err(wait) = self.try_take(shop, cost, Instant::now()) {
            tokio::time::sleep(wait).await;
        }
    }

    /// Takes `cost` points if the estimate has them; otherwise says how long until it will.
    pub fn try_take(&self, shop: &str, cost: f64, now: Instant) -> Result<(), Duration> {
        let mut shops = self.shops.lock().unwrap_or_else(|p| p.into_inner());
        let plan = self.plan;
        let estimate = shops
            .entry(shop.to_owned())
            .or_insert_with(|| Estimate {
                available: 0.0,
                maximum: plan.bucket(),
                rate: plan.restore_rate(),
                at: now,
                in_flight: 0.0,
                observed: false,
            })
            .refilled(now);
        // A call dearer than the whole bucket could never be covered; it goes when the bucket is full.
        let needed = cost.min(estimate.maximum);
        if estimate.available >= needed {
            shops.insert(
                shop.to_owned(),
                Estimate {
                    available: estimate.available - cost,
                    in_flight: estimate.in_flight + cost,
                    ..estimate
                },
            );
            return Ok(());
        }
        shops.insert(shop.to_owned(), estimate);
        let missing = needed - estimate.available;
        Err(Duration::from_secs_f64(
            (missing / estimate.rate.max(1.0)).max(0.001),
        ))
    }

    /// A call that took `cost` was answered (or failed): its points are no longer in flight.
    pub fn release(&self, shop: &str, cost: f64) {
        let mut shops = self.shops.lock().unwrap_or_else(|p| p.into_inner());
        if let Some(estimate) = shops.get_mut(shop) {
            estimate.in_flight = (estimate.in_flight - cost).max(0.0);
        }
    }

    /// Corrects the estimate with what Shopify reported, taken as measured at `now` (the reply's arrival: never
    /// later than Shopify measured it, so the estimate errs low), less what other calls still in flight took.
    ///
    /// Replies of concurrent calls can arrive in another order than Shopify answered them, and an older report
    /// shows points a newer one has spent; so after the first report a report can only lower the estimate, which
    /// otherwise rises by the restore rate alone.
    pub fn observe(&self, shop: &str, cost: &QueryCost, now: Instant) {
        metrics::gauge!(THROTTLE_AVAILABLE).set(cost.currently_available);
        let mut shops = self.shops.lock().unwrap_or_else(|p| p.into_inner());
        let known = shops.get(shop).map(|e| e.refilled(now));
        let in_flight = known.map_or(0.0, |e| e.in_flight);
        let reported = cost.currently_available - in_flight;
        let available = match known {
            Some(e) if e.observed => reported.min(e.available.min(cost.maximum_available)),
            _ => reported,
        };
        shops.insert(
            shop.to_owned(),
            Estimate {
                available,
                maximum: cost.maximum_available,
                rate: cost.restore_rate,
                at: now,
                in_flight,
                observed: true,
            },
        );
    }

    /// The estimate for `shop` now, for reports.
    pub fn available(&self, shop: &str) -> Option<f64> {
        let shops = self.shops.lock().unwrap_or_else(|p| p.into_inner());
        shops
            .get(shop)
            .map(|e| e.refilled(Instant::now()).available)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn status(available: f64) -> QueryCost {
        QueryCost {
            requested: 10.0,
            actual: Some(10.0),
            maximum_available: 1000.0,
            currently_available: available,
            restore_rate: 100.0,
        }
    }

    #[test]
    fn an_unknown_shop_is_assumed_empty_then_refills_at_the_plan_rate() {
        let throttle = CostThrottle::new(ThrottlePlan::Standard);
        let t0 = Instant::now();
        let wait = throttle.try_take("s", 10.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(100));
        assert!(throttle.try_take("s", 10.0, t0 + wait).is_ok());
        assert!(throttle.try_take("s", 10.0, t0 + wait).is_err(), "spent");
    }

    #[test]
    fn follows_what_shopify_reports_and_never_takes_more_than_it_has() {
        let throttle = CostThrottle::new(ThrottlePlan::Plus);
        let t0 = Instant::now();
        throttle.observe("s", &status(25.0), t0);
        assert!(throttle.try_take("s", 10.0, t0).is_ok());
        assert!(throttle.try_take("s", 10.0, t0).is_ok());
        let wait = throttle.try_take("s", 10.0, t0).unwrap_err();
        assert_eq!(wait, Duration::from_millis(50), "5 missing at 100/s");
        // The bucket never goes above its maximum, however long it rests.
        assert!(throttle
            .try_take("s", 1000.0, t0 + Duration::from_secs(60))
            .is_ok());
        assert!(throttle
            .try_take("s", 1.0, t0 + Duration::from_secs(60))
            .is_err());
    }

    #[test]
    fn calls_in_flight_are_held_back_from_what_shopify_reports() {
        let throttle = CostThrottle::new(ThrottlePlan::Standard);
        let t0 = Instant::now();
        throttle.observe("s", &status(30.0), t0);
        assert!(throttle.try_take("s", 10.0, t0).is_ok());
        assert!(throttle.try_take("s", 10.0, t0).is_ok());
        // The first answers; Shopify saw only it: 20 left by its count, but 10 more are on their way.
        throttle.release("s", 10.0);
        throttle.observe("s", &status(20.0), t0);
        assert!(throttle.try_take("s", 10.0, t0).is_ok());
        assert!(throttle.try_take("s", 10.0, t0).is_err());
    }

    #[test]
    fn a_late_older_report_does_not_raise_the_estimate() {
        let throttle = CostThrottle::new(ThrottlePlan::Standard);
        let t0 = Instant::now();
        throttle.observe("s", &status(100.0), t0);
        throttle.observe("s", &status(40.0), t0);
        // An older reply arrives last, still showing the points the newer one spent.
        throttle.observe("s", &status(50.0), t0);
        assert!(throttle.try_take("s", 40.0, t0).is_ok());
        assert!(throttle.try_take("s", 1.0, t0).is_err());
    }

    #[test]
    fn plans_parse() {
        assert_eq!("Plus".parse::<ThrottlePlan>(), Ok(ThrottlePlan::Plus));
        assert_eq!(ThrottlePlan::Standard.bucket(), 1000.0);
        assert_eq!(ThrottlePlan::Advanced.restore_rate(), 200.0);
        assert!("gold".parse::<ThrottlePlan>().is_err());
    }
}
