//! The stand-in's cost-based throttle, after Shopify's documented leaky bucket: one bucket per shop (every GraphQL
//! call of the shop shares it, bulk operations included), sized and refilled by the plan. A call is refused
//! (`THROTTLED`) unless the bucket holds its requested cost; the requested cost is taken and the difference to the
//! actual cost given back. The deepest the bucket was ever drawn is recorded, so a test can assert it never ran
//! dry.

use std::time::Instant;

use crate::shopify::admin::throttle::ThrottlePlan;

#[derive(Debug, Clone, Copy)]
pub struct Bucket {
    pub available: f64,
    pub maximum: f64,
    pub rate: f64,
    at: Instant,
    /// Most points ever in use at once (`maximum - available` right after a charge).
    pub peak_used: f64,
}

/// What a charge left in the bucket, for the cost extension.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Charged {
    pub requested: f64,
    /// `None` when throttled: the call did not run.
    pub actual: Option<f64>,
    pub available: f64,
    pub maximum: f64,
    pub rate: f64,
}

impl Bucket {
    pub fn new(plan: ThrottlePlan, now: Instant) -> Self {
        Bucket {
            available: plan.bucket(),
            maximum: plan.bucket(),
            rate: plan.restore_rate(),
            at: now,
            peak_used: 0.0,
        }
    }

    fn refill(&mut self, now: Instant) {
        let elapsed = now.saturating_duration_since(self.at).as_secs_f64();
        self.available = (self.available + elapsed * self.rate).min(self.maximum);
        self.at = now;
    }

    /// Charges a call of `requested` points that will really cost `actual`; `Err` (nothing taken) when the bucket
    /// cannot cover the request.
    pub fn charge(
        &mut self,
        requested: f64,
        actual: f64,
        now: Instant,
    ) -> Result<Charged, Charged> {
        self.refill(now);
        if self.available < requested {
            return Err(self.status(requested, None));
        }
        self.available -= requested;
        self.peak_used = self.peak_used.max(self.maximum - self.available);
        self.available = (self.available + (requested - actual).max(0.0)).min(self.maximum);
        Ok(self.status(requested, Some(actual)))
    }

    fn status(&self, requested: f64, actual: Option<f64>) -> Charged {
        Charged {
            requested,
            actual,
            available: self.available,
            maximum: self.maximum,
            rate: self.rate,
        }
    }
}

impl Charged {
    /// `extensions` of a reply, in Shopify's shape.
    pub fn extensions(&self) -> serde_json::Value {
        serde_json::json!({ "cost": {
            "requestedQueryCost": self.requested,
            "actualQueryCost": self.actual,
            "throttleStatus": {
                "maximumAvailable": self.maximum,
                "currentlyAvailable": self.available,
                "restoreRate": self.rate,
            }
        }})
    }
}

#[cfg(test)]
mod tests {
    use std::time::Duration;

    use super::*;

    #[test]
    fn refuses_what_it_cannot_cover_refunds_the_difference_and_refills() {
        let t0 = Instant::now();
        let mut bucket = Bucket::new(ThrottlePlan::Standard, t0);
        for _ in 0..100 {
            bucket.charge(10.0, 10.0, t0).unwrap();
        }
        assert_eq!(bucket.peak_used, 1000.0);
        let refused = bucket.charge(10.0, 10.0, t0).unwrap_err();
        assert_eq!((refused.available, refused.actual), (0.0, None));
        let later = t0 + Duration::from_millis(200);
        let charged = bucket.charge(13.0, 3.0, later).unwrap();
        assert!(
            (charged.available - 17.0).abs() < 1e-9,
            "20 refilled, 13 taken, 10 given back"
        );
    }
}
