//! Widget tokens: what a shopper's browser holds to read its own nudges (DESIGN.md §5).
//!
//! A widget token is an HS256 JWT naming one shop (`dest`) and one customer (`sub`), with an audience of its own
//! ([`AUDIENCE`]) and a life of [`LIFETIME_SECS`]. It is signed with a key derived from the app secret by HKDF-SHA256
//! under a fixed purpose label, never with the app secret itself: the app secret already signs webhooks, session
//! tokens and app-proxy requests (Shopify's choice), and a separate key means no widget token verifies as any of
//! those and none of those verifies as a widget token, whatever their claims say. During a secret rotation a key is
//! derived from each secret; the current one signs, both verify (as webhooks do).
//!
//! Time checks use the caller's clock (`now_unix`), not the library's, so they are testable; the claims are
//! attacker-chosen integers and are compared in saturating arithmetic.

use actix_web::http::header::HeaderMap;
use hkdf::Hkdf;
use jsonwebtoken::errors::ErrorKind;
use jsonwebtoken::{Algorithm, DecodingKey, EncodingKey, Header, Validation};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use streams::MerchantId;

use actors::customer::CustomerKey;

use crate::auth::{bearer, AuthError};
use crate::shopify::hmac::WebhookSecrets;

/// The `aud` of every widget token; session tokens carry the app's API key instead.
pub const AUDIENCE: &str = "loyalnest:widget";
/// The `iss` of every widget token: we mint them, Shopify does not.
pub const ISSUER: &str = "loyalnest-rfm";
/// How long a minted token lives. Ten minutes: a widget fetches a fresh one through the App Proxy before it
/// reconnects, so a short life costs one request per reconnect and bounds what a leaked token can read.
pub const LIFETIME_SECS: i64 = 600;
/// The longest lifetime (`exp - nbf`) a token may claim.
pub const MAX_LIFETIME_SECS: i64 = 900;
/// Clock skew tolerated on `exp` and `nbf`.
const LEEWAY_SECS: i64 = 5;
/// HKDF `info`: what the derived key is for. Changing it invalidates every widget token in flight.
const PURPOSE: &[u8] = b"loyalnest-rfm widget token v1";

#[derive(Debug, Clone, Serialize, Deserialize)]
pub struct WidgetClaims {
    pub iss: String,
    pub aud: String,
    /// The shop's domain.
    pub dest: String,
    /// The customer id, as a decimal string (JWT subjects are strings).
    pub sub: String,
    pub exp: i64,
    pub nbf: i64,
    pub iat: i64,
    pub jti: String,
}

/// A verified widget token: the one customer it may read, when it expires, and whether it came as a WebSocket
/// sub-protocol (the handshake must then answer with the protocol).
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct WidgetCustomer {
    pub key: CustomerKey,
    pub expires_at: i64,
    pub via_protocol: bool,
}

/// The derived signing keys: the current secret's, which signs, and the previous one's during a rotation.
#[derive(Clone)]
pub struct WidgetKeys {
    signing: EncodingKey,
    verifying: Vec<DecodingKey>,
}

/// Keys never reach logs, even through `{:?}`.
impl std::fmt::Debug for WidgetKeys {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WidgetKeys")
            .field("verifying", &self.verifying.len())
            .finish_non_exhaustive()
    }
}

/// The widget-token key derived from one app secret.
fn derive(secret: &[u8]) -> [u8; 32] {
    let mut key = [0u8; 32];
    // 32 bytes is far below HKDF-SHA256's limit of 255 * 32, so expansion cannot fail.
    Hkdf::<Sha256>::new(None, secret)
        .expand(PURPOSE, &mut key)
        .expect("32 bytes is a valid HKDF-SHA256 output length");
    key
}

impl WidgetKeys {
    pub fn new(secrets: &WebhookSecrets) -> WidgetKeys {
        let signing = derive(secrets.current());
        let verifying = secrets
            .all()
            .map(|secret| DecodingKey::from_secret(&derive(secret)))
            .collect();
        WidgetKeys {
            signing: EncodingKey::from_secret(&signing),
            verifying,
        }
    }

