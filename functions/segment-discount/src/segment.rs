//! Pure decision logic: merchant configuration + customer RFM segment ->
//! the discount to offer (if any).
//!
//! Nothing here knows about the Function input/output types, so it can be
//! unit-tested directly. Every malformed shape results in `None`; nothing in
//! this module panics.

use shopify_function::scalars::JsonValue;

/// The discount chosen for a customer's segment.
#[derive(Debug, Clone, PartialEq)]
pub struct SegmentDiscount {
    /// Percentage off the order subtotal, guaranteed to be in `(0, 100]`.
    pub percentage: f64,
    /// Customer-facing message, if the merchant configured a non-empty one.
    pub message: Option<String>,
}

/// Chooses the discount for `segment` from the merchant configuration.
///
/// `config` is the `jsonValue` of the discount's `loyalnest.segment_discounts`
/// metafield and is expected to look like:
///
/// ```json
/// {"segments": {"champions": {"percentage": 15.0, "message": "Champions save 15%"}}}
/// ```
///
/// Returns `None` when the configuration is not of that shape, the segment is
/// not configured, or its percentage is not a number in `(0, 100]`. Only the
/// entry for `segment` is inspected, so a broken entry for another segment
/// does not disable the discount for everyone.
pub fn select_discount(config: &JsonValue, segment: &str) -> Option<SegmentDiscount> {
    let segment = segment.trim();
    if segment.is_empty() {
        return None;
    }

    let JsonValue::Object(root) = config else {
        return None;
    };
    let Some(JsonValue::Object(segments)) = root.get("segments") else {
        return None;
    };
    let Some(JsonValue::Object(rule)) = segments.get(segment) else {
        return None;
    };

    let percentage = match rule.get("percentage") {
        Some(JsonValue::Number(p)) if is_valid_percentage(*p) => *p,
        _ => return None,
    };

    let message = match rule.get("message") {
        Some(JsonValue::String(m)) if !m.trim().is_empty() => Some(m.trim().to_string()),
        _ => None,
    };

    Some(SegmentDiscount {
        percentage,
        message,
    })
}

