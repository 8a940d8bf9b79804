//! The stand-in's metafields: `metafieldsSet` (at most 25 inputs, validated like Shopify: owner id, namespace and
//! key lengths, type, value of the type, the definition's type; atomic, so one refused input writes nothing and
//! each refusal names its input by `elementIndex`), `metafieldDefinitionCreate` (`TAKEN` when the definition
//! exists), and the read-back `customer(id:) { metafields }`. Every accepted write of a customer is also kept in
//! order, so a test can check that no older state was written after a newer one.
//!
//! `compareDigest`, as Shopify documents it: an input that carries one is only written if the stored value's
//! digest equals it, one that carries it as null only if the metafield does not exist; otherwise the call fails
//! with a `STALE_OBJECT` user error on that input. The digest is a SHA-256 of the stored value (Shopify's is
//! opaque; the client only ever compares what it was given).

use std::collections::{BTreeMap, HashMap, HashSet};

use serde_json::{json, Value};

/// One stored metafield.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Stored {
    pub kind: String,
    pub value: String,
}

impl Stored {
    /// The value's `compareDigest`.
    pub fn digest(&self) -> String {
        use sha2::Digest;
        hex::encode(sha2::Sha256::digest(self.value.as_bytes()))
    }
}

/// A shop's metafields and definitions.
#[derive(Default)]
pub struct ShopMetafields {
    /// customer id → (namespace, key) → value.
    pub customers: HashMap<u64, BTreeMap<(String, String), Stored>>,
    /// customer id → every accepted call's inputs for it, in order: `(key, value)` pairs.
    pub history: HashMap<u64, Vec<Vec<(String, String)>>>,
    /// (namespace, key) → the definition as created.
    pub definitions: BTreeMap<(String, String), Value>,
}

const TYPES: [&str; 6] = [
    "single_line_text_field",
    "multi_line_text_field",
    "number_decimal",
    "number_integer",
    "boolean",
    "json",
];

/// Shopify's limit on inputs per call.
pub const MAX_INPUTS: usize = 25;

pub fn customer_id_of(gid: &str) -> Option<u64> {
    gid.strip_prefix("gid://shopify/Customer/")?.parse().ok()
}

fn user_error(index: usize, field: &str, code: &str, message: &str) -> Value {
    json!({ "field": ["metafields", index.to_string(), field], "message": message, "code": code,
            "elementIndex": index })
}

fn check_value(kind: &str, value: &str) -> bool {
    match kind {
        "number_decimal" => value.parse::<f64>().is_ok_and(f64::is_finite),
        "number_integer" => value.parse::<i64>().is_ok(),
        "boolean" => value == "true" || value == "false",
        "json" => serde_json::from_str::<Value>(value).is_ok(),
        _ => !value.is_empty(),
    }
}

/// Validates one input; `Ok((customer, namespace, key, stored))` or the user error.
fn validate(
    shop: &ShopMetafields,
    refused: &HashSet<u64>,
    index: usize,
    input: &Value,
) -> Result<(u64, String, String, Stored), Value> {
    let text = |name: &str| input.get(name).and_then(Value::as_str).unwrap_or("");
    let customer = customer_id_of(text("ownerId"))
        .filter(|id| !refused.contains(id))
        .ok_or_else(|| user_error(index, "ownerId", "INVALID", "Owner does not exist."))?;
    let (namespace, key, kind, value) =
        (text("namespace"), text("key"), text("type"), text("value"));
    if !(3..=255).contains(&namespace.len()) {
        return Err(user_error(
            index,
            "namespace",
            "TOO_SHORT",
            "Namespace is too short (minimum is 3 characters)",
        ));
    }
    if !(2..=64).contains(&key.len()) {
        return Err(user_error(
            index,
            "key",
            "TOO_SHORT",
            "Key is too short (minimum is 2 characters)",
        ));
    }
    let definition = shop
        .definitions
        .get(&(namespace.to_owned(), key.to_owned()));
    let defined = definition
        .and_then(|d| d.get("type"))
        .and_then(Value::as_str);
    if !TYPES.contains(&kind) || defined.is_some_and(|d| d != kind) {
        return Err(user_error(
            index,
            "type",
            "INVALID_TYPE",
            "Type is not the definition's type",
        ));
    }
    if !check_value(kind, value) {
        return Err(user_error(
            index,
            "value",
            "INVALID_VALUE",
            "Value is invalid for its type",
        ));
    }
    check_digest(shop, customer, namespace, key, index, input)?;
    let stored = Stored {
        kind: kind.to_owned(),
        value: value.to_owned(),
    };
    Ok((customer, namespace.to_owned(), key.to_owned(), stored))
}

