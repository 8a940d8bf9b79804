//! Shop access: the offline Admin API token of each shop. Obtained by Shopify's token exchange (the embedded
//! app's session token traded for an offline access token) when the app calls `POST /api/v1/shop/install`, sealed
//! with AES-256-GCM under the configured key (bound to the shop and to the purpose `offline-token`, so the sealed
//! value opens for nothing else), stored in `shop_access`, and deleted on `app/uninstalled` and `shop/redact`.
//! Install also creates our metafield definitions, idempotently.

use serde::Deserialize;
use sqlx::{PgPool, Row};
use streams::MerchantId;

use crate::pii::{KeyRing, Owner, PiiError, Purpose};
use crate::shopify::admin::metafields::{definition_result, definitions, DEFINITION_CREATE};
use crate::shopify::admin::paced::PacedClient;
use crate::shopify::admin::AdminError;

pub const GRANT_TYPE: &str = "urn:ietf:params:oauth:grant-type:token-exchange";
pub const ID_TOKEN_TYPE: &str = "urn:ietf:params:oauth:token-type:id_token";
pub const OFFLINE_TOKEN_TYPE: &str = "urn:shopify:params:oauth:token-type:offline-access-token";

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the database could not answer: {0}")]
    Store(#[from] sqlx::Error),
    #[error("the stored token cannot be opened: {0}")]
    Sealed(#[from] PiiError),
    #[error(
        "no sealing key is configured (ENCRYPTION_KEYS): tokens are never stored in the clear"
    )]
    NoKey,
    #[error("Shopify refused the token exchange (HTTP {status}): {error}")]
    Refused { status: u16, error: String },
    #[error("Shopify could not be reached for the token exchange: {0}")]
    Transport(String),
    #[error("the metafield definitions could not be created: {0}")]
    Definitions(String),
    #[error(transparent)]
    Admin(#[from] AdminError),
}

/// The token Shopify granted (no `Debug`: the token must not reach a log).
#[derive(Clone, Deserialize)]
pub struct Grant {
    pub access_token: String,
    #[serde(default)]
    pub scope: String,
}

impl std::fmt::Debug for Installed {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Installed")
            .field("scope", &self.scope)
            .field("definitions_created", &self.definitions_created)
            .finish()
    }
}

/// What an install did.
pub struct Installed {
    pub scope: String,
    /// The offline token just stored, for work the install starts at once (the history backfill).
    pub access_token: String,
    /// Definitions created now (0 when they were there from an earlier install).
    pub definitions_created: usize,
}

fn owner(shop: &MerchantId) -> Owner<'_> {
    Owner {
        merchant: shop,
        customer_id: 0,
    }
}

/// The shop's offline token, opened; `None` when the shop has not installed the app (or uninstalled it).
pub async fn offline_token(
    pool: &PgPool,
    keys: &KeyRing,
    shop: &MerchantId,
) -> Result<Option<String>, AccessError> {
    let row = sqlx::query("SELECT key_id, sealed_token FROM shop_access WHERE merchant_id = $1")
        .bind(shop.as_str())
        .fetch_optional(pool)
        .await?;
    let Some(row) = row else { return Ok(None) };
    let (key_id, sealed): (String, String) = (row.try_get(0)?, row.try_get(1)?);
    let raw = keys.open_bytes(&key_id, &sealed, owner(shop), Purpose::OfflineToken)?;
    String::from_utf8(raw)
        .map(Some)
        .map_err(|_| AccessError::Sealed(PiiError::Corrupt))
}