/// A usable percentage is finite and in `(0, 100]`.
fn is_valid_percentage(p: f64) -> bool {
    p.is_finite() && p > 0.0 && p <= 100.0
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;

    /// Converts a `serde_json` value into the crate's `JsonValue`, so test
    /// configurations can be written as JSON literals.
    fn jv(value: serde_json::Value) -> JsonValue {
        match value {
            serde_json::Value::Null => JsonValue::Null,
            serde_json::Value::Bool(b) => JsonValue::Boolean(b),
            serde_json::Value::Number(n) => JsonValue::Number(n.as_f64().unwrap()),
            serde_json::Value::String(s) => JsonValue::String(s),
            serde_json::Value::Array(items) => {
                JsonValue::Array(items.into_iter().map(jv).collect())
            }
            serde_json::Value::Object(map) => JsonValue::Object(
                map.into_iter()
                    .map(|(k, v)| (k, jv(v)))
                    .collect::<BTreeMap<_, _>>(),
            ),
        }
    }

    fn sample_config() -> JsonValue {
        jv(serde_json::json!({
            "segments": {
                "champions": {"percentage": 15.0, "message": "Champions save 15%"},
                "at_risk": {"percentage": 10, "message": "We miss you: 10% off"},
                "loyal": {"percentage": 5.5},
                "new": {"percentage": 100, "message": "   "},
                "inactive": {"percentage": 0},
                "other": {"percentage": 120, "message": "Too generous"}
            }
        }))
    }

    #[test]
    fn champions_get_their_configured_percentage_and_message() {
        assert_eq!(
            select_discount(&sample_config(), "champions"),
            Some(SegmentDiscount {
                percentage: 15.0,
                message: Some("Champions save 15%".to_string()),
            })
        );
    }

    #[test]
    fn integer_percentages_are_accepted() {
        assert_eq!(
            select_discount(&sample_config(), "at_risk"),
            Some(SegmentDiscount {
                percentage: 10.0,
                message: Some("We miss you: 10% off".to_string()),
            })
        );
    }

    #[test]
    fn missing_or_blank_message_becomes_none() {
        assert_eq!(
            select_discount(&sample_config(), "loyal"),
            Some(SegmentDiscount {
                percentage: 5.5,
                message: None,
            })
        );
        assert_eq!(
            select_discount(&sample_config(), "new"),
            Some(SegmentDiscount {
                percentage: 100.0,
                message: None,
            })
        );
    }

    #[test]
    fn segment_key_is_trimmed() {
        assert_eq!(
            select_discount(&sample_config(), "  champions\n").map(|d| d.percentage),
            Some(15.0)
        );
    }

    #[test]
    fn unknown_or_empty_segment_gets_nothing() {
        assert_eq!(select_discount(&sample_config(), "vip"), None);
        assert_eq!(select_discount(&sample_config(), ""), None);
        assert_eq!(select_discount(&sample_config(), "   "), None);
        // Keys are case-sensitive: the engine writes lowercase snake_case.
        assert_eq!(select_discount(&sample_config(), "Champions"), None);
    }

    #[test]
    fn percentage_outside_zero_to_hundred_is_ignored() {
        assert_eq!(select_discount(&sample_config(), "inactive"), None);
        assert_eq!(select_discount(&sample_config(), "other"), None);
        let negative = jv(serde_json::json!({"segments": {"loyal": {"percentage": -5}}}));
        assert_eq!(select_discount(&negative, "loyal"), None);
        let tiny = jv(serde_json::json!({"segments": {"loyal": {"percentage": 0.01}}}));
        assert_eq!(
            select_discount(&tiny, "loyal").map(|d| d.percentage),
            Some(0.01)
        );
    }

    #[test]
    fn non_finite_percentage_is_ignored() {
        let mut rule = BTreeMap::new();
        rule.insert("percentage".to_string(), JsonValue::Number(f64::NAN));
        let mut segments = BTreeMap::new();
        segments.insert("champions".to_string(), JsonValue::Object(rule));
        let mut root = BTreeMap::new();
        root.insert("segments".to_string(), JsonValue::Object(segments));
        assert_eq!(select_discount(&JsonValue::Object(root), "champions"), None);
    }

    #[test]
    fn malformed_configurations_give_nothing() {
        let malformed = [
            serde_json::json!(null),
            serde_json::json!("{\"segments\": {}}"),
            serde_json::json!([1, 2, 3]),
            serde_json::json!({}),
            serde_json::json!({"segments": null}),
            serde_json::json!({"segments": ["champions"]}),
            serde_json::json!({"segments": {"champions": 15}}),
            serde_json::json!({"segments": {"champions": {}}}),
            serde_json::json!({"segments": {"champions": {"percentage": "15"}}}),
            serde_json::json!({"segments": {"champions": {"percentage": null}}}),
            serde_json::json!({"champions": {"percentage": 15}}),
        ];
        for config in malformed {
            let config = jv(config);
            assert_eq!(
                select_discount(&config, "champions"),
                None,
                "config {config:?} should give no discount"
            );
        }
    }

    #[test]
    fn non_string_message_is_dropped_but_discount_kept() {
        let config = jv(serde_json::json!({
            "segments": {"champions": {"percentage": 15, "message": 42}}
        }));
        assert_eq!(
            select_discount(&config, "champions"),
            Some(SegmentDiscount {
                percentage: 15.0,
                message: None,
            })
        );
    }

    #[test]
    fn broken_entry_for_another_segment_does_not_matter() {
        let config = jv(serde_json::json!({
            "segments": {
                "champions": {"percentage": 15},
                "at_risk": "oops"
            }
        }));
        assert_eq!(
            select_discount(&config, "champions").map(|d| d.percentage),
            Some(15.0)
        );
        assert_eq!(select_discount(&config, "at_risk"), None);
    }
}
