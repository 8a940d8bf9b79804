//! The webhook bodies: the repository's Shopify `orders/create` fixture made into a digital order with one line
//! item (no shipping address or lines, no cash-rounding sets) and padded in its `note` to an exact size, in a few
//! hundred variants (shop, order, customer and times differ), each signed once when it is made.
//!
//! Shopify signs the body only; the delivery id travels in `X-Shopify-Webhook-Id`, outside the signature. So a
//! fresh id per request costs nothing, and the generator's per-request work is a header and a copy of a pointer:
//! the generator stays far cheaper per request than the service it measures.

use anyhow::{bail, Context};
use base64::Engine;
use bytes::Bytes;
use hmac::{Hmac, Mac};
use sha2::Sha256;

const FIXTURE: &str = include_str!("../../../tests/fixtures/shopify/orders_create.json");

/// Fields a digital order lacks; removing them brings the fixture's one-line-item order under 6.3 KB.
const DIGITAL_ORDER_LACKS: &[&str] = &[
    "shipping_address",
    "shipping_lines",
    "total_cash_rounding_payment_adjustment_set",
    "total_cash_rounding_refund_adjustment_set",
];

/// One signed body, sent many times under fresh webhook ids.
#[derive(Clone)]
pub struct Variant {
    pub shop: String,
    pub body: Bytes,
    pub signature: String,
}

pub struct Plan {
    pub shops: u32,
    pub variants: u32,
    pub body_bytes: usize,
    /// Distinguishes this run's orders and customers from earlier runs' (an order id seen before is a duplicate).
    pub run_seed: u64,
}

pub fn sign(secret: &[u8], body: &[u8]) -> anyhow::Result<String> {
    let mut mac = Hmac::<Sha256>::new_from_slice(secret).context("HMAC key")?;
    mac.update(body);
    Ok(base64::engine::general_purpose::STANDARD.encode(mac.finalize().into_bytes()))
}

/// The fixture trimmed to a digital order with its first line item only.
fn template() -> anyhow::Result<serde_json::Value> {
    let mut order: serde_json::Value =
        serde_json::from_str(FIXTURE).context("the orders/create fixture is JSON")?;
    let object = order.as_object_mut().context("the fixture is an object")?;
    for field in DIGITAL_ORDER_LACKS {
        object.remove(*field);
    }
    if let Some(items) = object.get_mut("line_items").and_then(|v| v.as_array_mut()) {
        items.truncate(1);
    }
    Ok(order)
}

/// Pads `note` so the compact body is exactly `target` bytes long.
fn padded(mut order: serde_json::Value, target: usize) -> anyhow::Result<Vec<u8>> {
    order["note"] = "".into();
    let bare = serde_json::to_vec(&order)?.len();
    if bare > target {
        bail!("the smallest body is {bare} bytes, over the asked {target}");
    }
    const WORDS: &str = "Gift wrap please, leave at the side door if nobody answers. ";
    let note: String = WORDS.chars().cycle().take(target - bare).collect();
    order["note"] = note.into();
    let body = serde_json::to_vec(&order)?;
    debug_assert_eq!(body.len(), target);
    Ok(body)
}

pub fn build(plan: &Plan, secret: &[u8]) -> anyhow::Result<Vec<Variant>> {
    let template = template()?;
    let now = chrono::Utc::now().to_rfc3339_opts(chrono::SecondsFormat::Secs, true);
    (0..plan.variants.max(1))
        .map(|i| {
            let shop = format!("load-{}.myshopify.com", i % plan.shops.max(1));
            // Order and customer ids unique to this run and variant, below 2^53 like Shopify's.
            let id = (plan.run_seed % 1_000_000_000) * 10_000 + u64::from(i) + 1;
            let mut order = template.clone();
            order["id"] = id.into();
            order["order_number"] = (1000 + i).into();
            order["name"] = format!("#{}", 1000 + i).into();
            order["created_at"] = now.as_str().into();
            order["processed_at"] = now.as_str().into();
            order["updated_at"] = now.as_str().into();
            order["customer"]["id"] = (id + 7).into();
            order["email"] = format!("shopper-{id}@example.com").into();
            order["contact_email"] = order["email"].clone();
            order["customer"]["email"] = order["email"].clone();
            let body = padded(order, plan.body_bytes)?;
            Ok(Variant {
                signature: sign(secret, &body)?,
                shop,
                body: Bytes::from(body),
            })
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn bodies_have_the_asked_size_and_a_valid_signature() {
        let plan = Plan {
            shops: 3,
            variants: 5,
            body_bytes: 6_451,
            run_seed: 42,
        };
        let variants = build(&plan, b"dev-secret").unwrap();
        assert_eq!(variants.len(), 5);
        for v in &variants {
            assert_eq!(v.body.len(), 6_451);
            assert_eq!(v.signature, sign(b"dev-secret", &v.body).unwrap());
            let order: serde_json::Value = serde_json::from_slice(&v.body).unwrap();
            assert_eq!(order["line_items"].as_array().unwrap().len(), 1);
        }
        assert_eq!(variants[3].shop, "load-0.myshopify.com");
        assert_ne!(variants[0].body, variants[1].body);
    }

    #[test]
    fn a_size_below_the_bare_order_is_refused() {
        let plan = Plan {
            shops: 1,
            variants: 1,
            body_bytes: 100,
            run_seed: 1,
        };
        assert!(build(&plan, b"k").is_err());
    }
}
