//! From the lines of a bulk query's JSONL result to input events. An order's line carries its customer and its
//! refunds (a list field in Shopify's schema, so nested in the line); a line of a nested connection names its
//! parent in `__parentId` and comes after it. A refund arriving as such a child line needs nothing of its parent
//! but the order id, which `__parentId` carries, so no line is held back: the reader's memory does not grow with
//! the file.
//!
//! Event ids come from Shopify's ids (`shopify-order-{id}`, `shopify-refund-{id}`), so a second backfill produces
//! the same events. What makes an order that also arrived by webhook count once is the engine's order index:
//! a customer's aggregate keeps one record per order id and one per refund id (see docs/DECISIONS.md).

use chrono::{DateTime, FixedOffset, Utc};
use functions::money::{currency_exponent, Money};
use serde::Deserialize;
use streams::events::{OrderCancelled, OrderCreated, RefundCreated};
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

use crate::pii::{KeyRing, Owner, Pii, ShopKey};

#[derive(Debug, thiserror::Error)]
pub enum LineError {
    #[error("line is not JSON of a bulk result: {0}")]
    Json(#[from] serde_json::Error),
    #[error("{field} is not a Shopify id of the expected kind: {raw:?}")]
    Gid { field: &'static str, raw: String },
    #[error("invalid amount in {field}: {message}")]
    Money {
        field: &'static str,
        message: String,
    },
}

#[derive(Deserialize)]
struct ShopMoney {
    amount: String,
    #[serde(rename = "currencyCode")]
    currency_code: String,
}

#[derive(Deserialize)]
struct MoneyBag {
    #[serde(rename = "shopMoney")]
    shop_money: ShopMoney,
}

#[derive(Deserialize)]
struct CustomerRef {
    id: String,
    email: Option<String>,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct RefundLine {
    id: String,
    created_at: DateTime<FixedOffset>,
    total_refunded_set: MoneyBag,
}

#[derive(Deserialize)]
#[serde(rename_all = "camelCase")]
struct OrderLine {
    id: String,
    created_at: DateTime<FixedOffset>,
    processed_at: Option<DateTime<FixedOffset>>,
    cancelled_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    test: bool,
    display_financial_status: Option<String>,
    total_price_set: MoneyBag,
    customer: Option<CustomerRef>,
    #[serde(default)]
    refunds: Vec<RefundLine>,
}

/// Only the two fields every line has, to tell a parent from a child before decoding the rest.
#[derive(Deserialize)]
struct Head<'a> {
    #[serde(borrow)]
    id: &'a str,
    #[serde(rename = "__parentId", borrow)]
    parent: Option<&'a str>,
}

/// What a line became.
#[derive(Debug, PartialEq)]
pub enum Converted {
    Events(Vec<InputEvent>),
    /// Valid, but nothing to score (a guest order, a child line of a kind we do not use).
    Skipped(&'static str),
}

/// How personal data in the lines is sealed: as the ingress does, the shop's own key when there is one.
pub struct Sealer<'a> {
    pub keys: &'a KeyRing,
    pub shop_key: Option<&'a ShopKey>,
}

/// The numeric id of `gid://shopify/{kind}/{id}`.
pub fn numeric_id(field: &'static str, kind: &str, raw: &str) -> Result<u64, LineError> {
    raw.strip_prefix("gid://shopify/")
        .and_then(|rest| rest.strip_prefix(kind))
        .and_then(|rest| rest.strip_prefix('/'))
        .and_then(|id| id.split('?').next())
        .and_then(|id| id.parse().ok())
        .ok_or_else(|| LineError::Gid {
            field,
            raw: raw.chars().take(80).collect(),
        })
}

fn amount(field: &'static str, bag: &MoneyBag) -> Result<(String, String), LineError> {
    let exponent = currency_exponent(&bag.shop_money.currency_code);
    let value = Money::parse(&bag.shop_money.amount, exponent).map_err(|e| LineError::Money {
        field,
        message: e.to_string(),
    })?;
    Ok((
        value.to_decimal_string(exponent),
        bag.shop_money.currency_code.clone(),
    ))
}

fn utc(t: DateTime<FixedOffset>) -> DateTime<Utc> {
    t.with_timezone(&Utc)
}

pub fn convert(
    line: &[u8],
    merchant: &MerchantId,
    sealer: &Sealer<'_>,
) -> Result<Converted, LineError> {
    let head: Head<'_> = serde_json::from_slice(line)?;
    if let Some(parent) = head.parent {
        if !head.id.starts_with("gid://shopify/Refund/") {
            return Ok(Converted::Skipped("child_line"));
        }
        let order_id = numeric_id("__parentId", "Order", parent)?;
        let refund: RefundLine = serde_json::from_slice(line)?;
        return Ok(Converted::Events(vec![refund_event(
            merchant, None, order_id, &refund,
        )?]));
    }
    let order: OrderLine = serde_json::from_slice(line)?;
    order_events(order, merchant, sealer)
}

fn order_events(
    order: OrderLine,
    merchant: &MerchantId,
    sealer: &Sealer<'_>,
) -> Result<Converted, LineError> {
    let order_id = numeric_id("id", "Order", &order.id)?;
    let Some(customer) = &order.customer else {
        return Ok(Converted::Skipped("guest_order"));
    };
    let customer_id = numeric_id("customer.id", "Customer", &customer.id)?;
    let (total_price, currency) = amount("totalPriceSet", &order.total_price_set)?;
    let pii = customer.email.as_ref().and_then(|email| {
        let pii = Pii {
            email: Some(email.clone()),
            ..Pii::default()
        };
        let owner = Owner {
            merchant,
            customer_id,
        };
        match sealer.shop_key {
            Some(key) => sealer.keys.seal_for_shop(key, &pii, owner),
            None => sealer.keys.seal(&pii, owner),
        }
    });
    let mut events = vec![InputEvent::OrderCreated(OrderCreated {
        event_id: format!("shopify-order-{order_id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id,
        order_id,
        total_price,
        currency,
        // Orders imported into Shopify from another platform keep their original date in processedAt.
        created_at: utc(order.processed_at.unwrap_or(order.created_at)),
        financial_status: order
            .display_financial_status
            .as_deref()
            .unwrap_or("pending")
            .to_ascii_lowercase(),
        test: order.test,
        cancelled: order.cancelled_at.is_some(),
        locale: None,
        pii,
    })];
    if let Some(at) = order.cancelled_at {
        // Also as its own event: an order the engine already holds from its webhook is marked cancelled too.
        events.push(InputEvent::OrderCancelled(OrderCancelled {
            event_id: format!("shopify-order-{order_id}-cancelled"),
            schema_version: SCHEMA_VERSION,
            merchant_id: merchant.clone(),
            customer_id,
            order_id,
            cancelled_at: utc(at),
        }));
    }
    for refund in &order.refunds {
        events.push(refund_event(merchant, Some(customer_id), order_id, refund)?);
    }
    Ok(Converted::Events(events))
}

fn refund_event(
    merchant: &MerchantId,
    customer_id: Option<u64>,
    order_id: u64,
    refund: &RefundLine,
) -> Result<InputEvent, LineError> {
    let refund_id = numeric_id("refund id", "Refund", &refund.id)?;
    let (amount, _) = amount("totalRefundedSet", &refund.total_refunded_set)?;
    Ok(InputEvent::RefundCreated(RefundCreated {
        event_id: format!("shopify-refund-{refund_id}"),
        schema_version: SCHEMA_VERSION,
        merchant_id: merchant.clone(),
        customer_id,
        order_id,
        refund_id,
        amount,
        created_at: utc(refund.created_at),
    }))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn shop() -> MerchantId {
        MerchantId::parse("a.myshopify.com").unwrap()
    }

    fn run(line: &str) -> Result<Converted, LineError> {
        let keys = KeyRing::empty();
        convert(
            line.as_bytes(),
            &shop(),
            &Sealer {
                keys: &keys,
                shop_key: None,
            },
        )
    }

    #[test]
    fn an_order_with_a_cancellation_and_a_refund_becomes_three_events() {
        let line = r#"{"id":"gid://shopify/Order/11","createdAt":"2026-01-02T03:04:05Z","cancelledAt":"2026-01-03T00:00:00Z","test":false,"displayFinancialStatus":"PARTIALLY_REFUNDED","totalPriceSet":{"shopMoney":{"amount":"20.5","currencyCode":"USD"}},"customer":{"id":"gid://shopify/Customer/7","email":null},"refunds":[{"id":"gid://shopify/Refund/99","createdAt":"2026-01-04T00:00:00Z","totalRefundedSet":{"shopMoney":{"amount":"5.00","currencyCode":"USD"}}}]}"#;
        let Ok(Converted::Events(events)) = run(line) else {
            panic!("converts")
        };
        let ids: Vec<&str> = events.iter().map(InputEvent::event_id).collect();
        assert_eq!(
            ids,
            [
                "shopify-order-11",
                "shopify-order-11-cancelled",
                "shopify-refund-99"
            ]
        );
        let InputEvent::OrderCreated(order) = &events[0] else {
            panic!("an order")
        };
        assert_eq!(
            (
                order.customer_id,
                order.total_price.as_str(),
                order.cancelled
            ),
            (7, "20.50", true)
        );
        assert_eq!(order.financial_status, "partially_refunded");
    }

    #[test]
    fn a_child_refund_line_names_its_order_through_parent_id() {
        let line = r#"{"id":"gid://shopify/Refund/5","createdAt":"2026-01-04T00:00:00Z","totalRefundedSet":{"shopMoney":{"amount":"1.00","currencyCode":"USD"}},"__parentId":"gid://shopify/Order/42"}"#;
        let Ok(Converted::Events(events)) = run(line) else {
            panic!("converts")
        };
        let InputEvent::RefundCreated(refund) = &events[0] else {
            panic!("a refund")
        };
        assert_eq!(
            (refund.order_id, refund.refund_id, refund.customer_id),
            (42, 5, None)
        );
        let other = r#"{"id":"gid://shopify/LineItem/5","__parentId":"gid://shopify/Order/42"}"#;
        assert_eq!(run(other).unwrap(), Converted::Skipped("child_line"));
    }

    #[test]
    fn guests_are_skipped_and_garbage_is_an_error() {
        let guest = r#"{"id":"gid://shopify/Order/1","createdAt":"2026-01-02T03:04:05Z","totalPriceSet":{"shopMoney":{"amount":"1.00","currencyCode":"USD"}},"customer":null}"#;
        assert_eq!(run(guest).unwrap(), Converted::Skipped("guest_order"));
        assert!(matches!(
            run("{\"id\":\"gid://shopify/Order/x\"}"),
            Err(LineError::Json(_))
        ));
        let bad_money = guest
            .replace("1.00", "1.0.0")
            .replace("null", r#"{"id":"gid://shopify/Customer/3"}"#);
        assert!(matches!(run(&bad_money), Err(LineError::Money { .. })));
        assert!(run("not json").is_err());
    }
}
