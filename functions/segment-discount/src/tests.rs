//! End-to-end tests of the Function over JSON inputs shaped like the result of
//! `src/run.graphql`, using `shopify_function::run_function_with_input`.

use serde_json::json;
use shopify_function::prelude::*;
use shopify_function::run_function_with_input;
use shopify_function::wasm_api::{Context, Serialize};

use crate::run::cart_lines_discounts_generate_run;
use crate::schema;

const CHAMPION: &str = include_str!("../tests/fixtures/champion.json");
const AT_RISK: &str = include_str!("../tests/fixtures/at_risk.json");
const GUEST: &str = include_str!("../tests/fixtures/guest.json");
const MALFORMED_CONFIG: &str = include_str!("../tests/fixtures/malformed_config.json");

fn run(input: &str) -> schema::CartLinesDiscountsGenerateRunResult {
    run_function_with_input(cart_lines_discounts_generate_run, input)
        .expect("the function must not return an error")
}

/// The output exactly as it is written back to Shopify.
fn output_json(result: &schema::CartLinesDiscountsGenerateRunResult) -> serde_json::Value {
    let mut context = Context::new_with_input(json!({}));
    result.serialize(&mut context).unwrap();
    context.finalize_output_and_return().unwrap()
}

/// The single order-subtotal percentage operation the Function emits.
fn expected_order_discount(
    percentage: f64,
    message: Option<&str>,
) -> schema::CartLinesDiscountsGenerateRunResult {
    schema::CartLinesDiscountsGenerateRunResult {
        operations: vec![schema::CartOperation::OrderDiscountsAdd(
            schema::OrderDiscountsAddOperation {
                selection_strategy: schema::OrderDiscountSelectionStrategy::First,
                candidates: vec![schema::OrderDiscountCandidate {
                    message: message.map(str::to_string),
                    targets: vec![schema::OrderDiscountCandidateTarget::OrderSubtotal(
                        schema::OrderSubtotalTarget {
                            excluded_cart_line_ids: vec![],
                        },
                    )],
                    value: schema::OrderDiscountCandidateValue::Percentage(schema::Percentage {
                        value: Decimal(percentage),
                    }),
                }],
            },
        )],
    }
}

fn no_discount() -> schema::CartLinesDiscountsGenerateRunResult {
    schema::CartLinesDiscountsGenerateRunResult { operations: vec![] }
}

/// Builds an input for a logged-in customer (`segment: None` means the
/// customer has no `loyalnest.rfm_segment` metafield).
fn customer_input(
    segment: Option<&str>,
    discount_classes: &[&str],
    config: Option<serde_json::Value>,
) -> String {
    json!({
        "cart": {
            "buyerIdentity": {
                "customer": {
                    "rfmSegment": segment.map(|s| json!({ "value": s })),
                }
            }
        },
        "discount": {
            "discountClasses": discount_classes,
            "segmentDiscounts": config.map(|c| json!({ "jsonValue": c })),
        }
    })
    .to_string()
}

fn sample_config() -> serde_json::Value {
    json!({
        "segments": {
            "champions": {"percentage": 15.0, "message": "Champions save 15%"},
            "at_risk": {"percentage": 10.0, "message": "We miss you: 10% off"},
            "loyal": {"percentage": 5},
            "inactive": {"percentage": 0, "message": "nothing"},
            "new": {"percentage": 150, "message": "too much"}
        }
    })
}

#[test]
fn champion_gets_configured_percentage() {
    let result = run(CHAMPION);
    assert_eq!(
        result,
        expected_order_discount(15.0, Some("Champions save 15%"))
    );
    assert_eq!(
        output_json(&result),
        json!({
            "operations": [{
                "orderDiscountsAdd": {
                    "candidates": [{
                        "message": "Champions save 15%",
                        "targets": [{"orderSubtotal": {"excludedCartLineIds": []}}],
                        "value": {"percentage": {"value": "15.0"}}
                    }],
                    "selectionStrategy": "FIRST"
                }
            }]
        })
    );
}

#[test]
fn at_risk_customer_gets_their_percentage() {
    let result = run(AT_RISK);
    assert_eq!(
        result,
        expected_order_discount(10.0, Some("We miss you: 10% off"))
    );
    assert_eq!(
        output_json(&result)["operations"][0]["orderDiscountsAdd"]["candidates"][0]["value"],
        json!({"percentage": {"value": "10.0"}})
    );
}

