//! Everything that knows Shopify's wire formats and APIs: webhook signatures and payload shapes, the Admin
//! GraphQL client, shop access (the offline token), and the local stand-in of the Admin API.

pub mod access;
pub mod admin;
pub mod hmac;
pub mod normalize;
pub mod standin;

/// Metafield writes by outcome (`streams::metric_names::SHOPIFY_WRITES` describes them).
pub const WRITES_TOTAL: &str = streams::metric_names::SHOPIFY_WRITES;
