//! `/iaas/machines` and `/iaas/templates` (API-NOTES §2.17): the machines
//! IaaS drivers made, and the named parameter sets machines are made from.
//! torii adds `POST /torii/v1/iaas/machines` (a machine from a template and
//! parameters, no node registered: capacity made ahead) and `GET
//! /torii/v1/iaas/machines/{id}` (the driver's description now).
//! Lists show what the caller may read (`machine.read` /
//! `machine.template.read` per IaaS); changes need the permission on the
//! machine's or template's IaaS and are `iaas` events.

use super::events::{record_allowed, request_data};
use super::params::{Params, parse_bool};
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{MachineRecord, TemplateRecord};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/iaas/machines", machines)
        .add("1.0", Method::DELETE, "/iaas/machines/{id}", destroy_machine)
        .add("1.0", Method::GET, "/iaas/templates", templates)
        .add("1.0", Method::POST, "/iaas/templates", create_template)
        .add("1.0", Method::PUT, "/iaas/templates/{name}", update_template)
        .add("1.0", Method::DELETE, "/iaas/templates/{name}", destroy_template)
        .torii(Method::POST, "/torii/v1/iaas/machines", create_machine)
        .torii(Method::GET, "/torii/v1/iaas/machines/{id}", describe_machine)
}

/// `POST /torii/v1/iaas/machines`: fields `template`, `iaas` and any
/// parameters (`key=value`). tsuru has no permission to create a machine
/// alone (its machines come with nodes), so the caller must hold `machine`
/// itself (every machine permission) on the IaaS; the event is a
/// `machine.create`. Answers the machine (201).
async fn create_machine(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let mut given: BTreeMap<String, String> = BTreeMap::new();
    for (k, v) in params.pairs() {
        given.insert(k, v);
    }
    if given.len() > MAX_DATA {
        return Err(ApiError::bad_request(format!("a machine takes at most {MAX_DATA} parameters")));
    }
    let template = given.get("template").cloned();
    // A template is read only by who may use its IaaS.
    if let Some(t) = template.as_deref().filter(|t| !t.is_empty()) {
        let found = server.store.template(t).await?.ok_or_else(|| ApiError::bad_request(format!("template {t:?} not found")))?;
        caller.require("machine", &[iaas_ctx(&found.iaas)])?;
    }
    let wanted = crate::iaas::expand(&server, template.as_deref(), given).await?;
    let iaas = wanted.get("iaas").cloned().filter(|i| !i.is_empty()).ok_or_else(|| ApiError::bad_request("name the IaaS (iaas=) or a template"))?;
    crate::iaas::driver(&server, &iaas)?;
    caller.require("machine", &[iaas_ctx(&iaas)])?;
    let event = iaas_event(&server, &caller, &ip, "machine.create", &iaas, request_data(&params, &[])).await?;
    let result = crate::iaas::create(&server, &iaas, &wanted, "", &crate::apps::Quiet).await.map(|m| json(StatusCode::CREATED, &machine_json(&m)));
    event.done(result).await
}

/// `GET /torii/v1/iaas/machines/{id}`: the driver's description (status,
/// address now), with the parameters it was made from.
async fn describe_machine(State(server): AppState, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let machine = server.store.machine(&id).await?.ok_or_else(|| ApiError::not_found("machine not found"))?;
    caller.require("machine.read", &[iaas_ctx(&machine.iaas)])?;
    let now = crate::iaas::driver(&server, &machine.iaas)?.describe(&id).await?;
    let described = MachineRecord { status: now.status, address: now.address, port: i64::from(now.port), protocol: now.protocol, ..machine };
    Ok(json(StatusCode::OK, &machine_json(&described)))
}

fn iaas_ctx(iaas: &str) -> Context {
    Context::new(ContextType::Iaas, iaas)
}

#[derive(Serialize)]
pub(super) struct MachineJson {
    #[serde(rename = "Id")]
    id: String,
    #[serde(rename = "Iaas")]
    iaas: String,
    #[serde(rename = "Status")]
    status: String,
    #[serde(rename = "Address")]
    address: String,
    #[serde(rename = "Port")]
    port: i64,
    #[serde(rename = "Protocol")]
    protocol: String,
    #[serde(rename = "CreationParams")]
    creation_params: BTreeMap<String, String>,
}