#[test]
fn guest_gets_nothing() {
    let result = run(GUEST);
    assert_eq!(result, no_discount());
    assert_eq!(output_json(&result), json!({"operations": []}));
}

#[test]
fn buyer_identity_without_customer_gets_nothing() {
    let input = json!({
        "cart": {"buyerIdentity": {"customer": null}},
        "discount": {
            "discountClasses": ["ORDER"],
            "segmentDiscounts": {"jsonValue": sample_config()}
        }
    })
    .to_string();
    assert_eq!(run(&input), no_discount());
}

#[test]
fn malformed_configuration_gives_nothing_without_panicking() {
    assert_eq!(run(MALFORMED_CONFIG), no_discount());

    let malformed = [
        json!("{\"segments\": {\"champions\": {\"percentage\": 15"),
        json!(null),
        json!([]),
        json!({"segments": "champions"}),
        json!({"segments": {"champions": null}}),
        json!({"segments": {"champions": {"percent": 15}}}),
    ];
    for config in malformed {
        let input = customer_input(Some("champions"), &["ORDER"], Some(config.clone()));
        assert_eq!(run(&input), no_discount(), "config: {config}");
    }
}

#[test]
fn missing_configuration_gives_nothing() {
    let input = customer_input(Some("champions"), &["ORDER"], None);
    assert_eq!(run(&input), no_discount());
}

#[test]
fn customer_without_segment_gets_nothing() {
    let input = customer_input(None, &["ORDER"], Some(sample_config()));
    assert_eq!(run(&input), no_discount());
}

#[test]
fn segment_not_in_configuration_gets_nothing() {
    let input = customer_input(Some("other"), &["ORDER"], Some(sample_config()));
    assert_eq!(run(&input), no_discount());
}

#[test]
fn out_of_range_percentages_are_ignored() {
    for segment in ["inactive", "new"] {
        let input = customer_input(Some(segment), &["ORDER"], Some(sample_config()));
        assert_eq!(run(&input), no_discount(), "segment: {segment}");
    }
}

#[test]
fn message_is_optional() {
    let input = customer_input(Some("loyal"), &["ORDER"], Some(sample_config()));
    let result = run(&input);
    assert_eq!(result, expected_order_discount(5.0, None));
    assert_eq!(
        output_json(&result)["operations"][0]["orderDiscountsAdd"]["candidates"][0],
        json!({
            "targets": [{"orderSubtotal": {"excludedCartLineIds": []}}],
            "value": {"percentage": {"value": "5.0"}}
        })
    );
}

#[test]
fn discount_without_order_class_gets_nothing() {
    let input = customer_input(Some("champions"), &["PRODUCT"], Some(sample_config()));
    assert_eq!(run(&input), no_discount());

    let input = customer_input(
        Some("champions"),
        &["PRODUCT", "ORDER"],
        Some(sample_config()),
    );
    assert_eq!(
        run(&input),
        expected_order_discount(15.0, Some("Champions save 15%"))
    );
}

/// The input the write-back test (`tests/api/shopify_sync/discount.rs` in the service) builds from the
/// `loyalnest.rfm_segment` metafield the sync worker wrote to the Admin API stand-in; it runs this test with the
/// input's path in `SEGMENT_DISCOUNT_INPUT` and the percentage the merchant configured in `SEGMENT_DISCOUNT_EXPECT`.
/// Run alone, it reads a copy of one such input.
#[test]
fn the_metafield_written_by_the_sync_worker_applies_the_discount() {
    let (input, expected) = match std::env::var("SEGMENT_DISCOUNT_INPUT") {
        Ok(path) => {
            let input =
                std::fs::read_to_string(&path).expect("the input the write-back test wrote");
            let expected: f64 = std::env::var("SEGMENT_DISCOUNT_EXPECT")
                .expect("SEGMENT_DISCOUNT_EXPECT goes with SEGMENT_DISCOUNT_INPUT")
                .parse()
                .expect("a percentage");
            (input, expected)
        }
        Err(_) => (
            include_str!("../tests/fixtures/written_by_sync.json").to_owned(),
            12.5,
        ),
    };
    let output = output_json(&run(&input));
    assert_eq!(
        output["operations"][0]["orderDiscountsAdd"]["candidates"][0]["value"],
        json!({"percentage": {"value": format!("{expected:.1}")}}),
        "{output}"
    );
}
