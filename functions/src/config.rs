//! A merchant's RFM configuration and its validation.
//!
//! Thresholds are stored as absolute values (days, order counts, money), because that is what a merchant edits and
//! what an auditor reads back. "Reset to defaults" derives the monetary ones from an AOV: the merchant's measured
//! one or a size preset. Validation returns every field error at once so the settings page can mark them all.

use serde::{Deserialize, Serialize};

use crate::money::Money;
use crate::segment::{default_rules, SegmentRule};

mod measured;
mod rules;
pub use measured::Measured;
pub use rules::MAX_KEY_LEN;

/// Upper bounds (inclusive) of days since the last order for R5, R4, R3 and R2; beyond the last is R1.
pub type RecencyDays = [u32; 4];
/// Upper bounds (inclusive) of valid orders for F1, F2, F3 and F4; beyond the last is F5.
pub type FrequencyOrders = [u32; 4];

/// Lower bounds of net spend: M2 from `[0]`, M3 from `[1]`, M4 from `[2]`, M5 above `[3]` (M4 includes `[3]`).
pub type MonetaryBounds = [Money; 4];

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct Weights {
    pub recency: f64,
    pub frequency: f64,
    pub monetary: f64,
}

impl Default for Weights {
    fn default() -> Self {
        Weights {
            recency: 0.4,
            frequency: 0.3,
            monetary: 0.3,
        }
    }
}

impl Weights {
    /// Weights in basis points, so scoring is integer arithmetic and `R5 F3 M4` is exactly 4.1.
    pub fn basis_points(&self) -> [u32; 3] {
        [self.recency, self.frequency, self.monetary]
            .map(|w| (w * 10_000.0).round().clamp(0.0, 10_000.0) as u32)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Serialize, Deserialize)]
pub struct RecencyDecay {
    pub half_life_days: f64,
}

/// Unknown fields are refused rather than ignored: a misspelt `grace_period_day` saved silently as the default is
/// worse than a 422 naming it.
#[derive(Debug, Clone, PartialEq, Serialize, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct RfmConfig {
    pub recency_days: RecencyDays,
    pub frequency_orders: FrequencyOrders,
    pub monetary: MonetaryBounds,
    #[serde(default)]
    pub weights: Weights,
    #[serde(default)]
    pub recency_decay: Option<RecencyDecay>,
    #[serde(default = "default_rules")]
    pub segments: Vec<SegmentRule>,
    /// Days without an order after which a buyer's lifecycle stage is `churned`.
    #[serde(default = "default_churned_after_days")]
    pub churned_after_days: u32,
    /// Purchase rhythm assumed for a one-order customer when estimating churn risk.
    #[serde(default = "default_rhythm_days")]
    pub default_rhythm_days: u32,
    /// Demotion grace: a customer whose segment would drop only because time passed keeps the segment they had
    /// `grace_period_days` earlier (see `score::graced`). 0, the default, demotes on the day.
    #[serde(default)]
    pub grace_period_days: u32,
}

/// The longest demotion grace accepted, a year: beyond it a segment says nothing about the customer any more.
pub const MAX_GRACE_PERIOD_DAYS: u32 = 365;

fn default_churned_after_days() -> u32 {
    365
}

fn default_rhythm_days() -> u32 {
    60
}

/// Store size presets for "reset to defaults" when a merchant has no measured AOV yet.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Deserialize)]
#[serde(rename_all = "snake_case")]
pub enum SizePreset {
    Small,
    Medium,
    Plus,
}

impl SizePreset {
    pub fn aov(self) -> Money {
        match self {
            SizePreset::Small => Money::from_minor(2_000),
            SizePreset::Medium => Money::from_minor(10_000),
            SizePreset::Plus => Money::from_minor(50_000),
        }
    }
}

impl Default for RfmConfig {
    /// A merchant with no saved configuration: the medium preset.
    fn default() -> Self {
        RfmConfig::from_aov(SizePreset::Medium.aov())
    }
}

impl RfmConfig {
    /// Defaults with monetary bounds at 0.5×, 1×, 2× and 5× the given average order value.
    pub fn from_aov(aov: Money) -> Self {
        RfmConfig {
            recency_days: [7, 30, 60, 90],
            frequency_orders: [1, 3, 5, 10],
            monetary: [aov.scale(1, 2), aov, aov.scale(2, 1), aov.scale(5, 1)],
            weights: Weights::default(),
            recency_decay: None,
            segments: default_rules(),
            churned_after_days: default_churned_after_days(),
            default_rhythm_days: default_rhythm_days(),
            grace_period_days: 0,
        }
    }

