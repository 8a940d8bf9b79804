//! Shopper nudges on the service side: the merchant's templates in Postgres and the text a widget shows.

pub mod cache;
pub mod render;
pub mod templates;
