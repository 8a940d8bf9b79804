//! From Shopify's webhook payloads to our compact events (DESIGN.md §3).
//!
//! Only the fields the engine needs are decoded; everything else in a 6 KB order is skipped by serde without being
//! allocated. Money is validated here, at the edge, so a garbage amount is the sender's 400 and never a poison
//! record downstream. Personal fields are sealed (see `pii`) or dropped, never copied in clear.

use chrono::{DateTime, FixedOffset, Utc};
use functions::money::{currency_exponent, Money};
use serde::Deserialize;
use streams::events::{
    CustomerCreated, CustomerDataRequest, CustomerRedact, OrderCancelled, OrderCreated,
    RefundCreated, ShopRedact,
};
use streams::{InputEvent, MerchantId, SCHEMA_VERSION};

use crate::pii::{KeyRing, Owner, Pii, ShopKey};

/// The webhook topics we act on, from `X-Shopify-Topic`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum WebhookTopic {
    OrdersCreate,
    OrdersCancelled,
    RefundsCreate,
    CustomersCreate,
    CustomersRedact,
    CustomersDataRequest,
    ShopRedact,
    /// The merchant uninstalled the app: the ingress drops the shop's Admin API token (`shopify::access`).
    AppUninstalled,
    /// A bulk operation of ours finished (issue 19's backfill): it wakes the waiting backfill, produces nothing.
    BulkOperationsFinish,
}

impl WebhookTopic {
    /// Every topic the ingress accepts, for registering their metric series at start.
    pub const ALL: [WebhookTopic; 7] = [
        WebhookTopic::OrdersCreate,
        WebhookTopic::OrdersCancelled,
        WebhookTopic::RefundsCreate,
        WebhookTopic::CustomersCreate,
        WebhookTopic::CustomersRedact,
        WebhookTopic::CustomersDataRequest,
        WebhookTopic::ShopRedact,
    ];

    /// Whether the topic's body may carry personal data to seal.
    pub fn carries_pii(self) -> bool {
        matches!(
            self,
            WebhookTopic::OrdersCreate | WebhookTopic::CustomersCreate
        )
    }

    pub fn parse(raw: &str) -> Option<Self> {
        Some(match raw.trim() {
            "orders/create" => WebhookTopic::OrdersCreate,
            "orders/cancelled" => WebhookTopic::OrdersCancelled,
            "refunds/create" => WebhookTopic::RefundsCreate,
            "customers/create" => WebhookTopic::CustomersCreate,
            "customers/redact" => WebhookTopic::CustomersRedact,
            "customers/data_request" => WebhookTopic::CustomersDataRequest,
            "shop/redact" => WebhookTopic::ShopRedact,
            "app/uninstalled" => WebhookTopic::AppUninstalled,
            "bulk_operations/finish" => WebhookTopic::BulkOperationsFinish,
            _ => return None,
        })
    }