pub(super) fn machine_json(m: &MachineRecord) -> MachineJson {
    MachineJson {
        id: m.id.clone(),
        iaas: m.iaas.clone(),
        status: m.status.clone(),
        address: m.address.clone(),
        port: m.port,
        protocol: m.protocol.clone(),
        creation_params: m.creation_params.clone(),
    }
}

#[derive(Serialize)]
struct DataJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Value")]
    value: String,
}

#[derive(Serialize)]
struct TemplateJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "IaaSName")]
    iaas: String,
    #[serde(rename = "Data")]
    data: Vec<DataJson>,
}

/// Whether the caller holds `scheme` on `iaas` (globally or for that IaaS).
fn may(caller: &Identity, scheme: &str, iaas: &str) -> bool {
    match caller.grants.contexts_for(scheme, ContextType::Iaas) {
        None => true,
        Some(values) => values.iter().any(|v| v == iaas),
    }
}

/// The machines of IaaSes the caller may read.
pub(super) async fn visible_machines(server: &Server, caller: &Identity) -> ApiResult<Vec<MachineRecord>> {
    Ok(server.store.machines().await?.into_iter().filter(|m| may(caller, "machine.read", &m.iaas)).collect())
}

async fn machines(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let all = server.store.machines().await?;
    let total = all.len();
    let list: Vec<MachineJson> = all.iter().filter(|m| may(&caller, "machine.read", &m.iaas)).map(machine_json).collect();
    Ok(go_list(&list, total))
}

/// A list as tsuru's Go encodes it: `null` when there was nothing to list,
/// `[]` when everything was filtered out.
fn go_list<T: Serialize>(items: &[T], before_filtering: usize) -> Response {
    if before_filtering == 0 { json(StatusCode::OK, &serde_json::Value::Null) } else { json(StatusCode::OK, &items) }
}

/// An `iaas` event on `iaas` of kind `kind`, readable with `machine.read.events` there.
async fn iaas_event(server: &Arc<Server>, caller: &Identity, ip: &ClientIp, kind: &str, iaas: &str, data: serde_json::Value) -> ApiResult<crate::events::RunningEvent> {
    let allowed = Allowed::new("machine.read.events", vec![iaas_ctx(iaas)]);
    record_allowed(server, Some(caller), ip, kind, Target::new("iaas", iaas), data, allowed).await
}

