//! Personal data at rest and in flight: AES-256-GCM with named keys.
//!
//! Email and names leave the ingress only sealed (DESIGN.md §3: no plaintext PII on Kafka, in Redis or in logs).
//! Keys come from `ENCRYPTION_KEYS` as `id:base64key,...`; the first key seals, every listed key opens, so a key
//! rotates by prepending a new one while old ciphertexts stay readable. With no keys configured the ingress drops
//! PII instead of storing it.

use aes_gcm::aead::{Aead, KeyInit};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use streams::events::SealedPii;

#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error("key entry {0:?} is not id:base64-of-32-bytes")]
    BadKey(String),
    #[error("no key with id {0:?}")]
    UnknownKey(String),
    #[error("sealed value could not be opened")]
    Corrupt,
}

#[derive(Clone)]
struct NamedKey {
    id: String,
    cipher: Aes256Gcm,
    index_key: [u8; 32],
}

#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Vec<NamedKey>,
}

impl std::fmt::Debug for KeyRing {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        let ids: Vec<&str> = self.keys.iter().map(|k| k.id.as_str()).collect();
        f.debug_struct("KeyRing").field("key_ids", &ids).finish()
    }
}

/// The personal fields Shopify sends about a customer.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize)]
pub struct Pii {
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub email: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub first_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub last_name: Option<String>,
    #[serde(default, skip_serializing_if = "Option::is_none")]
    pub phone: Option<String>,
}

impl Pii {
    pub fn is_empty(&self) -> bool {
        self.email.is_none()
            && self.first_name.is_none()
            && self.last_name.is_none()
            && self.phone.is_none()
    }
}

impl KeyRing {
    pub fn empty() -> Self {
        KeyRing::default()
    }

    pub fn parse(spec: &str) -> Result<Self, PiiError> {
        let keys = spec
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let bad = || PiiError::BadKey(entry.split(':').next().unwrap_or("").to_owned());
                let (id, b64) = entry.trim().split_once(':').ok_or_else(bad)?;
                let raw = STANDARD.decode(b64).map_err(|_| bad())?;
                let cipher = Aes256Gcm::new_from_slice(&raw).map_err(|_| bad())?;
                let mut derive = <Hmac<Sha256> as Mac>::new_from_slice(&raw).map_err(|_| bad())?;
                derive.update(b"loyalnest blind index v1");
                Ok(NamedKey {
                    id: id.to_owned(),
                    cipher,
                    index_key: derive.finalize().into_bytes().into(),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        Ok(KeyRing { keys })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals with the current (first) key; `None` when no key is configured or there is nothing to seal.
    pub fn seal(&self, pii: &Pii) -> Option<SealedPii> {
        let key = self.keys.first()?;
        if pii.is_empty() {
            return None;
        }
        let plaintext = serde_json::to_vec(pii).ok()?;
        let nonce_bytes: [u8; 12] = rand_nonce();
        let ciphertext = key
            .cipher
            .encrypt(Nonce::from_slice(&nonce_bytes), plaintext.as_slice())
            .ok()?;
        let mut sealed = nonce_bytes.to_vec();
        sealed.extend_from_slice(&ciphertext);
        Some(SealedPii {
            key_id: key.id.clone(),
            sealed: STANDARD.encode(sealed),
            email_index: pii.email.as_deref().map(|e| blind_index(&key.index_key, e)),
        })
    }

    pub fn open(&self, sealed: &SealedPii) -> Result<Pii, PiiError> {
        let key = self
            .keys
            .iter()
            .find(|k| k.id == sealed.key_id)
            .ok_or_else(|| PiiError::UnknownKey(sealed.key_id.clone()))?;
        let raw = STANDARD
            .decode(&sealed.sealed)
            .map_err(|_| PiiError::Corrupt)?;
        if raw.len() < 12 {
            return Err(PiiError::Corrupt);
        }
        let (nonce, ciphertext) = raw.split_at(12);
        let plaintext = key
            .cipher
            .decrypt(Nonce::from_slice(nonce), ciphertext)
            .map_err(|_| PiiError::Corrupt)?;
        serde_json::from_slice(&plaintext).map_err(|_| PiiError::Corrupt)
    }
}

fn blind_index(index_key: &[u8; 32], email: &str) -> String {
    let mut mac =
        <Hmac<Sha256> as Mac>::new_from_slice(index_key).expect("HMAC takes any key length");
    mac.update(email.trim().to_lowercase().as_bytes());
    mac.finalize()
        .into_bytes()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

/// A GCM nonce must never repeat under one key; 96 random bits from the OS make a repeat negligible for the number
/// of seals one key will see before rotation.
fn rand_nonce() -> [u8; 12] {
    let uuid = uuid::Uuid::new_v4();
    let mut nonce = [0u8; 12];
    nonce.copy_from_slice(&uuid.as_bytes()[..12]);
    nonce
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec).unwrap()
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    #[test]
    fn seals_without_plaintext_and_opens_after_rotation() {
        let pii = Pii {
            email: Some("Ana@Example.com".into()),
            first_name: Some("Ana".into()),
            ..Pii::default()
        };
        let sealed = ring(K1).seal(&pii).unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.sealed.contains("Ana"));
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(rotated.open(&sealed).unwrap(), pii);
        assert_eq!(rotated.seal(&pii).unwrap().key_id, "k2");
        assert!(matches!(
            ring(K2).open(&sealed),
            Err(PiiError::UnknownKey(_))
        ));
    }

    #[test]
    fn blind_index_ignores_case_and_differs_per_key() {
        let a = ring(K1)
            .seal(&Pii {
                email: Some("ana@example.com".into()),
                ..Pii::default()
            })
            .unwrap();
        let b = ring(K1)
            .seal(&Pii {
                email: Some(" ANA@example.com".into()),
                ..Pii::default()
            })
            .unwrap();
        let c = ring(K2)
            .seal(&Pii {
                email: Some("ana@example.com".into()),
                ..Pii::default()
            })
            .unwrap();
        assert_eq!(a.email_index, b.email_index);
        assert_ne!(a.email_index, c.email_index);
        assert_ne!(a.sealed, b.sealed, "nonces must differ");
    }

    #[test]
    fn rejects_bad_keys_and_tampering() {
        assert!(KeyRing::parse("k1:short").is_err());
        assert!(KeyRing::parse("nocolon").is_err());
        let mut sealed = ring(K1)
            .seal(&Pii {
                first_name: Some("Ana".into()),
                ..Pii::default()
            })
            .unwrap();
        sealed.sealed = STANDARD.encode(b"0123456789ab-tampered-bytes");
        assert!(matches!(ring(K1).open(&sealed), Err(PiiError::Corrupt)));
        assert!(KeyRing::empty()
            .seal(&Pii {
                first_name: Some("x".into()),
                ..Pii::default()
            })
            .is_none());
    }
}
