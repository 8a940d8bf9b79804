//! The stand-in's `POST /admin/oauth/access_token` for the token-exchange grant: checks the app's credentials,
//! the grant and token types, and the session token (signed with the app secret, audience the client id), then
//! issues an offline token for the shop the session token names. Failures answer 400 with an OAuth `error`, as
//! Shopify documents for an invalid session token.

use actix_web::{web, HttpResponse};
use jsonwebtoken::{decode, Algorithm, DecodingKey, Validation};
use serde::Deserialize;
use serde_json::json;

use super::StandinState;
use crate::shopify::access::{GRANT_TYPE, ID_TOKEN_TYPE, OFFLINE_TOKEN_TYPE};

#[derive(Deserialize)]
struct ExchangeRequest {
    client_id: String,
    client_secret: String,
    grant_type: String,
    subject_token: String,
    subject_token_type: String,
    requested_token_type: String,
}

/// The scopes the stand-in grants: what write-back and backfill need.
pub const SCOPE: &str = "read_customers,write_customers,read_orders";

fn refuse(error: &str) -> HttpResponse {
    HttpResponse::BadRequest().json(json!({ "error": error }))
}

pub async fn access_token(body: web::Bytes, state: web::Data<StandinState>) -> HttpResponse {
    // Shopify takes JSON or a form body.
    let request = serde_json::from_slice::<ExchangeRequest>(&body)
        .ok()
        .or_else(|| serde_urlencoded_like(&body));
    let Some(request) = request else {
        return refuse("invalid_request");
    };
    let options = &state.options;
    if request.client_id != options.client_id || request.client_secret != options.client_secret {
        return refuse("invalid_client");
    }
    if request.grant_type != GRANT_TYPE || request.subject_token_type != ID_TOKEN_TYPE {
        return refuse("unsupported_grant_type");
    }
    if request.requested_token_type != OFFLINE_TOKEN_TYPE {
        return refuse("invalid_request");
    }
    match session_shop(
        &request.subject_token,
        &options.client_id,
        &options.client_secret,
    ) {
        Some(shop) => HttpResponse::Ok().json(json!({
            "access_token": state.issue_token(&shop),
            "scope": SCOPE,
        })),
        None => refuse("invalid_subject_token"),
    }
}

/// The shop a session token was issued for, if it is one of this app's: HS256 under the app secret, audience the
/// client id, within its lifetime. Checked with `jsonwebtoken`, independently of the app's own verifier.
fn session_shop(token: &str, client_id: &str, secret: &str) -> Option<String> {
    let mut validation = Validation::new(Algorithm::HS256);
    validation.set_audience(&[client_id]);
    validation.validate_nbf = true;
    let data = decode::<serde_json::Value>(
        token,
        &DecodingKey::from_secret(secret.as_bytes()),
        &validation,
    )
    .ok()?;
    let dest = data.claims.get("dest")?.as_str()?;
    let shop = dest.strip_prefix("https://")?.trim_end_matches('/');
    streams::MerchantId::parse(shop)
        .ok()
        .map(|m| m.as_str().to_owned())
}

fn serde_urlencoded_like(body: &[u8]) -> Option<ExchangeRequest> {
    let pairs: std::collections::HashMap<String, String> =
        form_urlencoded::parse(body).into_owned().collect();
    let get = |k: &str| pairs.get(k).cloned();
    Some(ExchangeRequest {
        client_id: get("client_id")?,
        client_secret: get("client_secret")?,
        grant_type: get("grant_type")?,
        subject_token: get("subject_token")?,
        subject_token_type: get("subject_token_type")?,
        requested_token_type: get("requested_token_type")?,
    })
}
