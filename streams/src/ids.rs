//! Identifiers that cross process boundaries, parsed once so the rest of the code can trust them.

use std::fmt;

use serde::{Deserialize, Deserializer, Serialize};

/// A shop's `*.myshopify.com` domain, lower-case. It is the Kafka key, so all of a merchant's events share a
/// partition and are consumed in order by one actor.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(transparent)]
pub struct MerchantId(String);

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{0:?} is not a *.myshopify.com shop domain")]
pub struct InvalidMerchantId(pub String);

impl MerchantId {
    pub fn parse(raw: &str) -> Result<Self, InvalidMerchantId> {
        let domain = raw.trim().to_ascii_lowercase();
        let handle = domain.strip_suffix(".myshopify.com").unwrap_or("");
        let valid_handle = !handle.is_empty()
            && handle.len() <= 100
            && handle
                .bytes()
                .all(|b| b.is_ascii_alphanumeric() || b == b'-')
            && !handle.starts_with('-');
        if valid_handle {
            Ok(MerchantId(domain))
        } else {
            Err(InvalidMerchantId(raw.chars().take(120).collect()))
        }
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl fmt::Display for MerchantId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl<'de> Deserialize<'de> for MerchantId {
    fn deserialize<D: Deserializer<'de>>(deserializer: D) -> Result<Self, D::Error> {
        let raw = String::deserialize(deserializer)?;
        MerchantId::parse(&raw).map_err(serde::de::Error::custom)
    }
}

/// A stable 64-bit key for an event id, used where keeping the full string per customer would cost too much
/// memory (points deduplication). FNV-1a: deterministic across processes and versions, unlike `DefaultHasher`.
pub fn event_key(event_id: &str) -> u64 {
    event_id.bytes().fold(0xcbf2_9ce4_8422_2325u64, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn merchant_ids_are_normalised_and_checked() {
        assert_eq!(
            MerchantId::parse(" Cool-Shop.MyShopify.com ")
                .unwrap()
                .as_str(),
            "cool-shop.myshopify.com"
        );
        for bad in [
            "",
            "example.com",
            ".myshopify.com",
            "a b.myshopify.com",
            "x.myshopify.com.evil.io",
            "-x.myshopify.com",
        ] {
            assert!(MerchantId::parse(bad).is_err(), "{bad}");
        }
    }

    #[test]
    fn event_keys_are_stable() {
        assert_eq!(event_key(""), 0xcbf2_9ce4_8422_2325);
        assert_ne!(event_key("a"), event_key("b"));
    }
}
