//! `Money::parse` on arbitrary text for every exponent Shopify's currencies use (0..=3): no panic (overflow
//! included, since the targets are built with debug assertions), and whatever parses renders back, through
//! `to_decimal_string`, to text that parses to the same amount.

#![no_main]

use functions::money::Money;
use libfuzzer_sys::fuzz_target;

fuzz_target!(|data: &[u8]| {
    // First byte: the exponent (low two bits); the rest: the amount's text, when it is UTF-8.
    let Some((&selector, rest)) = data.split_first() else {
        return;
    };
    let Ok(text) = std::str::from_utf8(rest) else {
        return;
    };
    let exponent = selector & 3;
    if let Ok(amount) = Money::parse(text, exponent) {
        let rendered = amount.to_decimal_string(exponent);
        match Money::parse(&rendered, exponent) {
            Ok(again) => assert_eq!(
                again, amount,
                "{text:?} (exponent {exponent}) rendered as {rendered:?} parses to another amount"
            ),
            Err(e) => panic!(
                "{text:?} (exponent {exponent}) rendered as {rendered:?}, which does not parse: {e}"
            ),
        }
    }
});
