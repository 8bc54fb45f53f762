//! Service instances and binds (API-NOTES §2.15): what app teams create
//! from the catalogue and bind their apps to. Handlers check permissions
//! and shapes; the provider calls and their undo live in `crate::services`.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};
use std::sync::LazyLock;

use super::apps::{app_contexts, app_event};
use super::events::{record_allowed, request_data};
use super::params::{Params, parse_bool};
use super::services::{owner_contexts, usable};
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::services::{self, Resolved};
use crate::services::bind::{BindRequest, UnbindRequest};
use crate::store::{InstanceRecord, InstanceState, UnitBind, now_millis};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/services/instances", list)
        .add("1.0", Method::POST, "/services/{service}/instances", create)
        .add("1.0", Method::GET, "/services/{service}/instances/{instance}", info)
        .add("1.0", Method::PUT, "/services/{service}/instances/{instance}", update)
        .add("1.0", Method::DELETE, "/services/{service}/instances/{instance}", remove)
        .add("1.0", Method::GET, "/services/{service}/instances/{instance}/status", status)
        .add("1.0", Method::PUT, "/services/{service}/instances/permission/{instance}/{team}", grant)
        .add("1.0", Method::DELETE, "/services/{service}/instances/permission/{instance}/{team}", revoke)
        .add("1.0", Method::PUT, "/services/{service}/instances/{instance}/{app}", bind)
        .add("1.0", Method::DELETE, "/services/{service}/instances/{instance}/{app}", unbind)
}

static INSTANCE_NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[A-Za-z][-a-zA-Z0-9_]+$").unwrap());
/// Bounds on what an instance keeps.
const MAX_NAME: usize = 63;
const MAX_DESCRIPTION: usize = 1024;
const MAX_TAGS: usize = 64;
const MAX_PARAMETERS: usize = 64;
const MAX_PARAMETER_BYTES: usize = 16 << 10;

/// "(si ctx)": the instance's teams, and `service-instance:<service>/<name>`.
pub(super) fn instance_contexts(i: &InstanceRecord) -> Vec<Context> {
    let mut out: Vec<Context> = i.teams.iter().map(Context::team).collect();
    out.push(Context::new(ContextType::ServiceInstance, format!("{}/{}", i.service, i.name)));
    out
}

/// Bind and unbind check the instance's teams, its owner team and
/// `service-instance:<name>` (the bare name: tsuru's quirk).
fn bind_contexts(i: &InstanceRecord) -> Vec<Context> {
    let mut out: Vec<Context> = i.teams.iter().map(Context::team).collect();
    out.push(Context::team(&i.team_owner));
    out.push(Context::new(ContextType::ServiceInstance, &i.name));
    out
}

/// The full instance JSON (`GET /services/instances`).
pub(super) fn instance_json(i: &InstanceRecord, apps: &[String], units: &[UnitBind], brokered: bool) -> Value {
    let mut o = json!({
        "name": i.name,
        "id": 0,
        "service_name": i.service,
        "plan_name": i.plan,
        "apps": if apps.is_empty() { Value::Null } else { json!(apps) },
        "bound_units": if units.is_empty() { Value::Null } else {
            json!(units.iter().map(|u| json!({"app_name": u.app, "id": u.unit, "ip": u.host})).collect::<Vec<_>>())
        },
        "teams": i.teams,
        "team_owner": i.team_owner,
        "description": i.description,
        "tags": if i.tags.is_empty() { Value::Null } else { json!(i.tags) },
    });
    if !i.parameters.is_empty() {
        o["parameters"] = Value::Object(i.parameters.clone());
    }
    if !i.pool.is_empty() {
        o["pool"] = json!(i.pool);
    }
    if brokered && let Ok(data @ Value::Object(_)) = serde_json::from_str::<Value>(&i.data) {
        o["broker_data"] = data;
    }
    o
}

async fn instance_of(server: &Server, service: &str, name: &str) -> ApiResult<InstanceRecord> {
    server.store.instance(service, name).await?.ok_or_else(|| ApiError::not_found("service instance not found"))
}

/// The event of a change to an instance, which locks it while it runs.
async fn instance_event(
    server: &std::sync::Arc<Server>,
    caller: &Identity,
    ip: &ClientIp,
    kind: &str,
    i: &InstanceRecord,
    data: Value,
) -> ApiResult<crate::events::RunningEvent> {
    let allowed = Allowed::new("service-instance.read.events", instance_contexts(i));
    record_allowed(server, Some(caller), ip, kind, Target::new("service-instance", format!("{}/{}", i.service, i.name)), data, allowed).await
}

