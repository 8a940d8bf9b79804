//! Personal data at rest and in flight: AES-256-GCM with named keys.
//!
//! Email and names leave the ingress only sealed (DESIGN.md §3: no plaintext PII on Kafka, in Redis or in logs).
//! Keys come from `ENCRYPTION_KEYS` as `id:base64key,...`; the first key seals, every listed key opens, so a key
//! rotates by prepending a new one while old ciphertexts stay readable. With no keys configured the ingress drops
//! PII instead of storing it.
//!
//! Each ciphertext is bound to its shop and customer as associated data, so a sealed value copied onto another
//! customer's row does not open. Nonces are 96 random bits from the operating system's generator; a key is good
//! for about 2^32 random nonces, so each key counts its seals and warns long before that. The blind index of the
//! email is an HMAC under a key of its own (`PII_INDEX_KEY`), not one derived from a sealing key, so rotating the
//! sealing key leaves every index, and every lookup by email, as it was.

use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use aes_gcm::aead::{Aead, AeadCore, KeyInit, OsRng, Payload};
use aes_gcm::{Aes256Gcm, Nonce};
use base64::engine::general_purpose::STANDARD;
use base64::Engine;
use hmac::{Hmac, Mac};
use serde::{Deserialize, Serialize};
use sha2::Sha256;
use streams::events::SealedPii;
use streams::MerchantId;

/// Seals under one key past which a warning is logged (once per power of two): 2^30 is a quarter of the point
/// where random 96-bit nonces start to risk a collision, leaving time to rotate.
pub const SEAL_WARNING: u64 = 1 << 30;

#[derive(Debug, thiserror::Error)]
pub enum PiiError {
    #[error("key entry {0:?} is not id:base64-of-32-bytes")]
    BadKey(String),
    #[error("the blind index key is not base64 of 32 bytes")]
    BadIndexKey,
    #[error("no key with id {0:?}")]
    UnknownKey(String),
    #[error("sealed value could not be opened")]
    Corrupt,
}

struct NamedKey {
    id: String,
    cipher: Aes256Gcm,
    /// Seals made under this key by this process.
    seals: AtomicU64,
}

#[derive(Clone, Default)]
pub struct KeyRing {
    keys: Arc<Vec<NamedKey>>,
    index_key: Option<[u8; 32]>,
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

/// Who a sealed value belongs to; bound into the ciphertext as associated data.
#[derive(Debug, Clone, Copy)]
pub struct Owner<'a> {
    pub merchant: &'a MerchantId,
    pub customer_id: u64,
}

/// What a sealed value is, bound into it with its owner, so a sealed export cannot pass for sealed PII.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Purpose {
    Pii,
    DataExport,
    /// A shop's offline Admin API token (`shopify::access`); its owner's customer id is 0.
    OfflineToken,
}

impl Owner<'_> {
    fn aad(&self, purpose: Purpose) -> Vec<u8> {
        let purpose = match purpose {
            Purpose::Pii => "pii",
            Purpose::DataExport => "data-export",
            Purpose::OfflineToken => "offline-token",
        };
        format!(
            "loyalnest {purpose} v2|{}|{}",
            self.merchant, self.customer_id
        )
        .into_bytes()
    }
}

fn decode_key(b64: &str) -> Option<[u8; 32]> {
    STANDARD.decode(b64.trim()).ok()?.try_into().ok()
}

impl KeyRing {
    pub fn empty() -> Self {
        KeyRing::default()
    }