    pub fn as_str(self) -> &'static str {
        match self {
            WebhookTopic::OrdersCreate => "orders/create",
            WebhookTopic::OrdersCancelled => "orders/cancelled",
            WebhookTopic::RefundsCreate => "refunds/create",
            WebhookTopic::CustomersCreate => "customers/create",
            WebhookTopic::CustomersRedact => "customers/redact",
            WebhookTopic::CustomersDataRequest => "customers/data_request",
            WebhookTopic::ShopRedact => "shop/redact",
            WebhookTopic::AppUninstalled => "app/uninstalled",
            WebhookTopic::BulkOperationsFinish => "bulk_operations/finish",
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum NormalizeError {
    #[error("body is not valid JSON for {topic}: {source}")]
    Json {
        topic: &'static str,
        #[source]
        source: serde_json::Error,
    },
    #[error("body of {topic} is not a JSON object")]
    NotAnObject { topic: &'static str },
    #[error("body is not a {topic} body (another GDPR topic's?)")]
    WrongBody { topic: &'static str },
    #[error("invalid amount in {field}: {message}")]
    Money {
        field: &'static str,
        message: String,
    },
    /// A GDPR body names another shop than the header: a replayed or forged request, refused as unauthenticated.
    #[error("body names shop {body:?}, the header names another")]
    ShopMismatch { body: String },
}

/// What a webhook becomes: an event to produce, or a reason nothing is produced.
#[derive(Debug)]
pub enum Normalized {
    Event(Box<InputEvent>),
    /// A valid webhook that carries nothing to score (a guest checkout).
    Ignored(&'static str),
}

#[derive(Deserialize)]
struct CustomerRef {
    id: u64,
    email: Option<String>,
    first_name: Option<String>,
    last_name: Option<String>,
    phone: Option<String>,
    created_at: Option<DateTime<FixedOffset>>,
    locale: Option<String>,
}

impl CustomerRef {
    /// The customer's personal fields, sealed for this shop and customer.
    fn sealed_pii(&self, env: &Envelope<'_>) -> Option<streams::events::SealedPii> {
        let pii = Pii {
            email: self.email.clone(),
            first_name: self.first_name.clone(),
            last_name: self.last_name.clone(),
            phone: self.phone.clone(),
        };
        let owner = Owner {
            merchant: env.merchant_id,
            customer_id: self.id,
        };
        match env.shop_key {
            Some(key) => env.keys.seal_for_shop(key, &pii, owner),
            None => env.keys.seal(&pii, owner),
        }
    }
}

#[derive(Deserialize)]
struct ShopMoney {
    amount: String,
    currency_code: String,
}

#[derive(Deserialize)]
struct MoneySet {
    shop_money: ShopMoney,
}

#[derive(Deserialize)]
struct Order {
    id: u64,
    customer: Option<CustomerRef>,
    total_price: Option<String>,
    total_price_set: Option<MoneySet>,
    currency: Option<String>,
    financial_status: Option<String>,
    cancelled_at: Option<DateTime<FixedOffset>>,
    #[serde(default)]
    test: bool,
    created_at: DateTime<FixedOffset>,
    updated_at: Option<DateTime<FixedOffset>>,
    customer_locale: Option<String>,
}

#[derive(Deserialize)]
struct Transaction {
    amount: String,
    kind: String,
    status: String,
    currency: Option<String>,
}

#[derive(Deserialize)]
struct RefundLineItem {
    subtotal_set: Option<MoneySet>,
    total_tax_set: Option<MoneySet>,
}

#[derive(Deserialize)]
struct RefundShippingLine {
    subtotal_amount_set: Option<MoneySet>,
}

#[derive(Deserialize)]
struct Refund {
    id: u64,
    order_id: u64,
    created_at: DateTime<FixedOffset>,
    #[serde(default)]
    refund_line_items: Vec<RefundLineItem>,
    #[serde(default)]
    refund_shipping_lines: Vec<RefundShippingLine>,
    #[serde(default)]
    transactions: Vec<Transaction>,
}

/// The `bulk_operations/finish` body: the operation's id and how it ended (the result is read by querying it).
#[derive(Deserialize)]
struct BulkOperationFinish {
    admin_graphql_api_id: String,
    status: String,
}

#[derive(Deserialize)]
struct GdprCustomer {
    id: u64,
}

/// The shop a GDPR body names. Shopify puts it in every GDPR body; it is required here because those topics
/// erase or export data, so a body must say which shop it is about and that must be the header's shop.
#[derive(Deserialize)]
struct GdprShop {
    shop_domain: String,
    // Type-checked only: no header carries the shop's numeric id to compare it with.
    #[serde(rename = "shop_id")]
    _shop_id: Option<u64>,
}

impl GdprShop {
    fn check(&self, header_shop: &MerchantId) -> Result<(), NormalizeError> {
        match MerchantId::parse(&self.shop_domain) {
            Ok(shop) if &shop == header_shop => Ok(()),
            _ => Err(NormalizeError::ShopMismatch {
                body: self.shop_domain.chars().take(80).collect(),
            }),
        }
    }
}

/// A customer GDPR body. Which fields it carries tells the topics apart (`orders_to_redact` for a redaction,
/// `data_request` for a data request), so a genuine body of one cannot be replayed as another: the topic header is
/// not signed.
#[derive(Deserialize)]
struct GdprCustomerPayload {
    #[serde(flatten)]
    shop: GdprShop,
    customer: GdprCustomer,
    orders_to_redact: Option<Vec<u64>>,
    data_request: Option<DataRequestRef>,
}

/// An `app/uninstalled` body: the Shop resource, whose `myshopify_domain` is the shop uninstalling.
#[derive(Deserialize)]
struct UninstalledShop {
    myshopify_domain: String,
}

/// A `shop/redact` body: a shop and nothing about a customer.
#[derive(Deserialize)]
struct ShopRedactPayload {
    #[serde(flatten)]
    shop: GdprShop,
    customer: Option<serde::de::IgnoredAny>,
}

#[derive(Deserialize)]
struct DataRequestRef {
    id: u64,
}

/// Context shared by every event a webhook produces.
pub struct Envelope<'a> {
    pub event_id: &'a str,
    pub merchant_id: &'a MerchantId,
    pub keys: &'a KeyRing,
    /// The shop's own data key, when the ingress has one (crypto-shredding); else the configured key seals.
    pub shop_key: Option<&'a ShopKey>,
}

/// Every body Shopify signs for these topics is a JSON object. Checking the first byte keeps serde from accepting
/// a struct in its array form, and refuses anything else that happens to carry a valid HMAC under the app secret
/// (a session token's signing input, for one) before a single field is read.
fn require_object(topic: &'static str, body: &[u8]) -> Result<(), NormalizeError> {
    match body.iter().find(|b| !b.is_ascii_whitespace()) {
        Some(b'{') => Ok(()),
        _ => Err(NormalizeError::NotAnObject { topic }),
    }
}

fn parse<'de, T: Deserialize<'de>>(
    topic: WebhookTopic,
    body: &'de [u8],
) -> Result<T, NormalizeError> {
    require_object(topic.as_str(), body)?;
    serde_json::from_slice(body).map_err(|source| NormalizeError::Json {
        topic: topic.as_str(),
        source,
    })
}

/// A signed body of a topic we do not act on must still be what Shopify sends: a JSON object.
pub fn check_unhandled(body: &[u8]) -> Result<(), NormalizeError> {
    const TOPIC: &str = "an unhandled topic";
    require_object(TOPIC, body)?;
    serde_json::from_slice::<serde::de::IgnoredAny>(body)
        .map(drop)
        .map_err(|source| NormalizeError::Json {
            topic: TOPIC,
            source,
        })
}

fn utc(t: DateTime<FixedOffset>) -> DateTime<Utc> {
    t.with_timezone(&Utc)
}

pub fn normalize(
    topic: WebhookTopic,
    body: &[u8],
    env: &Envelope<'_>,
) -> Result<Normalized, NormalizeError> {
    let event = match topic {
        WebhookTopic::OrdersCreate => return order_created(parse(topic, body)?, env),
        WebhookTopic::OrdersCancelled => {
            let order: Order = parse(topic, body)?;
            let Some(customer) = order.customer else {
                return Ok(Normalized::Ignored("guest_order"));
            };
            InputEvent::OrderCancelled(OrderCancelled {
                event_id: env.event_id.to_owned(),
                schema_version: SCHEMA_VERSION,
                merchant_id: env.merchant_id.clone(),
                customer_id: customer.id,
                order_id: order.id,
                cancelled_at: utc(order
                    .cancelled_at
                    .or(order.updated_at)
                    .unwrap_or(order.created_at)),
            })
        }
        WebhookTopic::RefundsCreate => refund_created(parse(topic, body)?, env)?,
        WebhookTopic::BulkOperationsFinish => {
            let finished: BulkOperationFinish = parse(topic, body)?;
            tracing::info!(merchant = %env.merchant_id, operation = %finished.admin_graphql_api_id,
                status = %finished.status, "bulk operation finished");
            return Ok(Normalized::Ignored("bulk_operation_finished"));
        }
        WebhookTopic::CustomersCreate => {
            let customer: CustomerRef = parse(topic, body)?;
            InputEvent::CustomerCreated(CustomerCreated {
                event_id: env.event_id.to_owned(),
                schema_version: SCHEMA_VERSION,
                merchant_id: env.merchant_id.clone(),
                customer_id: customer.id,
                created_at: customer.created_at.map_or_else(Utc::now, utc),
                locale: customer.locale.clone(),
                pii: customer.sealed_pii(env),
            })
        }
        WebhookTopic::CustomersRedact | WebhookTopic::CustomersDataRequest => {
            gdpr_customer(topic, body, env)?
        }
        WebhookTopic::AppUninstalled => {
            // The body is the Shop resource and must name the header's shop: the header is not signed, so without
            // this any signed body of any shop could be replayed as an uninstall of another. Nothing goes to Kafka.
            let payload: UninstalledShop = parse(topic, body)?;
            GdprShop {
                shop_domain: payload.myshopify_domain,
                _shop_id: None,
            }
            .check(env.merchant_id)?;
            return Ok(Normalized::Ignored("app_uninstalled"));
        }
        WebhookTopic::ShopRedact => {
            let payload: ShopRedactPayload = parse(topic, body)?;
            payload.shop.check(env.merchant_id)?;
            if payload.customer.is_some() {
                return Err(NormalizeError::WrongBody {
                    topic: topic.as_str(),
                });
            }
            InputEvent::ShopRedact(ShopRedact {
                event_id: env.event_id.to_owned(),
                schema_version: SCHEMA_VERSION,
                merchant_id: env.merchant_id.clone(),
                requested_at: Some(Utc::now()),
            })
        }
    };
    Ok(Normalized::Event(Box::new(event)))
}

fn order_created(order: Order, env: &Envelope<'_>) -> Result<Normalized, NormalizeError> {
    let Some(customer) = &order.customer else {
        return Ok(Normalized::Ignored("guest_order"));
    };
    // The shop-currency amount: presentment currencies differ per buyer, thresholds are in the shop's currency.
    let (amount, currency) = match (&order.total_price_set, &order.total_price) {
        (Some(set), _) => (
            set.shop_money.amount.clone(),
            set.shop_money.currency_code.clone(),
        ),
        (None, Some(total)) => (
            total.clone(),
            order.currency.clone().unwrap_or_else(|| "USD".to_owned()),
        ),
        (None, None) => {
            return Err(NormalizeError::Money {
                field: "total_price",
                message: "missing".to_owned(),
            })
        }
    };
    let exponent = currency_exponent(&currency);
    let total = Money::parse(&amount, exponent).map_err(|e| NormalizeError::Money {
        field: "total_price",
        message: e.to_string(),
    })?;
    Ok(Normalized::Event(Box::new(InputEvent::OrderCreated(
        OrderCreated {
            event_id: env.event_id.to_owned(),
            schema_version: SCHEMA_VERSION,
            merchant_id: env.merchant_id.clone(),
            customer_id: customer.id,
            order_id: order.id,
            total_price: total.to_decimal_string(exponent),
            currency,
            created_at: utc(order.created_at),
            financial_status: order
                .financial_status
                .clone()
                .unwrap_or_else(|| "pending".to_owned()),
            test: order.test,
            cancelled: order.cancelled_at.is_some(),
            locale: order.customer_locale.clone(),
            pii: customer.sealed_pii(env),
        },
    ))))
}

fn refund_created(refund: Refund, env: &Envelope<'_>) -> Result<InputEvent, NormalizeError> {
    let (amount, exponent) = refund_amount(&refund)?;
    Ok(InputEvent::RefundCreated(RefundCreated {
        event_id: env.event_id.to_owned(),
        schema_version: SCHEMA_VERSION,
        merchant_id: env.merchant_id.clone(),
        customer_id: None,
        order_id: refund.order_id,
        refund_id: refund.id,
        amount: amount.to_decimal_string(exponent),
        created_at: utc(refund.created_at),
    }))
}

/// The refunded amount in the shop's currency. Refund transactions are in the buyer's (presentment) currency, so
/// the shop-money sets of the refunded line items, their tax and refunded shipping are summed instead. A refund of
/// an amount only (no lines) has nothing but transactions; then successful refund transactions are summed, which
/// is exact when the buyer paid in the shop currency (documented limitation otherwise).
fn refund_amount(refund: &Refund) -> Result<(Money, u8), NormalizeError> {
    let mut shop_sets = refund
        .refund_line_items
        .iter()
        .flat_map(|l| [l.subtotal_set.as_ref(), l.total_tax_set.as_ref()])
        .chain(
            refund
                .refund_shipping_lines
                .iter()
                .map(|s| s.subtotal_amount_set.as_ref()),
        )
        .flatten()
        .map(|set| {
            (
                &set.shop_money.amount,
                Some(set.shop_money.currency_code.as_str()),
            )
        });
    let mut transactions = refund
        .transactions
        .iter()
        .filter(|t| t.kind == "refund" && t.status == "success")
        .map(|t| (&t.amount, t.currency.as_deref()));
    let sum = |items: &mut dyn Iterator<Item = (&String, Option<&str>)>| -> Result<(Money, u8, bool), NormalizeError> {
        let (mut total, mut exponent, mut any) = (Money::ZERO, 2, false);
        for (amount, currency) in items {
            exponent = currency.map_or(2, currency_exponent);
            let value = Money::parse(amount, exponent).map_err(|e| NormalizeError::Money {
                field: "refund amount",
                message: e.to_string(),
            })?;
            total = total.saturating_add(value);
            any = true;
        }
        Ok((total, exponent, any))
    };
    match sum(&mut shop_sets)? {
        (total, exponent, true) => Ok((total, exponent)),
        _ => sum(&mut transactions).map(|(total, exponent, _)| (total, exponent)),
    }
}

fn gdpr_customer(
    topic: WebhookTopic,
    body: &[u8],
    env: &Envelope<'_>,
) -> Result<InputEvent, NormalizeError> {
    let payload: GdprCustomerPayload = parse(topic, body)?;
    payload.shop.check(env.merchant_id)?;
    let redaction = topic == WebhookTopic::CustomersRedact;
    let fits = match (&payload.orders_to_redact, &payload.data_request) {
        (Some(_), None) => redaction,
        (None, Some(_)) => !redaction,
        _ => false,
    };
    if !fits {
        return Err(NormalizeError::WrongBody {
            topic: topic.as_str(),
        });
    }
    let (event_id, schema_version, merchant_id) = (
        env.event_id.to_owned(),
        SCHEMA_VERSION,
        env.merchant_id.clone(),
    );
    Ok(if topic == WebhookTopic::CustomersRedact {
        InputEvent::CustomerRedact(CustomerRedact {
            event_id,
            schema_version,
            merchant_id,
            customer_id: payload.customer.id,
            orders_to_redact: payload.orders_to_redact.unwrap_or_default(),
            requested_at: Some(Utc::now()),
        })
    } else {
        InputEvent::CustomerDataRequest(CustomerDataRequest {
            event_id,
            schema_version,
            merchant_id,
            customer_id: payload.customer.id,
            data_request_id: payload.data_request.map(|d| d.id),
        })
    })
}