/// `GET /services/instances[?app=a]`: per visible service, the instances
/// the caller may read.
async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let app = params.get("app").filter(|a| !a.is_empty());
    let instances = server.store.instances().await?;
    let binds = server.store.all_binds().await?;
    let mut out = Vec::new();
    for (r, _) in services::all(&server).await? {
        if !usable(&caller, &r, "service.read") {
            continue;
        }
        let mut mine = Vec::new();
        for i in instances.iter().filter(|i| i.service == r.name && caller.allows("service-instance.read", &instance_contexts(i))) {
            let apps: Vec<String> = binds.iter().filter(|(s, n, _)| *s == i.service && *n == i.name).map(|(_, _, a)| a.clone()).collect();
            if app.as_ref().is_some_and(|a| !apps.contains(a)) {
                continue;
            }
            let units = server.store.unit_binds(&i.service, &i.name).await?;
            mine.push((i, apps, units));
        }
        if mine.is_empty() {
            if app.is_none() {
                out.push(json!({"service": r.name, "instances": [], "plans": null, "service_instances": null}));
            }
            continue;
        }
        out.push(json!({
            "service": r.name,
            "instances": mine.iter().map(|(i, _, _)| i.name.clone()).collect::<Vec<_>>(),
            "plans": mine.iter().map(|(i, _, _)| i.plan.clone()).collect::<Vec<_>>(),
            "service_instances": mine.iter().map(|(i, apps, units)| instance_json(i, apps, units, matches!(r.source, services::Source::Broker { .. }))).collect::<Vec<_>>(),
        }));
    }
    Ok(super::json_list(&out))
}

/// Tags from `tags` (a list) and repeated `tag`, bounded.
fn tags_of(params: &Params) -> ApiResult<Vec<String>> {
    let mut tags: Vec<String> = params.field_list("tags");
    tags.extend(params.all("tag"));
    tags.retain(|t| !t.is_empty());
    tags.dedup();
    if tags.len() > MAX_TAGS || tags.iter().any(|t| t.len() > 63 || t.chars().any(char::is_control)) {
        return Err(ApiError::bad_request(format!("at most {MAX_TAGS} tags, each of at most 63 printable characters")));
    }
    Ok(tags)
}

/// Parameters from a JSON object (values kept as given) or form keys
/// `parameters.<k>`, bounded.
fn parameters_of(params: &Params) -> ApiResult<serde_json::Map<String, Value>> {
    let map: serde_json::Map<String, Value> = match params.json_field("parameters") {
        Some(Value::Object(obj)) => obj.clone(),
        Some(Value::Null) | None => params.field_map("parameters").into_iter().map(|(k, v)| (k, Value::String(v))).collect(),
        Some(_) => return Err(ApiError::bad_request("parameters must be an object")),
    };
    if map.len() > MAX_PARAMETERS || Value::Object(map.clone()).to_string().len() > MAX_PARAMETER_BYTES {
        return Err(ApiError::bad_request(format!("at most {MAX_PARAMETERS} parameters, {MAX_PARAMETER_BYTES} bytes in all")));
    }
    Ok(map)
}

fn check_description(d: &str) -> ApiResult<()> {
    if d.len() > MAX_DESCRIPTION {
        return Err(ApiError::bad_request(format!("a description may hold at most {MAX_DESCRIPTION} bytes")));
    }
    Ok(())
}

