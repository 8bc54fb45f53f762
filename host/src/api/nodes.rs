//! Docker nodes (`/1.2/node`, API-NOTES §2.17): the engines container apps
//! run on. A node is a Docker engine endpoint (`unix:///path` or
//! `tcp://127.0.0.1:port`) in one pool whose provisioner is granted
//! `containers`; the provisioner plugin schedules units on the pool's nodes.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;
use std::sync::Arc;

use super::apps::{UnitJson, unit_json, units_of};
use super::provision::under_app_lock;
use super::events::{record, request_data};
use super::params::Params;
use super::pools::{pool_contexts, pool_ctx, pool_target};
use super::stream::{KEEPALIVE, json_stream, text_stream};
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_list, time_json};
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::server::Server;
use crate::store::{AppColumn, NODE_DISABLED, NODE_READY, NODE_REMOVING, NodeRecord, now_millis};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.2", Method::GET, "/node", list)
        .add("1.2", Method::POST, "/node", add)
        .add("1.2", Method::PUT, "/node", update)
        .add("1.2", Method::DELETE, "/node/{*address}", remove)
        .add("1.2", Method::GET, "/node/{*address}", read_path)
        .torii(Method::GET, "/1.6/node/{*address}", read_path)
        .add("1.0", Method::GET, "/docker/node", list)
        .add("1.0", Method::POST, "/docker/node", add)
        .add("1.0", Method::PUT, "/docker/node", update)
        .add("1.0", Method::DELETE, "/docker/node/{*address}", remove)
        .add("1.0", Method::GET, "/docker/node/{*address}", read_path)
        .add("1.3", Method::POST, "/node/rebalance", rebalance)
        .add("1.0", Method::POST, "/node/status", node_status)
        .add("1.0", Method::POST, "/docker/containers/rebalance", rebalance)
        .add("1.0", Method::POST, "/docker/container/{id}/move", move_one)
        .add("1.0", Method::POST, "/docker/containers/move", move_all)
}

/// tsuru's node spec.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct NodeJson {
    address: String,
    #[serde(rename = "IaaSID")]
    iaas_id: String,
    metadata: BTreeMap<String, String>,
    status: String,
    pool: String,
    provisioner: String,
}

fn node_json(n: &NodeRecord, provisioner: &str) -> NodeJson {
    let mut metadata = n.metadata.clone();
    metadata.insert("pool".into(), n.pool.clone());
    NodeJson {
        address: n.address.clone(),
        iaas_id: n.iaas_id.clone(),
        metadata,
        status: n.status.clone(),
        pool: n.pool.clone(),
        provisioner: provisioner.to_string(),
    }
}

/// The provisioner of `pool` when it runs units on nodes (is granted
/// `containers`); a 400 naming the pool otherwise.
async fn node_provisioner(server: &Server, pool: &str) -> ApiResult<String> {
    let record = server.store.pool(pool).await?.ok_or_else(|| ApiError::not_found("Pool does not exist."))?;
    let name = server.config.pool_provisioner(&record.provisioner).to_string();
    if !server.config.uses_nodes(&name) {
        return Err(ApiError::bad_request(format!("pool {pool:?} is provisioned by {name:?}, which runs no units on docker nodes")));
    }
    Ok(name)
}

async fn provisioner_name(server: &Server, pool: &str) -> String {
    match server.store.pool(pool).await {
        Ok(Some(p)) => server.config.pool_provisioner(&p.provisioner).to_string(),
        _ => String::new(),
    }
}

/// `GET /1.2/node`: the nodes of the pools the caller may read (filter
/// `Metadata.<key>=<value>`), and the IaaS machines of the IaaSes it may read.
async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let filter = params.field_map("metadata");
    let mut nodes = Vec::new();
    for n in server.store.nodes().await? {
        if !caller.allows("node.read", &[pool_ctx(&n.pool)]) {
            continue;
        }
        let provisioner = provisioner_name(&server, &n.pool).await;
        let spec = node_json(&n, &provisioner);
        if filter.iter().all(|(k, v)| spec.metadata.get(k) == Some(v)) {
            nodes.push(spec);
        }
    }
    let machines: Vec<_> = super::iaas::visible_machines(&server, &caller).await?.iter().map(super::iaas::machine_json).collect();
    if nodes.is_empty() && machines.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    Ok(json(StatusCode::OK, &json!({"nodes": nodes, "machines": machines})))
}

