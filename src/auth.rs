//! Merchant authentication: Shopify session tokens (DESIGN.md §5).
//!
//! The embedded admin app sends a JWT signed HS256 with the app secret; its `dest` names the shop, `aud` the app's
//! API key, and `exp`/`nbf` bound its life (one minute at Shopify). Verifying it yields a [`MerchantId`], which is
//! the only thing the read API and the dashboard socket ever scope by, so a token for shop A cannot name shop B.
//! The token itself is never logged: errors say what was wrong, not what was sent. The CLI's `token` command
//! mints development tokens with [`mint`].

use actix_web::http::header::HeaderMap;
use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use streams::MerchantId;

use crate::shopify::hmac::WebhookSecrets;

/// Clock skew tolerated on `exp` and `nbf`, as Shopify's own libraries do.
const LEEWAY_SECS: i64 = 5;

/// The longest lifetime (`exp - nbf`) a token may claim. Shopify's live one minute; the CLI's and the demo's
/// development tokens live up to a day. A longer claim is refused, so a leaked token cannot have been minted to
/// live for ever.
pub const MAX_LIFETIME_SECS: i64 = 86_400;

/// The WebSocket sub-protocol a browser offers, followed by the token, since browsers cannot set headers on a
/// WebSocket handshake.
pub const WS_PROTOCOL: &str = "bearer";

#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthError {
    #[error("missing bearer token")]
    Missing,
    #[error("malformed token")]
    Malformed,
    #[error("unsupported token algorithm")]
    Algorithm,
    #[error("bad token signature")]
    Signature,
    #[error("token expired")]
    Expired,
    #[error("token not valid yet")]
    NotYetValid,
    #[error("token is for another app")]
    Audience,
    #[error("token does not name a shop")]
    Destination,
    #[error("token claims a lifetime longer than allowed")]
    Lifetime,
    #[error("token issuer is not its destination shop")]
    Issuer,
}

/// The claims of a Shopify session token that we read or write.
#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct Claims {
    pub iss: String,
    pub dest: String,
    pub aud: String,
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
    pub sid: String,
}

#[derive(Deserialize)]
struct Header {
    alg: String,
}

/// What a token is checked against: the app's API key and its secrets (current and, during rotation, previous).
#[derive(Clone)]
pub struct Verifier {
    pub api_key: String,
    pub secrets: WebhookSecrets,
}

impl Verifier {
    /// Checks signature, algorithm, audience, lifetime, issuer and destination; returns the shop.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<MerchantId, AuthError> {
        self.verify_claims(token, now_unix).map(|(shop, _)| shop)
    }

    /// [`Verifier::verify`], also returning the verified claims.
    pub fn verify_claims(
        &self,
        token: &str,
        now_unix: i64,
    ) -> Result<(MerchantId, Claims), AuthError> {
        let mut parts = token.split('.');
        let (Some(header), Some(payload), Some(signature), None) =
            (parts.next(), parts.next(), parts.next(), parts.next())
        else {
            return Err(AuthError::Malformed);
        };
        let header: Header = decode_json(header)?;
        if header.alg != "HS256" {
            return Err(AuthError::Algorithm);
        }
        let signature = URL_SAFE_NO_PAD
            .decode(signature)
            .map_err(|_| AuthError::Malformed)?;
        let signed = &token[..header_payload_len(token)];
        let valid = self.secrets.all().any(|secret| {
            hs256(secret)
                .chain_update(signed)
                .verify_slice(&signature)
                .is_ok()
        });
        if !valid {
            return Err(AuthError::Signature);
        }
        let claims: Claims = decode_json(payload)?;
        if claims.aud != self.api_key {
            return Err(AuthError::Audience);
        }
        check_lifetime(&claims, now_unix)?;
        let shop = shop_of(&claims.dest)?;
        // Shopify's `iss` is the shop's admin URL: a token whose issuer names another shop is not Shopify's.
        let issuer = claims.iss.strip_prefix("https://").unwrap_or("");
        if issuer.split('/').next() != Some(shop.as_str()) {
            return Err(AuthError::Issuer);
        }
        Ok((shop, claims))
    }

    /// Verifies the token a request carries: `Authorization: Bearer …`, or for a browser's WebSocket the
    /// `Sec-WebSocket-Protocol: bearer, <token>` pair.
    pub fn verify_request(
        &self,
        headers: &HeaderMap,
        now_unix: i64,
    ) -> Result<Authenticated, AuthError> {
        let (token, via_protocol) = bearer(headers).ok_or(AuthError::Missing)?;
        let (merchant, claims) = self.verify_claims(token, now_unix)?;
        Ok(Authenticated {
            merchant,
            via_protocol,
            subject: claims.sub,
            expires_at: claims.exp,
        })
    }
}