/// Refuses a service the pool's constraints keep out.
async fn check_pool(server: &Server, pool: &str, service: &str, message: impl FnOnce(Vec<String>) -> String) -> ApiResult<()> {
    if pool.is_empty() {
        return Ok(());
    }
    let constraints = server.store.constraints().await?;
    if crate::pools::admits(&constraints, pool, "service", service) {
        return Ok(());
    }
    let all: Vec<String> = services::all(server).await?.into_iter().map(|(r, _)| r.name).collect();
    Err(ApiError::bad_request(message(crate::pools::admitted(&constraints, pool, "service", &all))))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(service): Path<String>, params: Params) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &service).await?;
    let name = params.field("name").unwrap_or_default();
    if !INSTANCE_NAME.is_match(&name) || name.len() > MAX_NAME {
        return Err(ApiError::bad_request("invalid service instance name"));
    }
    let plan = params.field("plan").or_else(|| params.get("plan_name")).or_else(|| params.get("PlanName")).unwrap_or_default();
    let owner = params.field("owner").or_else(|| params.get("team_owner")).or_else(|| params.get("TeamOwner")).filter(|t| !t.is_empty());
    let description = params.field("description").unwrap_or_default();
    check_description(&description)?;
    let tags = tags_of(&params)?;
    let parameters = parameters_of(&params)?;
    let pool = params.field("pool").unwrap_or_default();
    let team = super::tokens::select_team(&server, &caller, "service-instance.create", owner).await.map_err(|e| {
        if e.status == StatusCode::NOT_FOUND { ApiError::internal("Team owner doesn't exist") } else { e }
    })?;
    if resolved.restricted().is_some() {
        caller.require("service.read", &super::services::service_contexts(&resolved))?;
    }
    if resolved.multi_cluster() && pool.is_empty() {
        return Err(ApiError::bad_request("You must provide the pool name: the service is multi-cluster"));
    }
    if !pool.is_empty() {
        if server.store.pool(&pool).await?.is_none() {
            return Err(ApiError::not_found("Pool does not exist."));
        }
        check_pool(&server, &pool, &service, |_| format!("Service {service:?} is not available in pool {pool:?}")).await?;
    }
    let max = server.config.services.max_instances_per_team;
    let owned = server.store.instances().await?.iter().filter(|i| i.team_owner == team).count();
    if owned >= max {
        return Err(ApiError::bad_request(format!("team {team:?} owns {owned} service instances, the most a team may ([services] max_instances_per_team)")));
    }
    let record = InstanceRecord {
        service: service.clone(),
        name: name.clone(),
        plan,
        team_owner: team.clone(),
        teams: vec![team],
        description,
        tags,
        parameters,
        pool,
        data: "{}".into(),
        state: InstanceState::Creating,
        operation: String::new(),
        operation_since: 0,
        message: String::new(),
        previous: String::new(),
        created_at: now_millis(),
    };
    let event = instance_event(&server, &caller, &ip, "service-instance.create", &record, request_data(&params, &[("service", &service)])).await?;
    let result = provision(&server, &resolved, record, services::requester(Some(&caller), event.id())).await;
    event.done(result).await?;
    Ok(empty(StatusCode::CREATED))
}

/// Reserves the name, asks the provider, and records what it answered;
/// a provider that refuses leaves nothing recorded.
async fn provision(server: &Server, resolved: &Resolved, mut record: InstanceRecord, who: crate::plugin::service_broker::Requester) -> ApiResult<()> {
    server.store.insert_instance(&record).await?;
    let (plugin, provider) = match services::provider(server, resolved) {
        Ok(found) => found,
        Err(e) => {
            server.store.delete_instance(&record.service, &record.name).await?;
            return Err(e);
        }
    };
    match plugin.create_instance(provider, services::instance(resolved, &record), who.clone()).await {
        Err(e) => {
            server.store.delete_instance(&record.service, &record.name).await?;
            Err(services::failure(e))
        }
        Ok(change) if change.data.len() > crate::services::bind::MAX_DATA => {
            // Too much to keep: the provider's instance goes again.
            let mut made = record.clone();
            made.data = change.data;
            let _ = plugin.remove_instance(services::provider(server, resolved)?.1, services::instance(resolved, &made), who.clone()).await;
            server.store.delete_instance(&record.service, &record.name).await?;
            Err(ApiError::bad_request(format!("the service's answer was refused: what it keeps for the instance is larger than {} bytes", crate::services::bind::MAX_DATA)))
        }
        Ok(change) => {
            record.data = change.data;
            match change.operation {
                Some(op) => {
                    record.operation = if op.is_empty() { "provision".into() } else { op };
                    record.operation_since = now_millis();
                }
                None => record.state = InstanceState::Ready,
            }
            server.store.update_instance(&record).await?;
            Ok(())
        }
    }
}

