//! Healing (API-NOTES §2.17): the history (`GET /1.3/healing`), the units
//! healing replaced, from the `healer` events `crate::healing` records; and
//! the per-pool config (`/1.2/healing/node`: `Enabled`, `MaxTimeSinceSuccess`,
//! `MaxUnresponsiveTime`, pool `""` the default the others inherit). A pool
//! whose `Enabled` is false gets no unit healing.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::Params;
use super::pools::{pool_contexts, pool_target, readable_pools, shows};
use super::{AppState, Caller, Routes, empty, json_list, time_json};
use crate::error::{ApiError, ApiResult};
use crate::healing::{HEALER, SETTING as HEALING};
use crate::store::EventQuery;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.3", Method::GET, "/healing", history)
        .add("1.0", Method::GET, "/docker/healing", history)
        .add("1.2", Method::GET, "/healing/node", config_read)
        .add("1.2", Method::POST, "/healing/node", config_update)
        .add("1.2", Method::DELETE, "/healing/node", config_delete)
        .add("1.0", Method::GET, "/docker/healing/node", config_read)
        .add("1.0", Method::POST, "/docker/healing/node", config_update)
        .add("1.0", Method::DELETE, "/docker/healing/node", config_delete)
}

const FIELDS: [&str; 3] = ["Enabled", "MaxTimeSinceSuccess", "MaxUnresponsiveTime"];

/// A pool's config as tsuru shows it: its own values, else the default's
/// (`<Field>Inherited: true`).
fn shown(own: &Value, default: &Value, is_default: bool) -> Value {
    let mut out = serde_json::Map::new();
    for f in FIELDS {
        let mine = own.get(f).filter(|v| !v.is_null());
        let inherited = mine.is_none() && !is_default && default.get(f).is_some_and(|v| !v.is_null());
        let value = mine.or_else(|| (!is_default).then(|| default.get(f)).flatten()).cloned().unwrap_or(Value::Null);
        out.insert(f.to_string(), value);
        out.insert(format!("{f}Inherited"), Value::Bool(inherited));
    }
    Value::Object(out)
}

async fn config_read(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let readable = readable_pools(&caller, "healing.read")?;
    let settings = server.store.pool_settings(HEALING).await?;
    let default = settings.get("").cloned().unwrap_or(Value::Null);
    let mut out = serde_json::Map::new();
    out.insert(String::new(), shown(&default, &Value::Null, true));
    for (pool, own) in settings.iter().filter(|(p, _)| !p.is_empty() && shows(p, &readable)) {
        out.insert(pool.clone(), shown(own, &default, false));
    }
    Ok(super::json(StatusCode::OK, &out))
}

/// `POST` with key `pool` and fields `Enabled`, `MaxTimeSinceSuccess`,
/// `MaxUnresponsiveTime`: the given ones are set.
async fn config_update(State(server): AppState, Caller(caller): Caller, ip: super::ClientIp, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("healing.update", &pool_contexts(&pool))?;
    let mut value = server.store.pool_settings(HEALING).await?.remove(&pool).unwrap_or_else(|| json!({}));
    if let Some(enabled) = params.optional_bool("Enabled")? {
        value["Enabled"] = Value::Bool(enabled);
    }
    for f in ["MaxTimeSinceSuccess", "MaxUnresponsiveTime"] {
        if let Some(raw) = params.field(f).filter(|v| !v.is_empty()) {
            let secs: i64 = raw.parse().ok().filter(|n| *n >= 0).ok_or_else(|| ApiError::bad_request(format!("invalid {f}: {raw:?}")))?;
            value[f] = json!(secs);
        }
    }
    let event = super::events::record(&server, Some(&caller), &ip, "healing.update", pool_target(&pool), super::events::request_data(&params, &[])).await?;
    let result = server.store.set_pool_setting(HEALING, &pool, Some(&value)).await.map(|()| empty(StatusCode::OK)).map_err(ApiError::from);
    event.done(result).await
}