    /// Parses `ENCRYPTION_KEYS` (`id:base64,...`, newest first) and `PII_INDEX_KEY` (base64 of 32 bytes).
    pub fn parse(spec: &str, index_key: &str) -> Result<Self, PiiError> {
        let keys = spec
            .split(',')
            .filter(|entry| !entry.trim().is_empty())
            .map(|entry| {
                let bad = || PiiError::BadKey(entry.split(':').next().unwrap_or("").to_owned());
                let (id, b64) = entry.trim().split_once(':').ok_or_else(bad)?;
                let raw = decode_key(b64).ok_or_else(bad)?;
                Ok(NamedKey {
                    id: id.to_owned(),
                    cipher: Aes256Gcm::new(&raw.into()),
                    seals: AtomicU64::new(0),
                })
            })
            .collect::<Result<Vec<_>, _>>()?;
        let index_key = decode_key(index_key).ok_or(PiiError::BadIndexKey)?;
        Ok(KeyRing {
            keys: Arc::new(keys),
            index_key: Some(index_key),
        })
    }

    pub fn is_empty(&self) -> bool {
        self.keys.is_empty()
    }

    /// Seals with the current (first) key; `None` when no key is configured or there is nothing to seal.
    pub fn seal(&self, pii: &Pii, owner: Owner<'_>) -> Option<SealedPii> {
        if pii.is_empty() {
            return None;
        }
        let plaintext = serde_json::to_vec(pii).ok()?;
        let (key_id, sealed) = self.seal_bytes(&plaintext, owner, Purpose::Pii)?;
        Some(SealedPii {
            key_id,
            sealed,
            email_index: pii.email.as_deref().and_then(|e| self.email_index(e)),
        })
    }

    pub fn open(&self, sealed: &SealedPii, owner: Owner<'_>) -> Result<Pii, PiiError> {
        let plaintext = self.open_bytes(&sealed.key_id, &sealed.sealed, owner, Purpose::Pii)?;
        serde_json::from_slice(&plaintext).map_err(|_| PiiError::Corrupt)
    }

    /// Seals any bytes for `owner` and `purpose` with the current key: the key id and base64 of nonce ‖ sealed.
    pub fn seal_bytes(
        &self,
        plaintext: &[u8],
        owner: Owner<'_>,
        purpose: Purpose,
    ) -> Option<(String, String)> {
        let key = self.keys.first()?;
        let sealed = seal_with(&key.cipher, plaintext, &owner.aad(purpose))?;
        count_seal(key);
        Some((key.id.clone(), sealed))
    }

    /// The inverse of [`KeyRing::seal_bytes`]; fails for another owner or purpose, or a key not configured.
    pub fn open_bytes(
        &self,
        key_id: &str,
        sealed: &str,
        owner: Owner<'_>,
        purpose: Purpose,
    ) -> Result<Vec<u8>, PiiError> {
        open_with(&self.key(key_id)?.cipher, sealed, &owner.aad(purpose))
    }

    fn key(&self, key_id: &str) -> Result<&NamedKey, PiiError> {
        self.keys
            .iter()
            .find(|k| k.id == key_id)
            .ok_or_else(|| PiiError::UnknownKey(key_id.to_owned()))
    }

    /// A fresh data key for `merchant`, and its copy wrapped by the current key (base64), to store.
    pub fn new_shop_key(&self, merchant: &MerchantId) -> Option<(ShopKey, String)> {
        let kek = self.keys.first()?;
        let dek = Aes256Gcm::generate_key(&mut OsRng);
        let wrapped = seal_with(&kek.cipher, dek.as_slice(), &shop_key_aad(merchant))?;
        count_seal(kek);
        let key = ShopKey {
            kek_id: kek.id.clone(),
            cipher: Aes256Gcm::new(&dek),
            cipher_key: dek,
        };
        Some((key, wrapped))
    }

    /// The id of the key that seals now (the first configured).
    pub fn current_id(&self) -> Option<&str> {
        self.keys.first().map(|k| k.id.as_str())
    }

    /// A shop's data key wrapped anew by the current key: (that key's id, wrapped base64).
    pub fn rewrap_shop_key(
        &self,
        merchant: &MerchantId,
        key: &ShopKey,
    ) -> Option<(String, String)> {
        let kek = self.keys.first()?;
        let raw = key.cipher_key.as_slice();
        let wrapped = seal_with(&kek.cipher, raw, &shop_key_aad(merchant))?;
        count_seal(kek);
        Some((kek.id.clone(), wrapped))
    }

