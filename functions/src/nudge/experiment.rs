//! A/B experiments on one nudge kind: which arms a merchant tries, how the customers are split between them, and
//! the holdout that receives nothing so the lift of nudging at all can be measured.
//!
//! Assignment is a pure function of (merchant, experiment id, customer id): the same customer lands in the same arm
//! on every instance, after every restart and on every replay, with nothing stored. The hash is SHA-256 of a
//! canonical string, never std's randomly seeded hasher, because the split must not change between builds or
//! machines. Its first 8 bytes pick one of [`BUCKETS`] buckets; the first `holdout_bps` buckets are the holdout
//! and the rest are cut in proportion to the arms' weights. Keeping the holdout at the low end means changing the
//! arms' weights never moves a customer into or out of the holdout.
//!
//! An arm's texts are a template's texts (title and body by locale, checked by the template rules); an arm
//! without texts shows the kind's template.

use std::collections::BTreeMap;

use serde_json::{json, Value};
use sha2::{Digest, Sha256};

use crate::config::FieldError;
use crate::nudge::template::{Template, Text};
use crate::nudge::NudgeKind;

/// How finely customers are split: shares are whole basis points.
pub const BUCKETS: u32 = 10_000;
/// The largest holdout, in basis points of the customers (50 %): beyond it, too few are nudged to learn much.
pub const MAX_HOLDOUT_BPS: u32 = 5_000;
pub const MIN_ARMS: usize = 2;
pub const MAX_ARMS: usize = 5;
pub const MAX_NAME_CHARS: usize = 32;
pub const MAX_ID_CHARS: usize = 64;
/// Weights are relative shares up to 100 (percentages work), which also guarantees every arm at least ten
/// buckets: five arms weigh at most 500 against a span of at least 5,000 buckets.
pub const MAX_WEIGHT: u64 = 100;
/// The variant name a held-out customer is recorded under; no arm may take it.
pub const HOLDOUT: &str = "holdout";

/// An experiment's id: 1–64 ASCII letters, digits, `-` or `_`, so it is safe in a URL, a log field and a hash input.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct ExperimentId(String);

impl ExperimentId {
    pub fn parse(raw: &str) -> Result<ExperimentId, String> {
        let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
        if raw.is_empty() || raw.len() > MAX_ID_CHARS || !raw.chars().all(allowed) {
            return Err(format!(
                "must be 1 to {MAX_ID_CHARS} letters, digits, '-' or '_'"
            ));
        }
        Ok(ExperimentId(raw.to_owned()))
    }

    pub fn as_str(&self) -> &str {
        &self.0
    }
}

impl std::fmt::Display for ExperimentId {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.0)
    }
}

/// One variant of the kind's nudge.
#[derive(Debug, Clone, PartialEq)]
pub struct Arm {
    pub name: String,
    /// Relative share of the non-holdout customers.
    pub weight: u64,
    /// Title and body by locale; empty: the kind's template.
    pub texts: BTreeMap<String, Text>,
}

/// A validated experiment on one nudge kind.
#[derive(Debug, Clone, PartialEq)]
pub struct Experiment {
    pub id: ExperimentId,
    pub kind: NudgeKind,
    pub arms: Vec<Arm>,
    /// Customers held out (shown nothing), in basis points.
    pub holdout_bps: u32,
}

/// Where one customer lands.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Assignment {
    /// The index of the arm in [`Experiment::arms`].
    Arm(usize),
    Holdout,
}

/// The customer's bucket in `0..BUCKETS` for one experiment of one merchant; the same inputs give the same bucket on
/// every machine.
pub fn bucket(merchant: &str, experiment: &ExperimentId, customer_id: u64) -> u32 {
    // Fields separated by a byte none of them can contain, so no two inputs share a canonical string.
    let canonical = format!("nudge-ab/v1\n{merchant}\n{experiment}\n{customer_id}");
    let digest = Sha256::digest(canonical.as_bytes());
    let mut first = [0u8; 8];
    first.copy_from_slice(&digest[..8]);
    (u64::from_be_bytes(first) % u64::from(BUCKETS)) as u32
}

