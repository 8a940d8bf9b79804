//! A shop's Admin API access token (issue 19).
//!
//! (shopify-history's placeholder for the interface agreed with shopify-sync, which owns token exchange and the
//! sealed token store: the lead keeps shopify-sync's file at merge. Until then no token is stored anywhere, so
//! this finds none and `loyalnest-rfm backfill` asks for `--token`.)

use sqlx::PgPool;
use streams::MerchantId;

use crate::pii::KeyRing;

#[derive(Debug, thiserror::Error)]
pub enum AccessError {
    #[error("the token store: {0}")]
    Store(#[from] sqlx::Error),
}

/// The shop's offline access token, opened from its sealed copy; `None` when the shop has not granted one.
pub async fn offline_token(
    _pool: &PgPool,
    _keys: &KeyRing,
    _shop: &MerchantId,
) -> Result<Option<String>, AccessError> {
    Ok(None)
}