    /// Keeps the merchant's segments and weights but re-derives the thresholds from a measured AOV.
    pub fn reset_thresholds(&self, aov: Money) -> Self {
        let fresh = RfmConfig::from_aov(aov);
        RfmConfig {
            recency_days: fresh.recency_days,
            frequency_orders: fresh.frequency_orders,
            monetary: fresh.monetary,
            ..self.clone()
        }
    }

    /// Parses a stored document (`program_settings.rfm_thresholds`) and validates it.
    pub fn from_json(value: &serde_json::Value) -> Result<Self, Vec<FieldError>> {
        let config: RfmConfig = serde_json::from_value(value.clone()).map_err(|e| {
            vec![FieldError::new(
                "",
                format!("invalid configuration document: {e}"),
            )]
        })?;
        config.validate()?;
        Ok(config)
    }

    pub fn validate(&self) -> Result<(), Vec<FieldError>> {
        let mut errors = Vec::new();
        check_increasing(
            "recency_days",
            &self.recency_days.map(i64::from),
            &mut errors,
        );
        check_increasing(
            "frequency_orders",
            &self.frequency_orders.map(i64::from),
            &mut errors,
        );
        check_increasing("monetary", &self.monetary.map(Money::minor), &mut errors);
        if self.monetary[0] <= Money::ZERO {
            errors.push(FieldError::new(
                "monetary[0]",
                "the M2 threshold must be above zero",
            ));
        }
        self.validate_weights(&mut errors);
        if let Some(decay) = self.recency_decay {
            if !(decay.half_life_days.is_finite() && decay.half_life_days > 0.0) {
                errors.push(FieldError::new(
                    "recency_decay.half_life_days",
                    "must be a positive number of days",
                ));
            }
        }
        if self.churned_after_days == 0 {
            errors.push(FieldError::new(
                "churned_after_days",
                "must be at least one day",
            ));
        }
        if self.default_rhythm_days == 0 {
            errors.push(FieldError::new(
                "default_rhythm_days",
                "must be at least one day",
            ));
        }
        if self.grace_period_days > MAX_GRACE_PERIOD_DAYS {
            errors.push(FieldError::new(
                "grace_period_days",
                format!("must be between 0 and {MAX_GRACE_PERIOD_DAYS} days"),
            ));
        }
        rules::validate_segments(&self.segments, &mut errors);
        if errors.is_empty() {
            Ok(())
        } else {
            Err(errors)
        }
    }

    fn validate_weights(&self, errors: &mut Vec<FieldError>) {
        let w = self.weights;
        for (field, value) in [
            ("weights.recency", w.recency),
            ("weights.frequency", w.frequency),
            ("weights.monetary", w.monetary),
        ] {
            if !(value.is_finite() && value >= 0.0) {
                errors.push(FieldError::new(field, "must be a non-negative number"));
            }
        }
        let sum = w.recency + w.frequency + w.monetary;
        if (sum - 1.0).abs() > 1e-6 {
            errors.push(FieldError::new(
                "weights",
                format!("must sum to 1 (they sum to {sum})"),
            ));
        }
    }
}

fn check_increasing(field: &str, values: &[i64], errors: &mut Vec<FieldError>) {
    for (i, v) in values.iter().enumerate() {
        if *v < 0 {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "must not be negative",
            ));
        }
    }
    for i in 1..values.len() {
        if values[i] <= values[i - 1] {
            errors.push(FieldError::new(
                format!("{field}[{i}]"),
                "thresholds must be strictly increasing",
            ));
        }
    }
}

/// One validation failure, addressed by a JSON-path-like field name so a form can highlight it.
#[derive(Debug, Clone, PartialEq, Eq, Serialize, Deserialize)]
pub struct FieldError {
    pub field: String,
    pub message: String,
}

impl FieldError {
    pub fn new(field: impl Into<String>, message: impl Into<String>) -> Self {
        FieldError {
            field: field.into(),
            message: message.into(),
        }
    }
}

#[cfg(test)]
// Each test breaks one field of a valid configuration; mutation reads clearer than struct-update here.
#[allow(clippy::field_reassign_with_default)]
mod tests {
    use super::*;

    fn fields(config: &RfmConfig) -> Vec<String> {
        config
            .validate()
            .unwrap_err()
            .into_iter()
            .map(|e| e.field)
            .collect()
    }

    #[test]
    fn medium_preset_is_the_default() {
        let c = RfmConfig::default();
        assert_eq!(
            c.monetary.map(Money::minor),
            [5_000, 10_000, 20_000, 50_000]
        );
        assert_eq!(c.validate(), Ok(()));
    }