/// `DELETE /iaas/machines/{id}?force=`: the driver destroys the machine and
/// its record goes. A machine a node still runs on is refused, unless
/// `force`, which also (as tsuru's) drops the record when the driver fails,
/// and unties the node from it.
async fn destroy_machine(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(id): Path<String>, params: Params) -> ApiResult<Response> {
    let machine = server.store.machine(&id).await?.ok_or_else(|| ApiError::not_found("machine not found"))?;
    caller.require("machine.delete", &[iaas_ctx(&machine.iaas)])?;
    let force = params.get("force").and_then(|f| parse_bool(&f)).unwrap_or(false);
    let node = server.store.node_of_machine(&id).await?;
    if let Some(node) = node.as_ref().filter(|_| !force) {
        return Err(ApiError::bad_request(format!(
            "machine {id} runs node {} of pool {}: remove the node first (or destroy with force=true)",
            node.address, node.pool
        )));
    }
    let data = request_data(&params, &[("machine_id", &id)]);
    let event = iaas_event(&server, &caller, &ip, "machine.delete", &machine.iaas, data).await?;
    let work = async {
        if let Err(e) = crate::iaas::destroy(&server, &machine).await {
            if !force {
                return Err(e);
            }
            tracing::warn!(machine = id, error = %e.message, "the driver did not destroy the machine: its record goes anyway (force)");
            server.store.remove_machine(&id).await?;
        }
        if let Some(mut node) = node {
            node.iaas_id = String::new();
            server.store.update_node(&node).await?;
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn templates(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let all = server.store.templates().await?;
    let total = all.len();
    let list: Vec<TemplateJson> = all
        .into_iter()
        .filter(|t| may(&caller, "machine.template.read", &t.iaas))
        .map(|t| TemplateJson { name: t.name, iaas: t.iaas, data: t.data.into_iter().map(|(name, value)| DataJson { name, value }).collect() })
        .collect();
    Ok(go_list(&list, total))
}

/// The template fields of a request: `Name`, `IaaSName`, and `Data.N.Name` /
/// `Data.N.Value` pairs (form or JSON `{"Name","IaaSName","Data":[{"Name","Value"}]}`).
fn template_input(params: &Params) -> (String, String, Vec<(String, String)>) {
    let name = params.field("Name").unwrap_or_default();
    let iaas = params.field("IaaSName").unwrap_or_default();
    let mut data = Vec::new();
    if let Some(items) = params.json_field("Data").and_then(|v| v.as_array().cloned()) {
        for item in items {
            let get = |k: &str| item.as_object().and_then(|o| o.iter().find(|(key, _)| key.eq_ignore_ascii_case(k))).and_then(|(_, v)| v.as_str()).unwrap_or_default().to_string();
            data.push((get("Name"), get("Value")));
        }
        return (name, iaas, data);
    }
    for i in 0.. {
        let (Some(n), v) = (params.field(&format!("Data.{i}.Name")), params.field(&format!("Data.{i}.Value"))) else { break };
        data.push((n, v.unwrap_or_default()));
    }
    (name, iaas, data)
}

/// The IaaS of a template exists (as tsuru's `getIaasProvider`).
fn known_iaas(server: &Server, iaas: &str) -> ApiResult<()> {
    if server.iaases.contains_key(iaas) {
        return Ok(());
    }
    Err(ApiError::internal(format!("IaaS provider {iaas:?} based on {iaas:?} not registered")))
}

/// The most entries a template holds, and the longest name or value.
const MAX_DATA: usize = 128;
const MAX_TEXT: usize = 4096;

fn check_data(data: &[(String, String)]) -> ApiResult<()> {
    if data.len() > MAX_DATA {
        return Err(ApiError::bad_request(format!("a template holds at most {MAX_DATA} entries")));
    }
    if data.iter().any(|(n, v)| n.len() > MAX_TEXT || v.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(format!("template names and values are at most {MAX_TEXT} bytes")));
    }
    Ok(())
}

async fn create_template(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let (name, iaas, mut data) = template_input(&params);
    caller.require("machine.template.create", &[iaas_ctx(&iaas)])?;
    check_data(&data)?;
    data.retain(|(n, _)| n != "iaas");
    let event = iaas_event(&server, &caller, &ip, "machine.template.create", &iaas, request_data(&params, &[])).await?;
    let work = async {
        if name.is_empty() {
            return Err(ApiError::bad_request("template name cannot be empty"));
        }
        known_iaas(&server, &iaas)?;
        server.store.add_template(&TemplateRecord { name, iaas, data }).await.map_err(|e| match e {
            crate::store::StoreError::Conflict(m) => ApiError::conflict(m),
            other => other.into(),
        })?;
        Ok(empty(StatusCode::CREATED))
    };
    event.done(work.await).await
}

/// `PUT`: the given entries are merged in (an empty value removes one);
/// `IaaSName` moves the template to another IaaS.
async fn update_template(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let mut template = server.store.template(&name).await?.ok_or_else(|| ApiError::not_found("template not found"))?;
    let (_, iaas, data) = template_input(&params);
    check_data(&data)?;
    // Moving a template takes the permission where it is and where it goes.
    caller.require("machine.template.update", &[iaas_ctx(&template.iaas)])?;
    if !iaas.is_empty() {
        template.iaas = iaas;
    }
    caller.require("machine.template.update", &[iaas_ctx(&template.iaas)])?;
    let event = iaas_event(&server, &caller, &ip, "machine.template.update", &template.iaas, request_data(&params, &[("template_name", &name)])).await?;
    let work = async {
        known_iaas(&server, &template.iaas)?;
        let mut merged: BTreeMap<String, String> = template.data.iter().cloned().collect();
        for (k, v) in data.into_iter().filter(|(k, _)| k != "iaas") {
            if v.is_empty() {
                merged.remove(&k);
            } else {
                merged.insert(k, v);
            }
        }
        if merged.len() > MAX_DATA {
            return Err(ApiError::bad_request(format!("a template holds at most {MAX_DATA} entries")));
        }
        template.data = merged.into_iter().collect();
        server.store.update_template(&template).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn destroy_template(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    let template = server.store.template(&name).await?.ok_or_else(|| ApiError::not_found("template not found"))?;
    caller.require("machine.template.delete", &[iaas_ctx(&template.iaas)])?;
    let event = iaas_event(&server, &caller, &ip, "machine.template.delete", &template.iaas, request_data(&Params::default(), &[("template_name", &name)])).await?;
    let work = async {
        server.store.remove_template(&name).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}