/// `POST /1.2/node`: registers an engine (`Register=true`,
/// `Metadata.address`, `Metadata.pool`, other metadata kept). Answers 201 at
/// once; checks that need the engine report in the stream.
async fn add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let metadata: std::collections::BTreeMap<String, String> = params.field_map("metadata").into_iter().collect();
    let register = params.optional_bool("register")?.unwrap_or(false);
    // A template fills what the request leaves out (its pool too), as tsuru's.
    let mut metadata = if metadata.contains_key("template") {
        crate::iaas::expand(&server, metadata.get("template").map(String::as_str), metadata.clone()).await?
    } else {
        metadata
    };
    let pool = metadata.get("pool").cloned().unwrap_or_default();
    if pool.is_empty() {
        return Err(ApiError::bad_request("pool is required"));
    }
    caller.require("node.create", &[pool_ctx(&pool)])?;
    let provisioner = node_provisioner(&server, &pool).await?;
    let iaas_id = metadata.remove("iaas-id").unwrap_or_default();
    if !iaas_id.is_empty() {
        check_iaas_id(&server, &caller, &iaas_id, register.then(|| metadata.get("address").cloned().unwrap_or_default())).await?;
    }
    let wait = wait_limit(&params)?;
    let address = if register {
        let address = metadata.remove("address").unwrap_or_default();
        if address.is_empty() {
            return Err(ApiError::bad_request("address is required to register a node"));
        }
        Some(address)
    } else {
        None
    };
    // Without Register the machine comes from an IaaS: the one named, or the only one.
    let iaas = match (&address, metadata.get("iaas").filter(|i| !i.is_empty())) {
        (Some(_), _) => None,
        (None, Some(name)) => Some(crate::iaas::driver(&server, name)?.name().to_string()),
        (None, None) => match server.iaases.keys().collect::<Vec<_>>().as_slice() {
            [only] => Some((*only).clone()),
            [] => {
                return Err(ApiError::bad_request(
                    "no IaaS is configured to create machines: register a running Docker engine with Register=true and Metadata.address",
                ));
            }
            many => {
                let names: Vec<&str> = many.iter().map(|s| s.as_str()).collect();
                return Err(ApiError::bad_request(format!("name the IaaS to create the machine with (Metadata.iaas): one of {}", names.join(", "))));
            }
        },
    };
    let data = request_data(&params, &[]);
    let target = address.clone().unwrap_or_default();
    let event = record(&server, Some(&caller), &ip, "node.create", Target::new("node", &target), data).await?;
    Ok(json_stream(StatusCode::CREATED, KEEPALIVE, move |w| async move {
        let result = async {
            let mut machine = None;
            let address = match (address, iaas) {
                (Some(address), _) => crate::docker::check_address(&address).map_err(|e| e.to_string())?,
                (None, iaas) => {
                    let iaas = iaas.unwrap_or_default();
                    metadata.insert("iaas".into(), iaas.clone());
                    let made = crate::iaas::create(&server, &iaas, &metadata, &pool, &w).await.map_err(|e| e.message)?;
                    let waited = crate::iaas::wait_engine(&server, &made, wait, &w).await;
                    machine = Some(made);
                    match waited {
                        Ok(address) => address,
                        Err(e) => return Err(give_back(&server, machine.take(), e.message, &w).await),
                    }
                }
            };
            let iaas_id = machine.as_ref().map(|m| m.id.clone()).unwrap_or(iaas_id);
            let added = crate::iaas::register(&server, &w, &provisioner, address, pool, metadata, iaas_id).await.map(|_| ());
            match added {
                Ok(()) => Ok(()),
                Err(e) => Err(give_back(&server, machine, e, &w).await),
            }
        }
        .await;
        event.done(result).await
    }))
}