    #[test]
    fn presets_and_measured_aov_derive_thresholds() {
        let small = RfmConfig::from_aov(SizePreset::Small.aov());
        assert_eq!(
            small.monetary.map(Money::minor),
            [1_000, 2_000, 4_000, 10_000]
        );
        let plus = RfmConfig::from_aov(SizePreset::Plus.aov());
        assert_eq!(
            plus.monetary.map(Money::minor),
            [25_000, 50_000, 100_000, 250_000]
        );
        let mut custom = RfmConfig::default();
        custom.weights = Weights {
            recency: 0.5,
            frequency: 0.25,
            monetary: 0.25,
        };
        let reset = custom.reset_thresholds(Money::from_minor(7_350));
        assert_eq!(
            reset.monetary.map(Money::minor),
            [3_675, 7_350, 14_700, 36_750]
        );
        assert_eq!(reset.weights, custom.weights);
    }

    #[test]
    fn reports_every_field_error() {
        let mut c = RfmConfig::default();
        c.recency_days = [7, 7, 60, 90];
        c.frequency_orders = [1, 3, 2, 10];
        c.monetary[0] = Money::from_minor(-1);
        c.weights.recency = 0.5;
        c.segments[1].key = "champions".into();
        let f = fields(&c);
        for expected in [
            "recency_days[1]",
            "frequency_orders[2]",
            "monetary[0]",
            "weights",
            "segments[1].key",
        ] {
            assert!(
                f.iter().any(|x| x == expected),
                "missing {expected} in {f:?}"
            );
        }
    }

    #[test]
    fn rejects_duplicate_names_and_non_total_tables() {
        let mut c = RfmConfig::default();
        c.segments[2].name.insert("en".into(), "champions".into());
        assert!(fields(&c).contains(&"segments[2].name.en".to_owned()));
        let mut c = RfmConfig::default();
        c.segments.pop();
        assert_eq!(fields(&c), vec!["segments".to_owned()]);
    }

    #[test]
    fn rejects_unknown_locales_missing_english_and_bad_keys() {
        let mut c = RfmConfig::default();
        c.segments[0]
            .name
            .insert("spanish".into(), "Campeones!".into());
        c.segments[1].name.insert("ES".into(), "Leales!".into());
        c.segments[2].name.remove("en");
        c.segments[3].key = "Inactive Ones".into();
        c.segments[4].name.insert("fr".into(), " ".into());
        assert_eq!(
            fields(&c),
            vec![
                "segments[0].name.spanish",
                "segments[1].name.ES",
                "segments[2].name.en",
                "segments[3].key",
                "segments[4].name.fr",
            ]
        );
    }

    #[test]
    fn grace_period_is_bounded_and_defaults_to_zero() {
        let mut c = RfmConfig::default();
        assert_eq!(c.grace_period_days, 0);
        c.grace_period_days = 30;
        assert_eq!(c.validate(), Ok(()));
        c.grace_period_days = MAX_GRACE_PERIOD_DAYS + 1;
        assert_eq!(fields(&c), vec!["grace_period_days".to_owned()]);
    }

    #[test]
    fn unknown_fields_are_refused() {
        let mut json = serde_json::to_value(RfmConfig::default()).unwrap();
        json["grace_period_day"] = serde_json::json!(30);
        let errors = RfmConfig::from_json(&json).unwrap_err();
        assert!(errors[0].message.contains("grace_period_day"), "{errors:?}");
    }

    #[test]
    fn rejects_bad_decay() {
        let mut c = RfmConfig::default();
        c.recency_decay = Some(RecencyDecay {
            half_life_days: 0.0,
        });
        assert_eq!(fields(&c), vec!["recency_decay.half_life_days".to_owned()]);
    }

    #[test]
    fn json_round_trip_and_defaults() {
        let json = serde_json::to_value(RfmConfig::default()).unwrap();
        assert_eq!(json["monetary"][0], "50.00");
        assert_eq!(RfmConfig::from_json(&json), Ok(RfmConfig::default()));
        let minimal = serde_json::json!({
            "recency_days": [7, 30, 60, 90], "frequency_orders": [1, 3, 5, 10],
            "monetary": ["50", "100", "200", "500"]
        });
        assert_eq!(RfmConfig::from_json(&minimal), Ok(RfmConfig::default()));
        let broken = serde_json::json!({"recency_days": "soon"});
        assert_eq!(RfmConfig::from_json(&broken).unwrap_err()[0].field, "");
    }
}
