//! Roles, their permissions, their assignment to users, team tokens and
//! groups, default roles, and the permission list.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::names::{MAX_DESCRIPTION, MAX_NAME, printable, text};
use super::params::Params;
use super::events::{record, request_data};
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::events::Target;
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Context, ContextType, registry};
use crate::server::Server;
use crate::store::{RoleRecord, SubjectKind};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/roles", list)
        .add("1.0", Method::POST, "/roles", create)
        .add("1.4", Method::PUT, "/roles", update)
        .add("1.0", Method::GET, "/roles/{name}", info)
        .add("1.0", Method::DELETE, "/roles/{name}", remove)
        .add("1.0", Method::POST, "/roles/{name}/permissions", permission_add)
        .add("1.0", Method::DELETE, "/roles/{name}/permissions/{permission}", permission_remove)
        .add("1.0", Method::POST, "/roles/{name}/user", assign_user)
        .add("1.0", Method::DELETE, "/roles/{name}/user/{email}", dissociate_user)
        .add("1.6", Method::POST, "/roles/{name}/token", assign_token)
        .add("1.6", Method::DELETE, "/roles/{name}/token/{token_id}", dissociate_token)
        .add("1.9", Method::POST, "/roles/{name}/group", assign_group)
        .add("1.9", Method::DELETE, "/roles/{name}/group/{group_name}", dissociate_group)
        .add("1.0", Method::GET, "/role/default", default_list)
        .add("1.0", Method::POST, "/role/default", default_add)
        .add("1.0", Method::DELETE, "/role/default", default_remove)
        .add("1.0", Method::GET, "/permissions", permissions)
}

/// Role events and the context type a role must have to carry them.
const ROLE_EVENTS: &[(&str, ContextType)] = &[("user-create", ContextType::Global), ("team-create", ContextType::Team)];

#[derive(Serialize)]
struct RoleJson {
    name: String,
    context: String,
    #[serde(rename = "Description")]
    description: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    scheme_names: Vec<String>,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    events: Vec<String>,
}

fn role_json(r: RoleRecord) -> RoleJson {
    // Schemes no longer in the registry are dropped from output.
    let scheme_names = r.schemes.into_iter().filter(|s| registry().get(s).is_some()).collect();
    RoleJson { name: r.name, context: r.context_type, description: r.description, scheme_names, events: r.events }
}

fn require_any(caller: &Identity, schemes: &[&str]) -> ApiResult<()> {
    if schemes.iter().any(|s| caller.allows(s, &[])) { Ok(()) } else { Err(ApiError::forbidden()) }
}

const READ_SCHEMES: &[&str] =
    &["role.update", "role.update.assign", "role.update.dissociate", "role.create", "role.delete"];

