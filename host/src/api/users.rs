//! Users: create, list, info, remove, passwords, API keys, quota.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::sync::LazyLock;

use super::params::Params;
use super::events::{record, request_data};
use super::{AppState, Caller, ClientIp, MaybeCaller, Routes, empty, json};
use crate::events::Target;
use crate::auth::{Identity, TokenKind, hash_token};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{self, Context, ContextType, Permission};
use crate::server::Server;
use crate::store::{AppColumn, RoleBinding, SubjectKind};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::POST, "/users", create)
        .add("1.0", Method::GET, "/users", list)
        .add("1.0", Method::DELETE, "/users", remove)
        .add("1.0", Method::GET, "/users/info", info)
        .add("1.0", Method::PUT, "/users/password", change_password)
        .add("1.0", Method::POST, "/users/{email}/password", reset_password)
        .add("1.0", Method::GET, "/users/api-key", api_key_show)
        .add("1.0", Method::POST, "/users/api-key", api_key_regenerate)
        .add("1.0", Method::GET, "/users/{email}/quota", quota_get)
        .add("1.0", Method::PUT, "/users/{email}/quota", quota_set)
}

static EMAIL: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^([^@\s]+)@((?:[-a-z0-9]+\.)+[a-z]{2,})$").unwrap());

pub fn valid_email(email: &str) -> bool {
    email.len() <= super::names::MAX_EMAIL && !email.chars().any(char::is_control) && EMAIL.is_match(email)
}

/// A role instance as `/users/info` shows it.
#[derive(Serialize)]
pub struct RoleInstanceJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ContextType")]
    context_type: String,
    #[serde(rename = "ContextValue")]
    context_value: String,
    #[serde(rename = "Group", skip_serializing_if = "Option::is_none")]
    group: Option<String>,
}

#[derive(Serialize)]
pub struct UserJson {
    #[serde(rename = "Email")]
    email: String,
    #[serde(rename = "Roles")]
    roles: Vec<RoleInstanceJson>,
    #[serde(rename = "Permissions")]
    permissions: Option<Vec<Permission>>,
    #[serde(rename = "Groups")]
    groups: Option<Vec<String>>,
}

pub fn user_json(email: &str, bindings: &[RoleBinding], groups: &[String]) -> UserJson {
    let roles = bindings
        .iter()
        .map(|b| RoleInstanceJson {
            name: b.role.name.clone(),
            context_type: b.role.context_type.clone(),
            context_value: b.context_value.clone(),
            group: b.group.clone(),
        })
        .collect();
    let permissions = rbac::expand(bindings);
    UserJson {
        email: email.into(),
        roles,
        permissions: if bindings.is_empty() { None } else { Some(permissions) },
        groups: if groups.is_empty() { None } else { Some(groups.to_vec()) },
    }
}

/// Creates a user through the auth scheme and gives them the `user-create`
/// default roles. Shared by `POST /users` and `torii root-user-create`.
pub async fn create_user(server: &Server, email: &str, password: &str) -> ApiResult<()> {
    if !valid_email(email) {
        return Err(ApiError::bad_request("invalid email"));
    }
    if server.store.user(email).await?.is_some() {
        return Err(ApiError::conflict("this email is already registered"));
    }
    server.scheme.create_user(email, password).await?;
    let defaults: Vec<String> = server
        .store
        .roles()
        .await?
        .into_iter()
        .filter(|r| r.events.iter().any(|e| e == "user-create"))
        .map(|r| r.name)
        .collect();
    if let Err(e) = server.store.create_user(email, server.config.quota.apps_per_user, &defaults).await {
        // Keep the scheme and the host in step: undo the credentials.
        let _ = server.scheme.remove_user(email).await;
        return Err(e.into());
    }
    server.auth.invalidate();
    Ok(())
}

