//! Node containers (`/1.2/nodecontainers`, API-NOTES §2.17): a container
//! torii keeps on every Docker node, configured per pool (`""` = the base
//! every pool extends). Runs through `crate::docker::nodecontainers`.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;

use super::events::{record, request_data};
use super::params::Params;
use super::pools::{pool_contexts, readable_pools, shows};
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::docker::nodecontainers::ensure_all;
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::server::Server;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.2", Method::GET, "/nodecontainers", list)
        .add("1.2", Method::POST, "/nodecontainers", create)
        .add("1.2", Method::GET, "/nodecontainers/{name}", info)
        .add("1.2", Method::POST, "/nodecontainers/{name}", update)
        .add("1.2", Method::DELETE, "/nodecontainers/{name}", remove)
        .add("1.2", Method::POST, "/nodecontainers/{name}/upgrade", upgrade)
        .add("1.0", Method::GET, "/docker/nodecontainers", list)
        .add("1.0", Method::POST, "/docker/nodecontainers", create)
        .add("1.0", Method::GET, "/docker/nodecontainers/{name}", info)
        .add("1.0", Method::POST, "/docker/nodecontainers/{name}", update)
        .add("1.0", Method::DELETE, "/docker/nodecontainers/{name}", remove)
        .add("1.0", Method::POST, "/docker/nodecontainers/{name}/upgrade", upgrade)
}

/// name → pool → config, as stored.
async fn all(server: &Server) -> ApiResult<BTreeMap<String, BTreeMap<String, Value>>> {
    let mut out: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (name, pool, config) in server.store.node_containers().await? {
        out.entry(name).or_default().insert(pool, config);
    }
    Ok(out)
}

/// The configs the caller may read (`nodecontainer.read`).
fn visible(pools: BTreeMap<String, Value>, readable: &Option<Vec<String>>) -> BTreeMap<String, Value> {
    pools.into_iter().filter(|(p, _)| shows(p, readable)).collect()
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let readable = readable_pools(&caller, "nodecontainer.read")?;
    let mut out = Vec::new();
    for (name, pools) in all(&server).await? {
        let shown = visible(pools, &readable);
        if !shown.is_empty() {
            out.push(json!({"Name": name, "ConfigPools": shown}));
        }
    }
    Ok(if out.is_empty() { empty(StatusCode::NO_CONTENT) } else { json(StatusCode::OK, &out) })
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let readable = readable_pools(&caller, "nodecontainer.read")?;
    let pools = all(&server).await?.remove(&name).ok_or_else(|| ApiError::not_found(format!("node container {name:?} not found")))?;
    Ok(json(StatusCode::OK, &visible(pools, &readable)))
}

/// The config a request describes: `Name`, `PinnedImage`, `Disabled`,
/// `Config.Image`, `Config.Env`, `Config.Cmd` (form fields or JSON).
fn config_from(params: &Params, name: &str) -> ApiResult<Value> {
    let json_config = params.json_field("config").cloned().unwrap_or(Value::Null);
    let from_json = |key: &str| json_config.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))).map(|(_, v)| v.clone());
    let list = |key: &str| -> Vec<String> {
        match from_json(key) {
            Some(Value::Array(items)) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
            _ => params.field_list(&format!("config.{key}")),
        }
    };
    let image = from_json("image").and_then(|v| v.as_str().map(str::to_string)).or_else(|| params.nested("config", "image")).unwrap_or_default();
    let disabled = match params.field("disabled").filter(|d| !d.is_empty()) {
        None => Value::Null,
        Some(raw) => Value::Bool(super::params::parse_bool(&raw).ok_or_else(|| ApiError::bad_request(format!("invalid Disabled: {raw:?}")))?),
    };
    Ok(json!({
        "Name": name,
        "PinnedImage": params.field("pinnedimage").unwrap_or_default(),
        "Disabled": disabled,
        "Config": {"Image": image, "Env": list("env"), "Cmd": list("cmd")},
        "HostConfig": {},
    }))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("nodecontainer.create", &pool_contexts(&pool))?;
    let name = params.field("name").unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("node container config name cannot be empty"));
    }
    if !super::names::valid(&name) {
        return Err(ApiError::bad_request("Invalid node container name, should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter."));
    }
    let config = config_from(&params, &name)?;
    if pool.is_empty() && config["Config"]["Image"].as_str().unwrap_or_default().is_empty() {
        return Err(ApiError::bad_request("node container config image cannot be empty"));
    }
    if !pool.is_empty() && server.store.pool(&pool).await?.is_none() {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    if all(&server).await?.get(&name).is_some_and(|pools| pools.contains_key(&pool)) {
        // tsuru reports it as a validation error (400), as its spec documents.
        return Err(ApiError::bad_request(format!("node container {name:?} already exists")));
    }
    save(&server, &caller, &ip, "nodecontainer.create", &name, &pool, &config, &params).await
}

