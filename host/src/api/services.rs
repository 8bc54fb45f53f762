//! Services and their providers' proxy (API-NOTES §2.15): the catalogue a
//! service provider team registers (`/services`), its docs, team grants
//! and plans. Instances live in `service_instances`, brokers in `brokers`.

use axum::body::Bytes;
use axum::extract::{Path, RawQuery, State};
use axum::http::{HeaderMap, Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::LazyLock;

use super::events::{record_allowed, request_data};
use super::params::{Params, parse_bool};
use super::service_instances::instance_contexts;
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_untyped};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::services::{self, Resolved, Source};
use crate::store::{InstanceRecord, ServiceRecord};

pub(super) fn routes(r: Routes) -> Routes {
    let proxy_methods = [Method::GET, Method::POST, Method::PUT, Method::PATCH, Method::DELETE];
    let mut r = r
        .add("1.0", Method::GET, "/services", list)
        .add("1.0", Method::POST, "/services", create)
        .add("1.0", Method::GET, "/services/{service}", info)
        .add("1.0", Method::PUT, "/services/{service}", update)
        .add("1.0", Method::DELETE, "/services/{service}", remove)
        .add("1.0", Method::GET, "/services/{service}/plans", plans)
        .add("1.0", Method::GET, "/services/{service}/doc", doc)
        .add("1.0", Method::PUT, "/services/{service}/doc", set_doc)
        .add("1.0", Method::PUT, "/services/{service}/team/{team}", grant)
        .add("1.0", Method::DELETE, "/services/{service}/team/{team}", revoke);
    for m in proxy_methods {
        r = r.add("1.0", m.clone(), "/services/proxy/service/{service}", proxy_service).add("1.0", m, "/services/{service}/proxy/{instance}", proxy_instance);
    }
    r
}

static SERVICE_NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-z][a-z0-9-]{0,39}$").unwrap());

const INVALID_SERVICE: &str =
    "Invalid service id, should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";

/// "(svc-owner ctx)": the teams that own the service, and the service.
pub(super) fn owner_contexts(r: &Resolved) -> Vec<Context> {
    let mut out: Vec<Context> = r.owner_teams().iter().map(Context::team).collect();
    out.push(Context::new(ContextType::Service, &r.name));
    out
}

/// "(svc ctx)": the teams granted the service, and the service.
pub(super) fn service_contexts(r: &Resolved) -> Vec<Context> {
    let teams: &[String] = match &r.source {
        Source::Api(s) => &s.teams,
        Source::Broker { .. } => &[],
    };
    let mut out: Vec<Context> = teams.iter().map(Context::team).collect();
    out.push(Context::new(ContextType::Service, &r.name));
    out
}

/// Whether `caller` may use `r` (instances, plans, docs): every caller for
/// a service that is not restricted, else `scheme` in its contexts (the
/// teams granted it, or the teams that own it: a provider never locks
/// itself out by restricting its service).
pub(super) fn usable(caller: &Identity, r: &Resolved, scheme: &str) -> bool {
    r.restricted().is_none() || caller.allows(scheme, &service_contexts(r)) || caller.allows(scheme, &owner_contexts(r))
}

/// The event of a change to a service; readable with `service.read.events`
/// in the service's owner contexts.
async fn service_event(server: &std::sync::Arc<Server>, caller: &Identity, ip: &ClientIp, kind: &str, r: &Resolved, data: Value) -> ApiResult<crate::events::RunningEvent> {
    let allowed = Allowed::new("service.read.events", owner_contexts(r));
    record_allowed(server, Some(caller), ip, kind, Target::new("service", &r.name), data, allowed).await
}

/// A service registered with `POST /services` (brokers' services are managed
/// through their broker): 404 otherwise.
async fn registered(server: &Server, name: &str) -> ApiResult<Resolved> {
    let resolved = services::resolve(server, name).await?;
    match resolved.source {
        Source::Api(_) => Ok(resolved),
        Source::Broker { .. } => Err(ApiError::bad_request(format!("service {name:?} belongs to a broker: manage it through /1.7/brokers"))),
    }
}

