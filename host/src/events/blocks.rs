//! Which operations an event block refuses.

use serde_json::Value;

use super::{EventSpec, Owner};
use crate::store::BlockRecord;

/// The request fields of an event's start data (`[{"name", "value"}]`).
fn request_value<'a>(data: &'a Value, name: &str) -> Vec<&'a str> {
    let Some(items) = data.as_array() else { return vec![] };
    items
        .iter()
        .filter(|i| i["name"].as_str() == Some(name))
        .flat_map(|i| match &i["value"] {
            Value::String(s) => vec![s.as_str()],
            Value::Array(a) => a.iter().filter_map(Value::as_str).collect(),
            _ => vec![],
        })
        .collect()
}

pub fn matches(block: &BlockRecord, spec: &EventSpec) -> bool {
    let owner = match &spec.owner {
        Owner::User(n) | Owner::Token(n) | Owner::App(n) => n.as_str(),
        Owner::Internal => "",
    };
    block.active
        && spec.kind.starts_with(&block.kind_name)
        && (block.owner_name.is_empty() || block.owner_name == owner)
        && (block.target_type.is_empty()
            || (block.target_type == spec.target.kind
                && (block.target_value.is_empty() || block.target_value == spec.target.value)))
        && block.conditions.iter().all(|(k, v)| request_value(&spec.start_custom, k).contains(&v.as_str()))
}

/// How a refused operation describes the block.
pub fn describe(block: &BlockRecord) -> String {
    let or_all = |s: &str, all: &str| if s.is_empty() { all.to_string() } else { s.to_string() };
    let target = match (block.target_type.as_str(), block.target_value.as_str()) {
        ("", _) => "all targets".to_string(),
        (t, "") => format!("all {t}s"),
        (t, v) => format!("{t}({v})"),
    };
    format!(
        "block {} by {} on {}: {}",
        or_all(&block.kind_name, "all kinds"),
        or_all(&block.owner_name, "all owners"),
        target,
        block.reason
    )
}
