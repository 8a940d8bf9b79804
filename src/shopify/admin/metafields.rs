//! The metafields we own on customers and the Admin API operations that write them: `metafieldsSet` (at most
//! [`MAX_METAFIELDS_PER_CALL`] inputs, atomic: when any input is refused nothing is written) and
//! `metafieldDefinitionCreate` for the three definitions, admin-filterable so merchants can build Shopify customer
//! segments on them (`loyalnest.rfm_segment = champions`), used in Shopify Email, discounts and Flow.

use serde_json::{json, Value};

/// Shopify's limit on inputs to one `metafieldsSet` call.
pub const MAX_METAFIELDS_PER_CALL: usize = 25;
pub const NAMESPACE: &str = "loyalnest";
pub const SEGMENT_KEY: &str = "rfm_segment";
pub const SCORE_KEY: &str = "rfm_score";
pub const STAGE_KEY: &str = "rfm_stage";
/// Metafields written per customer, so customers per call is `MAX_METAFIELDS_PER_CALL / FIELDS_PER_CUSTOMER` (8).
pub const FIELDS_PER_CUSTOMER: usize = 3;
pub const CUSTOMERS_PER_CALL: usize = MAX_METAFIELDS_PER_CALL / FIELDS_PER_CUSTOMER;

pub const METAFIELDS_SET: &str = "mutation LoyalNestRfmSet($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { key namespace }
    userErrors { field message code elementIndex }
  }
}";

pub const DEFINITION_CREATE: &str =
    "mutation LoyalNestDefinition($definition: MetafieldDefinitionInput!) {
  metafieldDefinitionCreate(definition: $definition) {
    createdDefinition { id namespace key }
    userErrors { field message code }
  }
}";

/// Read-back of a customer's metafields in our namespace (tests and by-hand checks).
pub const CUSTOMER_METAFIELDS: &str = "query LoyalNestCustomer($id: ID!) {
  customer(id: $id) {
    id
    metafields(first: 10, namespace: \"loyalnest\") { nodes { namespace key type value } }
  }
}";

/// What we write for one customer: the state of one `rfm.updated` version.
#[derive(Debug, Clone, PartialEq)]
pub struct CustomerFields {
    pub customer_id: u64,
    pub segment: String,
    /// One decimal, as the engine publishes it.
    pub score: f64,
    pub stage: String,
}

pub fn customer_gid(customer_id: u64) -> String {
    format!("gid://shopify/Customer/{customer_id}")
}

/// The `metafields` variable for `customers` (at most [`CUSTOMERS_PER_CALL`] of them), in input order: customer
/// `i`'s fields are inputs `3i..3i+3`.
pub fn set_inputs(customers: &[CustomerFields]) -> Value {
    let inputs: Vec<Value> = customers
        .iter()
        .flat_map(|c| {
            let owner = customer_gid(c.customer_id);
            [
                (SEGMENT_KEY, "single_line_text_field", c.segment.clone()),
                (SCORE_KEY, "number_decimal", format!("{:.1}", c.score)),
                (STAGE_KEY, "single_line_text_field", c.stage.clone()),
            ]
            .map(|(key, kind, value)| {
                json!({ "ownerId": owner, "namespace": NAMESPACE, "key": key, "type": kind, "value": value })
            })
        })
        .collect();
    json!({ "metafields": inputs })
}

/// What Shopify said about a `metafieldsSet` call of `customers` customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetResult {
    /// Every input was written.
    Written,
    /// Nothing was written; these customers' inputs were refused, with Shopify's message (the others may go again).
    Refused(Vec<(usize, String)>),
    /// Nothing was written and the refusal names no input: the caller isolates by sending customers alone.
    RefusedUnplaced(String),
}

/// Reads a `metafieldsSet` reply's `data` and `errors`.
pub fn set_result(data: &Value, errors: &[Value], customers: usize) -> SetResult {
    if let Some(first) = errors.first() {
        return SetResult::RefusedUnplaced(message_of(first));
    }
    let user_errors = data
        .pointer("/metafieldsSet/userErrors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    if data.pointer("/metafieldsSet").is_none_or(Value::is_null) {
        return SetResult::RefusedUnplaced("the reply has no metafieldsSet payload".into());
    }
    if user_errors.is_empty() {
        return SetResult::Written;
    }
    let mut refused: Vec<(usize, String)> = Vec::new();
    for error in user_errors {
        let Some(customer) = input_index(error).map(|i| i / FIELDS_PER_CUSTOMER) else {
            return SetResult::RefusedUnplaced(message_of(error));
        };
        if customer >= customers {
            return SetResult::RefusedUnplaced(message_of(error));
        }
        if !refused.iter().any(|(c, _)| *c == customer) {
            refused.push((customer, message_of(error)));
        }
    }
    SetResult::Refused(refused)
}

/// The input a user error is about: `elementIndex`, else the index in `field` (`["metafields", "4", "value"]`).
fn input_index(error: &Value) -> Option<usize> {
    if let Some(i) = error.get("elementIndex").and_then(Value::as_u64) {
        return Some(i as usize);
    }
    let field = error.get("field")?.as_array()?;
    (field.first()?.as_str()? == "metafields").then_some(())?;
    field.get(1)?.as_str()?.parse().ok()
}

