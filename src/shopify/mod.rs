//! Everything that knows Shopify's wire formats and APIs: webhook signatures and payload shapes, the Admin
//! GraphQL client, shop access (the offline token), and the local stand-in of the Admin API.

pub mod access;
pub mod admin;
pub mod hmac;
pub mod normalize;
pub mod standin;

/// Metafield writes by outcome: `written` (customers Shopify accepted), `refused` (dead-lettered), `stale`
/// (older than what Shopify has), `no_token` (shop not installed), `throttled`, `retried` (calls).
pub const WRITES_TOTAL: &str = "rfm_shopify_writes_total";
