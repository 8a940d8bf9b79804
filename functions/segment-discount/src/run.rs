//! Shopify glue for the `cart.lines.discounts.generate.run` target.

use shopify_function::prelude::*;
use shopify_function::Result;

use crate::schema::{self, cart_lines_discounts_generate_run::Input};
use crate::segment::{select_discount, SegmentDiscount};

/// Function entry point, exported to wasm under this name.
///
/// Returns an empty operation list whenever no discount applies (guest
/// checkout, no or unknown segment, missing or malformed configuration, or a
/// discount that was not created with the ORDER class). It never returns an
/// error, because a failing Function blocks the discount at checkout.
#[shopify_function]
pub(crate) fn cart_lines_discounts_generate_run(
    input: Input,
) -> Result<schema::CartLinesDiscountsGenerateRunResult> {
    let operations = discount_for_input(&input)
        .map(order_discount_operation)
        .into_iter()
        .collect();

    Ok(schema::CartLinesDiscountsGenerateRunResult { operations })
}

/// Pulls the segment and configuration out of the input and asks the pure
/// logic for a decision.
fn discount_for_input(input: &Input) -> Option<SegmentDiscount> {
    let discount = input.discount();
    // Order discount operations are only valid for discounts that carry the
    // ORDER class.
    if !discount.discount_classes().iter().any(|c| c == "ORDER") {
        return None;
    }

    let segment = input
        .cart()
        .buyer_identity()?
        .customer()?
        .rfm_segment()?
        .value();
    let config = discount.segment_discounts()?.json_value();

    select_discount(config, segment)
}

/// One order-subtotal percentage candidate.
fn order_discount_operation(discount: SegmentDiscount) -> schema::CartOperation {
    schema::CartOperation::OrderDiscountsAdd(schema::OrderDiscountsAddOperation {
        selection_strategy: schema::OrderDiscountSelectionStrategy::First,
        candidates: vec![schema::OrderDiscountCandidate {
            message: discount.message,
            targets: vec![schema::OrderDiscountCandidateTarget::OrderSubtotal(
                schema::OrderSubtotalTarget {
                    excluded_cart_line_ids: vec![],
                },
            )],
            value: schema::OrderDiscountCandidateValue::Percentage(schema::Percentage {
                value: Decimal(discount.percentage),
            }),
        }],
    })
}
