//! What a widget is sent for one nudge: the JSON message, and the seam where its text is written.
//!
//! [`text`] is the only place that decides the words. It is given the pending nudge and the customer's first name
//! (opened from the sealed PII just before this call, never stored with the nudge) and returns the title, body,
//! locale and writing direction, or `None` when nothing is to be shown (the senders then send nothing and REST
//! answers 204). Until the template renderer (per-merchant, multilingual templates) is wired in, it writes a fixed
//! English sentence per kind; swapping it for the template renderer changes only `text` and its one caller,
//! `routes::widget::render_for`. [`message`] wraps the text with the nudge's identity into what the socket and the
//! REST answer carry.

use actors::customer::PendingNudge;
use functions::NudgeKind;
use serde::Serialize;

/// Longest first name put into a greeting, in characters: Shopify allows long names, a nudge card does not.
const MAX_NAME_CHARS: usize = 40;

/// Writing direction of the nudge's text, for the widget's `dir` attribute.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Dir {
    Ltr,
    Rtl,
}

impl Dir {
    /// Right-to-left for Arabic and Hebrew (and their regional variants), left-to-right otherwise.
    pub fn of_locale(locale: &str) -> Dir {
        let language = locale
            .split(['-', '_'])
            .next()
            .unwrap_or("")
            .to_ascii_lowercase();
        match language.as_str() {
            "ar" | "he" | "iw" => Dir::Rtl,
            _ => Dir::Ltr,
        }
    }
}

/// The words of one nudge, in one locale.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct NudgeText {
    pub title: String,
    pub body: String,
    pub locale: String,
    pub dir: Dir,
}

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
    pub dir: Dir,
    pub title: String,
    pub body: String,
}

/// The message for `nudge` with its words.
pub fn message(nudge: &PendingNudge, text: NudgeText) -> NudgeMessage {
    NudgeMessage {
        message_type: "nudge",
        nudge_id: nudge.nudge_id(),
        kind: nudge.kind.as_str(),
        segment: nudge.segment.clone(),
        variant: nudge.variant.to_owned(),
        locale: text.locale,
        dir: text.dir,
        title: text.title,
        body: text.body,
    }
}

/// A name fit for a greeting: trimmed, without control characters, at most [`MAX_NAME_CHARS`]; `None` when
/// nothing is left.
fn greeting_name(first_name: Option<&str>) -> Option<String> {
    let name: String = first_name?
        .trim()
        .chars()
        .filter(|c| !c.is_control())
        .take(MAX_NAME_CHARS)
        .collect();
    (!name.is_empty()).then_some(name)
}

/// TEMPORARY: fixed English text per kind until the template renderer replaces this function. It keeps the
/// customer's locale and direction so the widget's right-to-left layout can be exercised already, and always has
/// something to show.
pub fn text(nudge: &PendingNudge, first_name: Option<&str>) -> Option<NudgeText> {
    let locale = nudge.locale.clone().unwrap_or_else(|| "en".to_owned());
    let title = match greeting_name(first_name) {
        Some(name) => format!("Hi {name}"),
        None => "Hi there".to_owned(),
    };
    let body = match nudge.kind {
        NudgeKind::AtRisk => "We miss you. Come back and see what's new.",
        NudgeKind::Loyal => "Thanks for being a loyal customer.",
        NudgeKind::New => "Welcome! Glad to have you with us.",
        NudgeKind::Inactive => "It's been a while. Take a look at what's new.",
        NudgeKind::Champions => "You're one of our best customers. Thank you!",
        NudgeKind::TierDropped => "Your perks are waiting. One more order keeps them.",
        NudgeKind::Churned => "We'd love to see you again.",
    };
    Some(NudgeText {
        title,
        body: body.to_owned(),
        dir: Dir::of_locale(&locale),
        locale,
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use actors::customer::{CustomerKey, DEFAULT_VARIANT};
    use functions::Timestamp;
    use streams::MerchantId;

    fn message(nudge: &PendingNudge, first_name: Option<&str>) -> NudgeMessage {
        super::message(nudge, text(nudge, first_name).unwrap())
    }

    fn nudge(locale: Option<&str>) -> PendingNudge {
        PendingNudge {
            key: CustomerKey {
                merchant: MerchantId::parse("a-shop.myshopify.com").unwrap(),
                customer_id: 7,
            },
            version: 3,
            segment: "champions".into(),
            kind: NudgeKind::Champions,
            variant: DEFAULT_VARIANT,
            locale: locale.map(str::to_owned),
            trace_id: "t".into(),
            fired_at: Timestamp(0),
        }
    }

    #[test]
    fn the_message_carries_the_nudges_identity_and_the_greeting() {
        let m = message(&nudge(Some("es")), Some("  Ana "));
        let json = serde_json::to_value(&m).unwrap();
        assert_eq!(json["type"], "nudge");
        assert_eq!(json["nudge_id"], "nudge:a-shop.myshopify.com:7:3");
        assert_eq!(json["kind"], "champions");
        assert_eq!(json["variant"], "A");
        assert_eq!(json["locale"], "es");
        assert_eq!(json["dir"], "ltr");
        assert_eq!(json["title"], "Hi Ana");
        assert!(!m.body.is_empty());
    }

    #[test]
    fn right_to_left_for_arabic_and_hebrew_only() {
        for (locale, dir) in [
            ("ar", Dir::Rtl),
            ("ar-EG", Dir::Rtl),
            ("he_IL", Dir::Rtl),
            ("HE", Dir::Rtl),
            ("en", Dir::Ltr),
            ("fr-CA", Dir::Ltr),
            ("", Dir::Ltr),
        ] {
            assert_eq!(Dir::of_locale(locale), dir, "{locale}");
        }
        assert_eq!(message(&nudge(Some("ar")), None).dir, Dir::Rtl);
        assert_eq!(message(&nudge(None), None).locale, "en");
    }

    #[test]
    fn names_are_trimmed_bounded_and_optional() {
        assert_eq!(message(&nudge(None), None).title, "Hi there");
        assert_eq!(message(&nudge(None), Some(" \n ")).title, "Hi there");
        let long = "N".repeat(500);
        let title = message(&nudge(None), Some(&long)).title;
        assert_eq!(title.chars().count(), "Hi ".len() + MAX_NAME_CHARS);
        assert_eq!(
            message(&nudge(None), Some("A\u{7}na")).title,
            "Hi Ana",
            "control characters dropped"
        );
    }
}
