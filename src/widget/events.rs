//! What a shopper did with a nudge (`view`, `click`, `dismiss`), as the widget reports it, parsed at the edge and
//! stored once in `nudge_events` by the nudge ledger (`experiments::ledger`).
//!
//! Each report carries an id the widget made (a UUID); the table's unique index on `(merchant_id, event_id)` makes a
//! retried report a no-op, so a widget may resend freely after a timeout. The row names the customer, so an
//! erasure finds a customer's events without going through the nudges. A nudge id is accepted only when it names
//! the token's own shop and customer: the id is `nudge:<shop>:<customer>:<version>` (`actors::customer::nudge_id`),
//! so ownership is read from the id itself and needs no lookup. A nudge that has left the desk (expired) can still
//! be reported, since the widget may keep showing it.

use actors::customer::{nudge_id, CustomerKey};
use serde::Deserialize;
use uuid::Uuid;

use crate::experiments::ledger::Report;

/// What the shopper did.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    View,
    Click,
    Dismiss,
}

impl Action {
    pub fn as_str(self) -> &'static str {
        match self {
            Action::View => "view",
            Action::Click => "click",
            Action::Dismiss => "dismiss",
        }
    }
}

/// Why a report was refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum EventError {
    #[error("the body must be JSON: {{\"action\": \"view\"|\"click\"|\"dismiss\", \"event_id\": \"<uuid>\"}}")]
    Body,
    #[error("action must be view, click or dismiss")]
    Action,
    #[error("event_id must be a UUID")]
    EventId,
    #[error("no such nudge for this customer")]
    NotYours,
}

/// A parsed report: the nudge (known to be the customer's), the action and the widget's event id.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NudgeEvent {
    pub nudge_id: String,
    pub action: Action,
    pub event_id: Uuid,
}

#[derive(Deserialize)]
struct RawEvent {
    action: String,
    event_id: String,
}

impl NudgeEvent {
    /// Parses a report about `nudge` from `customer`'s widget.
    pub fn parse(customer: &CustomerKey, nudge: &str, body: &[u8]) -> Result<Self, EventError> {
        let raw: RawEvent = serde_json::from_slice(body).map_err(|_| EventError::Body)?;
        let action = match raw.action.as_str() {
            "view" => Action::View,
            "click" => Action::Click,
            "dismiss" => Action::Dismiss,
            _ => return Err(EventError::Action),
        };
        let event_id = Uuid::parse_str(raw.event_id.trim()).map_err(|_| EventError::EventId)?;
        if !names_customer(customer, nudge) {
            return Err(EventError::NotYours);
        }
        Ok(NudgeEvent {
            nudge_id: nudge.to_owned(),
            action,
            event_id,
        })
    }

    /// The report as the nudge ledger stores it.
    pub fn report(&self) -> Report<'_> {
        Report {
            nudge_id: &self.nudge_id,
            action: self.action.as_str(),
            event_id: self.event_id,
        }
    }
}

/// Whether `nudge` is the id of one of `customer`'s nudges: the id the customer's version would get.
fn names_customer(customer: &CustomerKey, nudge: &str) -> bool {
    let Some(version) = nudge.rsplit(':').next().and_then(|v| v.parse::<u32>().ok()) else {
        return false;
    };
    version > 0 && nudge_id(&customer.merchant, customer.customer_id, version) == nudge
}

#[cfg(test)]
mod tests {
    use super::*;
    use streams::MerchantId;

    fn customer(id: u64) -> CustomerKey {
        CustomerKey {
            merchant: MerchantId::parse("a-shop.myshopify.com").unwrap(),
            customer_id: id,
        }
    }

    const ID: &str = "0b9c2f3e-8f43-4c8e-9a51-0d3c1c0b7a11";

    fn body(action: &str, event_id: &str) -> Vec<u8> {
        serde_json::json!({"action": action, "event_id": event_id})
            .to_string()
            .into_bytes()
    }

    #[test]
    fn a_report_about_the_customers_own_nudge_parses() {
        let nudge = nudge_id(&customer(7).merchant, 7, 3);
        let event = NudgeEvent::parse(&customer(7), &nudge, &body("click", ID)).unwrap();
        assert_eq!(event.action, Action::Click);
        assert_eq!(event.event_id.to_string(), ID);
    }

    #[test]
    fn bad_actions_ids_and_bodies_are_refused() {
        let nudge = nudge_id(&customer(7).merchant, 7, 3);
        let c = customer(7);
        assert_eq!(
            NudgeEvent::parse(&c, &nudge, &body("buy", ID)),
            Err(EventError::Action)
        );
        assert_eq!(
            NudgeEvent::parse(&c, &nudge, &body("view", "42")),
            Err(EventError::EventId)
        );
        assert_eq!(
            NudgeEvent::parse(&c, &nudge, b"not json"),
            Err(EventError::Body)
        );
        assert_eq!(
            NudgeEvent::parse(&c, &nudge, br#"{"action":"view"}"#),
            Err(EventError::Body)
        );
    }

    #[test]
    fn another_customers_or_shops_nudge_is_not_yours() {
        let c = customer(7);
        let other_shop = MerchantId::parse("b-shop.myshopify.com").unwrap();
        for nudge in [
            nudge_id(&c.merchant, 8, 3),
            nudge_id(&other_shop, 7, 3),
            nudge_id(&c.merchant, 7, 0),
            "nudge:a-shop.myshopify.com:7:x".to_owned(),
            "nudge:a-shop.myshopify.com:7:3:3".to_owned(),
            format!("{}extra", nudge_id(&c.merchant, 7, 3)),
            String::new(),
        ] {
            assert_eq!(
                NudgeEvent::parse(&c, &nudge, &body("view", ID)),
                Err(EventError::NotYours),
                "{nudge}"
            );
        }
    }
}