async fn info(State(server): AppState, Caller(caller): Caller, Path((service, name)): Path<(String, String)>) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &service).await?;
    let i = instance_of(&server, &service, &name).await?;
    caller.require("service-instance.read", &instance_contexts(&i))?;
    let (plugin, provider) = services::provider(&server, &resolved)?;
    let custom = plugin.info(provider, services::instance(&resolved, &i)).await.map_err(services::failure)?;
    let plan_description = services::plans(&server, &resolved)
        .await
        .ok()
        .and_then(|plans| plans.into_iter().find(|p| p.name == i.plan).map(|p| p.description))
        .unwrap_or_default();
    let apps: Vec<String> = server.store.binds_of_instance(&service, &name).await?.into_iter().map(|b| b.app).collect();
    let custom: serde_json::Map<String, Value> = custom.into_iter().map(|(k, v)| (k, Value::String(v))).collect();
    Ok(json(
        StatusCode::OK,
        &json!({
            "Apps": apps,
            "Teams": i.teams,
            "TeamOwner": i.team_owner,
            "Description": i.description,
            "PlanName": i.plan,
            "PlanDescription": plan_description,
            "Pool": i.pool,
            "CustomInfo": custom,
            "Tags": i.tags,
            "Parameters": Value::Object(i.parameters.clone()),
        }),
    ))
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path((service, name)): Path<(String, String)>, params: Params) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &service).await?;
    let before = instance_of(&server, &service, &name).await?;
    let ctx = instance_contexts(&before);
    let mut after = before.clone();
    let description = params.field("description").unwrap_or_default();
    check_description(&description)?;
    let plan = params.field("plan").unwrap_or_default();
    let team_owner = params.field("teamowner").unwrap_or_default();
    let tags = tags_of(&params)?;
    let parameters = parameters_of(&params)?;
    // Every field is compared with what is stored, an omitted one as empty
    // (tsuru's rule); an empty plan or team owner keeps the one there is.
    let mut wanted = Vec::new();
    if description != before.description {
        wanted.push("service-instance.update.description");
        after.description = description;
    }
    if !team_owner.is_empty() && team_owner != before.team_owner {
        if server.store.team(&team_owner).await?.is_none() {
            return Err(ApiError::not_found("Team owner doesn't exist"));
        }
        wanted.push("service-instance.update.teamowner");
        if !after.teams.contains(&team_owner) {
            after.teams.push(team_owner.clone());
        }
        after.team_owner = team_owner;
    }
    if tags != before.tags {
        wanted.push("service-instance.update.tags");
        after.tags = tags;
    }
    if !plan.is_empty() && plan != before.plan {
        wanted.push("service-instance.update.plan");
        after.plan = plan;
    }
    if parameters != before.parameters {
        wanted.push("service-instance.update.parameters");
        after.parameters = parameters;
    }
    if wanted.is_empty() {
        return Err(ApiError::bad_request("Neither description, team owner, tags, plan nor plan parameters were set. You must define at least one."));
    }
    for scheme in &wanted {
        caller.require(scheme, &ctx)?;
    }
    if before.state != InstanceState::Ready {
        return Err(ApiError::bad_request(format!("service instance {name:?} is {}: wait until the service is done with it", before.state.as_str())));
    }
    let event = instance_event(&server, &caller, &ip, "service-instance.update", &before, request_data(&params, &[("service", &service), ("instance", &name)])).await?;
    after.message.clear();
    let result = async {
        let (plugin, provider) = services::provider(&server, &resolved)?;
        let change = plugin.update_instance(provider, services::instance(&resolved, &after), services::requester(Some(&caller), event.id())).await.map_err(services::failure)?;
        after.data = change.data;
        if let Some(op) = change.operation {
            after.state = InstanceState::Updating;
            after.operation = if op.is_empty() { "update".into() } else { op };
            after.operation_since = now_millis();
            after.previous = before.updatable();
        }
        server.store.update_instance(&after).await.map_err(ApiError::from)
    }
    .await;
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path((service, name)): Path<(String, String)>, params: Params) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &service).await?;
    let i = instance_of(&server, &service, &name).await?;
    caller.require("service-instance.delete", &instance_contexts(&i))?;
    let unbind_all = params.get("unbindall").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let ignore_errors = params.get("ignoreerrors").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let binds = server.store.binds_of_instance(&service, &name).await?;
    if !binds.is_empty() && !unbind_all {
        let apps: Vec<String> = binds.iter().map(|b| b.app.clone()).collect();
        return Err(ApiError::bad_request(format!(
            "Applications bound to the service \"{name}\": \"{}\"\n: This service instance is bound to at least one app. Unbind them before removing it",
            apps.join(",")
        )));
    }
    if i.state == InstanceState::Removing {
        return Err(ApiError::bad_request(format!("service instance {name:?} is being removed already")));
    }
    let data = request_data(&params, &[("service", &service), ("instance", &name)]);
    let event = instance_event(&server, &caller, &ip, "service-instance.delete", &i, data).await?;
    let who = services::requester(Some(&caller), event.id());
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            for b in &binds {
                w.message(&format!("Unbind app {:?} ...\n", b.app)).await;
                let Some(app) = server.store.app(&b.app).await? else {
                    server.store.delete_bind(&service, &name, &b.app).await?;
                    continue;
                };
                let req = UnbindRequest { app: &app, cnames: &app.cnames, resolved: &resolved, instance: &i, no_restart: false, force: ignore_errors, who: who.clone() };
                crate::services::bind::unbind(&server, req, &w).await?;
                w.message(&format!("\nInstance {name:?} is not bound to the app {:?} anymore.\n", b.app)).await;
            }
            let (plugin, provider) = services::provider(&server, &resolved)?;
            match plugin.remove_instance(provider, services::instance(&resolved, &i), who.clone()).await {
                Ok(change) if change.operation.is_some() => {
                    let mut removing = i.clone();
                    removing.state = InstanceState::Removing;
                    removing.data = change.data;
                    removing.operation = change.operation.filter(|o| !o.is_empty()).unwrap_or_else(|| "deprovision".into());
                    removing.operation_since = now_millis();
                    server.store.update_instance(&removing).await?;
                    w.message("the service removes the instance in the background: it is gone once the service is done\n").await;
                    return Ok(());
                }
                Ok(_) => {}
                Err(e) if ignore_errors => {
                    w.message(&format!("Error while removing the instance at the service (ignored): {e}\n")).await;
                }
                Err(e) => return Err(services::failure(e)),
            }
            server.store.delete_instance(&service, &name).await?;
            w.message("service instance successfully removed\n").await;
            Ok(())
        }
        .await;
        event.done(result).await.map_err(|e| e.message)
    }))
}