    /// A token for `customer`, valid from `now_unix` for [`LIFETIME_SECS`]; returns it and its expiry.
    pub fn mint(&self, customer: &CustomerKey, now_unix: i64) -> (String, i64) {
        let claims = WidgetClaims {
            iss: ISSUER.to_owned(),
            aud: AUDIENCE.to_owned(),
            dest: customer.merchant.to_string(),
            sub: customer.customer_id.to_string(),
            exp: now_unix.saturating_add(LIFETIME_SECS),
            nbf: now_unix,
            iat: now_unix,
            jti: uuid::Uuid::new_v4().to_string(),
        };
        // HS256 over a struct of strings and integers: neither serialising nor signing can fail.
        let token = jsonwebtoken::encode(&Header::new(Algorithm::HS256), &claims, &self.signing)
            .unwrap_or_default();
        (token, claims.exp)
    }

    /// Checks signature, algorithm, audience, issuer and lifetime; returns the customer the token names.
    pub fn verify(&self, token: &str, now_unix: i64) -> Result<(CustomerKey, i64), AuthError> {
        let claims = self.decode(token)?;
        if claims.exp.saturating_sub(claims.nbf) > MAX_LIFETIME_SECS {
            return Err(AuthError::Lifetime);
        }
        if now_unix >= claims.exp.saturating_add(LEEWAY_SECS) {
            return Err(AuthError::Expired);
        }
        if now_unix.saturating_add(LEEWAY_SECS) < claims.nbf {
            return Err(AuthError::NotYetValid);
        }
        let merchant = MerchantId::parse(&claims.dest).map_err(|_| AuthError::Destination)?;
        let customer_id = claims
            .sub
            .parse::<u64>()
            .map_err(|_| AuthError::Malformed)?;
        Ok((
            CustomerKey {
                merchant,
                customer_id,
            },
            claims.exp,
        ))
    }

    /// The token's claims if any key's signature matches and the audience and issuer are the widget's.
    fn decode(&self, token: &str) -> Result<WidgetClaims, AuthError> {
        let mut validation = Validation::new(Algorithm::HS256);
        validation.set_audience(&[AUDIENCE]);
        validation.set_issuer(&[ISSUER]);
        validation.set_required_spec_claims(&["exp", "nbf", "aud", "iss", "sub"]);
        // Lifetime is checked against the caller's clock in `verify`.
        validation.validate_exp = false;
        validation.validate_nbf = false;
        let mut last = AuthError::Signature;
        for key in &self.verifying {
            match jsonwebtoken::decode::<WidgetClaims>(token, key, &validation) {
                Ok(data) => return Ok(data.claims),
                Err(e) => last = auth_error(e.kind()),
            }
            if last != AuthError::Signature {
                return Err(last);
            }
        }
        Err(last)
    }

    /// Verifies the token a request carries: `Authorization: Bearer …`, or for a browser's WebSocket the
    /// `Sec-WebSocket-Protocol: bearer, <token>` pair.
    pub fn verify_request(
        &self,
        headers: &HeaderMap,
        now_unix: i64,
    ) -> Result<WidgetCustomer, AuthError> {
        let (token, via_protocol) = bearer(headers).ok_or(AuthError::Missing)?;
        let (key, expires_at) = self.verify(token, now_unix)?;
        Ok(WidgetCustomer {
            key,
            expires_at,
            via_protocol,
        })
    }
}