/// A machine id a registered node claims to run on (`Metadata.iaas-id`):
/// a recorded machine the caller holds `machine` on, whose engine is the
/// node's address, that no other node runs on. Otherwise a caller could tie
/// its node to another team's machine and have it destroyed with the node.
async fn check_iaas_id(server: &Server, caller: &crate::auth::Identity, id: &str, address: Option<String>) -> ApiResult<()> {
    let bad = |why: &str| ApiError::bad_request(format!("iaas-id {id:?}: {why}"));
    let Some(address) = address else { return Err(bad("only a registered node names its machine")) };
    let machine = server.store.machine(id).await?.ok_or_else(|| bad("no such machine"))?;
    caller.require("machine", &[crate::rbac::Context::new(crate::rbac::ContextType::Iaas, &machine.iaas)])?;
    let canonical = crate::docker::check_address(&address).unwrap_or(address);
    if crate::docker::check_address(&machine.engine_address()).ok().as_deref() != Some(canonical.as_str()) {
        return Err(bad("the machine's engine is not at the node's address"));
    }
    if server.store.node_of_machine(id).await?.is_some() {
        return Err(bad("another node runs on that machine"));
    }
    Ok(())
}

/// How long a node added through an IaaS may take to answer: `WaitTO`
/// (seconds, or a Go duration such as `90s` or `2m`), 120 s by default, at most an hour.
fn wait_limit(params: &Params) -> ApiResult<std::time::Duration> {
    let Some(raw) = params.field("waitto").filter(|v| !v.is_empty()) else { return Ok(std::time::Duration::from_secs(120)) };
    let secs = raw
        .parse::<u64>()
        .ok()
        .or_else(|| raw.strip_suffix('s').and_then(|n| n.parse::<u64>().ok()))
        .or_else(|| raw.strip_suffix('m').and_then(|n| n.parse::<u64>().ok()).map(|m| m * 60))
        .ok_or_else(|| ApiError::bad_request(format!("invalid WaitTO {raw:?}: use seconds, or a duration such as 90s or 2m")))?;
    Ok(std::time::Duration::from_secs(secs.clamp(1, 3600)))
}

/// A machine made for a node that was not added goes again; the error,
/// with what became of the machine.
async fn give_back(server: &Server, machine: Option<crate::store::MachineRecord>, error: String, w: &super::stream::StreamWriter) -> String {
    let Some(machine) = machine else { return error };
    w.message(&format!(" ---> destroying machine {}: the node was not added\n", machine.id)).await;
    match crate::iaas::destroy(server, &machine).await {
        Ok(()) => error,
        Err(e) => format!("{error} (and machine {} could not be destroyed: {})", machine.id, e.message),
    }
}

/// `PUT /1.2/node`: `Address`, `Metadata.<key>` (`pool` moves the node, an
/// empty value removes a key), `Enable` / `Disable` (the scheduler avoids a
/// disabled node).
async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let address = params.field("address").unwrap_or_default();
    if address.is_empty() {
        return Err(ApiError::bad_request("address is required"));
    }
    let enable = params.optional_bool("enable")?.unwrap_or(false);
    let disable = params.optional_bool("disable")?.unwrap_or(false);
    if enable && disable {
        return Err(ApiError::bad_request("A node can't be enabled and disabled simultaneously."));
    }
    let address = crate::docker::check_address(&address).unwrap_or(address);
    let mut node = server.store.node(&address).await?.ok_or_else(|| ApiError::not_found("Node not found."))?;
    caller.require("node.update", &[pool_ctx(&node.pool)])?;
    let mut metadata = params.field_map("metadata");
    if let Some(pool) = metadata.remove("pool").filter(|p| !p.is_empty() && *p != node.pool) {
        caller.require("node.update", &[pool_ctx(&pool)])?;
        node_provisioner(&server, &pool).await?;
        node.pool = pool;
    }
    for (k, v) in metadata {
        if v.is_empty() {
            node.metadata.remove(&k);
        } else {
            node.metadata.insert(k, v);
        }
    }
    if enable {
        node.status = NODE_READY.into();
    } else if disable {
        node.status = NODE_DISABLED.into();
    }
    let event = record(&server, Some(&caller), &ip, "node.update", Target::new("node", &address), request_data(&params, &[])).await?;
    let result = server.store.update_node(&node).await.map(|()| empty(StatusCode::OK)).map_err(ApiError::from);
    event.done(result).await
}

