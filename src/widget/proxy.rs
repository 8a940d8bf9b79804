//! Requests that reach us through Shopify's App Proxy, and how we know Shopify sent them.
//!
//! The storefront calls `https://{shop}/apps/<subpath>/...`; Shopify forwards it here with `shop`,
//! `logged_in_customer_id` (empty when nobody is logged in), `path_prefix`, `timestamp` and `signature` added to the
//! query. The signature is Shopify's documented scheme: drop `signature`, render every other parameter as
//! `key=value` (the values of a repeated key joined by `,`, in the order they came, after URL-decoding), sort those
//! strings, concatenate them with no separator, and take the hex HMAC-SHA256 under the app secret. Both the current
//! and, during a rotation, the previous secret are accepted, as for webhooks; the comparison is constant-time.
//!
//! A valid signature alone would let a captured URL be replayed for ever, so `timestamp` must also be within
//! [`FRESHNESS_SECS`] of our clock, either way (Shopify stamps each forwarded request; five minutes covers clock skew
//! between their edge and us without keeping a leaked link useful for long).

use std::collections::BTreeMap;

use hmac::{Hmac, Mac};
use sha2::Sha256;
use streams::MerchantId;

use crate::shopify::hmac::WebhookSecrets;

/// How far `timestamp` may be from our clock, in seconds, before a signed request is refused as stale.
pub const FRESHNESS_SECS: i64 = 300;

/// What a verified proxy request tells us: the shop, and the logged-in customer if there is one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ProxyRequest {
    pub shop: MerchantId,
    pub customer_id: Option<u64>,
}

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum ProxyError {
    #[error("the request carries no app proxy signature")]
    MissingSignature,
    #[error("the app proxy signature does not match")]
    Signature,
    #[error("the request carries no usable timestamp")]
    Timestamp,
    #[error("the request is too old or from the future")]
    Stale,
    #[error("shop is not a shop domain")]
    Shop,
    #[error("logged_in_customer_id is not a customer id")]
    Customer,
    #[error(
        "unexpected query parameter {0:?}: the widget token takes only what the App Proxy adds"
    )]
    Unexpected(String),
    #[error("path_prefix must appear once")]
    PathPrefix,
}

impl ProxyError {
    /// Whether the request failed authentication (401) rather than being malformed once authenticated (400).
    pub fn is_unauthenticated(&self) -> bool {
        matches!(
            self,
            ProxyError::MissingSignature
                | ProxyError::Signature
                | ProxyError::Timestamp
                | ProxyError::Stale
        )
    }

    /// A short label for metrics.
    pub fn reason(&self) -> &'static str {
        match self {
            ProxyError::MissingSignature => "missing",
            ProxyError::Signature => "signature",
            ProxyError::Timestamp | ProxyError::Stale => "timestamp",
            ProxyError::Shop
            | ProxyError::Customer
            | ProxyError::Unexpected(_)
            | ProxyError::PathPrefix => "parameters",
        }
    }
}

/// The parameters the App Proxy adds. The widget asks for its token with no query of its own, so anything else
/// (which Shopify would forward, signed, from the storefront URL) is someone else's request and refused.
const EXPECTED: [&str; 5] = [
    "shop",
    "logged_in_customer_id",
    "path_prefix",
    "timestamp",
    "signature",
];

/// Parameters by key, each key's values in arrival order.
type Params = BTreeMap<String, Vec<String>>;

fn parse(query: &str) -> Params {
    let mut params = Params::new();
    for (key, value) in form_urlencoded::parse(query.as_bytes()) {
        params
            .entry(key.into_owned())
            .or_default()
            .push(value.into_owned());
    }
    params
}

/// The string Shopify signs: every parameter but `signature`, as sorted `key=v1,v2` strings, concatenated.
fn signed_message(params: &Params) -> String {
    let mut pairs: Vec<String> = params
        .iter()
        .filter(|(key, _)| key.as_str() != "signature")
        .map(|(key, values)| format!("{key}={}", values.join(",")))
        .collect();
    pairs.sort_unstable();
    pairs.concat()
}

fn mac(secret: &[u8], message: &str) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(message.as_bytes());
    mac
}