fn service_record(r: &Resolved) -> ServiceRecord {
    match &r.source {
        Source::Api(s) => s.clone(),
        Source::Broker { .. } => unreachable!("registered() keeps brokers' services out"),
    }
}

/// tsuru's shape: `plans` always null, the lists null when empty.
#[derive(Serialize)]
struct ServiceListJson {
    service: String,
    instances: Option<Vec<String>>,
    plans: Option<Vec<String>>,
    service_instances: Option<Vec<Value>>,
}

/// `GET /services`: the services the caller provides (`service.read` in
/// their owner teams or on them).
async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let instances = server.store.instances().await?;
    let mut out = Vec::new();
    for (r, _) in services::all(&server).await? {
        if !caller.allows("service.read", &owner_contexts(&r)) {
            continue;
        }
        let mine: Vec<&InstanceRecord> = instances.iter().filter(|i| i.service == r.name).collect();
        let some = !mine.is_empty();
        out.push(ServiceListJson {
            service: r.name.clone(),
            instances: some.then(|| mine.iter().map(|i| i.name.clone()).collect()),
            plans: None,
            service_instances: some.then(|| mine.iter().map(|i| json!({
                "name": i.name, "id": 0, "service_name": i.service, "plan_name": "", "apps": null, "bound_units": null,
                "teams": null, "team_owner": "", "description": "", "tags": if i.tags.is_empty() { Value::Null } else { json!(i.tags) },
            })).collect()),
        });
    }
    Ok(super::json_list(&out))
}

/// The fields of a service from a create or update request.
struct Given {
    username: Option<String>,
    password: Option<String>,
    endpoints: BTreeMap<String, String>,
    team: Option<String>,
    multi_cluster: Option<bool>,
    disable_bind_unit: Option<bool>,
}

fn given(params: &Params) -> Given {
    let mut endpoints = params.field_map("endpoints");
    if let Some(one) = params.field("endpoint").filter(|e| !e.is_empty()) {
        endpoints.insert("production".into(), one);
    }
    Given {
        username: params.field("username"),
        password: params.field("password").filter(|p| !p.is_empty()),
        endpoints,
        team: params.get("team").filter(|t| !t.is_empty()),
        multi_cluster: params.get("multi-cluster").and_then(|v| parse_bool(&v)),
        disable_bind_unit: params.get("disable-bind-unit").and_then(|v| parse_bool(&v)),
    }
}

/// Each endpoint an absolute http(s) URL, within bounds.
fn check_endpoints(endpoints: &BTreeMap<String, String>) -> ApiResult<()> {
    if endpoints.len() > 64 {
        return Err(ApiError::bad_request("a service may have at most 64 endpoints"));
    }
    for url in endpoints.values() {
        let ok = url.len() <= 2048 && crate::egress::Egress::parse(url).is_ok();
        if !ok {
            return Err(ApiError::bad_request(format!("invalid endpoint {:?}: an endpoint is an http(s) URL", url.chars().take(80).collect::<String>())));
        }
    }
    Ok(())
}