/// A verified request: the shop it may read, and whether the token came as a WebSocket sub-protocol (the
/// handshake answer must then name the protocol).
#[derive(Debug, Clone)]
pub struct Authenticated {
    pub merchant: MerchantId,
    pub via_protocol: bool,
    /// The token's `sub` (the staff member), for audit rows.
    pub subject: String,
    /// The token's `exp`, in Unix seconds: a socket opened with it is closed then.
    pub expires_at: i64,
}

/// Lifetime checks in saturating arithmetic: the claims are attacker-chosen integers.
fn check_lifetime(claims: &Claims, now_unix: i64) -> Result<(), AuthError> {
    if claims.exp.saturating_sub(claims.nbf) > MAX_LIFETIME_SECS {
        return Err(AuthError::Lifetime);
    }
    if now_unix >= claims.exp.saturating_add(LEEWAY_SECS) {
        return Err(AuthError::Expired);
    }
    if now_unix.saturating_add(LEEWAY_SECS) < claims.nbf {
        return Err(AuthError::NotYetValid);
    }
    Ok(())
}

pub(crate) fn bearer(headers: &HeaderMap) -> Option<(&str, bool)> {
    if let Some(value) = headers.get("authorization").and_then(|v| v.to_str().ok()) {
        let (scheme, token) = value.trim().split_once(' ')?;
        return scheme
            .eq_ignore_ascii_case("bearer")
            .then(|| (token.trim(), false));
    }
    let offered = headers.get("sec-websocket-protocol")?.to_str().ok()?;
    let mut protocols = offered.split(',').map(str::trim);
    (protocols.next()? == WS_PROTOCOL).then_some(())?;
    protocols.next().map(|token| (token, true))
}

fn hs256(secret: &[u8]) -> Hmac<Sha256> {
    // HMAC accepts keys of any length, so this cannot fail.
    <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length")
}

fn header_payload_len(token: &str) -> usize {
    token.rfind('.').unwrap_or(token.len())
}

fn decode_json<T: for<'de> Deserialize<'de>>(part: &str) -> Result<T, AuthError> {
    let bytes = URL_SAFE_NO_PAD
        .decode(part)
        .map_err(|_| AuthError::Malformed)?;
    serde_json::from_slice(&bytes).map_err(|_| AuthError::Malformed)
}

/// `https://shop.myshopify.com` → the shop's merchant id.
fn shop_of(dest: &str) -> Result<MerchantId, AuthError> {
    let host = dest
        .strip_prefix("https://")
        .ok_or(AuthError::Destination)?
        .trim_end_matches('/');
    MerchantId::parse(host).map_err(|_| AuthError::Destination)
}