/// The value of a key that must appear exactly once.
fn single<'a>(params: &'a Params, key: &str) -> Option<&'a str> {
    match params.get(key).map(Vec::as_slice) {
        Some([value]) => Some(value.as_str()),
        _ => None,
    }
}

/// Verifies a forwarded request's raw query string at `now_unix`: signature first (nothing unsigned is read), then
/// freshness, then that only the App Proxy's parameters are present, then the shop and customer it names.
pub fn verify(
    query: &str,
    secrets: &WebhookSecrets,
    now_unix: i64,
) -> Result<ProxyRequest, ProxyError> {
    let params = parse(query);
    let signature = match params.get("signature").map(Vec::as_slice) {
        None => return Err(ProxyError::MissingSignature),
        Some([one]) => hex::decode(one.trim()).map_err(|_| ProxyError::Signature)?,
        Some(_) => return Err(ProxyError::Signature),
    };
    let message = signed_message(&params);
    let valid = secrets
        .all()
        .any(|secret| mac(secret, &message).verify_slice(&signature).is_ok());
    if !valid {
        return Err(ProxyError::Signature);
    }
    let timestamp: i64 = single(&params, "timestamp")
        .and_then(|t| t.trim().parse().ok())
        .ok_or(ProxyError::Timestamp)?;
    if now_unix.saturating_sub(timestamp).saturating_abs() > FRESHNESS_SECS {
        return Err(ProxyError::Stale);
    }
    if let Some(key) = params.keys().find(|k| !EXPECTED.contains(&k.as_str())) {
        return Err(ProxyError::Unexpected(key.chars().take(40).collect()));
    }
    if params.get("path_prefix").is_some_and(|v| v.len() != 1) {
        return Err(ProxyError::PathPrefix);
    }
    let shop = single(&params, "shop")
        .and_then(|s| MerchantId::parse(s).ok())
        .ok_or(ProxyError::Shop)?;
    let customer_id = match params.get("logged_in_customer_id").map(Vec::as_slice) {
        None => None,
        Some([id]) if id.trim().is_empty() => None,
        Some([id]) => Some(
            id.trim()
                .parse::<u64>()
                .ok()
                .filter(|id| *id > 0)
                .ok_or(ProxyError::Customer)?,
        ),
        Some(_) => return Err(ProxyError::Customer),
    };
    Ok(ProxyRequest { shop, customer_id })
}

