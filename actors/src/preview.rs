//! What a proposed configuration would do to a merchant's customers as they are now: the segment sizes under it
//! beside today's, and how many customers would move from each segment to each other. Computed on the live state
//! inside the partition that owns the merchant (one pass over its customers), nothing changed.

use functions::{evaluate, RfmConfig, SegmentRule, Timestamp};
use serde::{Deserialize, Serialize};

use crate::merchant::MerchantState;

/// One segment and how many customers it holds.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentSize {
    pub key: String,
    /// Display names by locale, as the table has them.
    pub name: std::collections::BTreeMap<String, String>,
    pub customers: u64,
}

/// Customers who would move from one segment (of today's table) to one of the proposed table.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Move {
    pub from: String,
    pub to: String,
    pub customers: u64,
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct Preview {
    pub customers: u64,
    /// Today's table with today's sizes.
    pub current: Vec<SegmentSize>,
    /// The proposed table with the sizes it would have.
    pub proposed: Vec<SegmentSize>,
    /// Every non-empty cell of the from → to matrix, staying customers included (`from == to`), in table order.
    pub moves: Vec<Move>,
}

impl Preview {
    /// A merchant the engine has no customers of: every segment empty.
    pub fn empty(current: &RfmConfig, proposed: &RfmConfig) -> Preview {
        Preview {
            customers: 0,
            current: sizes(&current.segments, &vec![0; current.segments.len()]),
            proposed: sizes(&proposed.segments, &vec![0; proposed.segments.len()]),
            moves: Vec::new(),
        }
    }

    /// Builds a preview from a from × to matrix of counts (row-major, today's table by the proposed one).
    pub fn from_matrix(current: &RfmConfig, proposed: &RfmConfig, matrix: &[u64]) -> Preview {
        let (rows, cols) = (current.segments.len(), proposed.segments.len());
        let mut before = vec![0; rows];
        let mut after = vec![0; cols];
        let mut moves = Vec::new();
        for (from, rule) in current.segments.iter().enumerate() {
            for (to, target) in proposed.segments.iter().enumerate() {
                let n = matrix.get(from * cols + to).copied().unwrap_or(0);
                before[from] += n;
                after[to] += n;
                if n > 0 {
                    moves.push(Move {
                        from: rule.key.clone(),
                        to: target.key.clone(),
                        customers: n,
                    });
                }
            }
        }
        Preview {
            customers: before.iter().sum(),
            current: sizes(&current.segments, &before),
            proposed: sizes(&proposed.segments, &after),
            moves,
        }
    }
}

fn sizes(rules: &[SegmentRule], counts: &[u64]) -> Vec<SegmentSize> {
    rules
        .iter()
        .zip(counts)
        .map(|(rule, n)| SegmentSize {
            key: rule.key.clone(),
            name: rule.name.clone(),
            customers: *n,
        })
        .collect()
}

/// Every customer of `merchant` evaluated under `proposed` at `now`, against what they published last.
pub fn preview(merchant: &MerchantState, proposed: &RfmConfig, now: Timestamp) -> Preview {
    let cols = proposed.segments.len();
    let mut matrix = vec![0u64; merchant.config.segments.len() * cols];
    for (_, customer) in merchant.customers() {
        let to = usize::from(evaluate(&customer.aggregate, proposed, now).segment);
        let from = usize::from(customer.published.segment);
        if let Some(cell) = matrix.get_mut(from * cols + to) {
            *cell += 1;
        }
    }
    Preview::from_matrix(&merchant.config, proposed, &matrix)
}

#[cfg(test)]
mod tests {
    use super::*;
    use functions::Money;
    use streams::MerchantId;

    #[test]
    fn sizes_and_moves_of_a_smaller_table() {
        let now = Timestamp::from_unix(1_780_000_000);
        let mut m = MerchantState::new(
            MerchantId::parse("p.myshopify.com").unwrap(),
            RfmConfig::default(),
        );
        let mut effects = Vec::new();
        // Customer 1 spends $600 today (R5 F1 M5: `other`), customer 2 $20 (R5 F1 M1: `new`).
        for (customer, cents) in [(1u64, 60_000), (2, 2_000)] {
            let order = streams::events::OrderCreated {
                event_id: format!("o{customer}"),
                schema_version: 1,
                merchant_id: m.id.clone(),
                customer_id: customer,
                order_id: customer,
                total_price: Money::from_minor(cents).to_decimal_string(2),
                currency: "USD".into(),
                created_at: chrono::DateTime::from_timestamp(now.unix(), 0).unwrap(),
                financial_status: "paid".into(),
                test: false,
                cancelled: false,
                locale: None,
                pii: None,
            };
            m.apply(&streams::InputEvent::OrderCreated(order), now, &mut effects);
        }
        let mut proposed = RfmConfig::default();
        proposed
            .segments
            .retain(|r| r.key == "loyal" || r.key == "other");
        let p = preview(&m, &proposed, now);
        assert_eq!(p.customers, 2);
        let counts = |s: &[SegmentSize]| {
            s.iter()
                .map(|s| (s.key.clone(), s.customers))
                .collect::<Vec<_>>()
        };
        assert_eq!(counts(&p.current)[2], ("new".to_owned(), 1));
        assert_eq!(counts(&p.current)[5], ("other".to_owned(), 1));
        assert_eq!(
            counts(&p.proposed),
            [("loyal".to_owned(), 0), ("other".to_owned(), 2)]
        );
        let moved = |from: &str, to: &str| Move {
            from: from.into(),
            to: to.into(),
            customers: 1,
        };
        assert_eq!(p.moves, [moved("new", "other"), moved("other", "other")]);
        assert_eq!(m.config, RfmConfig::default(), "nothing changed");
    }
}