/// A development session token for `shop`, valid for `ttl_secs` from `now_unix`, shaped like Shopify's.
pub fn mint(
    shop: &MerchantId,
    api_key: &str,
    secret: &[u8],
    now_unix: i64,
    ttl_secs: i64,
) -> String {
    let claims = Claims {
        iss: format!("https://{shop}/admin"),
        dest: format!("https://{shop}"),
        aud: api_key.to_owned(),
        sub: "dev".to_owned(),
        exp: now_unix + ttl_secs,
        nbf: now_unix,
        iat: now_unix,
        jti: uuid::Uuid::new_v4().to_string(),
        sid: "dev".to_owned(),
    };
    let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
    // Serialising a struct of strings and integers cannot fail.
    let payload = URL_SAFE_NO_PAD.encode(serde_json::to_vec(&claims).unwrap_or_default());
    let signed = format!("{header}.{payload}");
    let signature =
        URL_SAFE_NO_PAD.encode(hs256(secret).chain_update(&signed).finalize().into_bytes());
    format!("{signed}.{signature}")
}

#[cfg(test)]
mod tests {
    use super::*;

    const NOW: i64 = 1_790_000_000;

    fn verifier() -> Verifier {
        Verifier {
            api_key: "key".into(),
            secrets: WebhookSecrets::new(b"new".to_vec(), Some(b"old".to_vec())),
        }
    }

    fn shop() -> MerchantId {
        MerchantId::parse("a-shop.myshopify.com").unwrap()
    }

    #[test]
    fn a_minted_token_names_its_shop_with_either_secret() {
        for secret in [&b"new"[..], b"old"] {
            let token = mint(&shop(), "key", secret, NOW, 60);
            assert_eq!(verifier().verify(&token, NOW + 30), Ok(shop()));
        }
    }

    #[test]
    fn lifetime_audience_and_signature_are_checked() {
        let v = verifier();
        let token = mint(&shop(), "key", b"new", NOW, 60);
        assert_eq!(v.verify(&token, NOW + 70), Err(AuthError::Expired));
        assert_eq!(v.verify(&token, NOW - 60), Err(AuthError::NotYetValid));
        let other_app = mint(&shop(), "other", b"new", NOW, 60);
        assert_eq!(v.verify(&other_app, NOW), Err(AuthError::Audience));
        let forged = mint(&shop(), "key", b"guess", NOW, 60);
        assert_eq!(v.verify(&forged, NOW), Err(AuthError::Signature));
        assert_eq!(v.verify("a.b", NOW), Err(AuthError::Malformed));
        assert_eq!(v.verify("", NOW), Err(AuthError::Malformed));
    }

    #[test]
    fn a_tampered_payload_fails_the_signature() {
        let token = mint(&shop(), "key", b"new", NOW, 60);
        let other = mint(
            &MerchantId::parse("b.myshopify.com").unwrap(),
            "key",
            b"new",
            NOW,
            60,
        );
        let (h, rest) = token.split_once('.').unwrap();
        let sig = rest.rsplit_once('.').unwrap().1;
        let payload_b = other.split('.').nth(1).unwrap();
        let spliced = format!("{h}.{payload_b}.{sig}");
        assert_eq!(verifier().verify(&spliced, NOW), Err(AuthError::Signature));
    }

