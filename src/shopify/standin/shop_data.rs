//! A generated Shopify shop for the stand-in: customers and a year of their orders (some cancelled, some refunded,
//! some test orders), deterministic from a seed so a test can compute what the engine must end up with from the
//! same orders, and rendered as the JSONL lines a bulk operation over orders would return.

use std::io::Write;

use chrono::{DateTime, SecondsFormat, Utc};
use serde_json::json;

/// Shopify-like numeric ids: the generated objects never collide with small ids other tests use.
pub const CUSTOMER_ID_BASE: u64 = 7_000_000_000;
pub const ORDER_ID_BASE: u64 = 5_000_000_000;
pub const REFUND_ID_BASE: u64 = 9_000_000_000;
const YEAR_SECONDS: i64 = 365 * 86_400;

/// What to generate.
#[derive(Debug, Clone, Copy)]
pub struct ShopSpec {
    pub customers: u64,
    pub orders: u64,
    /// The newest order is at most this old; the oldest at most a year older.
    pub now: i64,
    pub seed: u64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedRefund {
    pub id: u64,
    pub amount_cents: i64,
    pub created_at: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct GeneratedOrder {
    pub id: u64,
    pub customer_id: u64,
    pub total_cents: i64,
    pub created_at: i64,
    pub cancelled_at: Option<i64>,
    pub test: bool,
    pub refunds: Vec<GeneratedRefund>,
}

/// The generated shop: its orders, oldest id first.
#[derive(Debug, Clone)]
pub struct GeneratedShop {
    pub spec: ShopSpec,
    pub orders: Vec<GeneratedOrder>,
}

/// SplitMix64: a tiny, well-known generator; good enough for test data and needs no crate.
struct Mix(u64);

impl Mix {
    fn next(&mut self) -> u64 {
        self.0 = self.0.wrapping_add(0x9E37_79B9_7F4A_7C15);
        let mut z = self.0;
        z = (z ^ (z >> 30)).wrapping_mul(0xBF58_476D_1CE4_E5B9);
        z = (z ^ (z >> 27)).wrapping_mul(0x94D0_49BB_1331_11EB);
        z ^ (z >> 31)
    }

    /// Uniform in [0, 1).
    fn unit(&mut self) -> f64 {
        (self.next() >> 11) as f64 / (1u64 << 53) as f64
    }
}

impl GeneratedShop {
    pub fn generate(spec: ShopSpec) -> GeneratedShop {
        let mut rng = Mix(spec.seed ^ 0x005E_ED0F_5110_F1F1);
        let customers = spec.customers.max(1);
        let orders = (1..=spec.orders)
            .map(|n| Self::order(&mut rng, &spec, customers, n))
            .collect();
        GeneratedShop { spec, orders }
    }

    fn order(rng: &mut Mix, spec: &ShopSpec, customers: u64, n: u64) -> GeneratedOrder {
        // Squaring skews orders towards low customer numbers, so frequency and spend spread over every score.
        let u = rng.unit();
        let customer = ((u * u) * customers as f64) as u64 % customers;
        // A third of the customers stopped buying half a year ago: the at-risk and lost segments get members.
        let mut age = rng.unit();
        if customer % 3 == 2 {
            age = 0.5 + age / 2.0;
        }
        let created_at = spec.now - 3_600 - (age * (YEAR_SECONDS - 7_200) as f64) as i64;
        let total_cents = 500 + (rng.next() % 40_000) as i64;
        let roll = rng.next() % 100;
        let cancelled_at = (roll < 5).then_some(created_at + 86_400);
        let test = (5..7).contains(&roll);
        let refunds = if (7..15).contains(&roll) {
            let amount_cents = 100 + (rng.next() % (total_cents as u64 / 2)) as i64;
            vec![GeneratedRefund {
                id: REFUND_ID_BASE + n,
                amount_cents,
                created_at: created_at + 2 * 86_400,
            }]
        } else {
            Vec::new()
        };
        GeneratedOrder {
            id: ORDER_ID_BASE + n,
            customer_id: CUSTOMER_ID_BASE + customer + 1,
            total_cents,
            created_at,
            cancelled_at,
            test,
            refunds,
        }
    }

    /// Writes the result of a bulk query over orders, one JSON object per line as Shopify returns it: the
    /// customer and the refunds (a list field in the Admin schema, not a connection) nested in the order's line.
    pub fn write_jsonl(&self, out: &mut impl Write) -> std::io::Result<()> {
        for order in &self.orders {
            serde_json::to_writer(&mut *out, &order_line(order))?;
            out.write_all(b"\n")?;
        }
        Ok(())
    }

    /// The lines of the JSONL (what `objectCount` counts).
    pub fn object_count(&self) -> u64 {
        self.orders.len() as u64
    }
}

fn time(t: i64) -> String {
    DateTime::<Utc>::from_timestamp(t, 0)
        .unwrap_or_default()
        .to_rfc3339_opts(SecondsFormat::Secs, true)
}

fn money(cents: i64) -> serde_json::Value {
    json!({"shopMoney": {"amount": format!("{}.{:02}", cents / 100, cents % 100), "currencyCode": "USD"}})
}

fn order_line(order: &GeneratedOrder) -> serde_json::Value {
    let customer = order.customer_id;
    json!({
        "id": format!("gid://shopify/Order/{}", order.id),
        "createdAt": time(order.created_at),
        "processedAt": time(order.created_at),
        "cancelledAt": order.cancelled_at.map(time),
        "test": order.test,
        "displayFinancialStatus": if order.refunds.is_empty() { "PAID" } else { "PARTIALLY_REFUNDED" },
        "totalPriceSet": money(order.total_cents),
        "customer": {
            "id": format!("gid://shopify/Customer/{customer}"),
            "email": format!("customer{customer}@example.com"),
        },
        "refunds": order.refunds.iter().map(|r| json!({
            "id": format!("gid://shopify/Refund/{}", r.id),
            "createdAt": time(r.created_at),
            "totalRefundedSet": money(r.amount_cents),
        })).collect::<Vec<_>>(),
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn spec() -> ShopSpec {
        ShopSpec {
            customers: 50,
            orders: 400,
            now: 1_780_000_000,
            seed: 7,
        }
    }

    #[test]
    fn the_same_seed_gives_the_same_shop() {
        assert_eq!(
            GeneratedShop::generate(spec()).orders,
            GeneratedShop::generate(spec()).orders
        );
    }

    #[test]
    fn a_year_of_orders_with_every_kind() {
        let shop = GeneratedShop::generate(spec());
        let oldest = shop.orders.iter().map(|o| o.created_at).min().unwrap();
        assert!(oldest >= spec().now - YEAR_SECONDS);
        assert!(shop.orders.iter().any(|o| o.cancelled_at.is_some()));
        assert!(shop.orders.iter().any(|o| o.test));
        assert!(shop.orders.iter().any(|o| !o.refunds.is_empty()));
        let mut lines = Vec::new();
        shop.write_jsonl(&mut lines).unwrap();
        assert_eq!(lines.iter().filter(|b| **b == b'\n').count(), 400);
    }
}
