//! Validation of a merchant's segment table: keys that are safe identifiers, names keyed by locale tags with an
//! English fallback, no two segments with one name in one language, ranges inside 1–5, and a table that covers
//! every score triple (first match wins, so a total table always places a customer).

use std::collections::BTreeSet;

use crate::locale::Locale;
use crate::segment::{uncovered, SegmentRule};

use super::FieldError;

/// Keys travel to Kafka, Postgres, Redis keys and Shopify metafields; the bound keeps all of those happy.
pub const MAX_KEY_LEN: usize = 40;

pub(super) fn validate_segments(segments: &[SegmentRule], errors: &mut Vec<FieldError>) {
    if segments.is_empty() || segments.len() > usize::from(u8::MAX) {
        errors.push(FieldError::new(
            "segments",
            "between 1 and 255 segments are required",
        ));
        return;
    }
    let mut keys = BTreeSet::new();
    let mut names = BTreeSet::new();
    for (i, rule) in segments.iter().enumerate() {
        check_key(i, &rule.key, errors);
        if !keys.insert(rule.key.as_str()) {
            errors.push(FieldError::new(
                format!("segments[{i}].key"),
                "duplicate segment key",
            ));
        }
        check_names(i, rule, &mut names, errors);
        for (dim, range) in [
            ("recency", rule.recency),
            ("frequency", rule.frequency),
            ("monetary", rule.monetary),
        ] {
            if !(1 <= range.min && range.min <= range.max && range.max <= 5) {
                errors.push(FieldError::new(
                    format!("segments[{i}].{dim}"),
                    "range must satisfy 1 <= min <= max <= 5",
                ));
            }
        }
    }
    if let Some(gap) = uncovered(segments).first() {
        errors.push(FieldError::new(
            "segments",
            format!(
                "the rules do not cover every score (for example {gap}); add a catch-all last rule"
            ),
        ));
    }
}

fn check_key(i: usize, key: &str, errors: &mut Vec<FieldError>) {
    let field = format!("segments[{i}].key");
    if key.is_empty() {
        errors.push(FieldError::new(field, "must not be empty"));
    } else if key.len() > MAX_KEY_LEN
        || !key
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'_')
    {
        errors.push(FieldError::new(
            field,
            format!("1 to {MAX_KEY_LEN} characters of a-z, 0-9 and _"),
        ));
    }
}

/// Names by locale: every key a canonical locale tag (`es`, `es-MX`, not `ES` or `spanish`), `en` present (it is
/// the fallback every other language ends at), no empty name, and no name used twice in one language.
fn check_names<'a>(
    i: usize,
    rule: &'a SegmentRule,
    seen: &mut BTreeSet<(&'a str, String)>,
    errors: &mut Vec<FieldError>,
) {
    if !rule.name.contains_key("en") {
        errors.push(FieldError::new(
            format!("segments[{i}].name.en"),
            "an English name is required (the fallback for every other language)",
        ));
    }
    for (locale, name) in &rule.name {
        let field = format!("segments[{i}].name.{locale}");
        if let Err(e) = Locale::parse_canonical(locale) {
            errors.push(FieldError::new(field, format!("unknown locale key: {e}")));
            continue;
        }
        if name.trim().is_empty() {
            errors.push(FieldError::new(field, "must not be empty"));
        } else if !seen.insert((locale.as_str(), name.trim().to_lowercase())) {
            errors.push(FieldError::new(field, "duplicate segment name"));
        }
    }
}
