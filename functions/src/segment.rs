//! Segment rules: an ordered table mapping an (R, F, M) triple to a named segment, first match wins.
//!
//! Merchants may replace the default table, so the engine refers to a segment by its index in the table
//! (`SegmentId`) and by its stable `key`; the human name is a multilingual map the dashboard and nudges pick from.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::rfm::Rfm;

/// Index of a rule in the merchant's table. Compact enough to keep per customer.
pub type SegmentId = u8;

/// An inclusive range of one score dimension, 1..=5.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
pub struct ScoreRange {
    pub min: u8,
    pub max: u8,
}

impl ScoreRange {
    pub const ANY: ScoreRange = ScoreRange { min: 1, max: 5 };

    pub const fn new(min: u8, max: u8) -> Self {
        ScoreRange { min, max }
    }

    pub fn contains(self, value: u8) -> bool {
        (self.min..=self.max).contains(&value)
    }
}

#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct SegmentRule {
    /// Stable identifier written to Kafka, Postgres and the customer metafield (`champions`, `at_risk`).
    pub key: String,
    /// Display names by locale, e.g. `{"en": "Champions", "es": "Campeones"}`; `en` is the fallback.
    pub name: BTreeMap<String, String>,
    pub recency: ScoreRange,
    pub frequency: ScoreRange,
    pub monetary: ScoreRange,
    /// Customers in a `vip` segment have lifecycle stage `vip`.
    #[serde(default)]
    pub vip: bool,
}

impl SegmentRule {
    pub fn matches(&self, rfm: Rfm) -> bool {
        self.recency.contains(rfm.recency)
            && self.frequency.contains(rfm.frequency)
            && self.monetary.contains(rfm.monetary)
    }

    /// The name for `locale` (`es-MX` falls back to `es`, then to `en`, then to the key).
    pub fn display_name(&self, locale: &str) -> &str {
        let language = locale.split(['-', '_']).next().unwrap_or(locale);
        [locale, language, "en"]
            .iter()
            .find_map(|l| self.name.get(*l))
            .map_or(self.key.as_str(), String::as_str)
    }
}

fn rule(key: &str, en: &str, es: &str, r: (u8, u8), f: (u8, u8), m: (u8, u8)) -> SegmentRule {
    SegmentRule {
        key: key.to_owned(),
        name: BTreeMap::from([
            ("en".to_owned(), en.to_owned()),
            ("es".to_owned(), es.to_owned()),
        ]),
        recency: ScoreRange::new(r.0, r.1),
        frequency: ScoreRange::new(f.0, f.1),
        monetary: ScoreRange::new(m.0, m.1),
        vip: key == "champions",
    }
}

/// The LoyalNest default table (DESIGN.md §4). The last rule catches everything, so the table is total.
pub fn default_rules() -> Vec<SegmentRule> {
    vec![
        rule(
            "champions",
            "Champions",
            "Campeones",
            (5, 5),
            (4, 5),
            (4, 5),
        ),
        rule("loyal", "Loyal", "Leales", (3, 5), (3, 5), (3, 5)),
        rule("new", "New", "Nuevos", (4, 5), (1, 1), (1, 2)),
        rule("inactive", "Inactive", "Inactivos", (1, 1), (1, 1), (1, 1)),
        rule("at_risk", "At-Risk", "En riesgo", (1, 2), (1, 2), (1, 2)),
        rule("other", "Other", "Otros", (1, 5), (1, 5), (1, 5)),
    ]
}

/// First matching rule. `None` only for a table that failed validation's totality check.
pub fn classify(rules: &[SegmentRule], rfm: Rfm) -> Option<SegmentId> {
    rules
        .iter()
        .position(|r| r.matches(rfm))
        .and_then(|i| SegmentId::try_from(i).ok())
}

/// Every triple that no rule matches; empty for a total table.
pub fn uncovered(rules: &[SegmentRule]) -> Vec<Rfm> {
    Rfm::all()
        .filter(|t| !rules.iter().any(|r| r.matches(*t)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    fn seg(r: u8, f: u8, m: u8) -> &'static str {
        let rules = default_rules();
        let id = classify(&rules, Rfm::new(r, f, m)).unwrap();
        ["champions", "loyal", "new", "inactive", "at_risk", "other"][usize::from(id)]
    }

    #[test]
    fn default_table_matches_the_design() {
        assert_eq!(seg(5, 4, 4), "champions");
        assert_eq!(seg(5, 5, 5), "champions");
        assert_eq!(seg(5, 3, 4), "loyal");
        assert_eq!(seg(3, 3, 3), "loyal");
        assert_eq!(seg(4, 1, 2), "new");
        assert_eq!(seg(5, 1, 1), "new");
        assert_eq!(seg(1, 1, 1), "inactive");
        assert_eq!(seg(2, 2, 2), "at_risk");
        assert_eq!(seg(1, 2, 1), "at_risk");
        assert_eq!(seg(3, 1, 1), "other");
        assert_eq!(seg(1, 5, 5), "other");
    }

    #[test]
    fn default_table_is_total() {
        assert!(uncovered(&default_rules()).is_empty());
    }

    #[test]
    fn names_fall_back_by_language() {
        let champions = &default_rules()[0];
        assert_eq!(champions.display_name("es-MX"), "Campeones");
        assert_eq!(champions.display_name("fr"), "Champions");
    }
}