/// `DELETE /1.2/node/{address}`: unless `no-rebalance=true`, the node's units
/// move to the pool's other nodes first (each app of the pool is applied
/// again with the node marked as leaving). Plain-text progress.
async fn remove(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(address): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let address = crate::docker::check_address(&address).unwrap_or(address);
    let mut node = server.store.node(&address).await?.ok_or_else(|| ApiError::not_found("Node not found."))?;
    caller.require("node.delete", &[pool_ctx(&node.pool)])?;
    let rebalance = !params.get("no-rebalance").and_then(|v| super::params::parse_bool(&v)).unwrap_or(false);
    let remove_iaas = params.get("remove-iaas").and_then(|v| super::params::parse_bool(&v)).unwrap_or(false);
    let data = json!([
        {"name": "address", "value": address},
        {"name": "no-rebalance", "value": (!rebalance).to_string()},
        {"name": "remove-iaas", "value": remove_iaas.to_string()},
    ]);
    let event = record(&server, Some(&caller), &ip, "node.delete", Target::new("node", &address), data).await?;
    Ok(text_stream(KEEPALIVE, &[], move |out| async move {
        let result: Result<(), String> = async {
            if rebalance {
                node.status = NODE_REMOVING.into();
                server.store.update_node(&node).await.map_err(|e| e.to_string())?;
                for app in server.store.app_names_where(AppColumn::Pool, &node.pool).await.map_err(|e| e.to_string())? {
                    out.write(&format!("---- Moving the units of app {app:?} off {address} ----\n")).await;
                    under_app_lock(&server, &caller, &ip, "node.delete", &app, async |_| {
                        crate::apps::refresh(&server, &app, &out).await.map_err(|e| e.message)
                    })
                    .await?;
                }
            }
            server.store.remove_node(&address).await.map_err(|e| e.to_string())?;
            server.docker.forget(&address);
            out.write(&format!("Node {address} removed.\n")).await;
            if remove_iaas {
                // Its machine: by the node's IaaS id, else by its engine's address.
                let machine = if node.iaas_id.is_empty() { None } else { server.store.machine(&node.iaas_id).await.map_err(|e| e.to_string())? };
                match machine {
                    Some(m) => {
                        crate::iaas::destroy(&server, &m).await.map_err(|e| e.message)?;
                        out.write(&format!("Machine {} destroyed (IaaS {}).\n", m.id, m.iaas)).await;
                    }
                    None => {
                        out.write(&format!("No IaaS machine runs {address}: nothing to destroy.\n")).await;
                    }
                }
            }
            Ok(())
        }
        .await;
        if let Err(e) = event.done(result).await {
            // Units stay where they were: the node is usable again.
            if node.status == NODE_REMOVING {
                node.status = NODE_READY.into();
                let _ = server.store.update_node(&node).await;
            }
            out.write(&format!("Error: {e}\n")).await;
        }
    }))
}

/// `POST /1.3/node/rebalance`: spreads the units of the apps of a pool
/// (`MetadataFilter.pool`; all node pools without it; `AppFilter` narrows
/// to some apps) evenly over its ready nodes; `Dry` only says what it would move.
async fn rebalance(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let pool = params.field_map("metadatafilter").remove("pool").filter(|p| !p.is_empty());
    caller.require("node.update.rebalance", &pool_contexts(pool.as_deref().unwrap_or_default()))?;
    let only: Vec<String> = params.field_list("appfilter");
    let dry = params.optional_bool("dry")?.unwrap_or(false);
    let apps: Vec<String> = super::provision::node_apps(&server, pool.as_deref()).await?.into_iter().filter(|a| only.is_empty() || only.contains(a)).collect();
    let event = record(&server, Some(&caller), &ip, "node.update.rebalance", pool_target(pool.as_deref().unwrap_or_default()), request_data(&params, &[])).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            for app in &apps {
                under_app_lock(&server, &caller, &ip, "node.update.rebalance", app, async |record| {
                    let provisioner = crate::apps::provisioner_of(&server, &record).await.map_err(|e| e.message)?;
                    let desired = super::provision::desired(&server, app).await.map_err(|e| e.message)?;
                    let lines = provisioner.rebalance(desired, dry).await.map_err(|e| format!("app {app:?}: {e}"))?;
                    if !lines.is_empty() {
                        w.message(&format!("---- Rebalancing app {app:?} ----\n")).await;
                        for line in lines {
                            w.message(&line).await;
                        }
                        if !dry {
                            // The router gets the units' new addresses.
                            crate::apps::refresh(&server, app, &w).await.map_err(|e| e.message)?;
                        }
                    }
                    Ok(())
                })
                .await?;
            }
            w.message(if dry { "Units would be rebalanced as above.\n" } else { "Units successfully rebalanced!\n" }).await;
            Ok(())
        }
        .await;
        event.done(result).await
    }))
}