fn message_of(error: &Value) -> String {
    let message = error
        .get("message")
        .and_then(Value::as_str)
        .unwrap_or("refused");
    match error.get("code").and_then(Value::as_str) {
        Some(code) => format!("{code}: {message}"),
        None => message.to_owned(),
    }
}

/// The three definitions, admin-filterable, on customers.
pub fn definitions() -> [Value; 3] {
    [
        (SEGMENT_KEY, "RFM segment", "single_line_text_field"),
        (SCORE_KEY, "RFM score", "number_decimal"),
        (STAGE_KEY, "RFM lifecycle stage", "single_line_text_field"),
    ]
    .map(|(key, name, kind)| {
        json!({ "definition": {
            "name": name,
            "namespace": NAMESPACE,
            "key": key,
            "type": kind,
            "ownerType": "CUSTOMER",
            "description": "Written by LoyalNest RFM from the customer's latest RFM state.",
            "capabilities": { "adminFilterable": { "enabled": true } },
        }})
    })
}

/// Whether a `metafieldDefinitionCreate` reply created the definition or found it there already (`TAKEN`); the
/// refusal's message otherwise.
pub fn definition_result(data: &Value, errors: &[Value]) -> Result<bool, String> {
    if let Some(first) = errors.first() {
        return Err(message_of(first));
    }
    let payload = data
        .pointer("/metafieldDefinitionCreate")
        .filter(|p| !p.is_null())
        .ok_or("the reply has no metafieldDefinitionCreate payload")?;
    let user_errors = payload
        .get("userErrors")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    match user_errors {
        [] => Ok(true),
        errors
            if errors
                .iter()
                .all(|e| e.get("code").and_then(Value::as_str) == Some("TAKEN")) =>
        {
            Ok(false)
        }
        [first, ..] => Err(message_of(first)),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ana(id: u64) -> CustomerFields {
        CustomerFields {
            customer_id: id,
            segment: "champions".into(),
            score: 4.06,
            stage: "active".into(),
        }
    }

    #[test]
    fn eight_customers_fill_one_call_of_at_most_twenty_five() {
        let customers: Vec<_> = (0..CUSTOMERS_PER_CALL as u64).map(ana).collect();
        let inputs = set_inputs(&customers);
        let inputs = inputs["metafields"].as_array().unwrap();
        assert_eq!(CUSTOMERS_PER_CALL, 8);
        assert_eq!(inputs.len(), 24);
        assert!(inputs.len() <= MAX_METAFIELDS_PER_CALL);
        assert_eq!(inputs[4]["ownerId"], "gid://shopify/Customer/1");
        assert_eq!(inputs[4]["value"], "4.1");
        assert_eq!(inputs[4]["type"], "number_decimal");
    }

    #[test]
    fn user_errors_name_the_refused_customers() {
        let data = json!({"metafieldsSet": {"metafields": null, "userErrors": [
            {"field": ["metafields", "4", "value"], "message": "bad", "code": "INVALID_VALUE", "elementIndex": null},
            {"field": ["metafields", "5", "value"], "message": "bad", "code": "INVALID_VALUE"},
            {"field": ["metafields"], "message": "x", "elementIndex": 6},
        ]}});
        assert_eq!(
            set_result(&data, &[], 3),
            SetResult::Refused(vec![(1, "INVALID_VALUE: bad".into()), (2, "x".into())])
        );
        let ok = json!({"metafieldsSet": {"metafields": [], "userErrors": []}});
        assert_eq!(set_result(&ok, &[], 3), SetResult::Written);
        let vague = json!({"metafieldsSet": {"userErrors": [{"field": null, "message": "no"}]}});
        assert!(matches!(
            set_result(&vague, &[], 3),
            SetResult::RefusedUnplaced(_)
        ));
        let schema = [json!({"message": "Field 'x' doesn't exist"})];
        assert!(matches!(
            set_result(&Value::Null, &schema, 3),
            SetResult::RefusedUnplaced(_)
        ));
    }

    #[test]
    fn an_existing_definition_is_not_an_error() {
        let created = json!({"metafieldDefinitionCreate": {"createdDefinition": {"id": "1"}, "userErrors": []}});
        assert_eq!(definition_result(&created, &[]), Ok(true));
        let taken = json!({"metafieldDefinitionCreate": {"createdDefinition": null,
            "userErrors": [{"field": ["definition", "key"], "message": "Key is in use", "code": "TAKEN"}]}});
        assert_eq!(definition_result(&taken, &[]), Ok(false));
        let bad = json!({"metafieldDefinitionCreate": {"userErrors": [{"message": "no", "code": "INVALID"}]}});
        assert!(definition_result(&bad, &[]).is_err());
        assert_eq!(
            definitions()[0]["definition"]["capabilities"]["adminFilterable"]["enabled"],
            true
        );
    }
}
