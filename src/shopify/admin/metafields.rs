//! The metafields we own on customers and the Admin API operations that write them: `metafieldsSet` (at most
//! [`MAX_METAFIELDS_PER_CALL`] inputs, atomic: when any input is refused nothing is written) and
//! `metafieldDefinitionCreate` for the three definitions, admin-filterable so merchants can build Shopify customer
//! segments on them (`loyalnest.rfm_segment = champions`), used in Shopify Email, discounts and Flow.
//!
//! Each customer's write also sets `loyalnest.rfm_version`, the state version it came from, guarded by
//! `compareDigest` (compare-and-set, Shopify API 2024-07 and later): the write only lands if the version metafield
//! still holds the value whose digest the writer last saw (or, with a null digest, does not exist yet); otherwise
//! Shopify refuses the customer's inputs with `STALE_OBJECT` and writes nothing of the call. The version is in a
//! value of its own because the three visible values can repeat across versions, and a digest of a repeated value
//! could not tell an older state from a newer one.

use serde_json::{json, Value};

/// Shopify's limit on inputs to one `metafieldsSet` call.
pub const MAX_METAFIELDS_PER_CALL: usize = 25;
pub const NAMESPACE: &str = "loyalnest";
pub const SEGMENT_KEY: &str = "rfm_segment";
pub const SCORE_KEY: &str = "rfm_score";
pub const STAGE_KEY: &str = "rfm_stage";
/// The state version the other three came from; the compare-and-set guard of a customer's write.
pub const VERSION_KEY: &str = "rfm_version";
/// Metafields written per customer, so customers per call is `MAX_METAFIELDS_PER_CALL / FIELDS_PER_CUSTOMER` (6).
pub const FIELDS_PER_CUSTOMER: usize = 4;
/// Shopify's user error code for a `compareDigest` that no longer matches.
pub const STALE_OBJECT: &str = "STALE_OBJECT";
/// The user error for a `compareDigest` Shopify cannot use.
pub const INVALID_COMPARE_DIGEST: &str = "INVALID_COMPARE_DIGEST";
pub const CUSTOMERS_PER_CALL: usize = MAX_METAFIELDS_PER_CALL / FIELDS_PER_CUSTOMER;

pub const METAFIELDS_SET: &str = "mutation LoyalNestRfmSet($metafields: [MetafieldsSetInput!]!) {
  metafieldsSet(metafields: $metafields) {
    metafields { key namespace compareDigest owner { ... on Customer { id } } }
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

/// Read-back of one customer's version metafield, named exactly: a listing of the namespace could miss it once
/// someone else adds keys there.
pub const VERSION_METAFIELD: &str =
    "query LoyalNestVersion($id: ID!, $namespace: String!, $key: String!) {
  customer(id: $id) {
    id
    metafield(namespace: $namespace, key: $key) { namespace key type value compareDigest }
  }
}";

/// The variables of [`VERSION_METAFIELD`] for one customer.
pub fn version_variables(customer: u64) -> Value {
    serde_json::json!({ "id": customer_gid(customer), "namespace": NAMESPACE, "key": VERSION_KEY })
}

/// Read-back of a customer's metafields in our namespace (tests and by-hand checks).
pub const CUSTOMER_METAFIELDS: &str = "query LoyalNestCustomer($id: ID!) {
  customer(id: $id) {
    id
    metafields(first: 10, namespace: \"loyalnest\") { nodes { namespace key type value compareDigest } }
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
    pub version: u32,
    /// The `compareDigest` of the `rfm_version` value this write replaces; `None`: the metafield must not exist yet.
    pub replaces: Option<String>,
}

pub fn customer_gid(customer_id: u64) -> String {
    format!("gid://shopify/Customer/{customer_id}")
}

/// The `metafields` variable for `customers` (at most [`CUSTOMERS_PER_CALL`] of them), in input order: customer
/// `i`'s fields are inputs `4i..4i+4`, the guarded version last.
pub fn set_inputs(customers: &[CustomerFields]) -> Value {
    let inputs: Vec<Value> = customers
        .iter()
        .flat_map(|c| {
            let owner = customer_gid(c.customer_id);
            let input = |key: &str, kind: &str, value: String| {
                json!({ "ownerId": owner, "namespace": NAMESPACE, "key": key, "type": kind, "value": value })
            };
            let mut version = input(VERSION_KEY, "number_integer", c.version.to_string());
            version["compareDigest"] = c.replaces.clone().map_or(Value::Null, Value::String);
            [
                input(SEGMENT_KEY, "single_line_text_field", c.segment.clone()),
                input(SCORE_KEY, "number_decimal", format!("{:.1}", c.score)),
                input(STAGE_KEY, "single_line_text_field", c.stage.clone()),
                version,
            ]
        })
        .collect();
    json!({ "metafields": inputs })
}

/// What Shopify said about a `metafieldsSet` call of `customers` customers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum SetResult {
    /// Every input was written; the new `compareDigest` of each customer's `rfm_version`, by customer id (a
    /// customer Shopify's reply leaves out has none).
    Written(Vec<(u64, String)>),
    /// Nothing was written. `refused`: customers whose inputs Shopify refused, with its message; `stale`: customers
    /// whose version changed since the digest was read (`STALE_OBJECT`). The others may go again.
    Refused {
        refused: Vec<(usize, String)>,
        stale: Vec<usize>,
    },
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
        return SetResult::Written(version_digests(data));
    }
    let (mut refused, mut stale): (Vec<(usize, String)>, Vec<usize>) = (Vec::new(), Vec::new());
    for error in user_errors {
        let Some(customer) = input_index(error).map(|i| i / FIELDS_PER_CUSTOMER) else {
            return SetResult::RefusedUnplaced(message_of(error));
        };
        if customer >= customers {
            return SetResult::RefusedUnplaced(message_of(error));
        }
        // A digest Shopify cannot use (the version metafield deleted meanwhile, say) is handled as a stale one:
        // read the stored version back and guard again, rather than refuse the customer for good.
        let code = error.get("code").and_then(Value::as_str);
        if code == Some(STALE_OBJECT) || code == Some(INVALID_COMPARE_DIGEST) {
            stale.push(customer);
        } else if !refused.iter().any(|(c, _)| *c == customer) {
            refused.push((customer, message_of(error)));
        }
    }
    // A customer refused for good is not also retried as stale.
    stale.retain(|c| !refused.iter().any(|(r, _)| r == c));
    stale.dedup();
    SetResult::Refused { refused, stale }
}