/// The app and unit a container id (or a prefix of it, or a unit name) names.
async fn find_unit(server: &Arc<Server>, id: &str) -> ApiResult<(Arc<crate::store::AppView>, crate::plugin::provisioner::Unit)> {
    for app in super::provision::node_apps(server, None).await? {
        let Some(view) = server.store.app_view(&app).await? else { continue };
        let units = units_of(server, &view).await.map_err(ApiError::internal)?;
        if let Some(u) = units.iter().find(|u| u.name == id || (id.len() >= 4 && u.id.starts_with(id))) {
            return Ok((view, u.clone()));
        }
    }
    Err(ApiError::not_found(format!("Container {id} not found")))
}

/// Moves `units` of `app` to `to` through its provisioner, under the app's
/// lock, into the stream.
#[allow(clippy::too_many_arguments)]
async fn move_units(
    server: &Arc<Server>,
    caller: &crate::auth::Identity,
    ip: &ClientIp,
    kind: &str,
    app: &str,
    units: Vec<String>,
    to: &str,
    w: &super::stream::StreamWriter,
) -> Result<(), String> {
    under_app_lock(server, caller, ip, kind, app, async |record| {
        let provisioner = crate::apps::provisioner_of(server, &record).await.map_err(|e| e.message)?;
        let desired = super::provision::desired(server, app).await.map_err(|e| e.message)?;
        for line in provisioner.move_units(desired, units, to).await.map_err(|e| format!("app {app:?}: {e}"))? {
            w.message(&line).await;
        }
        // The router gets the units' new addresses.
        crate::apps::refresh(server, app, w).await.map_err(|e| e.message)
    })
    .await
}

/// `POST /docker/container/{id}/move` (key `to`): one unit to another node.
async fn move_one(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(id): Path<String>, params: Params) -> ApiResult<Response> {
    let to = params.get("to").unwrap_or_default();
    if to.is_empty() {
        return Err(ApiError::bad_request(format!("Invalid params: id: {id} - to: ")));
    }
    let to = crate::docker::check_address(&to).unwrap_or(to);
    let target = server.store.node(&to).await?.ok_or_else(|| ApiError::not_found("Node not found."))?;
    let (view, unit) = find_unit(&server, &id).await?;
    caller.require("node.update.move.container", &[pool_ctx(&view.app.pool), pool_ctx(&target.pool)])?;
    let data = json!([{"name": "id", "value": id}, {"name": "to", "value": to}]);
    let event = record(&server, Some(&caller), &ip, "node.update.move.container", Target::new("container", &unit.id), data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            w.message(&format!("---- Moving unit {} of app {:?} to {to} ----\n", unit.name, view.app.name)).await;
            move_units(&server, &caller, &ip, "node.update.move.container", &view.app.name, vec![unit.id.clone()], &to, &w).await
        }
        .await;
        event.done(result).await
    }))
}

/// `POST /docker/containers/move` (keys `from`, `to`): every unit on one node to another.
async fn move_all(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let (from, to) = (params.get("from").unwrap_or_default(), params.get("to").unwrap_or_default());
    if from.is_empty() || to.is_empty() {
        return Err(ApiError::bad_request(format!("Invalid params: from: {from} - to: {to}")));
    }
    let (from, to) = (crate::docker::check_address(&from).unwrap_or(from), crate::docker::check_address(&to).unwrap_or(to));
    let source = server.store.node(&from).await?.ok_or_else(|| ApiError::not_found("Node not found."))?;
    let target = server.store.node(&to).await?.ok_or_else(|| ApiError::not_found("Node not found."))?;
    caller.require("node.update.move.containers", &[pool_ctx(&source.pool), pool_ctx(&target.pool)])?;
    let data = json!([{"name": "from", "value": from}, {"name": "to", "value": to}]);
    let event = record(&server, Some(&caller), &ip, "node.update.move.containers", Target::new("node", &from), data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            for app in server.store.app_names_where(AppColumn::Pool, &source.pool).await.map_err(|e| e.to_string())? {
                let Some(view) = server.store.app_view(&app).await.map_err(|e| e.to_string())? else { continue };
                let units: Vec<String> = units_of(&server, &view).await?.iter().filter(|u| u.node == from).map(|u| u.id.clone()).collect();
                if !units.is_empty() {
                    w.message(&format!("---- Moving {} units of app {app:?} from {from} to {to} ----\n", units.len())).await;
                    move_units(&server, &caller, &ip, "node.update.move.containers", &app, units, &to, &w).await?;
                }
            }
            w.message("Containers moved successfully!\n").await;
            Ok(())
        }
        .await;
        event.done(result).await
    }))
}

