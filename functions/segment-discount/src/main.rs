//! LoyalNest segment discount: a Shopify Discount Function
//! (`cart.lines.discounts.generate.run`) that gives a customer the order
//! discount the merchant configured for their RFM segment.
//!
//! * `segment` holds the pure decision logic (no Function input/output types).
//! * `run` is the Function entry point that maps the Function input to that
//!   logic and its result to discount operations.

use std::process;

use shopify_function::prelude::*;

mod run;
mod segment;

#[cfg(test)]
mod tests;

// `enums_as_str` must name enums that exist in the schema; its default
// (LanguageCode, CountryCode, CurrencyCode) is absent from our minimal schema.
// Reading `DiscountClass` as plain strings is all this Function needs.
#[typegen("schema.graphql", enums_as_str = ["DiscountClass"])]
pub mod schema {
    #[query("src/run.graphql")]
    pub mod cart_lines_discounts_generate_run {}
}

fn main() {
    // Shopify invokes the named export (see shopify.extension.toml), never main.
    log!("Please invoke a named export.");
    process::abort();
}