    /// Signs arbitrary claims the way `mint` does, for tests of claims `mint` would never produce.
    fn sign_claims(claims: &serde_json::Value) -> String {
        let header = URL_SAFE_NO_PAD.encode(br#"{"alg":"HS256","typ":"JWT"}"#);
        let payload = URL_SAFE_NO_PAD.encode(claims.to_string());
        let signed = format!("{header}.{payload}");
        let sig =
            URL_SAFE_NO_PAD.encode(hs256(b"new").chain_update(&signed).finalize().into_bytes());
        format!("{signed}.{sig}")
    }

    fn claims_json(exp: i64, nbf: i64, iss: &str) -> serde_json::Value {
        serde_json::json!({
            "iss": iss, "dest": "https://a-shop.myshopify.com", "aud": "key", "sub": "1",
            "exp": exp, "nbf": nbf, "iat": nbf, "jti": "j", "sid": "s",
        })
    }

    #[test]
    fn extreme_lifetimes_are_refused_without_overflow() {
        let iss = "https://a-shop.myshopify.com/admin";
        let v = verifier();
        let huge = sign_claims(&claims_json(i64::MAX, NOW, iss));
        assert_eq!(v.verify(&huge, NOW), Err(AuthError::Lifetime));
        let wrapped = sign_claims(&claims_json(i64::MAX, i64::MIN, iss));
        assert_eq!(v.verify(&wrapped, NOW), Err(AuthError::Lifetime));
        let day_and_more = sign_claims(&claims_json(NOW + MAX_LIFETIME_SECS + 1, NOW, iss));
        assert_eq!(v.verify(&day_and_more, NOW), Err(AuthError::Lifetime));
        let a_day = sign_claims(&claims_json(NOW + MAX_LIFETIME_SECS, NOW, iss));
        assert!(v.verify(&a_day, NOW).is_ok());
        let at_max = sign_claims(&claims_json(i64::MAX, i64::MAX - 10, iss));
        assert_eq!(v.verify(&at_max, i64::MAX), Err(AuthError::Expired));
        let at_min = sign_claims(&claims_json(i64::MIN + 110, i64::MIN + 100, iss));
        assert_eq!(v.verify(&at_min, i64::MIN), Err(AuthError::NotYetValid));
    }

    #[test]
    fn the_issuer_must_be_the_destination_shop() {
        let v = verifier();
        for iss in [
            "https://b-shop.myshopify.com/admin",
            "https://a-shop.myshopify.com.evil.com/admin",
            "a-shop.myshopify.com/admin",
            "",
        ] {
            let token = sign_claims(&claims_json(NOW + 60, NOW, iss));
            assert_eq!(v.verify(&token, NOW), Err(AuthError::Issuer), "{iss}");
        }
        let token = sign_claims(&claims_json(
            NOW + 60,
            NOW,
            "https://a-shop.myshopify.com/admin",
        ));
        assert_eq!(v.verify(&token, NOW), Ok(shop()));
    }

    #[test]
    fn alg_none_is_refused() {
        let token = mint(&shop(), "key", b"new", NOW, 60);
        let none = URL_SAFE_NO_PAD.encode(br#"{"alg":"none"}"#);
        let rest = token.split_once('.').unwrap().1;
        assert_eq!(
            verifier().verify(&format!("{none}.{rest}"), NOW),
            Err(AuthError::Algorithm)
        );
    }

    /// A shopper's widget token is signed with a key derived from the app secret, so it never passes for a session
    /// token, even where the verifier's API key happened to be the widget audience.
    #[test]
    fn a_widget_token_is_not_a_session_token() {
        use crate::widget::token::{WidgetKeys, AUDIENCE};
        let customer = actors::customer::CustomerKey {
            merchant: shop(),
            customer_id: 1,
        };
        let (token, _) = WidgetKeys::new(&verifier().secrets).mint(&customer, NOW);
        assert_eq!(verifier().verify(&token, NOW), Err(AuthError::Signature));
        let lookalike = Verifier {
            api_key: AUDIENCE.to_owned(),
            ..verifier()
        };
        assert_eq!(lookalike.verify(&token, NOW), Err(AuthError::Signature));
    }

    #[test]
    fn token_from_header_or_websocket_protocol() {
        let token = mint(&shop(), "key", b"new", NOW, 60);
        let mut headers = HeaderMap::new();
        assert_eq!(
            verifier().verify_request(&headers, NOW).unwrap_err(),
            AuthError::Missing
        );
        headers.insert(
            "sec-websocket-protocol".parse().unwrap(),
            format!("bearer, {token}").parse().unwrap(),
        );
        let auth = verifier().verify_request(&headers, NOW).unwrap();
        assert!(auth.via_protocol);
        headers.insert(
            "authorization".parse().unwrap(),
            format!("Bearer {token}").parse().unwrap(),
        );
        assert!(
            !verifier()
                .verify_request(&headers, NOW)
                .unwrap()
                .via_protocol
        );
    }
}
