//! Shopify webhook signatures: base64 HMAC-SHA256 of the raw body with the app secret.
//!
//! During a secret rotation Shopify may sign with either the old or the new secret, so both are tried. The
//! comparison is constant-time (`Mac::verify_slice`) so response timing does not reveal how much of a forged
//! signature was right.

use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use sha2::Sha256;

type HmacSha256 = Hmac<Sha256>;

#[derive(Clone)]
pub struct WebhookSecrets {
    current: Vec<u8>,
    previous: Option<Vec<u8>>,
}

/// Secrets never reach logs, even through `{:?}`.
impl std::fmt::Debug for WebhookSecrets {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("WebhookSecrets")
            .field("previous", &self.previous.is_some())
            .finish_non_exhaustive()
    }
}

impl WebhookSecrets {
    pub fn new(current: Vec<u8>, previous: Option<Vec<u8>>) -> Self {
        WebhookSecrets { current, previous }
    }

    pub fn current(&self) -> &[u8] {
        &self.current
    }

    /// The current secret, then the previous one during a rotation.
    pub fn all(&self) -> impl Iterator<Item = &[u8]> {
        std::iter::once(self.current.as_slice()).chain(self.previous.as_deref())
    }

    /// True when `signature_b64` is a valid signature of `body` under the current or the previous secret.
    pub fn verify(&self, body: &[u8], signature_b64: &str) -> bool {
        let Ok(signature) = STANDARD.decode(signature_b64.trim()) else {
            return false;
        };
        self.all()
            .any(|secret| mac(secret, body).verify_slice(&signature).is_ok())
    }
}

fn mac(secret: &[u8], body: &[u8]) -> HmacSha256 {
    // HMAC accepts keys of any length, so this cannot fail.
    let mut mac = HmacSha256::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(body);
    mac
}

/// The header value Shopify would send for `body`; used by the demo's synthetic store and by tests.
pub fn sign(secret: &[u8], body: &[u8]) -> String {
    STANDARD.encode(mac(secret, body).finalize().into_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn accepts_current_and_previous_secret_only() {
        let secrets = WebhookSecrets::new(b"new".to_vec(), Some(b"old".to_vec()));
        let body = br#"{"id":1}"#;
        assert!(secrets.verify(body, &sign(b"new", body)));
        assert!(secrets.verify(body, &sign(b"old", body)));
        assert!(!secrets.verify(body, &sign(b"other", body)));
        assert!(!secrets.verify(b"{\"id\":2}", &sign(b"new", body)));
        assert!(!secrets.verify(body, "not base64!"));
        assert!(!secrets.verify(body, ""));
    }

    #[test]
    fn known_vector() {
        // RFC 4231-style check computed independently: HMAC-SHA256(key="key", "The quick brown fox jumps over the lazy dog").
        assert_eq!(
            sign(b"key", b"The quick brown fox jumps over the lazy dog"),
            "97yD9DBThCSxMpjmqm+xQ+9NWaFJRhdZl0edvC0aPNg="
        );
    }
}