/// An input's `compareDigest`, if it carries one: the stored value's digest, or null for "does not exist yet".
fn check_digest(
    shop: &ShopMetafields,
    customer: u64,
    namespace: &str,
    key: &str,
    index: usize,
    input: &Value,
) -> Result<(), Value> {
    let Some(expected) = input.get("compareDigest") else {
        return Ok(());
    };
    let current = shop
        .customers
        .get(&customer)
        .and_then(|fields| fields.get(&(namespace.to_owned(), key.to_owned())))
        .map(Stored::digest);
    if current.as_deref() == expected.as_str() {
        return Ok(());
    }
    Err(user_error(
        index,
        "compareDigest",
        "STALE_OBJECT",
        "The metafield has been modified since it was loaded.",
    ))
}

/// `metafieldsSet(metafields:)`: the whole `{"data": …}` or `{"errors": …}` body, without extensions.
pub fn metafields_set(
    shop: &mut ShopMetafields,
    refused: &HashSet<u64>,
    variables: &Value,
) -> Value {
    let Some(inputs) = variables.get("metafields").and_then(Value::as_array) else {
        return json!({ "errors": [{ "message": "Variable $metafields of type [MetafieldsSetInput!]! was provided invalid value",
                                    "extensions": { "code": "INVALID_VARIABLE" } }] });
    };
    if inputs.len() > MAX_INPUTS {
        let message = format!(
            "The input array size of {} is greater than the maximum allowed of {MAX_INPUTS}.",
            inputs.len()
        );
        return json!({ "errors": [{ "message": message, "extensions": { "code": "MAX_INPUT_SIZE_EXCEEDED" } }] });
    }
    let mut valid = Vec::new();
    let mut errors = Vec::new();
    for (index, input) in inputs.iter().enumerate() {
        match validate(shop, refused, index, input) {
            Ok(ok) => valid.push(ok),
            Err(e) => errors.push(e),
        }
    }
    if !errors.is_empty() {
        return json!({ "data": { "metafieldsSet": { "metafields": null, "userErrors": errors } } });
    }
    let mut written = Vec::new();
    let mut calls: BTreeMap<u64, Vec<(String, String)>> = BTreeMap::new();
    for (customer, namespace, key, stored) in valid {
        written.push(
            json!({ "namespace": namespace, "key": key, "compareDigest": stored.digest(),
                             "owner": { "id": format!("gid://shopify/Customer/{customer}") } }),
        );
        calls
            .entry(customer)
            .or_default()
            .push((key.clone(), stored.value.clone()));
        shop.customers
            .entry(customer)
            .or_default()
            .insert((namespace, key), stored);
    }
    for (customer, fields) in calls {
        shop.history.entry(customer).or_default().push(fields);
    }
    json!({ "data": { "metafieldsSet": { "metafields": written, "userErrors": [] } } })
}

/// `metafieldDefinitionCreate(definition:)`.
pub fn definition_create(shop: &mut ShopMetafields, variables: &Value) -> Value {
    let definition = variables.get("definition").cloned().unwrap_or(Value::Null);
    let text = |name: &str| {
        definition
            .get(name)
            .and_then(Value::as_str)
            .unwrap_or("")
            .to_owned()
    };
    let (namespace, key, kind) = (text("namespace"), text("key"), text("type"));
    let payload = |created: Value, errors: Vec<Value>| json!({ "data": { "metafieldDefinitionCreate": { "createdDefinition": created, "userErrors": errors } } });
    if text("ownerType").is_empty() {
        return payload(
            Value::Null,
            vec![
                json!({"field": ["definition", "ownerType"], "message": "Owner type can't be blank", "code": "BLANK"}),
            ],
        );
    }
    if !TYPES.contains(&kind.as_str()) || namespace.len() < 3 || key.len() < 2 {
        return payload(
            Value::Null,
            vec![
                json!({"field": ["definition"], "message": "Definition is invalid", "code": "INVALID"}),
            ],
        );
    }
    let slot = (namespace.clone(), key.clone());
    if shop.definitions.contains_key(&slot) {
        return payload(
            Value::Null,
            vec![
                json!({"field": ["definition", "key"], "message": "Key is in use for Customer metafields on the 'loyalnest' namespace.", "code": "TAKEN"}),
            ],
        );
    }
    let id = format!(
        "gid://shopify/MetafieldDefinition/{}",
        shop.definitions.len() + 1
    );
    shop.definitions.insert(slot, definition.clone());
    payload(
        json!({ "id": id, "namespace": namespace, "key": key }),
        vec![],
    )
}