/// The one word tsuru shows for an instance torii is waiting on.
fn waiting_status(i: &InstanceRecord) -> Option<String> {
    match i.state {
        InstanceState::Creating => Some("pending".into()),
        InstanceState::Updating => Some("pending (updating)".into()),
        InstanceState::Removing => Some("pending (removing)".into()),
        InstanceState::Failed => Some(format!("failed: {}", i.message)),
        InstanceState::Ready => None,
    }
}

async fn status(State(server): AppState, Caller(caller): Caller, Path((service, name)): Path<(String, String)>) -> ApiResult<Response> {
    let resolved = services::resolve(&server, &service).await?;
    let i = instance_of(&server, &service, &name).await?;
    caller.require("service-instance.read.status", &instance_contexts(&i))?;
    let status = match waiting_status(&i) {
        Some(s) => s,
        None => {
            let (plugin, provider) = services::provider(&server, &resolved)?;
            let status = plugin
                .status(provider, services::instance(&resolved, &i))
                .await
                .map_err(|e| ApiError::internal(format!("Could not retrieve status of service instance, error: {e}")))?;
            // A ready instance whose last update or removal failed says so.
            if i.message.is_empty() { status } else { format!("{status} (its last operation failed: {})", i.message) }
        }
    };
    Ok((StatusCode::OK, format!("Service instance \"{name}\" is {status}")).into_response())
}

async fn grant(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path((service, name, team)): Path<(String, String, String)>) -> ApiResult<Response> {
    let mut i = instance_of(&server, &service, &name).await?;
    caller.require("service-instance.update.grant", &instance_contexts(&i))?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::not_found("Team not found"));
    }
    if i.teams.contains(&team) {
        return Err(ApiError::conflict("This team already has access to this instance"));
    }
    let data = json!([{"name": ":service", "value": service}, {"name": ":instance", "value": name}, {"name": ":team", "value": team}]);
    let event = instance_event(&server, &caller, &ip, "service-instance.update.grant", &i, data).await?;
    i.teams.push(team);
    let result = server.store.update_instance(&i).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

async fn revoke(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path((service, name, team)): Path<(String, String, String)>) -> ApiResult<Response> {
    let mut i = instance_of(&server, &service, &name).await?;
    caller.require("service-instance.update.revoke", &instance_contexts(&i))?;
    if !i.teams.contains(&team) {
        return Err(ApiError::not_found("This team does not have access to this instance"));
    }
    if team == i.team_owner {
        return Err(ApiError::bad_request("the team that owns the instance keeps access to it: change the team owner first"));
    }
    let data = json!([{"name": ":service", "value": service}, {"name": ":instance", "value": name}, {"name": ":team", "value": team}]);
    let event = instance_event(&server, &caller, &ip, "service-instance.update.revoke", &i, data).await?;
    i.teams.retain(|t| *t != team);
    let result = server.store.update_instance(&i).await.map_err(ApiError::from);
    event.done(result).await?;
    Ok(empty(StatusCode::OK))
}

