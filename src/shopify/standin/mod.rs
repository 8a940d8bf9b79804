//! A local stand-in for Shopify's Admin GraphQL API, built from Shopify's documented contract, for tests, the
//! backfill benchmark and the embedded demo: Shopify itself cannot be reached from where these run.

pub mod bulk;
pub mod server;
pub mod shop_data;

pub use server::StandIn;