/// `GET /1.2/node/{path}`: `apps/{app}/containers` (units of an app),
/// `{address}/containers` (units on a node), else `{address}`: node info.
async fn read_path(State(server): AppState, Caller(caller): Caller, Path(path): Path<String>) -> ApiResult<Response> {
    if let Some(app) = path.strip_prefix("apps/").and_then(|p| p.strip_suffix("/containers")) {
        return units_by_app(&server, &caller, app).await;
    }
    if let Some(address) = path.strip_suffix("/containers") {
        let node = node_for(&server, &caller, address).await?;
        let units = units_on(&server, &node).await?;
        return Ok(if units.is_empty() { empty(StatusCode::NO_CONTENT) } else { json_list(&units) });
    }
    let node = node_for(&server, &caller, &path).await?;
    let units = units_on(&server, &node).await?;
    let now = time_json(now_millis());
    let check = match server.docker.ping(&node.address).await {
        Ok(()) => json!({"Name": "docker", "Err": "", "Successful": true}),
        Err(e) => json!({"Name": "docker", "Err": e.to_string(), "Successful": false}),
    };
    let provisioner = provisioner_name(&server, &node.pool).await;
    Ok(json(
        StatusCode::OK,
        &json!({
            "node": node_json(&node, &provisioner),
            "status": {"Address": node.address, "Checks": [{"Time": now, "Checks": [check]}], "LastSuccess": now, "LastUpdate": now},
            "units": units,
        }),
    ))
}

/// The node at `address` once the caller may read its pool.
async fn node_for(server: &Server, caller: &crate::auth::Identity, address: &str) -> ApiResult<NodeRecord> {
    let address = crate::docker::check_address(address).unwrap_or_else(|_| address.to_string());
    let node = server.store.node(&address).await?.ok_or_else(|| ApiError::not_found("Node not found."))?;
    caller.require("node.read", &[pool_ctx(&node.pool)])?;
    Ok(node)
}

/// The units the provisioners report on `node`.
async fn units_on(server: &Arc<Server>, node: &NodeRecord) -> ApiResult<Vec<UnitJson>> {
    let mut out = Vec::new();
    for app in server.store.app_names_where(AppColumn::Pool, &node.pool).await? {
        let Some(view) = server.store.app_view(&app).await? else { continue };
        let units = units_of(server, &view).await.map_err(ApiError::internal)?;
        out.extend(units.iter().filter(|u| u.node == node.address).map(|u| unit_json(&view, u)));
    }
    Ok(out)
}

async fn units_by_app(server: &Arc<Server>, caller: &crate::auth::Identity, app: &str) -> ApiResult<Response> {
    let view = super::apps::view_of(server, app).await?;
    caller.require("app.read", &super::apps::app_contexts(&view.app))?;
    let units = units_of(server, &view).await.map_err(ApiError::internal)?;
    let units: Vec<UnitJson> = units.iter().map(|u| unit_json(&view, u)).collect();
    Ok(if units.is_empty() { empty(StatusCode::NO_CONTENT) } else { json_list(&units) })
}

/// `POST /node/status`: in tsuru, only its internal app `tsr` (the node
/// agent) may report units' statuses; every other token gets this 403.
/// torii's `tsr` token sends logs only (`GET /logs`): the docker
/// provisioner reads its containers' states from the engines itself, so no
/// token sets them here.
async fn node_status(Caller(_caller): Caller) -> ApiResult<Response> {
    Err(ApiError::forbidden_with("this token is not allowed to execute this action"))
}