fn masked(params: &Params, path: &[(&str, &str)]) -> Value {
    // request_data leaves `password` out already.
    request_data(params, path)
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let id = params.field("id").unwrap_or_default();
    let g = given(&params);
    if id.is_empty() {
        return Err(ApiError::bad_request("Service id is required"));
    }
    if !SERVICE_NAME.is_match(&id) {
        return Err(ApiError::bad_request(INVALID_SERVICE));
    }
    if g.password.is_none() {
        return Err(ApiError::bad_request("Service password is required"));
    }
    if g.endpoints.is_empty() {
        return Err(ApiError::bad_request("At least one endpoint is required"));
    }
    check_endpoints(&g.endpoints)?;
    let team = match g.team.clone() {
        Some(team) => team,
        None => super::tokens::select_team(&server, &caller, "service.create", None).await.map_err(|e| {
            if e.status == StatusCode::BAD_REQUEST {
                ApiError::bad_request("You must provide a team responsible for this service in the manifest file.")
            } else {
                e
            }
        })?,
    };
    caller.require("service.create", &[Context::team(&team)])?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::bad_request("Team owner doesn't exist"));
    }
    let record = ServiceRecord {
        name: id.clone(),
        username: g.username.clone().filter(|u| !u.is_empty()).unwrap_or_else(|| id.clone()),
        password: g.password.clone().unwrap_or_default(),
        endpoints: g.endpoints,
        owner_teams: vec![team],
        teams: Vec::new(),
        restricted: false,
        doc: String::new(),
        multi_cluster: g.multi_cluster.unwrap_or(false),
        disable_bind_unit: g.disable_bind_unit.unwrap_or(false),
    };
    let resolved = Resolved { name: id.clone(), source: Source::Api(record.clone()) };
    let event = service_event(&server, &caller, &ip, "service.create", &resolved, masked(&params, &[])).await?;
    let result = server.store.insert_service(&record).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok((StatusCode::CREATED, "success").into_response())
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let resolved = registered(&server, &name).await?;
    caller.require("service.update", &owner_contexts(&resolved))?;
    let g = given(&params);
    let mut record = service_record(&resolved);
    if g.password.is_none() && params.field("password").is_some() {
        return Err(ApiError::bad_request("Service password is required"));
    }
    if !g.endpoints.is_empty() {
        check_endpoints(&g.endpoints)?;
        record.endpoints = g.endpoints;
    }
    if let Some(u) = g.username.filter(|u| !u.is_empty()) {
        record.username = u;
    }
    if let Some(p) = g.password {
        record.password = p;
    }
    if let Some(team) = g.team {
        if server.store.team(&team).await?.is_none() {
            return Err(ApiError::bad_request("Team owner doesn't exist"));
        }
        record.owner_teams = vec![team];
    }
    if let Some(m) = g.multi_cluster {
        record.multi_cluster = m;
    }
    if let Some(d) = g.disable_bind_unit {
        record.disable_bind_unit = d;
    }
    let event = service_event(&server, &caller, &ip, "service.update", &resolved, masked(&params, &[("name", &name)])).await?;
    let result = server.store.update_service(&record).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    let resolved = registered(&server, &name).await?;
    caller.require("service.delete", &owner_contexts(&resolved))?;
    let event = service_event(&server, &caller, &ip, "service.delete", &resolved, json!([{"name": ":name", "value": name}])).await?;
    let result = server.store.delete_service(&name).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(m) => ApiError::new(StatusCode::FORBIDDEN, m),
        other => other.into(),
    });
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

/// `GET /services/{service}`: its instances the caller may read, with
/// what their provider tells of each (`Info`).
async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &name).await?;
    let instances: Vec<InstanceRecord> = server.store.instances().await?.into_iter().filter(|i| i.service == name).collect();
    let binds = server.store.all_binds().await?;
    let mut out = Vec::new();
    for i in instances.iter().filter(|i| caller.allows("service-instance.read", &instance_contexts(i))) {
        let info = match services::provider(&server, &resolved) {
            Ok((plugin, provider)) => plugin.info(provider, services::instance(&resolved, i)).await.ok(),
            Err(_) => None,
        };
        let info: Value = match info {
            Some(pairs) if !pairs.is_empty() => Value::Object(pairs.into_iter().map(|(k, v)| (k, Value::String(v))).collect()),
            _ => Value::Null,
        };
        let apps: Vec<&String> = binds.iter().filter(|(s, n, _)| *s == i.service && *n == i.name).map(|(_, _, a)| a).collect();
        out.push(json!({
            "Id": 0, "Name": i.name, "Pool": i.pool, "Teams": i.teams, "PlanName": i.plan, "Apps": apps,
            "ServiceName": i.service, "Info": info, "TeamOwner": i.team_owner,
        }));
    }
    Ok(if out.is_empty() { json_untyped(StatusCode::OK, &Value::Null) } else { json_untyped(StatusCode::OK, &out) })
}

