//! Everything that knows Shopify's wire formats: webhook signatures and payload shapes.

pub mod hmac;
pub mod normalize;
