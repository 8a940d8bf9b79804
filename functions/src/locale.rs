//! Locale tags for nudge texts, and the order in which a customer's locale falls back to the texts a merchant wrote.
//!
//! Shopify hands us customer locales as it stores them (`es-MX`, sometimes `pt_BR` or `EN`), so a tag is parsed
//! once into its canonical form (`pt-BR`, `en`) and compared in that form everywhere after. Only the shape is
//! checked (a 2–3 letter language, then subtags of 1–8 letters or digits): a merchant may write texts for any
//! language, and we have no registry of them to consult.

use std::fmt;

/// The longest tag accepted. Real tags are far shorter; the bound keeps a stored document small.
pub const MAX_TAG_LEN: usize = 35;

/// Languages written right to left, whose texts the widget lays out `rtl`.
const RTL_LANGUAGES: [&str; 4] = ["ar", "he", "fa", "ur"];

/// A well-formed locale tag in canonical case: language lower-case, a 4-letter script title-case, a region
/// upper-case, any other subtag lower-case.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct Locale(String);

/// Why a tag is not a locale.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum LocaleError {
    #[error("a locale tag is a 2–3 letter language, then optional subtags of 1–8 letters or digits (like es or es-MX)")]
    Malformed,
    #[error("a locale tag is at most {MAX_TAG_LEN} characters")]
    TooLong,
}

impl Locale {
    /// Parses a tag leniently: `_` separates like `-`, and case is normalised.
    pub fn parse(raw: &str) -> Result<Locale, LocaleError> {
        let raw = raw.trim();
        if raw.len() > MAX_TAG_LEN {
            return Err(LocaleError::TooLong);
        }
        let mut parts = raw.split(['-', '_']);
        let language = parts.next().unwrap_or_default();
        if !(2..=3).contains(&language.len()) || !language.bytes().all(|b| b.is_ascii_alphabetic())
        {
            return Err(LocaleError::Malformed);
        }
        let mut tag = language.to_ascii_lowercase();
        for (i, part) in parts.enumerate() {
            if part.is_empty() || part.len() > 8 || !part.bytes().all(|b| b.is_ascii_alphanumeric())
            {
                return Err(LocaleError::Malformed);
            }
            tag.push('-');
            tag.push_str(&canonical_subtag(i, part));
        }
        Ok(Locale(tag))
    }

    /// A canonical tag as written: a stored key must already be in canonical form, so that `es` and `ES` can
    /// never be two entries of one template.
    pub fn parse_canonical(raw: &str) -> Result<Locale, CanonicalError> {
        let locale = Locale::parse(raw).map_err(CanonicalError::Invalid)?;
        if locale.0 == raw {
            Ok(locale)
        } else {
            Err(CanonicalError::NotCanonical(locale))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }

    /// The language subtag alone (`es` of `es-MX`).
    pub fn language(&self) -> Locale {
        Locale(self.0.split('-').next().unwrap_or(&self.0).to_owned())
    }

    /// `"rtl"` for Arabic, Hebrew, Persian and Urdu, `"ltr"` for everything else.
    pub fn dir(&self) -> &'static str {
        if RTL_LANGUAGES.contains(&self.language().as_str()) {
            "rtl"
        } else {
            "ltr"
        }
    }

    pub fn english() -> Locale {
        Locale("en".to_owned())
    }
}

/// Why a stored key is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum CanonicalError {
    #[error(transparent)]
    Invalid(LocaleError),
    #[error("write this locale as {0}")]
    NotCanonical(Locale),
}