/// The `compareDigest` of each written `rfm_version`, by owner.
fn version_digests(data: &Value) -> Vec<(u64, String)> {
    let written = data
        .pointer("/metafieldsSet/metafields")
        .and_then(Value::as_array)
        .map(Vec::as_slice)
        .unwrap_or_default();
    written
        .iter()
        .filter(|m| m.get("key").and_then(Value::as_str) == Some(VERSION_KEY))
        .filter_map(|m| {
            let owner = m.pointer("/owner/id")?.as_str()?;
            let id = owner
                .strip_prefix("gid://shopify/Customer/")?
                .parse()
                .ok()?;
            Some((id, m.get("compareDigest")?.as_str()?.to_owned()))
        })
        .collect()
}

/// From a [`CUSTOMER_METAFIELDS`] reply: the customer's stored version and its `compareDigest`; `None` when it
/// has no version metafield (or the reply is not a customer's).
pub fn stored_version(data: &Value) -> Option<(u32, String)> {
    let node = match data.pointer("/customer/metafield") {
        Some(single) if !single.is_null() => single,
        _ => data
            .pointer("/customer/metafields/nodes")?
            .as_array()?
            .iter()
            .find(|n| n.get("key").and_then(Value::as_str) == Some(VERSION_KEY))?,
    };
    let version = node.get("value")?.as_str()?.parse().ok()?;
    Some((version, node.get("compareDigest")?.as_str()?.to_owned()))
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
            version: 7,
            replaces: (id % 2 == 1).then(|| "d6".to_owned()),
        }
    }

    #[test]
    fn six_customers_fill_one_call_of_at_most_twenty_five() {
        let customers: Vec<_> = (0..CUSTOMERS_PER_CALL as u64).map(ana).collect();
        let inputs = set_inputs(&customers);
        let inputs = inputs["metafields"].as_array().unwrap();
        assert_eq!(CUSTOMERS_PER_CALL, 6);
        assert_eq!(inputs.len(), 24);
        assert!(inputs.len() <= MAX_METAFIELDS_PER_CALL);
        assert_eq!(inputs[5]["ownerId"], "gid://shopify/Customer/1");
        assert_eq!(inputs[5]["value"], "4.1");
        assert_eq!(inputs[5]["type"], "number_decimal");
        assert_eq!(
            (&inputs[3]["key"], &inputs[3]["value"]),
            (&json!("rfm_version"), &json!("7"))
        );
        assert_eq!(
            inputs[3]["compareDigest"],
            Value::Null,
            "present and null: must not exist yet"
        );
        assert!(inputs[3].as_object().unwrap().contains_key("compareDigest"));
        assert_eq!(inputs[7]["compareDigest"], "d6");
        assert!(!inputs[4].as_object().unwrap().contains_key("compareDigest"));
    }

    #[test]
    fn user_errors_name_the_refused_customers() {
        let data = json!({"metafieldsSet": {"metafields": null, "userErrors": [
            {"field": ["metafields", "4", "value"], "message": "bad", "code": "INVALID_VALUE", "elementIndex": null},
            {"field": ["metafields", "5", "value"], "message": "bad", "code": "INVALID_VALUE"},
            {"field": ["metafields"], "message": "x", "elementIndex": 8},
            {"field": ["metafields", "3", "compareDigest"], "message": "stale", "code": "STALE_OBJECT", "elementIndex": 3},
            {"field": ["metafields", "11", "compareDigest"], "message": "stale", "code": "STALE_OBJECT", "elementIndex": 11},
        ]}});
        assert_eq!(
            set_result(&data, &[], 3),
            SetResult::Refused {
                refused: vec![(1, "INVALID_VALUE: bad".into()), (2, "x".into())],
                stale: vec![0],
            }
        );
        let ok = json!({"metafieldsSet": {"metafields": [
            {"key": "rfm_segment", "namespace": "loyalnest", "compareDigest": "s", "owner": {"id": "gid://shopify/Customer/4"}},
            {"key": "rfm_version", "namespace": "loyalnest", "compareDigest": "v", "owner": {"id": "gid://shopify/Customer/4"}},
        ], "userErrors": []}});
        assert_eq!(
            set_result(&ok, &[], 1),
            SetResult::Written(vec![(4, "v".into())])
        );
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
