//! An event as tsuru shows it (API-NOTES §2.16): Go field names, zero times as
//! `0001-01-01T00:00:00Z`, and custom data as `{"Kind": <BSON type>, "Data":
//! "<base64 BSON>"}` because tsuru's client decodes those as BSON.

use base64::Engine as _;
use serde::{Deserialize, Serialize};
use serde_json::Value;

use super::{Allowed, LogEntry, Target};
use crate::api::time_json;
use crate::rbac::{Context, ContextType};
use crate::store::EventRecord;

#[derive(Serialize)]
pub struct EventJson {
    #[serde(rename = "ID")]
    id: IdJson,
    #[serde(rename = "UniqueID")]
    unique_id: String,
    #[serde(rename = "StartTime")]
    start_time: String,
    #[serde(rename = "EndTime")]
    end_time: String,
    #[serde(rename = "Target")]
    target: Target,
    #[serde(rename = "ExtraTargets")]
    extra_targets: Option<Vec<Value>>,
    #[serde(rename = "StartCustomData")]
    start_custom: CustomJson,
    #[serde(rename = "EndCustomData")]
    end_custom: CustomJson,
    #[serde(rename = "OtherCustomData")]
    other_custom: CustomJson,
    #[serde(rename = "Kind")]
    kind: TypeName,
    #[serde(rename = "Owner")]
    owner: TypeName,
    #[serde(rename = "SourceIP")]
    source_ip: String,
    #[serde(rename = "LockUpdateTime")]
    lock_update_time: String,
    #[serde(rename = "Error")]
    error: String,
    #[serde(rename = "Log")]
    log: String,
    #[serde(rename = "StructuredLog")]
    structured_log: Option<Vec<LogJson>>,
    #[serde(rename = "CancelInfo")]
    cancel_info: CancelInfoJson,
    #[serde(rename = "Cancelable")]
    cancelable: bool,
    #[serde(rename = "Running")]
    running: bool,
    #[serde(rename = "Allowed")]
    allowed: AllowedJson,
    #[serde(rename = "AllowedCancel")]
    allowed_cancel: AllowedJson,
    #[serde(rename = "Instance")]
    instance: Value,
}

#[derive(Serialize)]
struct IdJson {
    #[serde(rename = "Target")]
    target: Target,
    #[serde(rename = "ObjId")]
    obj_id: String,
}

#[derive(Serialize)]
pub struct TypeName {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Name")]
    pub name: String,
}

#[derive(Serialize)]
struct CustomJson {
    #[serde(rename = "Kind")]
    kind: u8,
    #[serde(rename = "Data")]
    data: Option<String>,
}

#[derive(Serialize)]
struct LogJson {
    #[serde(rename = "Date")]
    date: String,
    #[serde(rename = "Message")]
    message: String,
}

#[derive(Serialize, Deserialize, Default)]
pub(crate) struct CancelInfoJson {
    #[serde(rename = "Owner", default)]
    owner: String,
    #[serde(rename = "StartTime", default = "zero_time")]
    start_time: String,
    #[serde(rename = "AckTime", default = "zero_time")]
    ack_time: String,
    #[serde(rename = "Reason", default)]
    reason: String,
    #[serde(rename = "Asked", default)]
    asked: bool,
    #[serde(rename = "Canceled", default)]
    canceled: bool,
}

fn zero_time() -> String {
    time_json(0)
}

#[derive(Serialize)]
struct AllowedJson {
    #[serde(rename = "Scheme")]
    scheme: String,
    #[serde(rename = "Contexts")]
    contexts: Option<Vec<ContextJson>>,
}

#[derive(Serialize)]
struct ContextJson {
    #[serde(rename = "CtxType")]
    kind: String,
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Deserialize)]
struct AllowedStored {
    scheme: String,
    contexts: Vec<(String, String)>,
}

/// The permission stored with an event (`None` when nobody may, e.g. cancel
/// of a non-cancelable event).
pub fn parse_allowed(text: &str) -> Option<Allowed> {
    let stored: AllowedStored = serde_json::from_str(text).ok()?;
    Some(Allowed {
        scheme: stored.scheme,
        contexts: stored
            .contexts
            .into_iter()
            .filter_map(|(k, v)| ContextType::parse(&k).map(|kind| Context::new(kind, v)))
            .collect(),
    })
}

