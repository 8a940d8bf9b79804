//! What the engine holds in memory about one customer, written out for a GDPR data request
//! (`customers/data_request`): every order record, refund id and points total the live state keeps, and the
//! evaluation last published. Built on the partition's thread when the request is applied, so it is the state in
//! the order of the merchant's events.

use functions::{CustomerState, RfmConfig, Timestamp};
use serde::Serialize;
use streams::MerchantId;

/// A data request and the customer's in-memory state at that point (`None`: nothing is held about them).
#[derive(Debug, Clone, PartialEq)]
pub struct DataRequest {
    pub merchant: MerchantId,
    pub customer_id: u64,
    pub data_request_id: Option<u64>,
    pub event_id: String,
    pub held: Option<HeldCustomer>,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldCustomer {
    pub version: u32,
    pub segment: String,
    pub lifecycle_stage: String,
    pub recency: u8,
    pub frequency: u8,
    pub monetary: u8,
    /// Unix seconds; `None` when never seen.
    pub first_seen: Option<i64>,
    pub last_engaged: Option<i64>,
    pub orders: Vec<HeldOrder>,
    pub refund_ids: Vec<u64>,
    pub points: i64,
}

#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct HeldOrder {
    pub order_id: u64,
    /// Total minus refunds, in minor units of the shop currency.
    pub balance_minor: i64,
    pub placed_at: i64,
    pub counted: bool,
}

impl HeldCustomer {
    pub fn of(state: &CustomerState, config: &RfmConfig) -> HeldCustomer {
        let parts = state.aggregate.parts();
        let unix = |compact: u32| (compact != 0).then(|| Timestamp::from_compact(compact).unix());
        let rfm = state.published.rfm();
        let segment = config.segments.get(usize::from(state.published.segment));
        HeldCustomer {
            version: state.version,
            segment: segment.map(|s| s.key.clone()).unwrap_or_default(),
            lifecycle_stage: state.published.stage.as_str().to_owned(),
            recency: rfm.recency,
            frequency: rfm.frequency,
            monetary: rfm.monetary,
            first_seen: unix(parts.first_seen),
            last_engaged: unix(parts.last_engaged),
            orders: parts
                .orders
                .iter()
                .map(|o| HeldOrder {
                    order_id: o.order_id(),
                    balance_minor: o.parts().1,
                    placed_at: o.placed_at().unix(),
                    counted: o.counts(),
                })
                .collect(),
            refund_ids: parts.refund_ids.to_vec(),
            points: parts.points,
        }
    }
}
