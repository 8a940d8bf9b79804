//! A merchant's template for one nudge kind, and the rules a template must meet before it is stored.
//!
//! A template is an `enabled` flag and a title and body per locale. Texts are plain text: the widget renders them
//! escaped, and `<`/`>` are refused outright so that no merchant believes markup works. `en` must always be there,
//! since it ends every fallback chain; the shop's default locale need not be, because we do not know it (Shopify's
//! `primary_locale` is not fetched) and a chain passes over a locale with no text. Lengths count characters, not
//! bytes, so Arabic and German get the same room as English. A disabled template is checked like an enabled one, so
//! turning it on later can never expose a text that was not checked.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};
use serde_json::Value;

use crate::config::FieldError;
use crate::nudge::locale::Locale;
use crate::nudge::text::pieces;
use crate::NudgeKind;

/// The longest title, in characters, as written (placeholders count as written).
pub const MAX_TITLE_CHARS: usize = 80;
/// The longest body, in characters, as written.
pub const MAX_BODY_CHARS: usize = 280;
/// The most locales one template may carry. Shopify lets a shop publish 20 languages; regional variants of a few
/// of them fit too, and the bound keeps a merchant's document small.
pub const MAX_LOCALES: usize = 40;

/// The title and body of one locale.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Text {
    pub title: String,
    /// May be empty: a nudge can be a title alone.
    #[serde(default)]
    pub body: String,
}

/// One kind's template: `{"enabled": true, "texts": {"en": {"title": "…", "body": "…"}, "es": {…}}}`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct Template {
    pub enabled: bool,
    /// By locale tag, in canonical form (`es-MX`, not `es_mx`).
    pub texts: BTreeMap<String, Text>,
}

impl Template {
    /// The text of the first locale of `chain` that has one, with that locale.
    pub fn text_for<'a>(
        &'a self,
        chain: &'a [Locale],
    ) -> impl Iterator<Item = (&'a Locale, &'a Text)> {
        chain
            .iter()
            .filter_map(|locale| self.texts.get(locale.as_str()).map(|text| (locale, text)))
    }

    /// Every rule; errors are addressed from `prefix` (`templates.at_risk`), all of them at once.
    pub fn validate(&self, prefix: &str) -> Vec<FieldError> {
        let mut errors = Vec::new();
        let texts = format!("{prefix}.texts");
        if self.texts.len() > MAX_LOCALES {
            errors.push(FieldError::new(
                &texts,
                format!("at most {MAX_LOCALES} locales"),
            ));
        }
        if !self.texts.contains_key("en") {
            errors.push(FieldError::new(
                &texts,
                "an en text is required: every locale falls back to it",
            ));
        }
        for (tag, text) in &self.texts {
            let field = format!("{texts}.{tag}");
            if let Err(e) = Locale::parse_canonical(tag) {
                errors.push(FieldError::new(&field, e.to_string()));
            }
            check_text(
                &format!("{field}.title"),
                &text.title,
                MAX_TITLE_CHARS,
                false,
                &mut errors,
            );
            check_text(
                &format!("{field}.body"),
                &text.body,
                MAX_BODY_CHARS,
                true,
                &mut errors,
            );
            if text.title.trim().is_empty() {
                errors.push(FieldError::new(
                    format!("{field}.title"),
                    "must not be empty",
                ));
            }
        }
        errors
    }
}

fn check_text(
    field: &str,
    text: &str,
    max_chars: usize,
    multiline: bool,
    errors: &mut Vec<FieldError>,
) {
    let chars = text.chars().count();
    if chars > max_chars {
        errors.push(FieldError::new(
            field,
            format!("at most {max_chars} characters (this has {chars})"),
        ));
    }
    if text.contains(['<', '>']) {
        errors.push(FieldError::new(
            field,
            "< and > are not allowed: texts are shown as plain text, never as markup",
        ));
    }
    if text
        .chars()
        .any(|c| c.is_control() && !(multiline && c == '\n'))
    {
        let what = if multiline {
            "control characters other than line breaks"
        } else {
            "line breaks or control characters"
        };
        errors.push(FieldError::new(field, format!("{what} are not allowed")));
    }
    if let Err(e) = pieces(text) {
        errors.push(FieldError::new(field, e.to_string()));
    }
}

/// A `PUT` document, `{"templates": {"at_risk": {…}, …}}`: the kinds it names, each replacing that kind's
/// template; kinds it leaves out stay as they are. Other top-level members are ignored, so a `GET` answer can be
/// edited and sent back as it is. Every error of every kind is reported at once.
pub fn parse_update(document: &Value) -> Result<BTreeMap<NudgeKind, Template>, Vec<FieldError>> {
    let Some(templates) = document.get("templates").and_then(Value::as_object) else {
        return Err(vec![FieldError::new(
            "templates",
            "expected an object of templates by nudge kind",
        )]);
    };
    if templates.is_empty() {
        return Err(vec![FieldError::new(
            "templates",
            "name at least one nudge kind",
        )]);
    }
    let mut parsed = BTreeMap::new();
    let mut errors = Vec::new();
    for (key, value) in templates {
        let field = format!("templates.{key}");
        let Some(kind) = NudgeKind::parse(key) else {
            let known: Vec<_> = NudgeKind::ALL.iter().map(|k| k.as_str()).collect();
            errors.push(FieldError::new(
                field,
                format!("unknown nudge kind; one of {}", known.join(", ")),
            ));
            continue;
        };
        match Template::deserialize(value) {
            Ok(template) => {
                errors.extend(template.validate(&field));
                parsed.insert(kind, template);
            }
            Err(e) => errors.push(FieldError::new(field, format!("invalid template: {e}"))),
        }
    }
    if errors.is_empty() {
        Ok(parsed)
    } else {
        Err(errors)
    }
}

#[cfg(test)]
mod tests;
