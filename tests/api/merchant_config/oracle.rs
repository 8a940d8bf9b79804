//! An independent reading of DESIGN.md §4 for the tests: a customer's segment under a configuration given as the
//! JSON the API takes, computed from the orders the test posted, without the engine's code.

use serde_json::Value;
use streams::MerchantId;

use crate::live::post_order;

/// What the test posted for one customer: every order of the same amount, all on one day.
#[derive(Debug, Clone, Copy)]
pub(crate) struct Customer {
    pub id: u64,
    pub orders: u32,
    pub cents_each: i64,
    pub days_ago: i64,
}

impl Customer {
    /// A spread of customers over every score: 1–5 orders of $15–$134, from 1 to 200 days ago.
    pub(crate) fn spread(count: u64) -> Vec<Customer> {
        const DAYS: [i64; 8] = [1, 12, 35, 50, 85, 100, 130, 200];
        (1..=count)
            .map(|id| Customer {
                id,
                orders: 1 + (id % 5) as u32,
                cents_each: (15 + (id * 29 % 120) as i64) * 100,
                days_ago: DAYS[(id % 8) as usize],
            })
            .collect()
    }

    pub(crate) fn price(&self) -> String {
        format!("{}.{:02}", self.cents_each / 100, self.cents_each % 100)
    }
}

fn numbers(config: &Value, field: &str) -> Vec<i64> {
    config[field]
        .as_array()
        .unwrap_or_else(|| panic!("{field} in {config}"))
        .iter()
        .map(|v| match v {
            Value::String(s) => (s.parse::<f64>().expect("an amount") * 100.0).round() as i64,
            other => other.as_i64().expect("a whole number"),
        })
        .collect()
}

fn recency(days: i64, bounds: &[i64]) -> u8 {
    bounds
        .iter()
        .position(|b| days <= *b)
        .map_or(1, |i| 5 - i as u8)
}

fn frequency(orders: i64, bounds: &[i64]) -> u8 {
    bounds
        .iter()
        .position(|b| orders <= *b)
        .map_or(5, |i| 1 + i as u8)
}

fn monetary(cents: i64, m: &[i64]) -> u8 {
    match cents {
        c if c <= 0 || c < m[0] => 1,
        c if c < m[1] => 2,
        c if c < m[2] => 3,
        c if c <= m[3] => 4,
        _ => 5,
    }
}

fn within(rule: &Value, dimension: &str, score: u8) -> bool {
    let range = &rule[dimension];
    let (min, max) = (range["min"].as_u64(), range["max"].as_u64());
    (min.unwrap_or(1)..=max.unwrap_or(5)).contains(&u64::from(score))
}

/// The key of the first rule of `config` the customer's scores fall in.
pub(crate) fn segment(config: &Value, c: &Customer) -> String {
    let r = recency(c.days_ago, &numbers(config, "recency_days"));
    let f = frequency(i64::from(c.orders), &numbers(config, "frequency_orders"));
    let m = monetary(
        c.cents_each * i64::from(c.orders),
        &numbers(config, "monetary"),
    );
    let rules = config["segments"].as_array().expect("segments");
    rules
        .iter()
        .find(|rule| {
            within(rule, "recency", r)
                && within(rule, "frequency", f)
                && within(rule, "monetary", m)
        })
        .and_then(|rule| rule["key"].as_str())
        .expect("a total table")
        .to_owned()
}

/// Posts every order of `customers` through the ingress at `address`, as signed webhooks.
pub(crate) async fn post_customers(address: &str, shop: &MerchantId, customers: &[Customer]) {
    let mut order = 0;
    for c in customers {
        for _ in 0..c.orders {
            order += 1;
            post_order(address, shop, order, c.id, &c.price(), c.days_ago).await;
        }
    }
}