impl fmt::Display for Locale {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

/// The first subtag after the language may be a script (`Latn`) or a region (`MX`, `419`); later ones are
/// variants or extensions and stay lower-case.
fn canonical_subtag(position: usize, part: &str) -> String {
    match (position, part.len()) {
        (0, 4) if part.bytes().all(|b| b.is_ascii_alphabetic()) => {
            let (first, rest) = part.split_at(1);
            first.to_ascii_uppercase() + &rest.to_ascii_lowercase()
        }
        (0 | 1, 2) if part.bytes().all(|b| b.is_ascii_alphabetic()) => part.to_ascii_uppercase(),
        _ => part.to_ascii_lowercase(),
    }
}

/// The locales to try, best first: the customer's (`es-MX`), its language (`es`), the shop's default and its
/// language, then `en`; each once. A missing or malformed customer locale simply starts the chain at the shop's.
pub fn fallback_chain(customer: Option<&Locale>, shop_default: Option<&Locale>) -> Vec<Locale> {
    let mut chain: Vec<Locale> = Vec::with_capacity(5);
    let candidates = [customer, shop_default]
        .into_iter()
        .flatten()
        .flat_map(|l| [l.clone(), l.language()])
        .chain([Locale::english()]);
    for locale in candidates {
        if !chain.contains(&locale) {
            chain.push(locale);
        }
    }
    chain
}

#[cfg(test)]
mod tests {
    use super::*;

    fn tag(raw: &str) -> String {
        Locale::parse(raw).unwrap().to_string()
    }

    #[test]
    fn tags_are_parsed_to_canonical_case() {
        assert_eq!(tag("es-MX"), "es-MX");
        assert_eq!(tag("pt_br"), "pt-BR");
        assert_eq!(tag("EN"), "en");
        assert_eq!(tag("zh-hant-tw"), "zh-Hant-TW");
        assert_eq!(tag("es-419"), "es-419");
        assert_eq!(tag(" fr "), "fr");
    }

    #[test]
    fn malformed_tags_are_refused() {
        for raw in [
            "",
            "e",
            "english",
            "es-",
            "es--MX",
            "e5",
            "es-MX!",
            "ñu",
            "es-abcdefghi",
        ] {
            assert_eq!(Locale::parse(raw), Err(LocaleError::Malformed), "{raw:?}");
        }
        let long = format!("es{}", "-abcdefgh".repeat(4));
        assert_eq!(Locale::parse(&long), Err(LocaleError::TooLong));
    }

    #[test]
    fn stored_keys_must_be_canonical() {
        assert!(Locale::parse_canonical("es-MX").is_ok());
        assert_eq!(
            Locale::parse_canonical("es_mx"),
            Err(CanonicalError::NotCanonical(
                Locale::parse("es-MX").unwrap()
            ))
        );
        assert!(matches!(
            Locale::parse_canonical("x"),
            Err(CanonicalError::Invalid(_))
        ));
    }

    #[test]
    fn direction_follows_the_language() {
        for raw in ["ar", "ar-EG", "he", "fa-IR", "ur"] {
            assert_eq!(Locale::parse(raw).unwrap().dir(), "rtl", "{raw}");
        }
        for raw in ["en", "es-MX", "fr", "arn"] {
            assert_eq!(Locale::parse(raw).unwrap().dir(), "ltr", "{raw}");
        }
    }

    #[test]
    fn the_chain_runs_customer_language_shop_then_english() {
        let l = |raw| Locale::parse(raw).unwrap();
        let chain = fallback_chain(Some(&l("es-MX")), Some(&l("fr-CA")));
        let names: Vec<_> = chain.iter().map(Locale::as_str).collect();
        assert_eq!(names, ["es-MX", "es", "fr-CA", "fr", "en"]);
        let chain = fallback_chain(Some(&l("en-GB")), Some(&l("en")));
        let names: Vec<_> = chain.iter().map(Locale::as_str).collect();
        assert_eq!(names, ["en-GB", "en"]);
        assert_eq!(fallback_chain(None, None), vec![l("en")]);
        let names: Vec<_> = fallback_chain(None, Some(&l("de")))
            .into_iter()
            .map(|l| l.to_string())
            .collect();
        assert_eq!(names, ["de", "en"]);
    }
}