fn allowed_out(a: Option<Allowed>) -> AllowedJson {
    match a {
        None => AllowedJson { scheme: String::new(), contexts: None },
        Some(a) => AllowedJson {
            scheme: a.scheme,
            contexts: Some(
                a.contexts.into_iter().map(|c| ContextJson { kind: c.kind.as_str().into(), value: c.value }).collect(),
            ),
        },
    }
}

/// Encodes a JSON value as a raw BSON value: documents as type 3, arrays as
/// type 4 (a document keyed "0", "1", …), anything else as absent.
pub fn custom_data(value: &Value) -> (u8, Option<String>) {
    let document = match value {
        Value::Object(_) => bson::to_document(value).ok().map(|d| (3u8, d)),
        Value::Array(items) => {
            let mut d = bson::Document::new();
            for (i, item) in items.iter().enumerate() {
                match bson::to_bson(item) {
                    Ok(b) => {
                        d.insert(i.to_string(), b);
                    }
                    Err(_) => return (0, None),
                }
            }
            Some((4u8, d))
        }
        _ => None,
    };
    match document {
        None => (0, None),
        Some((kind, d)) => {
            let mut bytes = Vec::new();
            match d.to_writer(&mut bytes) {
                Ok(()) => (kind, Some(base64::engine::general_purpose::STANDARD.encode(bytes))),
                Err(_) => (0, None),
            }
        }
    }
}

fn custom(text: &str) -> CustomJson {
    let value: Value = serde_json::from_str(text).unwrap_or(Value::Null);
    let (kind, data) = custom_data(&value);
    CustomJson { kind, data }
}

/// tsuru's legacy text log: each entry prefixed with its time.
fn text_log(entries: &[LogEntry]) -> String {
    let mut out = String::new();
    for e in entries {
        if let Some(t) = chrono::DateTime::from_timestamp_millis(e.date) {
            out.push_str(&t.format("%Y-%m-%d %H:%M:%S %z: ").to_string());
        }
        out.push_str(&e.message);
        if !e.message.ends_with('\n') {
            out.push('\n');
        }
    }
    out
}

impl EventJson {
    /// The legacy text log (`Log`).
    pub fn log_text(&self) -> String {
        self.log.clone()
    }
}

pub fn event_json(e: &EventRecord) -> EventJson {
    let target = Target { kind: e.target_type.clone(), value: e.target_value.clone() };
    let entries: Vec<LogEntry> = serde_json::from_str(&e.log).unwrap_or_default();
    let id = if e.running {
        IdJson { target: target.clone(), obj_id: String::new() }
    } else {
        IdJson { target: Target { kind: String::new(), value: String::new() }, obj_id: e.id.clone() }
    };
    EventJson {
        id,
        unique_id: e.id.clone(),
        start_time: time_json(e.start_time),
        end_time: time_json(e.end_time),
        target,
        extra_targets: None,
        start_custom: custom(&e.start_custom),
        end_custom: custom(&e.end_custom),
        other_custom: custom(&e.other_custom),
        kind: TypeName { kind: e.kind_type.clone(), name: e.kind_name.clone() },
        owner: TypeName { kind: e.owner_type.clone(), name: e.owner_name.clone() },
        source_ip: e.source_ip.clone(),
        lock_update_time: time_json(e.lock_update_time),
        error: e.error.clone(),
        log: text_log(&entries),
        structured_log: if entries.is_empty() {
            None
        } else {
            Some(entries.iter().map(|l| LogJson { date: time_json(l.date), message: l.message.clone() }).collect())
        },
        cancel_info: serde_json::from_str(&e.cancel_info).unwrap_or_default(),
        cancelable: e.cancelable,
        running: e.running,
        allowed: allowed_out(parse_allowed(&e.allowed)),
        allowed_cancel: allowed_out(parse_allowed(&e.allowed_cancel)),
        instance: serde_json::from_str(&e.instance).unwrap_or(Value::Null),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn arrays_become_bson_documents_keyed_by_index() {
        let (kind, data) = custom_data(&serde_json::json!([{"name": "name", "value": "t1"}]));
        assert_eq!(kind, 4);
        let bytes = base64::engine::general_purpose::STANDARD.decode(data.unwrap()).unwrap();
        let doc = bson::Document::from_reader(&mut bytes.as_slice()).unwrap();
        assert_eq!(doc.get_document("0").unwrap().get_str("value").unwrap(), "t1");
        assert_eq!(custom_data(&Value::Null), (0, None));
        assert_eq!(custom_data(&serde_json::json!({"a": 1})).0, 3);
    }
}