impl Experiment {
    /// The arm (or the holdout) of `customer_id` of `merchant` (its shop domain).
    pub fn assign(&self, merchant: &str, customer_id: u64) -> Assignment {
        self.assignment_of(bucket(merchant, &self.id, customer_id))
    }

    /// The assignment of a bucket: the holdout's buckets first, then the arms' in order, each in proportion to
    /// its weight.
    pub fn assignment_of(&self, bucket: u32) -> Assignment {
        if bucket < self.holdout_bps {
            return Assignment::Holdout;
        }
        let span = u64::from(BUCKETS - self.holdout_bps);
        let total: u64 = self.arms.iter().map(|a| a.weight).sum();
        // Where in the weights' total this bucket falls; below `total` since the bucket is below the span.
        let point = u64::from(bucket - self.holdout_bps) * total / span;
        let mut cumulative = 0;
        for (index, arm) in self.arms.iter().enumerate() {
            cumulative += arm.weight;
            if point < cumulative {
                return Assignment::Arm(index);
            }
        }
        Assignment::Arm(self.arms.len().saturating_sub(1))
    }

    /// The variant name an assignment is recorded under.
    pub fn variant(&self, assignment: Assignment) -> &str {
        match assignment {
            Assignment::Arm(i) => self.arms.get(i).map_or(HOLDOUT, |a| a.name.as_str()),
            Assignment::Holdout => HOLDOUT,
        }
    }

    /// The holdout share in percent, as the API takes and shows it.
    pub fn holdout_percent(&self) -> f64 {
        f64::from(self.holdout_bps) / 100.0
    }

    /// The experiment as a JSON document [`Experiment::from_json`] reads back (the API's shape, and what is
    /// stored).
    pub fn to_json(&self) -> Value {
        let arms: Vec<Value> = self
            .arms
            .iter()
            .map(|a| json!({ "name": a.name, "weight": a.weight, "texts": a.texts }))
            .collect();
        json!({
            "id": self.id.as_str(),
            "kind": self.kind.as_str(),
            "variants": arms,
            "holdout_percent": self.holdout_percent(),
        })
    }

    /// Parses and validates an experiment document; `fallback_id` is its id when the document names none. Every
    /// problem is reported, each under the field it concerns.
    pub fn from_json(value: &Value, fallback_id: &str) -> Result<Experiment, Vec<FieldError>> {
        let Some(doc) = value.as_object() else {
            return Err(vec![FieldError::new("", "must be a JSON object")]);
        };
        let mut errors = Vec::new();
        for key in doc.keys() {
            if !["id", "kind", "variants", "holdout_percent"].contains(&key.as_str()) {
                errors.push(FieldError::new(key.as_str(), "unknown field"));
            }
        }
        let id = parse_id(doc.get("id"), fallback_id, &mut errors);
        let kind = parse_kind(doc.get("kind"), &mut errors);
        let arms = parse_arms(doc.get("variants"), &mut errors);
        let holdout_bps = parse_holdout(doc.get("holdout_percent"), &mut errors);
        match (id, kind, arms, holdout_bps) {
            (Some(id), Some(kind), Some(arms), Some(holdout_bps)) if errors.is_empty() => {
                Ok(Experiment {
                    id,
                    kind,
                    arms,
                    holdout_bps,
                })
            }
            _ => Err(errors),
        }
    }
}

fn parse_id(
    raw: Option<&Value>,
    fallback: &str,
    errors: &mut Vec<FieldError>,
) -> Option<ExperimentId> {
    let text = match raw {
        None | Some(Value::Null) => fallback,
        Some(Value::String(s)) => s.as_str(),
        Some(_) => {
            errors.push(FieldError::new("id", "must be a string"));
            return None;
        }
    };
    ExperimentId::parse(text)
        .map_err(|message| errors.push(FieldError::new("id", message)))
        .ok()
}

