//! The compact events on Kafka (DESIGN.md §3): JSON values keyed by merchant, each carrying `event_id`,
//! `schema_version` and `merchant_id`.
//!
//! Input events are decoded by the topic they arrive on rather than by a tag inside the value, so other LoyalNest
//! services can produce them without knowing our Rust enum. A value with a `schema_version` this build does not know
//! is a decode error (and goes to the DLQ) instead of being half-understood.

use chrono::{DateTime, Utc};
use serde::{Deserialize, Serialize};

use crate::ids::MerchantId;
use crate::topics::Topics;

/// The schema version this build writes and the highest it reads.
pub const SCHEMA_VERSION: u16 = 1;

/// Email and names, sealed with AES-256-GCM at the ingress; only holders of the key id can open it. The blind
/// index lets the processor match a customer by email without ever seeing the address.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SealedPii {
    pub key_id: String,
    /// base64 of nonce ‖ ciphertext ‖ tag.
    pub sealed: String,
    /// hex HMAC-SHA256 of the lower-cased email, under the blind-index key (`PII_INDEX_KEY`), which does not
    /// change when the sealing key rotates.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email_index: Option<String>,
}

/// Declares an event struct with the envelope fields every value carries, so the consumer decodes one flat struct
/// (serde's `flatten` would buffer every value on the hot path).
macro_rules! event {
    ($(#[$meta:meta])* $name:ident { $($(#[$fmeta:meta])* $field:ident : $ty:ty),* $(,)? }) => {
        $(#[$meta])*
        #[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
        pub struct $name {
            pub event_id: String,
            pub schema_version: u16,
            pub merchant_id: MerchantId,
            $($(#[$fmeta])* pub $field: $ty,)*
        }
    };
}

event!(OrderCreated {
    customer_id: u64,
    order_id: u64,
    /// Decimal string in the shop currency, e.g. `"199.99"`.
    total_price: String,
    currency: String,
    created_at: DateTime<Utc>,
    financial_status: String,
    test: bool,
    /// Created already cancelled (Shopify sends `cancelled_at` on the create payload of such orders).
    #[serde(default)]
    cancelled: bool,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pii: Option<SealedPii>,
});

event!(OrderCancelled {
    customer_id: u64,
    order_id: u64,
    cancelled_at: DateTime<Utc>,
});

event!(
    /// Shopify's refund payload names the order, not the customer; the ingress leaves `customer_id` empty and the
    /// processor resolves it through the order.
    RefundCreated {
        #[serde(default)]
        customer_id: Option<u64>,
        order_id: u64,
        refund_id: u64,
        amount: String,
        created_at: DateTime<Utc>,
    }
);

event!(CustomerCreated {
    customer_id: u64,
    created_at: DateTime<Utc>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    locale: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pii: Option<SealedPii>,
});

event!(PointsChanged {
    customer_id: u64,
    points: i64,
    source: PointsSource,
    created_at: DateTime<Utc>,
});

event!(CustomerRedact {
    customer_id: u64,
    #[serde(default)]
    orders_to_redact: Vec<u64>,
    /// When the ingress accepted the request: events dated up to then never bring the customer back. Set once, at
    /// the ingress, so every replay of the record draws the same line. Absent from older records.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested_at: Option<DateTime<Utc>>,
});

event!(CustomerDataRequest {
    customer_id: u64,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    data_request_id: Option<u64>,
});

event!(
    /// A merchant saved a configuration (`PUT /api/v1/rfm/config`). On the config topic, keyed by the merchant and
    /// co-partitioned with the inputs, so the owner of the merchant's partition applies it in order with the
    /// merchant's events, and a replay applies it again at the same place. Validated when decoded: a config this
    /// build would refuse goes to the DLQ instead of into the state.
    ConfigChanged {
        config: functions::RfmConfig,
        saved_at: DateTime<Utc>,
        /// The merchant's save count in Postgres when this was saved: the outbox may send a record again after a
        /// crash, so the partition applies only a revision above the one it holds. Absent from older records
        /// (always applied).
        #[serde(default, skip_serializing_if = "Option::is_none")]
        revision: Option<u64>,
    }
);

event!(ShopRedact {
    /// As `CustomerRedact::requested_at`, for the whole shop.
    #[serde(default, skip_serializing_if = "Option::is_none")]
    requested_at: Option<DateTime<Utc>>,
});

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum PointsSource {
    Order,
    Review,
    Referral,
    Signup,
    Birthday,
    Admin,
}

/// Which input stream a record came from; decides how its value is decoded.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum InputKind {
    OrderCreated,
    OrderCancelled,
    RefundCreated,
    CustomerCreated,
    PointsEarned,
    PointsRedeemed,
    CustomerRedact,
    CustomerDataRequest,
    ShopRedact,
    ConfigChanged,
}

impl InputKind {
    pub fn of_topic(topics: &Topics, topic: &str) -> Option<InputKind> {
        use InputKind::*;
        [
            (&topics.orders_create, OrderCreated),
            (&topics.orders_cancelled, OrderCancelled),
            (&topics.refunds_create, RefundCreated),
            (&topics.customer_created, CustomerCreated),
            (&topics.points_earned, PointsEarned),
            (&topics.points_redeemed, PointsRedeemed),
            (&topics.customers_redact, CustomerRedact),
            (&topics.customers_data_request, CustomerDataRequest),
            (&topics.shop_redact, ShopRedact),
            (&topics.rfm_config, ConfigChanged),
        ]
        .into_iter()
        .find_map(|(name, kind)| (name == topic).then_some(kind))
    }

    pub fn topic(self, topics: &Topics) -> &str {
        use InputKind::*;
        match self {
            OrderCreated => &topics.orders_create,
            OrderCancelled => &topics.orders_cancelled,
            RefundCreated => &topics.refunds_create,
            CustomerCreated => &topics.customer_created,
            PointsEarned => &topics.points_earned,
            PointsRedeemed => &topics.points_redeemed,
            CustomerRedact => &topics.customers_redact,
            CustomerDataRequest => &topics.customers_data_request,
            ShopRedact => &topics.shop_redact,
            ConfigChanged => &topics.rfm_config,
        }
    }
}

#[derive(Debug, Clone, PartialEq)]
pub enum InputEvent {
    OrderCreated(OrderCreated),
    OrderCancelled(OrderCancelled),
    RefundCreated(RefundCreated),
    CustomerCreated(CustomerCreated),
    PointsEarned(PointsChanged),
    PointsRedeemed(PointsChanged),
    CustomerRedact(CustomerRedact),
    CustomerDataRequest(CustomerDataRequest),
    ShopRedact(ShopRedact),
    ConfigChanged(ConfigChanged),
}

#[derive(Debug, thiserror::Error)]
pub enum DecodeError {
    #[error("value is not a valid {kind:?} event: {source}")]
    Malformed {
        kind: InputKind,
        #[source]
        source: serde_json::Error,
    },
    #[error("schema_version {found} is newer than this build understands ({SCHEMA_VERSION})")]
    UnknownSchemaVersion { found: u16 },
    #[error("the configuration is not valid: {0:?}")]
    InvalidConfig(Vec<functions::FieldError>),
}

/// Extracts `(event_id, schema_version, merchant_id)` from any event, so generic code needs no per-variant match.
macro_rules! each_variant {
    ($value:expr, $e:ident => $body:expr) => {
        match $value {
            InputEvent::OrderCreated($e) => $body,
            InputEvent::OrderCancelled($e) => $body,
            InputEvent::RefundCreated($e) => $body,
            InputEvent::CustomerCreated($e) => $body,
            InputEvent::PointsEarned($e) | InputEvent::PointsRedeemed($e) => $body,
            InputEvent::CustomerRedact($e) => $body,
            InputEvent::CustomerDataRequest($e) => $body,
            InputEvent::ShopRedact($e) => $body,
            InputEvent::ConfigChanged($e) => $body,
        }
    };
}

impl InputEvent {
    pub fn decode(kind: InputKind, value: &[u8]) -> Result<InputEvent, DecodeError> {
        fn parse<T: for<'de> Deserialize<'de>>(
            kind: InputKind,
            value: &[u8],
        ) -> Result<T, DecodeError> {
            serde_json::from_slice(value).map_err(|source| DecodeError::Malformed { kind, source })
        }
        let event = match kind {
            InputKind::OrderCreated => InputEvent::OrderCreated(parse(kind, value)?),
            InputKind::OrderCancelled => InputEvent::OrderCancelled(parse(kind, value)?),
            InputKind::RefundCreated => InputEvent::RefundCreated(parse(kind, value)?),
            InputKind::CustomerCreated => InputEvent::CustomerCreated(parse(kind, value)?),
            InputKind::PointsEarned => InputEvent::PointsEarned(parse(kind, value)?),
            InputKind::PointsRedeemed => InputEvent::PointsRedeemed(parse(kind, value)?),
            InputKind::CustomerRedact => InputEvent::CustomerRedact(parse(kind, value)?),
            InputKind::CustomerDataRequest => InputEvent::CustomerDataRequest(parse(kind, value)?),
            InputKind::ShopRedact => InputEvent::ShopRedact(parse(kind, value)?),
            InputKind::ConfigChanged => {
                let event: ConfigChanged = parse(kind, value)?;
                event
                    .config
                    .validate()
                    .map_err(DecodeError::InvalidConfig)?;
                InputEvent::ConfigChanged(event)
            }
        };
        match event.schema_version() {
            v if v <= SCHEMA_VERSION => Ok(event),
            found => Err(DecodeError::UnknownSchemaVersion { found }),
        }
    }

    pub fn encode(&self) -> Vec<u8> {
        // Serialising these plain structs cannot fail: no maps with non-string keys, no custom serialisers.
        each_variant!(self, e => serde_json::to_vec(e)).unwrap_or_default()
    }

    pub fn kind(&self) -> InputKind {
        match self {
            InputEvent::OrderCreated(_) => InputKind::OrderCreated,
            InputEvent::OrderCancelled(_) => InputKind::OrderCancelled,
            InputEvent::RefundCreated(_) => InputKind::RefundCreated,
            InputEvent::CustomerCreated(_) => InputKind::CustomerCreated,
            InputEvent::PointsEarned(_) => InputKind::PointsEarned,
            InputEvent::PointsRedeemed(_) => InputKind::PointsRedeemed,
            InputEvent::CustomerRedact(_) => InputKind::CustomerRedact,
            InputEvent::CustomerDataRequest(_) => InputKind::CustomerDataRequest,
            InputEvent::ShopRedact(_) => InputKind::ShopRedact,
            InputEvent::ConfigChanged(_) => InputKind::ConfigChanged,
        }
    }

    pub fn event_id(&self) -> &str {
        each_variant!(self, e => &e.event_id)
    }

    pub fn schema_version(&self) -> u16 {
        each_variant!(self, e => e.schema_version)
    }

    pub fn merchant_id(&self) -> &MerchantId {
        each_variant!(self, e => &e.merchant_id)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn order() -> InputEvent {
        InputEvent::OrderCreated(OrderCreated {
            event_id: "wh-1".into(),
            schema_version: SCHEMA_VERSION,
            merchant_id: MerchantId::parse("a.myshopify.com").unwrap(),
            customer_id: 7,
            order_id: 9,
            total_price: "10.00".into(),
            currency: "USD".into(),
            created_at: DateTime::from_timestamp(1_700_000_000, 0).unwrap(),
            financial_status: "paid".into(),
            test: false,
            cancelled: false,
            locale: None,
            pii: None,
        })
    }

    #[test]
    fn round_trips_by_topic_kind() {
        let bytes = order().encode();
        let json: serde_json::Value = serde_json::from_slice(&bytes).unwrap();
        assert_eq!(json["merchant_id"], "a.myshopify.com");
        assert_eq!(json["total_price"], "10.00");
        assert!(json.get("pii").is_none());
        assert_eq!(
            InputEvent::decode(InputKind::OrderCreated, &bytes).unwrap(),
            order()
        );
    }

    #[test]
    fn rejects_future_schema_and_garbage() {
        let mut json: serde_json::Value = serde_json::from_slice(&order().encode()).unwrap();
        json["schema_version"] = 99.into();
        let err =
            InputEvent::decode(InputKind::OrderCreated, json.to_string().as_bytes()).unwrap_err();
        assert!(matches!(
            err,
            DecodeError::UnknownSchemaVersion { found: 99 }
        ));
        assert!(InputEvent::decode(InputKind::ShopRedact, b"{").is_err());
        let bad_merchant = br#"{"event_id":"x","schema_version":1,"merchant_id":"evil.com"}"#;
        assert!(InputEvent::decode(InputKind::ShopRedact, bad_merchant).is_err());
    }

    #[test]
    fn kinds_map_to_topics_and_back() {
        let topics = Topics::with_prefix("p.");
        assert_eq!(
            InputKind::of_topic(&topics, "p.points.redeemed"),
            Some(InputKind::PointsRedeemed)
        );
        assert_eq!(InputKind::of_topic(&topics, "points.redeemed"), None);
        assert_eq!(
            InputKind::CustomerRedact.topic(&topics),
            "p.customers.redact"
        );
    }
}