    /// Unwraps a shop's stored data key with the configured key `kek_id`.
    pub fn unwrap_shop_key(
        &self,
        merchant: &MerchantId,
        kek_id: &str,
        wrapped: &str,
    ) -> Result<ShopKey, PiiError> {
        let raw = open_with(&self.key(kek_id)?.cipher, wrapped, &shop_key_aad(merchant))?;
        let cipher_key: [u8; 32] = raw.try_into().map_err(|_| PiiError::Corrupt)?;
        let cipher_key = cipher_key.into();
        Ok(ShopKey {
            kek_id: kek_id.to_owned(),
            cipher: Aes256Gcm::new(&cipher_key),
            cipher_key,
        })
    }

    /// Seals under the shop's own data key; the key id says so (`shop:<wrapping key id>`).
    pub fn seal_for_shop(&self, key: &ShopKey, pii: &Pii, owner: Owner<'_>) -> Option<SealedPii> {
        if pii.is_empty() || self.keys.is_empty() {
            return None;
        }
        let plaintext = serde_json::to_vec(pii).ok()?;
        let sealed = seal_with(&key.cipher, &plaintext, &owner.aad(Purpose::Pii))?;
        metrics::counter!(streams::metric_names::PII_SEALS).increment(1);
        Some(SealedPii {
            key_id: format!("{SHOP_KEY_PREFIX}{}", key.kek_id),
            sealed,
            email_index: pii.email.as_deref().and_then(|e| self.email_index(e)),
        })
    }

    /// The blind index of an email (lower-cased, trimmed): equal emails give equal indexes under any sealing key.
    pub fn email_index(&self, email: &str) -> Option<String> {
        let key = self.index_key.as_ref()?;
        let mut mac =
            <Hmac<Sha256> as Mac>::new_from_slice(key).expect("HMAC takes any key length");
        mac.update(email.trim().to_lowercase().as_bytes());
        Some(
            mac.finalize()
                .into_bytes()
                .iter()
                .map(|b| format!("{b:02x}"))
                .collect(),
        )
    }

    /// Seals made by this process under key `id`.
    pub fn seals(&self, id: &str) -> Option<u64> {
        let key = self.keys.iter().find(|k| k.id == id)?;
        Some(key.seals.load(Ordering::Relaxed))
    }
}

/// Sealed with a shop's data key rather than a configured key: `shop:` and the id of the key that wraps it.
pub const SHOP_KEY_PREFIX: &str = "shop:";

/// A shop's own data key (crypto-shredding). Its only stored copy is wrapped by a configured key; deleting that
/// copy (`shop/redact`) leaves every value sealed under it unreadable, including copies in Kafka's retention.
#[derive(Clone)]
pub struct ShopKey {
    pub kek_id: String,
    cipher: Aes256Gcm,
    /// Kept to wrap the key anew when the configured key rotates.
    cipher_key: aes_gcm::Key<Aes256Gcm>,
}

impl std::fmt::Debug for ShopKey {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ShopKey")
            .field("kek_id", &self.kek_id)
            .finish_non_exhaustive()
    }
}

impl ShopKey {
    pub fn open(&self, sealed: &SealedPii, owner: Owner<'_>) -> Result<Pii, PiiError> {
        let plaintext = open_with(&self.cipher, &sealed.sealed, &owner.aad(Purpose::Pii))?;
        serde_json::from_slice(&plaintext).map_err(|_| PiiError::Corrupt)
    }
}

fn shop_key_aad(merchant: &MerchantId) -> Vec<u8> {
    format!("loyalnest shop data key v1|{merchant}").into_bytes()
}

