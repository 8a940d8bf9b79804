//! Everything that knows Shopify's wire formats: webhook signatures and payload shapes, the Admin API client and
//! its local stand-in.

pub mod access;
pub mod admin;
pub mod hmac;
pub mod normalize;
pub mod standin;