/// `DELETE ?pool=&name=<field>...`: removes those fields (every one without
/// `name`), so the pool inherits them again.
async fn config_delete(State(server): AppState, Caller(caller): Caller, ip: super::ClientIp, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("healing.delete", &pool_contexts(&pool))?;
    let names = params.all("name");
    let mut value = server.store.pool_settings(HEALING).await?.remove(&pool).unwrap_or_else(|| json!({}));
    if let Some(obj) = value.as_object_mut() {
        if names.is_empty() {
            obj.clear();
        }
        for n in &names {
            obj.remove(n);
        }
    }
    let event = super::events::record(&server, Some(&caller), &ip, "healing.delete", pool_target(&pool), super::events::request_data(&params, &[])).await?;
    let keep = value.as_object().is_some_and(|o| !o.is_empty());
    let result = server.store.set_pool_setting(HEALING, &pool, keep.then_some(&value)).await.map(|()| empty(StatusCode::OK)).map_err(ApiError::from);
    event.done(result).await
}

/// Newest repairs shown.
const HISTORY: i64 = 200;

async fn history(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    caller.require("healing.read", &[])?;
    let filter = params.get("filter").unwrap_or_default();
    let entries: Vec<Value> = match filter.as_str() {
        // Nodes from an IaaS, replaced (or not) by node healing.
        "node" => {
            let q = EventQuery { kind_names: vec![HEALER.into()], target_type: Some("node".into()), ..EventQuery::default() };
            server.store.events(&q, 0, HISTORY).await?.iter().filter(|e| !e.running).map(node_entry).collect()
        }
        "" | "container" => {
            // Repairs only: a round's own (app lock) event is not one.
            let q = EventQuery { kind_names: vec![HEALER.into()], target_type: Some("container".into()), ..EventQuery::default() };
            server.store.events(&q, 0, HISTORY).await?.iter().map(entry).collect()
        }
        _ => return Err(ApiError::bad_request("invalid filter, possible values are 'node' or 'container'")),
    };
    Ok(if entries.is_empty() { empty(StatusCode::NO_CONTENT) } else { json_list(&entries) })
}

/// tsuru's node healing event: the failing node and the one made in its place.
fn node_entry(e: &crate::store::EventRecord) -> Value {
    let data: Value = serde_json::from_str(&e.start_custom).unwrap_or(Value::Null);
    let text = |k: &str| data[k].as_str().unwrap_or_default().to_string();
    let none = json!({"ID": "", "AppName": "", "HostAddr": ""});
    json!({
        "ID": e.id,
        "StartTime": time_json(e.start_time),
        "EndTime": time_json(e.end_time),
        "Action": "node-healing",
        "Reason": text("reason"),
        "Extra": null,
        "FailingNode": {"Address": text("failingNode")},
        "CreatedNode": {"Address": text("createdNode")},
        "FailingContainer": none,
        "CreatedContainer": none,
        "Successful": e.error.is_empty(),
        "Error": e.error,
    })
}

/// tsuru's healing event: the failing and the created unit, with their nodes.
fn entry(e: &crate::store::EventRecord) -> Value {
    let data: Value = serde_json::from_str(&e.start_custom).unwrap_or(Value::Null);
    let text = |k: &str| data[k].as_str().unwrap_or_default().to_string();
    let container = |unit: String, node: String| json!({"ID": unit, "AppName": text("app"), "HostAddr": node});
    json!({
        "ID": e.id,
        "StartTime": time_json(e.start_time),
        "EndTime": time_json(e.end_time),
        "Action": "container-healing",
        "Reason": text("reason"),
        "Extra": null,
        "FailingNode": {"Address": text("failingNode")},
        "CreatedNode": {"Address": text("createdNode")},
        "FailingContainer": container(text("failingUnit"), text("failingNode")),
        "CreatedContainer": container(text("createdUnit"), text("createdNode")),
        "Successful": e.error.is_empty(),
        "Error": e.error,
    })
}