/// AES-256-GCM with a fresh 96-bit nonce from the OS: base64 of nonce ‖ ciphertext ‖ tag.
fn seal_with(cipher: &Aes256Gcm, plaintext: &[u8], aad: &[u8]) -> Option<String> {
    let nonce = Aes256Gcm::generate_nonce(&mut OsRng);
    let payload = Payload {
        msg: plaintext,
        aad,
    };
    let ciphertext = cipher.encrypt(&nonce, payload).ok()?;
    let mut sealed = nonce.to_vec();
    sealed.extend_from_slice(&ciphertext);
    Some(STANDARD.encode(sealed))
}

fn open_with(cipher: &Aes256Gcm, sealed: &str, aad: &[u8]) -> Result<Vec<u8>, PiiError> {
    let raw = STANDARD.decode(sealed).map_err(|_| PiiError::Corrupt)?;
    if raw.len() < 12 {
        return Err(PiiError::Corrupt);
    }
    let (nonce, ciphertext) = raw.split_at(12);
    let payload = Payload {
        msg: ciphertext,
        aad,
    };
    cipher
        .decrypt(Nonce::from_slice(nonce), payload)
        .map_err(|_| PiiError::Corrupt)
}

fn count_seal(key: &NamedKey) {
    let count = key.seals.fetch_add(1, Ordering::Relaxed) + 1;
    metrics::counter!(streams::metric_names::PII_SEALS).increment(1);
    if count >= SEAL_WARNING && count.is_power_of_two() {
        tracing::warn!(key_id = %key.id, seals = count,
            "this sealing key has sealed many values; rotate it (prepend a new key to ENCRYPTION_KEYS)");
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const INDEX: &str = "ICEiIyQlJicoKSorLC0uLzAxMjM0NTY3ODk6Ozw9Pj8=";

    fn ring(spec: &str) -> KeyRing {
        KeyRing::parse(spec, INDEX).unwrap()
    }

    fn shop() -> MerchantId {
        MerchantId::parse("a.myshopify.com").unwrap()
    }

    fn owner(m: &MerchantId) -> Owner<'_> {
        Owner {
            merchant: m,
            customer_id: 7,
        }
    }

    const K1: &str = "k1:AAECAwQFBgcICQoLDA0ODxAREhMUFRYXGBkaGxwdHh8=";
    const K2: &str = "k2:HxweHRwbGhkYFxYVFBMSERAPDg0MCwoJCAcGBQQDAgE=";

    fn ana() -> Pii {
        Pii {
            email: Some("Ana@Example.com".into()),
            first_name: Some("Ana".into()),
            ..Pii::default()
        }
    }

    #[test]
    fn seals_without_plaintext_and_opens_after_rotation() {
        let m = shop();
        let sealed = ring(K1).seal(&ana(), owner(&m)).unwrap();
        assert_eq!(sealed.key_id, "k1");
        assert!(!sealed.sealed.contains("Ana"));
        let rotated = ring(&format!("{K2},{K1}"));
        assert_eq!(rotated.open(&sealed, owner(&m)).unwrap(), ana());
        assert_eq!(rotated.seal(&ana(), owner(&m)).unwrap().key_id, "k2");
        assert!(matches!(
            ring(K2).open(&sealed, owner(&m)),
            Err(PiiError::UnknownKey(_))
        ));
    }

    #[test]
    fn a_ciphertext_opens_only_for_its_shop_and_customer() {
        let (m, other_shop) = (shop(), MerchantId::parse("b.myshopify.com").unwrap());
        let sealed = ring(K1).seal(&ana(), owner(&m)).unwrap();
        let other_customer = Owner {
            merchant: &m,
            customer_id: 8,
        };
        assert!(matches!(
            ring(K1).open(&sealed, other_customer),
            Err(PiiError::Corrupt)
        ));
        assert!(matches!(
            ring(K1).open(&sealed, owner(&other_shop)),
            Err(PiiError::Corrupt)
        ));
    }

    #[test]
    fn blind_index_ignores_case_and_survives_key_rotation() {
        let m = shop();
        let index = |ring: &KeyRing, email: &str| {
            let pii = Pii {
                email: Some(email.into()),
                ..Pii::default()
            };
            ring.seal(&pii, owner(&m)).unwrap()
        };
        let a = index(&ring(K1), "ana@example.com");
        let b = index(&ring(K1), " ANA@example.com");
        let rotated = index(&ring(&format!("{K2},{K1}")), "ana@example.com");
        assert_eq!(a.email_index, b.email_index);
        assert_eq!(
            a.email_index, rotated.email_index,
            "rotation keeps the index"
        );
        assert_ne!(a.sealed, b.sealed, "nonces must differ");
        let other_index = KeyRing::parse(K1, &STANDARD.encode([9u8; 32])).unwrap();
        assert_ne!(a.email_index, other_index.email_index("ana@example.com"));
    }

    #[test]
    fn nonces_are_random_and_seals_are_counted() {
        let m = shop();
        let keys = ring(K1);
        let mut nonces = std::collections::HashSet::new();
        for _ in 0..1_000 {
            let sealed = keys.seal(&ana(), owner(&m)).unwrap();
            let raw = STANDARD.decode(&sealed.sealed).unwrap();
            assert!(nonces.insert(raw[..12].to_vec()), "a nonce repeated");
        }
        assert_eq!(keys.seals("k1"), Some(1_000));
        assert_eq!(
            keys.clone().seals("k1"),
            Some(1_000),
            "clones share the count"
        );
    }

    #[test]
    fn a_sealed_export_does_not_open_as_pii() {
        let m = shop();
        let keys = ring(K1);
        let (key_id, sealed) = keys
            .seal_bytes(br#"{"first_name":"Ana"}"#, owner(&m), Purpose::DataExport)
            .unwrap();
        let as_pii = SealedPii {
            key_id,
            sealed,
            email_index: None,
        };
        assert!(matches!(
            keys.open(&as_pii, owner(&m)),
            Err(PiiError::Corrupt)
        ));
    }

    #[test]
    fn a_shop_key_seals_only_for_its_shop_and_survives_rotation_of_its_wrapping_key() {
        let (m, other) = (shop(), MerchantId::parse("b.myshopify.com").unwrap());
        let keys = ring(K1);
        let (key, wrapped) = keys.new_shop_key(&m).unwrap();
        let sealed = keys.seal_for_shop(&key, &ana(), owner(&m)).unwrap();
        assert_eq!(sealed.key_id, "shop:k1");
        assert!(matches!(
            keys.open(&sealed, owner(&m)),
            Err(PiiError::UnknownKey(_))
        ));
        let rotated = ring(&format!("{K2},{K1}"));
        let unwrapped = rotated.unwrap_shop_key(&m, "k1", &wrapped).unwrap();
        assert_eq!(unwrapped.open(&sealed, owner(&m)).unwrap(), ana());
        assert!(
            rotated.unwrap_shop_key(&other, "k1", &wrapped).is_err(),
            "bound to its shop"
        );
        assert!(ring(K2).unwrap_shop_key(&m, "k1", &wrapped).is_err());
        let (another, _) = keys.new_shop_key(&m).unwrap();
        assert!(
            another.open(&sealed, owner(&m)).is_err(),
            "a new key opens nothing old"
        );
    }

    #[test]
    fn rejects_bad_keys_and_tampering() {
        assert!(KeyRing::parse("k1:short", INDEX).is_err());
        assert!(KeyRing::parse("nocolon", INDEX).is_err());
        assert!(matches!(
            KeyRing::parse(K1, "short"),
            Err(PiiError::BadIndexKey)
        ));
        let m = shop();
        let mut sealed = ring(K1).seal(&ana(), owner(&m)).unwrap();
        sealed.sealed = STANDARD.encode(b"0123456789ab-tampered-bytes");
        assert!(matches!(
            ring(K1).open(&sealed, owner(&m)),
            Err(PiiError::Corrupt)
        ));
        assert!(KeyRing::empty().seal(&ana(), owner(&m)).is_none());
    }
}