/// How tsuru words an instance's state after a failed bind.
fn shown_state(i: &InstanceRecord) -> String {
    waiting_status(i).unwrap_or_else(|| "up".into())
}

/// What a bind or unbind names: the service, its instance and the app,
/// once the caller holds `on_instance` on the instance and `on_app` on the app.
async fn bind_parties(
    server: &Server,
    caller: &Identity,
    (service, name, app): (&str, &str, &str),
    on_instance: &str,
    on_app: &str,
) -> ApiResult<(Resolved, InstanceRecord, crate::store::AppRecord)> {
    let resolved = services::resolve(server, service).await?;
    let i = instance_of(server, service, name).await?;
    let app = server.store.app(app).await?.ok_or_else(|| ApiError::not_found(format!("App {app} not found.")))?;
    caller.require(on_instance, &bind_contexts(&i))?;
    caller.require(on_app, &app_contexts(&app))?;
    Ok((resolved, i, app))
}

async fn bind(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path((service, name, app)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (resolved, i, app) =
        bind_parties(&server, &caller, (&service, &name, &app), "service-instance.update.bind", "app.update.bind").await?;
    check_pool(&server, &app.pool, &service, |allowed| {
        format!(
            "service {service:?} is not available for pool {:?}. Available services are: {:?}",
            app.pool,
            allowed.join(", ")
        )
    })
    .await?;
    if server.store.binds_of_instance(&service, &name).await?.iter().any(|b| b.app == app.name) {
        return Err(ApiError::conflict("app is already bound to this service instance"));
    }
    if i.state != InstanceState::Ready {
        return Err(ApiError::bad_request(format!("instance {name:?} is not ready: it is {}", shown_state(&i))));
    }
    let no_restart = params.field("noRestart").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let parameters: Vec<(String, String)> =
        parameters_of(&params)?.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect();
    let data = request_data(&params, &[("service", &service), ("instance", &name), ("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.update.bind", &app, data).await?;
    let who = services::requester(Some(&caller), event.id());
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let req = BindRequest { app: &app, cnames: &app.cnames, resolved: &resolved, instance: &i, parameters, no_restart, who };
        let result = crate::services::bind::bind(&server, req, &w).await;
        match &result {
            Ok(vars) => {
                w.message(&format!("\nInstance {name:?} is now bound to the app {:?}.\n", app.name)).await;
                if !vars.is_empty() {
                    let mut text = "The following environment variables are available for use in your app:\n\n".to_string();
                    for v in vars.iter().map(String::as_str).chain(["TSURU_SERVICES"]) {
                        text.push_str(&format!("- {v}\n"));
                    }
                    w.message(&text).await;
                }
            }
            Err(_) => {}
        }
        let result = match result {
            Ok(_) => Ok(()),
            Err(e) => Err(ApiError::new(e.status, format!("{} ({name:?} is {})", e.message, shown_state(&i)))),
        };
        event.done(result).await.map_err(|e| e.message)
    }))
}

async fn unbind(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path((service, name, app)): Path<(String, String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let (resolved, i, app) =
        bind_parties(&server, &caller, (&service, &name, &app), "service-instance.update.unbind", "app.update.unbind").await?;
    let force = params.get("force").and_then(|v| parse_bool(&v)).unwrap_or(false);
    if force {
        caller.require("service.update", &owner_contexts(&resolved))?;
    }
    if !server.store.binds_of_instance(&service, &name).await?.iter().any(|b| b.app == app.name) {
        return Err(ApiError::bad_request(format!("instance {name:?} is not bound to the app {:?}", app.name)));
    }
    let no_restart = params.get("noRestart").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let data = request_data(&params, &[("service", &service), ("instance", &name), ("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.update.unbind", &app, data).await?;
    let who = services::requester(Some(&caller), event.id());
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let req = UnbindRequest { app: &app, cnames: &app.cnames, resolved: &resolved, instance: &i, no_restart, force, who };
        let result = crate::services::bind::unbind(&server, req, &w).await;
        if result.is_ok() {
            w.message(&format!("\nInstance {name:?} is not bound to the app {:?} anymore.\n", app.name)).await;
        }
        event.done(result).await.map_err(|e| e.message)
    }))
}