/// `customer(id:) { id metafields(namespace:) { nodes { … } } }`, and `metafield(namespace:, key:)` when the
/// variables name one.
pub fn customer(shop: &ShopMetafields, variables: &Value) -> Value {
    let gid = variables.get("id").and_then(Value::as_str).unwrap_or("");
    let Some(id) = customer_id_of(gid) else {
        return json!({ "data": { "customer": null } });
    };
    let node = |namespace: &str, key: &str, stored: &Stored| {
        json!({ "namespace": namespace, "key": key, "type": stored.kind, "value": stored.value,
                "compareDigest": stored.digest() })
    };
    let fields = shop.customers.get(&id);
    let nodes: Vec<Value> = fields
        .into_iter()
        .flatten()
        .map(|((namespace, key), stored)| node(namespace, key, stored))
        .collect();
    // `metafield(namespace: $namespace, key: $key)`: the one the variables name, or null.
    let text = |name: &str| variables.get(name).and_then(Value::as_str);
    let single = match (text("namespace"), text("key")) {
        (Some(namespace), Some(key)) => fields
            .and_then(|f| f.get(&(namespace.to_owned(), key.to_owned())))
            .map(|stored| node(namespace, key, stored)),
        _ => None,
    };
    json!({ "data": { "customer": { "id": gid, "metafields": { "nodes": nodes }, "metafield": single } } })
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::shopify::admin::metafields::{
        set_inputs, set_result, stored_version, CustomerFields, SetResult,
    };

    fn fields(id: u64, segment: &str) -> CustomerFields {
        versioned(id, segment, 1, None)
    }

    fn versioned(id: u64, segment: &str, version: u32, replaces: Option<&str>) -> CustomerFields {
        CustomerFields {
            customer_id: id,
            segment: segment.into(),
            score: 3.0,
            stage: "active".into(),
            version,
            replaces: replaces.map(str::to_owned),
        }
    }

    /// Writes one customer's version; what `set_result` makes of the reply.
    fn write(shop: &mut ShopMetafields, version: u32, replaces: Option<&str>) -> SetResult {
        let inputs = set_inputs(&[versioned(5, "loyal", version, replaces)]);
        let reply = metafields_set(shop, &HashSet::new(), &inputs);
        set_result(&reply["data"], &[], 1)
    }

    #[test]
    fn compare_digest_lets_only_the_writer_that_saw_the_stored_version_through() {
        let mut shop = ShopMetafields::default();
        let SetResult::Written(first) = write(&mut shop, 1, None) else {
            panic!("a null digest writes a metafield that does not exist yet")
        };
        let d1 = first[0].1.clone();
        let stale = SetResult::Refused {
            refused: vec![],
            stale: vec![0],
        };
        assert_eq!(write(&mut shop, 2, None), stale, "it exists now");
        let SetResult::Written(second) = write(&mut shop, 3, Some(&d1)) else {
            panic!("the digest of the stored value writes")
        };
        assert_ne!(second[0].1, d1);
        // The race: a writer that read version 1 sends version 2 after version 3 landed.
        assert_eq!(write(&mut shop, 2, Some(&d1)), stale);
        let read = customer(&shop, &json!({"id": "gid://shopify/Customer/5"}));
        assert_eq!(
            stored_version(&read["data"]),
            Some((3, second[0].1.clone()))
        );
        assert_eq!(shop.history[&5].len(), 2, "the refused calls wrote nothing");
    }

    #[test]
    fn a_refused_input_writes_nothing_and_is_named() {
        let mut shop = ShopMetafields::default();
        let refused = HashSet::from([2]);
        let inputs = set_inputs(&[fields(1, "loyal"), fields(2, "loyal")]);
        let reply = metafields_set(&mut shop, &refused, &inputs);
        assert_eq!(
            set_result(&reply["data"], &[], 2),
            SetResult::Refused {
                refused: vec![(1, "INVALID: Owner does not exist.".into())],
                stale: vec![],
            }
        );
        assert!(shop.customers.is_empty(), "atomic");
        let ok = metafields_set(&mut shop, &refused, &set_inputs(&[fields(1, "champions")]));
        assert!(matches!(
            set_result(&ok["data"], &[], 1),
            SetResult::Written(digests) if digests.len() == 1
        ));
        let read = customer(&shop, &json!({"id": "gid://shopify/Customer/1"}));
        assert_eq!(
            read["data"]["customer"]["metafields"]["nodes"]
                .as_array()
                .unwrap()
                .len(),
            4
        );
        assert_eq!(shop.history[&1].len(), 1);
    }

    #[test]
    fn more_than_twenty_five_inputs_are_an_error() {
        let mut shop = ShopMetafields::default();
        let many: Vec<_> = (0..7).map(|i| fields(i, "x")).collect();
        let reply = metafields_set(&mut shop, &HashSet::new(), &set_inputs(&many));
        assert_eq!(
            reply["errors"][0]["extensions"]["code"],
            "MAX_INPUT_SIZE_EXCEEDED"
        );
    }

    #[test]
    fn definitions_are_taken_once() {
        let mut shop = ShopMetafields::default();
        let def = crate::shopify::admin::metafields::definitions()[1].clone();
        let first = definition_create(&mut shop, &def);
        assert!(first["data"]["metafieldDefinitionCreate"]["createdDefinition"]["id"].is_string());
        let again = definition_create(&mut shop, &def);
        assert_eq!(
            again["data"]["metafieldDefinitionCreate"]["userErrors"][0]["code"],
            "TAKEN"
        );
        let mut wrong = set_inputs(&[fields(1, "x")]);
        wrong["metafields"][1]["type"] = json!("single_line_text_field");
        let reply = metafields_set(&mut shop, &HashSet::new(), &wrong);
        assert_eq!(
            reply["data"]["metafieldsSet"]["userErrors"][0]["code"],
            "INVALID_TYPE"
        );
    }
}