fn auth_error(kind: &ErrorKind) -> AuthError {
    match kind {
        ErrorKind::InvalidSignature => AuthError::Signature,
        ErrorKind::InvalidAlgorithm | ErrorKind::MissingAlgorithm => AuthError::Algorithm,
        ErrorKind::InvalidAudience => AuthError::Audience,
        ErrorKind::InvalidIssuer => AuthError::Issuer,
        ErrorKind::ExpiredSignature => AuthError::Expired,
        ErrorKind::ImmatureSignature => AuthError::NotYetValid,
        _ => AuthError::Malformed,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::auth::mint as mint_session;

    const NOW: i64 = 1_790_000_000;

    fn secrets() -> WebhookSecrets {
        WebhookSecrets::new(b"new".to_vec(), Some(b"old".to_vec()))
    }

    fn customer(id: u64) -> CustomerKey {
        CustomerKey {
            merchant: MerchantId::parse("a-shop.myshopify.com").unwrap(),
            customer_id: id,
        }
    }

    #[test]
    fn a_minted_token_names_its_customer_and_expires() {
        let keys = WidgetKeys::new(&secrets());
        let (token, expires) = keys.mint(&customer(42), NOW);
        assert_eq!(expires, NOW + LIFETIME_SECS);
        assert_eq!(keys.verify(&token, NOW + 60), Ok((customer(42), expires)));
        assert_eq!(
            keys.verify(&token, expires + LEEWAY_SECS),
            Err(AuthError::Expired)
        );
        assert_eq!(keys.verify(&token, NOW - 60), Err(AuthError::NotYetValid));
    }

    #[test]
    fn tokens_from_the_previous_secret_verify_during_a_rotation_and_not_after() {
        let before = WidgetKeys::new(&WebhookSecrets::new(b"old".to_vec(), None));
        let (token, _) = before.mint(&customer(1), NOW);
        assert!(WidgetKeys::new(&secrets()).verify(&token, NOW).is_ok());
        let after = WidgetKeys::new(&WebhookSecrets::new(b"new".to_vec(), None));
        assert_eq!(after.verify(&token, NOW), Err(AuthError::Signature));
    }

    #[test]
    fn a_session_token_is_not_a_widget_token() {
        let keys = WidgetKeys::new(&secrets());
        let shop = customer(1).merchant;
        for secret in [&b"new"[..], b"old"] {
            let session = mint_session(&shop, "key", secret, NOW, 60);
            assert_eq!(keys.verify(&session, NOW), Err(AuthError::Signature));
        }
    }

    /// Widget claims signed with the raw app secret (what a webhook signature or a session token is made with)
    /// do not verify: only the derived key signs widget tokens.
    #[test]
    fn widget_claims_signed_with_the_app_secret_are_refused() {
        let claims = WidgetClaims {
            iss: ISSUER.into(),
            aud: AUDIENCE.into(),
            dest: "a-shop.myshopify.com".into(),
            sub: "1".into(),
            exp: NOW + 60,
            nbf: NOW,
            iat: NOW,
            jti: "j".into(),
        };
        let forged = jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(b"new"),
        )
        .unwrap();
        let keys = WidgetKeys::new(&secrets());
        assert_eq!(keys.verify(&forged, NOW), Err(AuthError::Signature));
        let webhook_signature = crate::shopify::hmac::sign(b"new", b"{}");
        assert_eq!(
            keys.verify(&webhook_signature, NOW),
            Err(AuthError::Malformed)
        );
    }

    fn signed(claims: serde_json::Value, secrets: &WebhookSecrets) -> String {
        jsonwebtoken::encode(
            &Header::new(Algorithm::HS256),
            &claims,
            &EncodingKey::from_secret(&derive(secrets.current())),
        )
        .unwrap()
    }

    #[test]
    fn audience_issuer_subject_and_lifetime_are_checked() {
        let keys = WidgetKeys::new(&secrets());
        let claims = |aud: &str, iss: &str, sub: &str, exp: i64| {
            serde_json::json!({"iss": iss, "aud": aud, "dest": "a-shop.myshopify.com", "sub": sub,
                "exp": exp, "nbf": NOW, "iat": NOW, "jti": "j"})
        };
        let cases = [
            (claims("key", ISSUER, "1", NOW + 60), AuthError::Audience),
            (
                claims(AUDIENCE, "shopify", "1", NOW + 60),
                AuthError::Issuer,
            ),
            (
                claims(AUDIENCE, ISSUER, "x", NOW + 60),
                AuthError::Malformed,
            ),
            (
                claims(AUDIENCE, ISSUER, "1", NOW + MAX_LIFETIME_SECS + 1),
                AuthError::Lifetime,
            ),
            (claims(AUDIENCE, ISSUER, "1", i64::MAX), AuthError::Lifetime),
        ];
        for (claims, expected) in cases {
            assert_eq!(
                keys.verify(&signed(claims.clone(), &secrets()), NOW),
                Err(expected),
                "{claims}"
            );
        }
        let mut other_shop = claims(AUDIENCE, ISSUER, "1", NOW + 60);
        other_shop["dest"] = "https://evil.example.com".into();
        assert_eq!(
            keys.verify(&signed(other_shop, &secrets()), NOW),
            Err(AuthError::Destination)
        );
    }

    #[test]
    fn alg_none_is_refused() {
        let keys = WidgetKeys::new(&secrets());
        let (token, _) = keys.mint(&customer(1), NOW);
        let rest = token.split_once('.').unwrap().1;
        let none = base64::Engine::encode(
            &base64::engine::general_purpose::URL_SAFE_NO_PAD,
            br#"{"alg":"none","typ":"JWT"}"#,
        );
        assert!(keys.verify(&format!("{none}.{rest}"), NOW).is_err());
    }
}
