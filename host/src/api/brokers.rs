//! Service brokers (`/1.7/brokers`, API-NOTES §2.15): Open Service Broker
//! endpoints whose services show as `<broker>::<service>`. Global
//! permissions only; the broker's credentials are stored sealed.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Map, Value, json};

use super::events::record;
use super::params::{Params, parse_bool};
use super::{AppState, Caller, ClientIp, Routes, empty, json_untyped};
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::store::BrokerRecord;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.7", Method::GET, "/brokers", list)
        .add("1.7", Method::POST, "/brokers", create)
        .add("1.7", Method::PUT, "/brokers/{broker}", update)
        .add("1.7", Method::DELETE, "/brokers/{broker}", remove)
}

fn broker_json(b: &BrokerRecord) -> Value {
    json!({"Name": b.name, "URL": b.url, "Config": b.config})
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("service-broker.read", &[])?;
    let brokers = server.store.brokers().await?;
    if brokers.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    Ok(json_untyped(StatusCode::OK, &json!({"brokers": brokers.iter().map(broker_json).collect::<Vec<_>>()})))
}

/// The broker's `Config` in tsuru's shape, every key present.
fn config_of(given: &Value) -> Result<Value, String> {
    let obj = match given {
        Value::Null => Map::new(),
        Value::Object(o) => o.clone(),
        other => return Err(format!("Config must be an object, not {other}")),
    };
    let get = |k: &str| obj.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v.clone()).unwrap_or(Value::Null);
    let auth = match get("AuthConfig") {
        Value::Null => Value::Null,
        Value::Object(a) => {
            let part = |k: &str, fields: &[&str]| -> Result<Value, String> {
                match a.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)).map(|(_, v)| v) {
                    None | Some(Value::Null) => Ok(Value::Null),
                    Some(Value::Object(p)) => {
                        let mut out = Map::new();
                        for f in fields {
                            let v = p.iter().find(|(key, _)| key.eq_ignore_ascii_case(f)).map(|(_, v)| v.clone()).unwrap_or(Value::String(String::new()));
                            if !v.is_string() {
                                return Err(format!("{k}.{f} must be a string"));
                            }
                            out.insert(f.to_string(), v);
                        }
                        Ok(Value::Object(out))
                    }
                    Some(_) => Err(format!("{k} must be an object")),
                }
            };
            json!({"BasicAuthConfig": part("BasicAuthConfig", &["Username", "Password"])?, "BearerConfig": part("BearerConfig", &["Token"])?})
        }
        _ => return Err("AuthConfig must be an object".into()),
    };
    let insecure = match get("Insecure") {
        Value::Null => false,
        Value::Bool(b) => b,
        Value::String(s) => parse_bool(&s).ok_or("Insecure must be a boolean")?,
        _ => return Err("Insecure must be a boolean".into()),
    };
    let context = match get("Context") {
        v @ (Value::Null | Value::Object(_)) => v,
        _ => return Err("Context must be an object".into()),
    };
    let cache = match get("CacheExpirationSeconds") {
        Value::Null => 0,
        Value::Number(n) => n.as_i64().filter(|n| *n >= 0).ok_or("CacheExpirationSeconds must be a positive integer")?,
        Value::String(s) => s.parse::<i64>().ok().filter(|n| *n >= 0).ok_or("CacheExpirationSeconds must be a positive integer")?,
        _ => return Err("CacheExpirationSeconds must be a positive integer".into()),
    };
    Ok(json!({"AuthConfig": auth, "Insecure": insecure, "Context": context, "CacheExpirationSeconds": cache}))
}

/// The form keys `Config.A.B=v` as the nested object a JSON body would carry.
fn form_config(params: &Params) -> Value {
    let mut root = Map::new();
    for (k, v) in params.pairs() {
        let mut parts = k.split('.');
        if !parts.next().is_some_and(|p| p.eq_ignore_ascii_case("config")) {
            continue;
        }
        let path: Vec<&str> = parts.collect();
        let Some((last, inner)) = path.split_last() else { continue };
        let mut at = &mut root;
        for p in inner {
            let entry = at.entry(p.to_string()).or_insert_with(|| Value::Object(Map::new()));
            if !entry.is_object() {
                *entry = Value::Object(Map::new());
            }
            at = entry.as_object_mut().expect("made an object");
        }
        // Context values stay strings; CacheExpirationSeconds is parsed by config_of.
        at.insert(last.to_string(), Value::String(v));
    }
    Value::Object(root)
}

/// The broker a request describes, checked; `name` when the path names it.
fn broker_of(params: &Params, name: Option<String>) -> ApiResult<BrokerRecord> {
    let unable = |why: String| ApiError::bad_request(format!("unable to parse broker: {why}"));
    let name = name.or_else(|| params.field("Name")).unwrap_or_default();
    let url = params.field("URL").unwrap_or_default();
    let given = params.json_field("Config").cloned().unwrap_or_else(|| form_config(params));
    let config = config_of(&given).map_err(unable)?;
    if name.is_empty() || name.len() > 40 || !name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
        return Err(ApiError::bad_request("a broker's Name is 1 to 40 letters, digits, '-' or '_'"));
    }
    if crate::egress::Egress::parse(&url).is_err() || url.len() > 2048 {
        return Err(ApiError::bad_request("a broker's URL is an http(s) URL"));
    }
    if config["Insecure"] == Value::Bool(true) {
        return Err(ApiError::bad_request(
            "torii checks the TLS certificates of brokers: instead of Insecure, add the broker's CA to the ca_files of the service-broker plugin's [plugin.outbound]",
        ));
    }
    if config.to_string().len() > 64 << 10 {
        return Err(ApiError::bad_request("a broker's Config may hold at most 65536 bytes"));
    }
    Ok(BrokerRecord { name, url: url.trim_end_matches('/').to_string(), config })
}

/// The event data of a broker request, credentials left out.
fn event_data(b: &BrokerRecord) -> Value {
    json!([{"name": "Name", "value": b.name}, {"name": "URL", "value": b.url}])
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("service-broker.create", &[])?;
    let broker = broker_of(&params, None)?;
    let event = record(&server, Some(&caller), &ip, "service-broker.create", Target::new("service-broker", &broker.name), event_data(&broker)).await?;
    let result = server.store.insert_broker(&broker).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::CREATED))
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    caller.require("service-broker.update", &[])?;
    if server.store.broker(&name).await?.is_none() {
        return Err(ApiError::not_found("service broker not found"));
    }
    let broker = broker_of(&params, Some(name))?;
    let event = record(&server, Some(&caller), &ip, "service-broker.update", Target::new("service-broker", &broker.name), event_data(&broker)).await?;
    let result = server.store.update_broker(&broker).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("service-broker.delete", &[])?;
    if server.store.broker(&name).await?.is_none() {
        return Err(ApiError::not_found("service broker not found"));
    }
    let prefix = format!("{name}{}", crate::services::BROKER_SEPARATOR);
    if server.store.instances().await?.iter().any(|i| i.service.starts_with(&prefix)) {
        return Err(ApiError::bad_request(format!("broker {name:?} has service instances: remove them before the broker")));
    }
    let event = record(&server, Some(&caller), &ip, "service-broker.delete", Target::new("service-broker", &name), json!([{"name": ":broker", "value": name}])).await?;
    let result = server.store.delete_broker(&name).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}