fn parse_kind(raw: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<NudgeKind> {
    let kind = raw.and_then(Value::as_str).and_then(NudgeKind::parse);
    if kind.is_none() {
        let names: Vec<&str> = NudgeKind::ALL.iter().map(|k| k.as_str()).collect();
        errors.push(FieldError::new(
            "kind",
            format!("must be one of {}", names.join(", ")),
        ));
    }
    kind
}

fn parse_arms(raw: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<Vec<Arm>> {
    let Some(list) = raw.and_then(Value::as_array) else {
        errors.push(FieldError::new("variants", "must be a list of variants"));
        return None;
    };
    if !(MIN_ARMS..=MAX_ARMS).contains(&list.len()) {
        errors.push(FieldError::new(
            "variants",
            format!("must hold {MIN_ARMS} to {MAX_ARMS} variants"),
        ));
    }
    let before = errors.len();
    let mut arms: Vec<Arm> = Vec::with_capacity(list.len());
    let mut names: Vec<&str> = Vec::with_capacity(list.len());
    for (i, item) in list.iter().enumerate() {
        // Checked on the raw names, so a duplicate is reported even beside the arm's other errors.
        if let Some(name) = item.get("name").and_then(Value::as_str) {
            if names.iter().any(|n| n.eq_ignore_ascii_case(name)) {
                let field = format!("variants[{i}].name");
                errors.push(FieldError::new(field, "is used by another variant"));
            }
            names.push(name);
        }
        arms.extend(parse_arm(i, item, errors));
    }
    (errors.len() == before).then_some(arms)
}

fn parse_arm(i: usize, item: &Value, errors: &mut Vec<FieldError>) -> Option<Arm> {
    let field = |name: &str| format!("variants[{i}].{name}");
    let Some(arm) = item.as_object() else {
        errors.push(FieldError::new(
            format!("variants[{i}]"),
            "must be an object",
        ));
        return None;
    };
    let before = errors.len();
    for key in arm.keys() {
        if !["name", "weight", "texts"].contains(&key.as_str()) {
            errors.push(FieldError::new(field(key), "unknown field"));
        }
    }
    let name = arm.get("name").and_then(Value::as_str).unwrap_or_default();
    let allowed = |c: char| c.is_ascii_alphanumeric() || c == '-' || c == '_';
    if name.is_empty() || name.chars().count() > MAX_NAME_CHARS || !name.chars().all(allowed) {
        let message = format!("must be 1 to {MAX_NAME_CHARS} letters, digits, '-' or '_'");
        errors.push(FieldError::new(field("name"), message));
    } else if name.eq_ignore_ascii_case(HOLDOUT) {
        errors.push(FieldError::new(field("name"), "\"holdout\" is reserved"));
    }
    let weight = arm.get("weight").and_then(Value::as_u64).unwrap_or(0);
    if !(1..=MAX_WEIGHT).contains(&weight) {
        let message = format!("must be a whole number from 1 to {MAX_WEIGHT}");
        errors.push(FieldError::new(field("weight"), message));
    }
    let texts = parse_texts(i, arm.get("texts"), errors);
    (errors.len() == before).then(|| Arm {
        name: name.to_owned(),
        weight,
        texts,
    })
}

/// An arm's texts, checked by the template rules (fields named from `variants[i].texts`).
fn parse_texts(
    i: usize,
    raw: Option<&Value>,
    errors: &mut Vec<FieldError>,
) -> BTreeMap<String, Text> {
    let texts = match raw {
        None | Some(Value::Null) => return BTreeMap::new(),
        Some(raw) => serde_json::from_value::<BTreeMap<String, Text>>(raw.clone()),
    };
    let Ok(texts) = texts else {
        let message = "must map locales to {\"title\": …, \"body\": …}";
        errors.push(FieldError::new(format!("variants[{i}].texts"), message));
        return BTreeMap::new();
    };
    if !texts.is_empty() {
        let template = Template {
            enabled: true,
            texts,
        };
        errors.extend(template.validate(&format!("variants[{i}]")));
        return template.texts;
    }
    texts
}

fn parse_holdout(raw: Option<&Value>, errors: &mut Vec<FieldError>) -> Option<u32> {
    let percent = match raw {
        None | Some(Value::Null) => 0.0,
        Some(value) => value.as_f64().unwrap_or(f64::NAN),
    };
    let max = f64::from(MAX_HOLDOUT_BPS) / 100.0;
    if !(0.0..=max).contains(&percent) {
        errors.push(FieldError::new(
            "holdout_percent",
            format!("must be a number from 0 to {max}"),
        ));
        return None;
    }
    // In range, so the rounded basis points fit.
    Some((percent * 100.0).round() as u32)
}

#[cfg(test)]
mod tests;
