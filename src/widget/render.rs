//! What a widget is sent for one nudge: the JSON message around the words the merchant's templates give.
//!
//! The words come from `nudges::render::NudgeRenderer` (the merchant's template for the nudge's kind, in the
//! customer's locale or its fallback, with the first name opened from the sealed PII just before and never stored
//! with the nudge); a kind the merchant turned off gives no words, and then the socket sends nothing and REST answers
//! 204. [`message`] wraps the words with the nudge's identity into what the socket and the REST answer carry;
//! [`greeting_name`] bounds the name that goes into them.

use actors::customer::PendingNudge;
use serde::Serialize;

use crate::nudges::render::WidgetText;

/// Longest first name put into a greeting, in characters: Shopify allows long names, a nudge card does not.
const MAX_NAME_CHARS: usize = 40;

/// One nudge as a widget receives it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct NudgeMessage {
    #[serde(rename = "type")]
    pub message_type: &'static str,
    pub nudge_id: String,
    pub kind: &'static str,
    pub segment: String,
    pub variant: String,
    pub locale: String,
    /// `ltr` or `rtl`, for the widget's `dir` attribute.
    pub dir: &'static str,
    pub title: String,
    pub body: String,
}

/// The message for `nudge` with its words.
pub fn message(nudge: &PendingNudge, text: WidgetText) -> NudgeMessage {
    NudgeMessage {
        message_type: "nudge",
        nudge_id: nudge.nudge_id(),
        kind: nudge.kind.as_str(),
        segment: nudge.segment.clone(),
        variant: nudge.variant.to_string(),
        locale: text.locale,
        dir: text.dir,
        title: text.title,
        body: text.body,
    }
}

/// A name fit for a greeting: trimmed, without control characters, at most [`MAX_NAME_CHARS`]; `None` when
/// nothing is left.
pub fn greeting_name(first_name: Option<&str>) -> Option<String> {
    let name: String = first_name?
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    (!name.is_empty()).then_some(name)
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::customer::{CustomerKey, DEFAULT_VARIANT};
    use functions::{NudgeKind, Timestamp};
    use streams::MerchantId;

    fn nudge(locale: Option<&str>) -> PendingNudge {
        PendingNudge {
            key: CustomerKey {
                merchant: MerchantId::parse("a-shop.myshopify.com").unwrap(),
                customer_id: 7,
            },
            version: 3,
            segment: "champions".into(),
            kind: NudgeKind::Champions,
            experiment_id: None,
            variant: DEFAULT_VARIANT.into(),
            locale: locale.map(str::to_owned),
            trace_id: "t".into(),
            fired_at: Timestamp(0),
            points: 0,
        }
    }

    #[test]
    fn the_message_carries_the_nudges_identity_and_its_words() {
        let words = WidgetText {
            kind: "champions",
            locale: "es".into(),
            dir: "ltr",
            title: "¡Hola, Ana!".into(),
            body: "Gracias".into(),
        };
        let json = serde_json::to_value(message(&nudge(Some("es-MX")), words)).unwrap();
        assert_eq!(json["type"], "nudge");
        assert_eq!(json["nudge_id"], "nudge:a-shop.myshopify.com:7:3");
        assert_eq!(json["kind"], "champions");
        assert_eq!(json["segment"], "champions");
        assert_eq!(json["variant"], "A");
        assert_eq!(json["locale"], "es");
        assert_eq!(json["dir"], "ltr");
        assert_eq!(json["title"], "¡Hola, Ana!");
        assert_eq!(json["body"], "Gracias");
    }

    #[test]
    fn names_are_trimmed_bounded_and_optional() {
        assert_eq!(greeting_name(None), None);
        assert_eq!(greeting_name(Some(" \n ")), None);
        assert_eq!(greeting_name(Some("  Ana ")).as_deref(), Some("Ana"));
        let long = "N".repeat(500);
        assert_eq!(
            greeting_name(Some(&long)).unwrap().chars().count(),
            MAX_NAME_CHARS
        );
        assert_eq!(
            greeting_name(Some("A\u{7}na")).as_deref(),
            Some("Ana"),
            "control characters dropped"
        );
    }
}