/// The query string Shopify would forward for `params`, signed with `secret`: for the demo's storefront and tests.
pub fn signed_query(params: &[(&str, &str)], secret: &[u8]) -> String {
    let mut grouped = Params::new();
    for (key, value) in params {
        grouped
            .entry((*key).to_owned())
            .or_default()
            .push((*value).to_owned());
    }
    let signature = hex::encode(
        mac(secret, &signed_message(&grouped))
            .finalize()
            .into_bytes(),
    );
    let mut query = form_urlencoded::Serializer::new(String::new());
    query.extend_pairs(params.iter().copied());
    query.append_pair("signature", &signature);
    query.finish()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_317_327_555;

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::new(b"hush".to_vec(), Some(b"old".to_vec()))
    }

    /// Shopify's own worked example (shared secret `hush`): repeated `extra` joined with a comma, `path_prefix`
    /// URL-decoded before signing. Its signature verifies (the signature is checked first, so the refusal is about
    /// the parameter set): the storefront's own `extra` has no business in a widget token request.
    #[test]
    fn shopifys_documented_example_verifies_and_its_extra_parameter_is_refused() {
        let documented = "extra=1&extra=2&shop=shop-name.myshopify.com&logged_in_customer_id=1\
                     &path_prefix=%2Fapps%2Fawesome_reviews&timestamp=1317327555\
                     &signature=4c68c8624d737112c91818c11017d24d334b524cb5c2b8ba08daa056f7395ddb";
        assert_eq!(
            verify(documented, &secrets(), NOW),
            Err(ProxyError::Unexpected("extra".into()))
        );
        let doubled_prefix = signed_query(
            &[
                ("shop", "a-shop.myshopify.com"),
                ("path_prefix", "/apps/a"),
                ("path_prefix", "/apps/b"),
                ("timestamp", &NOW.to_string()),
            ],
            b"hush",
        );
        assert_eq!(
            verify(&doubled_prefix, &secrets(), NOW),
            Err(ProxyError::PathPrefix)
        );
        let request = verify(&query("1", NOW, b"hush"), &secrets(), NOW).unwrap();
        assert_eq!(request.shop.as_str(), "a-shop.myshopify.com");
        assert_eq!(request.customer_id, Some(1));
    }

    fn query(customer: &str, timestamp: i64, secret: &[u8]) -> String {
        let timestamp = timestamp.to_string();
        signed_query(
            &[
                ("shop", "a-shop.myshopify.com"),
                ("logged_in_customer_id", customer),
                ("path_prefix", "/apps/loyalnest"),
                ("timestamp", &timestamp),
            ],
            secret,
        )
    }

    #[test]
    fn both_secrets_of_a_rotation_sign() {
        for secret in [&b"hush"[..], b"old"] {
            let request = verify(&query("42", NOW, secret), &secrets(), NOW).unwrap();
            assert_eq!(request.customer_id, Some(42));
        }
        assert_eq!(
            verify(&query("42", NOW, b"guess"), &secrets(), NOW),
            Err(ProxyError::Signature)
        );
    }

    #[test]
    fn tampering_with_any_parameter_breaks_the_signature() {
        let signed = query("42", NOW, b"hush");
        for (from, to) in [
            ("logged_in_customer_id=42", "logged_in_customer_id=43"),
            ("a-shop", "b-shop"),
            ("timestamp=1317327555", "timestamp=1317327556"),
        ] {
            let tampered = signed.replace(from, to);
            assert_ne!(tampered, signed);
            assert_eq!(
                verify(&tampered, &secrets(), NOW),
                Err(ProxyError::Signature),
                "{to}"
            );
        }
        let added = format!("{signed}&logged_in_customer_id=43");
        assert_eq!(verify(&added, &secrets(), NOW), Err(ProxyError::Signature));
        let unsigned = signed.split("&signature=").next().unwrap();
        assert_eq!(
            verify(unsigned, &secrets(), NOW),
            Err(ProxyError::MissingSignature)
        );
        let doubled = format!("{signed}&signature=00");
        assert_eq!(
            verify(&doubled, &secrets(), NOW),
            Err(ProxyError::Signature)
        );
    }

    #[test]
    fn a_stale_or_future_timestamp_is_refused_at_the_window_edge() {
        let fresh = query("42", NOW - FRESHNESS_SECS, b"hush");
        assert!(verify(&fresh, &secrets(), NOW).is_ok());
        let stale = query("42", NOW - FRESHNESS_SECS - 1, b"hush");
        assert_eq!(verify(&stale, &secrets(), NOW), Err(ProxyError::Stale));
        let future = query("42", NOW + FRESHNESS_SECS + 1, b"hush");
        assert_eq!(verify(&future, &secrets(), NOW), Err(ProxyError::Stale));
        let extreme = query("42", i64::MIN, b"hush");
        assert_eq!(verify(&extreme, &secrets(), NOW), Err(ProxyError::Stale));
        let undated = signed_query(&[("shop", "a-shop.myshopify.com")], b"hush");
        assert_eq!(
            verify(&undated, &secrets(), NOW),
            Err(ProxyError::Timestamp)
        );
    }

    #[test]
    fn no_customer_means_none_and_odd_values_are_refused_after_the_signature() {
        assert_eq!(
            verify(&query("", NOW, b"hush"), &secrets(), NOW)
                .unwrap()
                .customer_id,
            None
        );
        for odd in ["abc", "-1", "0", "1.5"] {
            assert_eq!(
                verify(&query(odd, NOW, b"hush"), &secrets(), NOW),
                Err(ProxyError::Customer),
                "{odd}"
            );
        }
        let ts = NOW.to_string();
        let not_a_shop = signed_query(&[("shop", "evil.example.com"), ("timestamp", &ts)], b"hush");
        assert_eq!(verify(&not_a_shop, &secrets(), NOW), Err(ProxyError::Shop));
    }
}
