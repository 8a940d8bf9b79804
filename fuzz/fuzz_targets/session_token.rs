//! `auth::Verifier::verify` on arbitrary tokens and arbitrary clocks. It must answer `Ok` or an `AuthError`, never
//! panic; the targets are built with debug assertions, so arithmetic overflow on a claim counts as a panic.
//!
//! A fuzzer cannot forge HMAC-SHA256, so most of the input space stops at the signature check. The second mode
//! therefore signs what the fuzzer writes (header JSON and claims JSON, base64url-encoded here) with one of the
//! verifier's secrets, or with a wrong one, so the claim checks behind the signature get fuzzed too.
//!
//! Input layout: byte 0 = mode flags, bytes 1..9 = `now_unix` (i64 LE), the rest:
//! - flags bit 0 clear: the token, as UTF-8 text (other bytes are skipped);
//! - flags bit 0 set: header JSON, a `\n`, claims JSON (no `\n`: all of it is the header); flags bits 1..2 pick
//!   the signing secret: current, previous, an unknown one, or current again. Flags bit 3 appends a fourth part.

#![no_main]

use std::sync::OnceLock;

use base64::engine::general_purpose::URL_SAFE_NO_PAD;
use base64::Engine;
use hmac::{Hmac, Mac};
use libfuzzer_sys::fuzz_target;
use loyalnest_rfm::auth::Verifier;
use loyalnest_rfm::shopify::hmac::WebhookSecrets;
use sha2::Sha256;

const CURRENT: &[u8] = b"fuzz-current-secret";
const PREVIOUS: &[u8] = b"fuzz-previous-secret";
const UNKNOWN: &[u8] = b"fuzz-unknown-secret";

fn verifier() -> &'static Verifier {
    static VERIFIER: OnceLock<Verifier> = OnceLock::new();
    VERIFIER.get_or_init(|| Verifier {
        api_key: "fuzz-api-key".to_owned(),
        secrets: WebhookSecrets::new(CURRENT.to_vec(), Some(PREVIOUS.to_vec())),
    })
}

/// `base64url(header).base64url(claims).base64url(HS256(secret, those two joined by a dot))`.
fn signed_token(header: &[u8], claims: &[u8], secret: &[u8]) -> String {
    let signed = format!(
        "{}.{}",
        URL_SAFE_NO_PAD.encode(header),
        URL_SAFE_NO_PAD.encode(claims)
    );
    let mut mac = <Hmac<Sha256> as Mac>::new_from_slice(secret).expect("HMAC takes any key length");
    mac.update(signed.as_bytes());
    let signature = URL_SAFE_NO_PAD.encode(mac.finalize().into_bytes());
    format!("{signed}.{signature}")
}

fuzz_target!(|data: &[u8]| {
    if data.len() < 9 {
        return;
    }
    let flags = data[0];
    let now = i64::from_le_bytes(data[1..9].try_into().expect("eight bytes"));
    let rest = &data[9..];
    if flags & 1 == 0 {
        if let Ok(token) = std::str::from_utf8(rest) {
            let _ = verifier().verify(token, now);
        }
        return;
    }
    let (header, claims) = match rest.iter().position(|&b| b == b'\n') {
        Some(at) => (&rest[..at], &rest[at + 1..]),
        None => (rest, &[][..]),
    };
    let secret = match (flags >> 1) & 3 {
        1 => PREVIOUS,
        2 => UNKNOWN,
        _ => CURRENT,
    };
    let mut token = signed_token(header, claims, secret);
    if flags & 8 != 0 {
        token.push_str(".extra");
    }
    let _ = verifier().verify(&token, now);
});
