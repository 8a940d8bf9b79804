//! Money as integer minor units.
//!
//! Shopify sends amounts as decimal strings in the shop's currency (`"123.45"`). Floating point would turn
//! `0.1 + 0.2` into a different net spend on two machines, so every amount is parsed once, at the edge, into an
//! `i64` count of the currency's minor unit and stays exact from then on. Parsing rejects garbage, `NaN`, exponents
//! and overflow with an error instead of guessing.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize, Serializer};

/// An exact amount in minor units (cents for USD, yen for JPY).
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Default)]
pub struct Money(i64);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MoneyError {
    #[error("amount is empty")]
    Empty,
    #[error("amount {0:?} is not a decimal number")]
    NotDecimal(String),
    #[error("amount {0:?} has more decimals than the currency allows")]
    TooPrecise(String),
    #[error("amount {0:?} is too large")]
    Overflow(String),
}

impl Money {
    pub const ZERO: Money = Money(0);

    pub const fn from_minor(minor: i64) -> Self {
        Money(minor)
    }

    pub const fn minor(self) -> i64 {
        self.0
    }

    /// Parses a decimal string with `exponent` minor digits (2 for USD). Trailing zeros beyond the exponent are
    /// accepted (`"10.000"` is ten dollars), any other extra precision is an error rather than silent rounding.
    pub fn parse(text: &str, exponent: u8) -> Result<Self, MoneyError> {
        let trimmed = text.trim();
        if trimmed.is_empty() {
            return Err(MoneyError::Empty);
        }
        let (negative, digits) = match trimmed.as_bytes()[0] {
            b'-' => (true, &trimmed[1..]),
            b'+' => (false, &trimmed[1..]),
            _ => (false, trimmed),
        };
        let (whole, frac) = digits.split_once('.').unwrap_or((digits, ""));
        let all_digits = |s: &str| s.bytes().all(|b| b.is_ascii_digit());
        if whole.is_empty() && frac.is_empty() || !all_digits(whole) || !all_digits(frac) {
            return Err(MoneyError::NotDecimal(text.to_owned()));
        }
        let exponent = usize::from(exponent);
        let (kept, extra) = frac.split_at(frac.len().min(exponent));
        if extra.bytes().any(|b| b != b'0') {
            return Err(MoneyError::TooPrecise(text.to_owned()));
        }
        let overflow = || MoneyError::Overflow(text.to_owned());
        let mut minor: i64 = 0;
        let padded = kept
            .bytes()
            .chain(std::iter::repeat_n(b'0', exponent - kept.len()));
        for b in whole.bytes().chain(padded) {
            minor = minor
                .checked_mul(10)
                .and_then(|m| m.checked_add(i64::from(b - b'0')))
                .ok_or_else(overflow)?;
        }
        Ok(Money(if negative { -minor } else { minor }))
    }

    /// Renders with `exponent` decimals, the inverse of [`Money::parse`].
    pub fn to_decimal_string(self, exponent: u8) -> String {
        if exponent == 0 {
            return self.0.to_string();
        }
        let scale = 10u64.pow(u32::from(exponent));
        let abs = self.0.unsigned_abs();
        let sign = if self.0 < 0 { "-" } else { "" };
        format!(
            "{sign}{}.{:0width$}",
            abs / scale,
            abs % scale,
            width = usize::from(exponent)
        )
    }

    pub fn saturating_add(self, other: Money) -> Money {
        Money(self.0.saturating_add(other.0))
    }

    pub fn saturating_sub(self, other: Money) -> Money {
        Money(self.0.saturating_sub(other.0))
    }

    /// Scales by a rational factor, rounding half away from zero; used to derive thresholds from an AOV.
    pub fn scale(self, numerator: i64, denominator: i64) -> Money {
        let wide = i128::from(self.0) * i128::from(numerator);
        let den = i128::from(denominator.max(1));
        let rounded = (wide + wide.signum() * den / 2) / den;
        Money(rounded.clamp(i128::from(i64::MIN), i128::from(i64::MAX)) as i64)
    }
}

/// Minor-unit digits of an ISO 4217 currency. Shopify only sells in currencies with 0, 2 or 3 decimals.
pub fn currency_exponent(code: &str) -> u8 {
    const ZERO: &[&str] = &[
        "BIF", "CLP", "DJF", "GNF", "ISK", "JPY", "KMF", "KRW", "PYG", "RWF", "UGX", "VND", "VUV",
        "XAF", "XOF", "XPF",
    ];
    const THREE: &[&str] = &["BHD", "IQD", "JOD", "KWD", "LYD", "OMR", "TND"];
    let upper = code.trim().to_ascii_uppercase();
    if ZERO.contains(&upper.as_str()) {
        0
    } else if THREE.contains(&upper.as_str()) {
        3
    } else {
        2
    }
}

impl fmt::Display for Money {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.to_decimal_string(2))
    }
}

/// Configuration documents hold money as decimal strings with two decimals (the shop currency's minor units are
/// applied by the caller for zero- and three-decimal currencies).
impl Serialize for Money {
    fn serialize<S: Serializer>(&self, serializer: S) -> Result<S::Ok, S::Error> {
        serializer.serialize_str(&self.to_decimal_string(2))
    }
}

impl<'de> Deserialize<'de> for Money {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let text = String::deserialize(deserializer)?;
        Money::parse(&text, 2).map_err(serde::de::Error::custom)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_shopify_amounts_exactly() {
        assert_eq!(Money::parse("123.45", 2), Ok(Money(12345)));
        assert_eq!(Money::parse("10", 2), Ok(Money(1000)));
        assert_eq!(Money::parse("10.5", 2), Ok(Money(1050)));
        assert_eq!(Money::parse("10.000", 2), Ok(Money(1000)));
        assert_eq!(Money::parse("-3.20", 2), Ok(Money(-320)));
        assert_eq!(Money::parse(".99", 2), Ok(Money(99)));
        assert_eq!(Money::parse("1500", 0), Ok(Money(1500)));
        assert_eq!(Money::parse("1.234", 3), Ok(Money(1234)));
    }

    #[test]
    fn rejects_garbage_instead_of_guessing() {
        for bad in [
            "", "  ", "abc", "NaN", "inf", "1e3", "1.2.3", "12,50", "-", ".", "--1", "1 000",
        ] {
            assert!(Money::parse(bad, 2).is_err(), "{bad:?} must be rejected");
        }
        assert_eq!(
            Money::parse("1.005", 2),
            Err(MoneyError::TooPrecise("1.005".into()))
        );
        assert_eq!(
            Money::parse("92233720368547758.08", 2),
            Err(MoneyError::Overflow("92233720368547758.08".into()))
        );
    }

    #[test]
    fn renders_back_to_the_same_text() {
        for (text, exp) in [
            ("123.45", 2),
            ("-0.05", 2),
            ("0.00", 2),
            ("1500", 0),
            ("1.234", 3),
        ] {
            assert_eq!(
                Money::parse(text, exp).unwrap().to_decimal_string(exp),
                text
            );
        }
    }

    #[test]
    fn scale_rounds_half_away_from_zero() {
        assert_eq!(Money(10000).scale(1, 2), Money(5000));
        assert_eq!(Money(101).scale(1, 2), Money(51));
        assert_eq!(Money(-101).scale(1, 2), Money(-51));
    }

    #[test]
    fn knows_currency_decimals() {
        assert_eq!(currency_exponent("usd"), 2);
        assert_eq!(currency_exponent("JPY"), 0);
        assert_eq!(currency_exponent("KWD"), 3);
    }
}