async fn create(
    State(server): AppState,
    MaybeCaller(caller): MaybeCaller,
    ip: ClientIp,
    params: Params,
) -> ApiResult<Response> {
    if !server.config.auth.user_registration {
        // Only a login session of someone holding user.create may register others.
        let allowed = caller
            .as_ref()
            .is_some_and(|c| c.kind == TokenKind::Session && c.allows("user.create", &[]));
        if !allowed {
            return Err(ApiError::new(StatusCode::UNAUTHORIZED, "User registration is disabled for non-admin users."));
        }
    }
    let email = params.get("email").unwrap_or_default();
    let password = params.get("password").unwrap_or_default();
    if !valid_email(&email) {
        return Err(ApiError::bad_request("invalid email"));
    }
    let data = request_data(&params, &[]);
    let event = record(&server, caller.as_deref(), &ip, "user.create", Target::new("user", &email), data).await?;
    let result = create_user(&server, &email, &password).await.map(|()| empty(StatusCode::CREATED));
    event.done(result).await
}

async fn info(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let _ = &server;
    Ok(json(StatusCode::OK, &user_json(&caller.email, &caller.roles, &caller.groups)))
}

async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let see_all = caller.allows("user.update", &[]);
    let email_filter = params.get("userEmail").filter(|s| !s.is_empty());
    let role_filter = params.get("role").filter(|s| !s.is_empty());
    let context_filter = params.get("context").filter(|s| !s.is_empty());
    let mut out = Vec::new();
    for user in server.store.users().await? {
        if email_filter.as_ref().is_some_and(|e| *e != user.email) {
            continue;
        }
        let bindings = server.store.bindings(SubjectKind::User, &user.email, &[]).await?;
        let visible: Vec<RoleBinding> = if see_all {
            bindings
        } else {
            bindings
                .into_iter()
                .filter(|b| {
                    let Some(kind) = ContextType::parse(&b.role.context_type) else { return false };
                    kind != ContextType::Global
                        && caller
                            .grants
                            .holds_all(&b.role.schemes, Some(&Context::new(kind, b.context_value.clone())))
                            .is_ok()
                })
                .collect()
        };
        if !see_all && visible.is_empty() {
            continue;
        }
        if let Some(role) = &role_filter {
            let has = visible
                .iter()
                .any(|b| &b.role.name == role && context_filter.as_ref().is_none_or(|c| *c == b.context_value));
            if !has {
                continue;
            }
        }
        out.push(user_json(&user.email, &visible, &user.groups));
    }
    if out.is_empty() {
        if context_filter.is_some() {
            return Err(ApiError::not_found("Wrong context being passed."));
        }
        out.push(user_json(&caller.email, &caller.roles, &caller.groups));
    }
    Ok(json(StatusCode::OK, &out))
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let email = params.get("user").filter(|s| !s.is_empty()).unwrap_or_else(|| caller.email.clone());
    caller.require("user.delete", &[Context::user(&email)])?;
    if server.store.user(&email).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
    }
    let event = record(&server, Some(&caller), &ip, "user.delete", Target::new("user", &email), request_data(&params, &[])).await?;
    let work = async {
        server.scheme.remove_user(&email).await?;
        server.store.delete_user(&email).await?;
        server.auth.invalidate();
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

fn user_caller(caller: &Identity) -> ApiResult<&str> {
    caller.user_email().ok_or_else(|| ApiError::bad_request("this operation needs a user, not a team token"))
}

async fn change_password(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let email = user_caller(&caller)?;
    if !server.scheme.manages_credentials().await? {
        return Err(ApiError::bad_request("Authentication scheme does not allow this operation."));
    }
    let old = params.get("old").unwrap_or_default();
    let new = params.get("new").unwrap_or_default();
    let confirm = params.get("confirm").unwrap_or_default();
    if old.is_empty() || new.is_empty() {
        return Err(ApiError::bad_request("Both the old and the new passwords are required."));
    }
    if new != confirm {
        return Err(ApiError::bad_request("New password and password confirmation didn't match."));
    }
    let data = request_data(&params, &[]);
    let event = record(&server, Some(&caller), &ip, "user.update.password", Target::new("user", email), data).await?;
    let result = server.scheme.change_password(email, &old, &new).await.map_err(ApiError::from);
    event.done(result.map(|()| empty(StatusCode::OK))).await
}

/// Without `token`: mails a reset token. With it: mails a new password.
async fn reset_password(
    State(server): AppState,
    MaybeCaller(caller): MaybeCaller,
    ip: ClientIp,
    Path(email): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    if !server.scheme.manages_credentials().await? {
        return Err(ApiError::bad_request("Authentication scheme does not allow this operation."));
    }
    if server.store.user(&email).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
    }
    let data = request_data(&params, &[("email", &email)]);
    let event = record(&server, caller.as_deref(), &ip, "user.update.reset", Target::new("user", &email), data).await?;
    let work = async {
        let mail = match params.get("token").filter(|t| !t.is_empty()) {
            None => server.scheme.start_password_reset(&email).await?,
            Some(token) => server.scheme.finish_password_reset(&email, &token).await?,
        };
        server
            .mailer
            .send(&mail.to, &mail.subject, &mail.body)
            .await
            .map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn target_user(server: &Server, caller: &Identity, params: &Params, global_only: bool) -> ApiResult<String> {
    let email = match params.get("user").filter(|s| !s.is_empty()) {
        Some(email) => email,
        None => user_caller(caller)?.to_string(),
    };
    let is_self = caller.user_email() == Some(email.as_str());
    if !is_self || !global_only {
        let contexts: Vec<Context> = if global_only { vec![] } else { vec![Context::user(&email)] };
        caller.require("user.update.token", &contexts)?;
    }
    if server.store.user(&email).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
    }
    Ok(email)
}

async fn set_new_api_key(server: &Server, email: &str) -> ApiResult<String> {
    let generation = crate::auth::new_generation();
    let key = server.auth.key().api_key(email, generation);
    server.store.set_api_key(email, generation, &hash_token(&key)).await?;
    server.auth.invalidate();
    Ok(key)
}

async fn api_key_show(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let email = target_user(&server, &caller, &params, true).await?;
    let user = server.store.user(&email).await?.ok_or_else(|| ApiError::not_found("user not found"))?;
    let key = if user.api_key_gen == 0 {
        set_new_api_key(&server, &email).await?
    } else {
        server.auth.key().api_key(&email, user.api_key_gen)
    };
    Ok(json(StatusCode::OK, &key))
}

async fn api_key_regenerate(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let email = target_user(&server, &caller, &params, false).await?;
    let event = record(&server, Some(&caller), &ip, "user.update.token", Target::new("user", &email), request_data(&params, &[])).await?;
    let result = set_new_api_key(&server, &email).await.map(|key| json(StatusCode::OK, &key));
    event.done(result).await
}

#[derive(Serialize)]
pub struct QuotaJson {
    pub limit: i64,
    pub inuse: i64,
}

/// Parses a quota `limit`: negative means unlimited (-1).
pub fn parse_limit(params: &Params) -> ApiResult<i64> {
    let raw = params.get("limit").unwrap_or_default();
    let limit: i64 = raw.trim().parse().map_err(|_| ApiError::bad_request("Invalid limit"))?;
    Ok(if limit < 0 { -1 } else { limit })
}

async fn quota_get(State(server): AppState, Caller(caller): Caller, Path(email): Path<String>) -> ApiResult<Response> {
    caller.require("user.read.quota", &[Context::user(&email)])?;
    let user = server.store.user(&email).await?.ok_or_else(|| ApiError::not_found("user not found"))?;
    let inuse = server.store.app_names_where(AppColumn::Owner, &email).await?.len() as i64;
    Ok(json(StatusCode::OK, &QuotaJson { limit: user.quota_limit, inuse }))
}

async fn quota_set(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(email): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("user.update.quota", &[])?;
    let limit = parse_limit(&params)?;
    if server.store.user(&email).await?.is_none() {
        return Err(ApiError::not_found("user not found"));
    }
    let inuse = server.store.app_names_where(AppColumn::Owner, &email).await?.len() as i64;
    if limit >= 0 && limit < inuse {
        return Err(ApiError::forbidden_with("New limit is less than the current allocated value"));
    }
    let data = request_data(&params, &[("email", &email)]);
    let event = record(&server, Some(&caller), &ip, "user.update.quota", Target::new("user", &email), data).await?;
    let result = server.store.set_user_quota(&email, limit).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}