/// Stores `config` as `name`'s for `pool` under an event of `kind`, then
/// brings the containers on the nodes in line (a node that fails is retried
/// by the next change; the config stays).
#[allow(clippy::too_many_arguments)]
async fn save(
    server: &std::sync::Arc<Server>,
    caller: &crate::auth::Identity,
    ip: &ClientIp,
    kind: &str,
    name: &str,
    pool: &str,
    config: &Value,
    params: &Params,
) -> ApiResult<Response> {
    let event = record(server, Some(caller), ip, kind, Target::new("node-container", name), request_data(params, &[])).await?;
    let result = async {
        server.store.set_node_container(name, pool, config).await?;
        if let Err(e) = ensure_all(&server.docker, &server.store, Some(name), None, false).await {
            tracing::warn!(name, error = %e, "node container: not in line on every node");
        }
        Ok(empty(StatusCode::OK))
    }
    .await;
    event.done(result).await
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("nodecontainer.update", &pool_contexts(&pool))?;
    let existing = all(&server).await?.remove(&name).ok_or_else(|| ApiError::not_found(format!("node container {name:?} not found")))?;
    let mut config = config_from(&params, &name)?;
    // Fields the request leaves out keep their stored values.
    if let Some(old) = existing.get(&pool) {
        for (outer, inner) in [("Config", "Image"), ("Config", "Env"), ("Config", "Cmd")] {
            let empty = match &config[outer][inner] {
                Value::String(s) => s.is_empty(),
                Value::Array(a) => a.is_empty(),
                _ => true,
            };
            if empty {
                config[outer][inner] = old[outer][inner].clone();
            }
        }
        for key in ["PinnedImage", "Disabled"] {
            if config[key].is_null() || config[key] == "" {
                config[key] = old[key].clone();
            }
        }
    }
    save(&server, &caller, &ip, "nodecontainer.update", &name, &pool, &config, &params).await
}

/// `DELETE ?pool=&kill=true`: drops the config (of `pool`, or every one);
/// with `kill`, the containers go too (x-json-stream).
async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("nodecontainer.delete", &pool_contexts(&pool))?;
    let kill = params.get("kill").and_then(|k| super::params::parse_bool(&k)).unwrap_or(false);
    if !all(&server).await?.get(&name).is_some_and(|pools| pools.contains_key(&pool)) {
        return Err(ApiError::not_found(format!("node container {name:?} not found")));
    }
    let event = record(&server, Some(&caller), &ip, "nodecontainer.delete", Target::new("node-container", &name), request_data(&params, &[])).await?;
    if let Err(e) = server.store.delete_node_container(&name, &pool).await {
        return event.done(Err(ApiError::from(e))).await;
    }
    if !kill {
        return event.done(Ok(empty(StatusCode::OK))).await;
    }
    Ok(stream_ensure(server, event, name, false))
}

/// An x-json-stream that brings `name`'s containers in line on every node
/// (`recreate`: new ones everywhere), then ends `event`.
fn stream_ensure(server: std::sync::Arc<Server>, event: crate::events::RunningEvent, name: String, recreate: bool) -> Response {
    json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = ensure_all(&server.docker, &server.store, Some(&name), None, recreate).await;
        if let Ok(lines) = &result {
            for line in lines {
                w.message(line).await;
            }
        }
        event.done(result.map(|_| ())).await
    })
}

/// `POST /{name}/upgrade`: recreates the containers on every node (a new
/// image under the same tag, or a config change).
async fn upgrade(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("nodecontainer.update.upgrade", &pool_contexts(&pool))?;
    if !all(&server).await?.contains_key(&name) {
        return Err(ApiError::not_found(format!("node container {name:?} not found")));
    }
    let event = record(&server, Some(&caller), &ip, "nodecontainer.update.upgrade", Target::new("node-container", &name), request_data(&params, &[])).await?;
    Ok(stream_ensure(server, event, name, true))
}