async fn load(server: &Server, name: &str) -> ApiResult<RoleRecord> {
    server.store.role(name).await?.ok_or_else(|| ApiError::not_found("role not found"))
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    require_any(&caller, READ_SCHEMES)?;
    let roles: Vec<RoleJson> = server.store.roles().await?.into_iter().map(role_json).collect();
    // tsuru answers `null`, not 204, when there are no roles.
    if roles.is_empty() { Ok(json(StatusCode::OK, &serde_json::Value::Null)) } else { Ok(json(StatusCode::OK, &roles)) }
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    require_any(&caller, READ_SCHEMES)?;
    Ok(json(StatusCode::OK, &role_json(load(&server, &name).await?)))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("role.create", &[])?;
    let name = params.get("name").unwrap_or_default().trim().to_string();
    if !printable(&name, MAX_NAME) {
        return Err(ApiError::bad_request("invalid role name"));
    }
    if !text(&params.get("description").unwrap_or_default(), MAX_DESCRIPTION) {
        return Err(ApiError::bad_request(format!("invalid description: at most {MAX_DESCRIPTION} characters")));
    }
    let context = params.get("context").unwrap_or_default();
    if ContextType::parse(&context).is_none() {
        return Err(ApiError::internal(format!("invalid context type {context:?}")));
    }
    let role = RoleRecord {
        name,
        context_type: context,
        description: params.get("description").unwrap_or_default(),
        schemes: vec![],
        events: vec![],
    };
    let event = record(&server, Some(&caller), &ip, "role.create", Target::new("role", &role.name), request_data(&params, &[])).await?;
    let result = server.store.create_role(&role).await.map(|()| empty(StatusCode::CREATED));
    event.done(result.map_err(ApiError::from)).await
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let name = params.get("name").unwrap_or_default();
    let new_name = params.get("newName").filter(|s| !s.trim().is_empty());
    let context = params.get("contextType").filter(|s| !s.is_empty());
    let description = params.get("description").filter(|s| !s.is_empty());
    if new_name.is_none() && context.is_none() && description.is_none() {
        return Err(ApiError::bad_request(
            "Neither the description, context or new name were set. You must define at least one.",
        ));
    }
    for (given, scheme) in [
        (new_name.is_some(), "role.update.name"),
        (context.is_some(), "role.update.context.type"),
        (description.is_some(), "role.update.description"),
    ] {
        if given {
            caller.require(scheme, &[])?;
        }
    }
    let mut role = server.store.role(&name).await?.ok_or_else(|| ApiError::bad_request("role not found"))?;
    if let Some(c) = context {
        if ContextType::parse(&c).is_none() {
            return Err(ApiError::bad_request(format!("invalid context type {c:?}")));
        }
        // A new context type widens the role's bindings (team → global gives
        // every permission everywhere): the caller must hold them everywhere.
        if c != role.context_type {
            caller.grants.holds_all(&role.schemes, None).map_err(ApiError::forbidden_with)?;
        }
        role.context_type = c;
    }
    if let Some(d) = description {
        if !text(&d, MAX_DESCRIPTION) {
            return Err(ApiError::bad_request(format!("invalid description: at most {MAX_DESCRIPTION} characters")));
        }
        role.description = d;
    }
    if let Some(n) = new_name {
        if !printable(n.trim(), MAX_NAME) {
            return Err(ApiError::bad_request("invalid role name"));
        }
        role.name = n.trim().to_string();
    }
    let event = record(&server, Some(&caller), &ip, "role.update", Target::new("role", &name), request_data(&params, &[])).await?;
    let result = server.store.update_role(&name, &role).await.map_err(|e| ApiError::bad_request(e.to_string()));
    server.auth.invalidate();
    event.done(result.map(|()| empty(StatusCode::OK))).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("role.delete", &[])?;
    load(&server, &name).await?;
    let data = request_data(&Params::default(), &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "role.delete", Target::new("role", &name), data).await?;
    let work = async {
        if !server.store.role_subjects(SubjectKind::User, &name).await?.is_empty() {
            return Err(ApiError::new(
                StatusCode::PRECONDITION_FAILED,
                "role has users assigned. you must dissociate them before remove the role.",
            ));
        }
        server.store.delete_role(&name).await?;
        server.auth.invalidate();
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn permission_add(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("role.update.permission.add", &[])?;
    let mut role = load(&server, &name).await?;
    let wanted = params.all("permission");
    let context = ContextType::parse(&role.context_type);
    for p in &wanted {
        if p.trim().is_empty() {
            return Err(ApiError::bad_request("invalid permission name"));
        }
        let scheme = registry().get(p).ok_or_else(|| ApiError::bad_request(format!("permission named {p:?} not found")))?;
        if !context.is_some_and(|c| scheme.contexts.contains(&c)) {
            return Err(ApiError::conflict(format!(
                "permission {p:?} not allowed with context of type {:?}",
                role.context_type
            )));
        }
    }
    if wanted.is_empty() {
        return Err(ApiError::bad_request("invalid permission name"));
    }
    // A role's permissions reach whoever holds the role, wherever it is bound:
    // only what the caller holds everywhere may be added (the editor of a role
    // they hold would otherwise make themselves admin).
    caller.grants.holds_all(&wanted, None).map_err(ApiError::forbidden_with)?;
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "role.update.permission.add", Target::new("role", &name), data).await?;
    for p in wanted {
        if !role.schemes.contains(&p) {
            role.schemes.push(p);
        }
    }
    let result = server.store.update_role(&name, &role).await.map(|()| empty(StatusCode::OK));
    server.auth.invalidate();
    event.done(result.map_err(ApiError::from)).await
}

async fn permission_remove(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path((name, permission)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("role.update.permission.remove", &[])?;
    let mut role = load(&server, &name).await?;
    let before = role.schemes.len();
    role.schemes.retain(|s| *s != permission);
    if role.schemes.len() == before {
        return Err(ApiError::not_found(format!("permission {permission:?} not found in role {name:?}")));
    }
    let data = request_data(&Params::default(), &[("name", &name), ("permission", &permission)]);
    let event = record(&server, Some(&caller), &ip, "role.update.permission.remove", Target::new("role", &name), data).await?;
    let result = server.store.update_role(&name, &role).await.map(|()| empty(StatusCode::OK));
    server.auth.invalidate();
    event.done(result.map_err(ApiError::from)).await
}

/// Checks a role binding request: the caller's assign/dissociate permission,
/// the context value's validity, and that the caller holds every permission
/// of the role in that context.
async fn check_binding(
    server: &Server,
    caller: &Identity,
    scheme: &str,
    role: &RoleRecord,
    context_value: &str,
    validate_target: bool,
) -> ApiResult<()> {
    caller.require(scheme, &[])?;
    let kind = ContextType::parse(&role.context_type)
        .ok_or_else(|| ApiError::internal(format!("role {:?} has an invalid context type", role.name)))?;
    let ctx = if kind == ContextType::Global {
        None
    } else {
        if context_value.is_empty() {
            return Err(ApiError::bad_request(format!(
                "Global context value is not valid for role with context type {}",
                role.context_type
            )));
        }
        if validate_target {
            match kind {
                ContextType::Team if server.store.team(context_value).await?.is_none() => {
                    return Err(ApiError::bad_request("team not found"));
                }
                ContextType::User if server.store.user(context_value).await?.is_none() => {
                    return Err(ApiError::bad_request("user not found"));
                }
                // A binding on an object that does not exist yet would grant
                // whoever creates it later, maybe another team.
                ContextType::App if server.store.app(context_value).await?.is_none() => {
                    return Err(ApiError::bad_request("app not found"));
                }
                ContextType::Pool if server.store.pool(context_value).await?.is_none() => {
                    return Err(ApiError::bad_request("pool not found"));
                }
                ContextType::Router
                    if crate::routers::find(&crate::routers::catalogue(server).await?, context_value).is_none() =>
                {
                    return Err(ApiError::bad_request("router not found"));
                }
                // Other context types name objects of areas that check them as they arrive.
                _ => {}
            }
        }
        Some(Context::new(kind, context_value))
    };
    caller.grants.holds_all(&role.schemes, ctx.as_ref()).map_err(ApiError::forbidden_with)
}

#[derive(Clone, Copy, PartialEq, Eq)]
enum Rebind {
    Assign,
    Dissociate,
}

/// Binds or unbinds `role` for a user, team token or group at `context`,
/// after the checks of [`check_binding`] and that the subject exists.
#[allow(clippy::too_many_arguments)]
async fn rebind(
    server: &std::sync::Arc<Server>,
    caller: &Identity,
    ip: &ClientIp,
    op: Rebind,
    role: &str,
    kind: SubjectKind,
    subject: &str,
    context: String,
) -> ApiResult<Response> {
    let role = load(server, role).await?;
    let scheme = match op {
        Rebind::Assign => "role.update.assign",
        Rebind::Dissociate => "role.update.dissociate",
    };
    check_binding(server, caller, scheme, &role, &context, op == Rebind::Assign).await?;
    match kind {
        SubjectKind::User if server.store.user(subject).await?.is_none() => {
            return Err(ApiError::not_found("user not found"));
        }
        // tsuru answers an unknown team token here with a bare 404.
        SubjectKind::Token if server.store.team_token(subject).await?.is_none() => {
            return Err(ApiError::not_found(""));
        }
        SubjectKind::Group if subject.trim().is_empty() => {
            return Err(ApiError::bad_request("group name is required"));
        }
        _ => {}
    }
    let context = if role.context_type == "global" { String::new() } else { context };
    let data = serde_json::json!([
        {"name": ":name", "value": role.name},
        {"name": kind.as_str(), "value": subject},
        {"name": "context", "value": context},
    ]);
    let event = record(server, Some(caller), ip, scheme, Target::new("role", &role.name), data).await?;
    let result = match op {
        Rebind::Assign => server.store.bind_role(kind, subject, &role.name, &context).await,
        Rebind::Dissociate => server.store.unbind_role(kind, subject, &role.name, &context).await,
    };
    server.auth.invalidate();
    event.done(result.map(|()| empty(StatusCode::OK)).map_err(ApiError::from)).await
}

fn context_param(params: &Params) -> String {
    params.get("context").unwrap_or_default()
}

async fn assign_user(State(s): AppState, Caller(c): Caller, ip: ClientIp, Path(role): Path<String>, p: Params) -> ApiResult<Response> {
    let email = p.get("email").unwrap_or_default();
    rebind(&s, &c, &ip, Rebind::Assign, &role, SubjectKind::User, &email, context_param(&p)).await
}

async fn dissociate_user(
    State(s): AppState,
    Caller(c): Caller,
    ip: ClientIp,
    Path((role, email)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    rebind(&s, &c, &ip, Rebind::Dissociate, &role, SubjectKind::User, &email, context_param(&p)).await
}

async fn assign_token(State(s): AppState, Caller(c): Caller, ip: ClientIp, Path(role): Path<String>, p: Params) -> ApiResult<Response> {
    let token_id = p.get("token_id").unwrap_or_default();
    rebind(&s, &c, &ip, Rebind::Assign, &role, SubjectKind::Token, &token_id, context_param(&p)).await
}

async fn dissociate_token(
    State(s): AppState,
    Caller(c): Caller,
    ip: ClientIp,
    Path((role, token_id)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    rebind(&s, &c, &ip, Rebind::Dissociate, &role, SubjectKind::Token, &token_id, context_param(&p)).await
}

async fn assign_group(State(s): AppState, Caller(c): Caller, ip: ClientIp, Path(role): Path<String>, p: Params) -> ApiResult<Response> {
    let group = p.get("group_name").unwrap_or_default();
    rebind(&s, &c, &ip, Rebind::Assign, &role, SubjectKind::Group, &group, context_param(&p)).await
}

async fn dissociate_group(
    State(s): AppState,
    Caller(c): Caller,
    ip: ClientIp,
    Path((role, group)): Path<(String, String)>,
    p: Params,
) -> ApiResult<Response> {
    rebind(&s, &c, &ip, Rebind::Dissociate, &role, SubjectKind::Group, &group, context_param(&p)).await
}

async fn default_list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    require_any(&caller, &["role.default.create", "role.default.delete"])?;
    let roles: Vec<RoleJson> =
        server.store.roles().await?.into_iter().filter(|r| !r.events.is_empty()).map(role_json).collect();
    if roles.is_empty() { Ok(json(StatusCode::OK, &serde_json::Value::Null)) } else { Ok(json(StatusCode::OK, &roles)) }
}

/// `(event, role)` pairs from keys named after role events.
fn event_pairs(params: &Params) -> Vec<(&'static str, ContextType, String)> {
    let mut out = Vec::new();
    for (event, ctx) in ROLE_EVENTS {
        for role in params.all(event) {
            if !role.is_empty() {
                out.push((*event, *ctx, role));
            }
        }
    }
    out
}

async fn default_add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("role.default.create", &[])?;
    let pairs = event_pairs(&params);
    // Validate everything first so a bad pair changes nothing.
    let mut roles = Vec::new();
    for (event, ctx, name) in &pairs {
        let role = server.store.role(name).await?.ok_or_else(|| ApiError::bad_request("role not found"))?;
        if role.context_type != ctx.as_str() {
            return Err(ApiError::bad_request(format!(
                "wrong context type for role event, expected {:?} role has {:?}",
                ctx.as_str(),
                role.context_type
            )));
        }
        roles.push((*event, role));
    }
    for (role_event, mut role) in roles {
        if !role.events.iter().any(|e| e == role_event) {
            role.events.push(role_event.to_string());
            let name = role.name.clone();
            let data = serde_json::json!([{"name": role_event, "value": name}]);
            let event = record(&server, Some(&caller), &ip, "role.default.create", Target::new("role", &name), data).await?;
            event.done(server.store.update_role(&name, &role).await.map_err(ApiError::from)).await?;
        }
    }
    Ok(empty(StatusCode::OK))
}

async fn default_remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("role.default.delete", &[])?;
    let pairs = event_pairs(&params);
    let mut roles = Vec::new();
    for (event, _, name) in &pairs {
        let role = server.store.role(name).await?.ok_or_else(|| ApiError::bad_request("role not found"))?;
        roles.push((*event, role));
    }
    for (role_event, mut role) in roles {
        role.events.retain(|e| e != role_event);
        let name = role.name.clone();
        let data = serde_json::json!([{"name": role_event, "value": name}]);
        let event = record(&server, Some(&caller), &ip, "role.default.delete", Target::new("role", &name), data).await?;
        event.done(server.store.update_role(&name, &role).await.map_err(ApiError::from)).await?;
    }
    Ok(empty(StatusCode::OK))
}

#[derive(Serialize)]
struct PermissionJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "Contexts")]
    contexts: Vec<ContextType>,
}

async fn permissions(Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("role.update", &[])?;
    let mut out: Vec<PermissionJson> = registry()
        .schemes()
        .iter()
        .map(|s| PermissionJson { name: s.name.clone(), contexts: s.contexts.clone() })
        .collect();
    out.sort_by(|a, b| a.name.cmp(&b.name));
    Ok(json(StatusCode::OK, &out))
}