async fn plans(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &name).await?;
    if !usable(&caller, &resolved, "service.read.plans") {
        return Err(ApiError::forbidden());
    }
    if resolved.multi_cluster() && params.get("pool").is_none_or(|p| p.is_empty()) {
        let pools: Vec<String> = server.store.pools().await?.into_iter().map(|p| p.name).collect();
        return Err(ApiError::bad_request(format!("You must provide the pool name, available pools: {}", pools.join(", "))));
    }
    let plans = services::plans(&server, &resolved).await?;
    let out: Vec<Value> = plans
        .into_iter()
        .map(|p| {
            let mut o = json!({"Name": p.name, "Description": p.description});
            if let Some(schemas) = p.schemas.and_then(|s| serde_json::from_str::<Value>(&s).ok()) {
                o["Schemas"] = schemas;
            }
            o
        })
        .collect();
    Ok(json(StatusCode::OK, &out))
}

async fn doc(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &name).await?;
    if !usable(&caller, &resolved, "service.read.doc") {
        return Err(ApiError::forbidden());
    }
    let text = match &resolved.source {
        Source::Api(s) => s.doc.clone(),
        Source::Broker { .. } => {
            let (plugin, provider) = services::provider(&server, &resolved)?;
            let catalog = plugin.catalog(provider).await.map_err(services::failure)?;
            catalog.into_iter().find(|s| s.name == resolved.source.provider_service()).map(|s| s.doc).unwrap_or_default()
        }
    };
    Ok((StatusCode::OK, text).into_response())
}

async fn set_doc(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let resolved = registered(&server, &name).await?;
    caller.require("service.update.doc", &owner_contexts(&resolved))?;
    let doc = params.field("doc").unwrap_or_default();
    if doc.len() > 64 << 10 {
        return Err(ApiError::bad_request("a service's doc may hold at most 65536 bytes"));
    }
    let mut record = service_record(&resolved);
    record.doc = doc;
    let event = service_event(&server, &caller, &ip, "service.update.doc", &resolved, json!([{"name": ":name", "value": name}])).await?;
    let result = server.store.update_service(&record).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

async fn grant(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path((name, team)): Path<(String, String)>) -> ApiResult<Response> {
    let resolved = registered(&server, &name).await?;
    caller.require("service.update.grant-access", &owner_contexts(&resolved))?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::bad_request("Team not found"));
    }
    let mut record = service_record(&resolved);
    if record.teams.contains(&team) {
        return Err(ApiError::conflict("This team already has access to this service"));
    }
    record.teams.push(team.clone());
    record.restricted = true;
    let data = json!([{"name": ":service", "value": name}, {"name": ":team", "value": team}]);
    let event = service_event(&server, &caller, &ip, "service.update.grant-access", &resolved, data).await?;
    let result = server.store.update_service(&record).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

async fn revoke(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path((name, team)): Path<(String, String)>) -> ApiResult<Response> {
    let resolved = registered(&server, &name).await?;
    caller.require("service.update.revoke-access", &owner_contexts(&resolved))?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::bad_request("Team not found"));
    }
    let mut record = service_record(&resolved);
    if !record.teams.contains(&team) {
        return Err(ApiError::conflict("This team does not have access to this service"));
    }
    if record.teams.len() == 1 {
        return Err(ApiError::new(StatusCode::FORBIDDEN, "You can not revoke the access from this team, because it is the unique team with access to this service, and a service can not be orphaned"));
    }
    record.teams.retain(|t| *t != team);
    let data = json!([{"name": ":service", "value": name}, {"name": ":team", "value": team}]);
    let event = service_event(&server, &caller, &ip, "service.update.revoke-access", &resolved, data).await?;
    let result = server.store.update_service(&record).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

/// `callback` from the query: an absolute path on the provider.
fn callback(query: Option<&str>) -> ApiResult<String> {
    let path = url::form_urlencoded::parse(query.unwrap_or_default().as_bytes())
        .find(|(k, _)| k == "callback")
        .map(|(_, v)| v.into_owned())
        .unwrap_or_default();
    if !path.starts_with('/') || path.starts_with("//") || path.contains(['\r', '\n', '#']) || path.len() > 2048 {
        return Err(ApiError::bad_request("callback is required: the path on the service API to send the request to, starting with /"));
    }
    Ok(path)
}

