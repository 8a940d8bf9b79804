//! Coalescing a batch of `rfm.updated` records: one entry per customer, the highest state version wins, whatever
//! order the records came in. The record it came from is kept, to dead-letter it if Shopify refuses the write.

use std::collections::HashMap;

use streams::outputs::RfmUpdated;
use streams::MerchantId;

use crate::shopify::admin::metafields::CustomerFields;

/// A record as it came off `rfm.updated`.
#[derive(Debug, Clone)]
pub struct Source {
    pub partition: i32,
    pub offset: i64,
    pub key: Option<Vec<u8>>,
    pub payload: Vec<u8>,
}

/// The newest state of one customer in the batch.
#[derive(Debug, Clone)]
pub struct Latest {
    pub update: RfmUpdated,
    pub source: Source,
}

impl Latest {
    /// What to write, replacing the stored version whose `compareDigest` is `replaces` (`None`: no version stored).
    pub fn fields(&self, replaces: Option<String>) -> CustomerFields {
        CustomerFields {
            customer_id: self.update.customer_id,
            segment: self.update.segment.to.clone(),
            score: self.update.score.score,
            stage: self.update.lifecycle_stage.clone(),
            version: self.update.version,
            replaces,
        }
    }
}

/// The batch's newest state per shop and customer, grouped by shop.
pub fn coalesce(records: Vec<(RfmUpdated, Source)>) -> HashMap<MerchantId, Vec<Latest>> {
    let mut newest: HashMap<(MerchantId, u64), Latest> = HashMap::new();
    for (update, source) in records {
        let key = (update.merchant_id.clone(), update.customer_id);
        match newest.get(&key) {
            Some(kept) if kept.update.version >= update.version => {}
            _ => {
                newest.insert(key, Latest { update, source });
            }
        }
    }
    let mut by_shop: HashMap<MerchantId, Vec<Latest>> = HashMap::new();
    for ((shop, _), latest) in newest {
        by_shop.entry(shop).or_default().push(latest);
    }
    for customers in by_shop.values_mut() {
        customers.sort_by_key(|l| l.update.customer_id);
    }
    by_shop
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use streams::outputs::{ScoreOut, SegmentMove};

    pub fn update(shop: &str, customer: u64, version: u32, segment: &str) -> RfmUpdated {
        RfmUpdated {
            event_id: format!("rfm.updated:{shop}:{customer}:{version}"),
            schema_version: 1,
            merchant_id: MerchantId::parse(shop).unwrap(),
            customer_id: customer,
            version,
            segment: SegmentMove {
                from: "other".into(),
                to: segment.into(),
            },
            score: ScoreOut {
                recency: 5,
                frequency: 4,
                monetary: 3,
                score: 4.1,
            },
            lifecycle_stage: "active".into(),
            occurred_at: chrono::Utc::now(),
            trace_id: "t".into(),
        }
    }

    fn source(offset: i64) -> Source {
        Source {
            partition: 0,
            offset,
            key: None,
            payload: vec![],
        }
    }

    #[test]
    fn the_highest_version_wins_in_any_order() {
        let records = vec![
            (update("a.myshopify.com", 1, 2, "loyal"), source(0)),
            (update("a.myshopify.com", 1, 5, "champions"), source(1)),
            (update("a.myshopify.com", 1, 3, "at_risk"), source(2)),
            (update("a.myshopify.com", 2, 1, "new"), source(3)),
            (update("b.myshopify.com", 1, 1, "new"), source(4)),
        ];
        let by_shop = coalesce(records);
        let a = &by_shop[&MerchantId::parse("a.myshopify.com").unwrap()];
        assert_eq!(a.len(), 2);
        assert_eq!(
            (a[0].update.version, a[0].fields(None).segment.as_str()),
            (5, "champions")
        );
        assert_eq!(a[0].source.offset, 1);
        assert_eq!(by_shop.len(), 2);
    }
}