/// Seals and stores the shop's token, replacing an earlier one.
pub async fn store_token(
    pool: &PgPool,
    keys: &KeyRing,
    shop: &MerchantId,
    grant: &Grant,
) -> Result<(), AccessError> {
    let (key_id, sealed) = keys
        .seal_bytes(
            grant.access_token.as_bytes(),
            owner(shop),
            Purpose::OfflineToken,
        )
        .ok_or(AccessError::NoKey)?;
    sqlx::query(
        "INSERT INTO shop_access (merchant_id, key_id, sealed_token, scope) VALUES ($1, $2, $3, $4)
         ON CONFLICT (merchant_id) DO UPDATE
         SET key_id = EXCLUDED.key_id, sealed_token = EXCLUDED.sealed_token, scope = EXCLUDED.scope,
             installed_at = now()",
    )
    .bind(shop.as_str())
    .bind(key_id)
    .bind(sealed)
    .bind(&grant.scope)
    .execute(pool)
    .await?;
    Ok(())
}

/// Forgets the shop's token (`app/uninstalled`); true when there was one.
pub async fn drop_token(
    pool: &PgPool,
    shop: &MerchantId,
    installed_before: Option<chrono::DateTime<chrono::Utc>>,
) -> Result<bool, AccessError> {
    let done = sqlx::query(
        "DELETE FROM shop_access WHERE merchant_id = $1 AND ($2::timestamptz IS NULL OR installed_at < $2)",
    )
    .bind(shop.as_str())
    .bind(installed_before)
        .execute(pool)
        .await?;
    Ok(done.rows_affected() > 0)
}

/// Trades a verified session token of `shop` for an offline access token.
pub async fn exchange(
    admin: &PacedClient,
    shop: &MerchantId,
    session_token: &str,
    client_id: &str,
    client_secret: &str,
) -> Result<Grant, AccessError> {
    let url = format!(
        "{}/admin/oauth/access_token",
        admin.client.settings().base_for(shop.as_str())
    );
    let body = serde_json::json!({
        "client_id": client_id,
        "client_secret": client_secret,
        "grant_type": GRANT_TYPE,
        "subject_token": session_token,
        "subject_token_type": ID_TOKEN_TYPE,
        "requested_token_type": OFFLINE_TOKEN_TYPE,
    });
    let response = admin
        .client
        .http()
        .post(url)
        .header("Accept", "application/json")
        .json(&body)
        .send()
        .await
        .map_err(|e| AccessError::Transport(e.to_string()))?;
    let status = response.status().as_u16();
    let text = response
        .text()
        .await
        .map_err(|e| AccessError::Transport(e.to_string()))?;
    if status != 200 {
        let error = serde_json::from_str::<serde_json::Value>(&text)
            .ok()
            .and_then(|v| v.get("error").and_then(|e| e.as_str()).map(str::to_owned))
            .unwrap_or_else(|| "no error code".to_owned());
        return Err(AccessError::Refused { status, error });
    }
    serde_json::from_str(&text).map_err(|_| AccessError::Refused {
        status,
        error: "the answer has no access_token".into(),
    })
}

/// Creates the three customer metafield definitions, admin-filterable; those already there are left as they are.
/// Returns how many were created now.
pub async fn ensure_definitions(
    admin: &PacedClient,
    shop: &MerchantId,
    token: &str,
) -> Result<usize, AccessError> {
    let mut created = 0;
    for variables in definitions() {
        let reply = admin
            .call(shop.as_str(), token, DEFINITION_CREATE, &variables)
            .await?;
        if definition_result(&reply.data, &reply.errors).map_err(AccessError::Definitions)? {
            created += 1;
        }
    }
    Ok(created)
}

/// The whole install: exchange, seal and store, definitions.
pub async fn install(
    admin: &PacedClient,
    pool: &PgPool,
    keys: &KeyRing,
    shop: &MerchantId,
    session_token: &str,
    app: (&str, &str),
) -> Result<Installed, AccessError> {
    if keys.is_empty() {
        return Err(AccessError::NoKey);
    }
    let grant = exchange(admin, shop, session_token, app.0, app.1).await?;
    store_token(pool, keys, shop, &grant).await?;
    let definitions_created = ensure_definitions(admin, shop, &grant.access_token).await?;
    tracing::info!(merchant = %shop, definitions_created, "shop installed: offline token stored sealed");
    Ok(Installed {
        scope: grant.scope,
        access_token: grant.access_token,
        definitions_created,
    })
}