async fn proxy_service(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    method: Method,
    Path(name): Path<String>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &name).await?;
    caller.require("service.update.proxy", &owner_contexts(&resolved))?;
    let path = callback(query.as_deref())?;
    let event = if method != Method::GET && method != Method::HEAD {
        let data = json!([{"name": ":service", "value": name}, {"name": "callback", "value": path}, {"name": "method", "value": method.as_str()}]);
        Some(service_event(&server, &caller, &ip, "service.update.proxy", &resolved, data).await?)
    } else {
        None
    };
    let result = forward(&server, &resolved, None, &path, method, &headers, body).await;
    match event {
        Some(event) => event.done(result).await,
        None => result,
    }
}

async fn proxy_instance(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    method: Method,
    Path((name, instance)): Path<(String, String)>,
    RawQuery(query): RawQuery,
    headers: HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &name).await?;
    let i = server.store.instance(&name, &instance).await?.ok_or_else(|| ApiError::not_found("service instance not found"))?;
    caller.require("service-instance.update.proxy", &instance_contexts(&i))?;
    let path = callback(query.as_deref())?;
    // The calls torii makes itself (the instance, its binds) are not for
    // users to make through the proxy, as in tsuru.
    let resource = format!("/resources/{instance}");
    let rel = path.split('?').next().unwrap_or_default().strip_prefix(&resource).map(|r| r.trim_matches('/'));
    if method != Method::GET && rel.is_some_and(|r| ["", "bind-app", "bind-job", "bind"].contains(&r)) {
        return Err(ApiError::bad_request(format!("proxy request {method} {:?} is forbidden", rel.unwrap_or_default())));
    }
    let event = if method != Method::GET && method != Method::HEAD {
        let data = json!([{"name": ":service", "value": name}, {"name": ":instance", "value": instance}, {"name": "callback", "value": path}, {"name": "method", "value": method.as_str()}]);
        let allowed = Allowed::new("service-instance.read.events", instance_contexts(&i));
        let target = Target::new("service-instance", format!("{name}/{instance}"));
        Some(record_allowed(&server, Some(&caller), &ip, "service-instance.update.proxy", target, data, allowed).await?)
    } else {
        None
    };
    let result = forward(&server, &resolved, Some(&i), &path, method, &headers, body).await;
    match event {
        Some(event) => event.done(result).await,
        None => result,
    }
}

/// Sends the request to where the broker says `path` is, under its
/// plugin entry's outbound rule and limits, and relays the answer.
async fn forward(
    server: &Server,
    resolved: &Resolved,
    instance: Option<&InstanceRecord>,
    path: &str,
    method: Method,
    headers: &HeaderMap,
    body: Bytes,
) -> ApiResult<Response> {
    use http_body_util::{BodyExt, Full};
    let (plugin, provider) = services::provider(server, resolved)?;
    let target = plugin.proxy(provider, instance.map(|i| services::instance(resolved, i)), path.to_string()).await.map_err(services::failure)?;
    let outbound = plugin.outbound().ok_or_else(|| ApiError::internal(format!("plugin {:?} is not granted http: it cannot proxy", plugin.name())))?;
    let mut request = http::Request::builder().method(method).uri(&target.url);
    for name in [http::header::CONTENT_TYPE, http::header::ACCEPT] {
        if let Some(v) = headers.get(&name) {
            request = request.header(name, v);
        }
    }
    for (k, v) in &target.headers {
        request = request.header(k.as_str(), v.as_str());
    }
    let body = Full::new(body).map_err(|never| match never {}).boxed_unsync();
    let request = request.body(body).map_err(|e| ApiError::bad_request(format!("the service's proxy target {:?} is not a URL: {e}", target.url)))?;
    let (response, io) = outbound.send(request).await.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the service did not answer: {e}")))?;
    tokio::spawn(async move {
        let _ = Box::into_pin(io).await;
    });
    let (parts, body) = response.into_parts();
    let bytes = body.collect().await.map_err(|e| ApiError::new(StatusCode::BAD_GATEWAY, format!("the service's answer was cut: {e}")))?.to_bytes();
    let mut out = (parts.status, bytes).into_response();
    if let Some(ct) = parts.headers.get(http::header::CONTENT_TYPE) {
        out.headers_mut().insert(http::header::CONTENT_TYPE, ct.clone());
    }
    Ok(out)
}
