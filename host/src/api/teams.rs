//! Teams: create, list, info, update (tags, rename), remove, quota.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::sync::LazyLock;

use super::params::Params;
use super::users::{QuotaJson, parse_limit, user_json};
use super::events::{record, request_data};
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_list};
use crate::events::Target;
use crate::auth::Subject;
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Context, ContextType, registry, top_level_rank};
use crate::store::{AppColumn, SubjectKind};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/teams", list)
        .add("1.0", Method::POST, "/teams", create)
        .add("1.4", Method::GET, "/teams/{name}", info)
        .add("1.6", Method::PUT, "/teams/{name}", update)
        .add("1.4", Method::POST, "/teams/{name}", update)
        .add("1.0", Method::DELETE, "/teams/{name}", remove)
        .add("1.12", Method::GET, "/teams/{name}/quota", quota_get)
        .add("1.12", Method::PUT, "/teams/{name}/quota", quota_set)
}

static TEAM_NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-z][-@_.+\w]+$").unwrap());

const INVALID_TEAM: &str = "Invalid team name, team names should start with a letter andcontain only lower case letters, numbers, dashes, underscore and @.";

fn team_name(raw: &str) -> ApiResult<String> {
    let name = raw.trim();
    if TEAM_NAME.is_match(name) && name.len() <= super::names::MAX_NAME { Ok(name.to_string()) } else { Err(ApiError::bad_request(INVALID_TEAM)) }
}

fn tags_json(tags: &[String]) -> Option<Vec<String>> {
    if tags.is_empty() { None } else { Some(tags.to_vec()) }
}

#[derive(Serialize)]
struct TeamListJson {
    name: String,
    tags: Option<Vec<String>>,
    permissions: Vec<String>,
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let team_schemes: Vec<&str> = registry()
        .schemes()
        .iter()
        .filter(|s| s.contexts.contains(&ContextType::Team))
        .map(|s| s.name.as_str())
        .collect();
    let mut out = Vec::new();
    for team in server.store.teams().await? {
        let ctx = [Context::team(&team.name)];
        let mut permissions: Vec<String> = Vec::new();
        for scheme in &team_schemes {
            if caller.allows(scheme, &ctx) {
                let top = scheme.split('.').next().unwrap_or_default().to_string();
                if !permissions.contains(&top) {
                    permissions.push(top);
                }
            }
        }
        permissions.sort_by_key(|p| top_level_rank(p));
        if !permissions.is_empty() {
            out.push(TeamListJson { name: team.name, tags: tags_json(&team.tags), permissions });
        }
    }
    Ok(json_list(&out))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("team.create", &[])?;
    let name = team_name(&params.field("name").unwrap_or_default())?;
    let tags = params.tags()?;
    let event = record(&server, Some(&caller), &ip, "team.create", Target::new("team", &name), request_data(&params, &[])).await?;
    let work = async {
        let creator_roles: Vec<String> = server
            .store
            .roles()
            .await?
            .into_iter()
            .filter(|r| r.context_type == "team" && r.events.iter().any(|e| e == "team-create"))
            .map(|r| r.name)
            .collect();
        let creator = match &caller.subject {
            Subject::User { email } => Some((SubjectKind::User.as_str(), email.as_str())),
            Subject::TeamToken { token_id, .. } => Some((SubjectKind::Token.as_str(), token_id.as_str())),
            Subject::App { .. } => None,
        };
        server
            .store
            .create_team(&name, &tags, server.config.quota.apps_per_team, creator, &creator_roles)
            .await?;
        server.auth.invalidate();
        Ok(empty(StatusCode::CREATED))
    };
    event.done(work.await).await
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let team = server.store.team(&name).await?.ok_or_else(|| ApiError::not_found("team not found"))?;
    caller.require("team.read", &[])?;
    let mut users = Vec::new();
    if caller.allows("team", &[]) {
        for user in server.store.users().await? {
            let bindings = server.store.bindings(SubjectKind::User, &user.email, &[]).await?;
            let member = bindings
                .iter()
                .any(|b| b.role.context_type == "global" || (b.role.context_type == "team" && b.context_value == name));
            if member {
                users.push(user_json(&user.email, &bindings, &user.groups));
            }
        }
    }
    // The apps the team is a member of, each as app info shows it.
    let mut apps = Vec::new();
    for view in server.store.app_views().await? {
        if view.app.teams.iter().any(|t| *t == name) {
            apps.push(super::apps::info_json(&server, &view).await?);
        }
    }
    let body = serde_json::json!({
        "name": team.name,
        "tags": tags_json(&team.tags),
        "users": users,
        "pools": super::pools::team_pools_json(&server, &name).await?,
        "apps": apps,
    });
    Ok(json(StatusCode::OK, &body))
}

async fn update(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("team.update", &[Context::team(&name)])?;
    let team = server.store.team(&name).await?.ok_or_else(|| ApiError::not_found(format!("Team {name:?} not found.")))?;
    let new_tags = params.tags()?;
    let tags = if params.field_list("tags").is_empty() && params.all("tag").is_empty() { team.tags } else { new_tags };
    let new_name = match params.field("newname").filter(|n| !n.trim().is_empty() && n.trim() != name) {
        Some(n) => Some(team_name(&n)?),
        None => None,
    };
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "team.update", Target::new("team", &name), data).await?;
    let work = async {
        match new_name {
            Some(new_name) => {
                server.store.rename_team(&name, &new_name, &tags).await?;
                server.auth.invalidate();
            }
            None => server.store.set_team_tags(&name, &tags).await?,
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    let not_found = || ApiError::not_found(format!("Team {name:?} not found."));
    if !caller.allows("team.delete", &[Context::team(&name)]) {
        return Err(not_found());
    }
    if server.store.team(&name).await?.is_none() {
        return Err(not_found());
    }
    let data = request_data(&Params::default(), &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "team.delete", Target::new("team", &name), data).await?;
    let work = async {
        let apps = server.store.app_names_where(AppColumn::Team, &name).await?;
        let tokens = server.store.team_token_ids(&name).await?;
        let mut refs = Vec::new();
        if !apps.is_empty() {
            refs.push(format!("Apps: {}", apps.join(", ")));
        }
        if !tokens.is_empty() {
            refs.push(format!("Team tokens: {}", tokens.join(", ")));
        }
        // Its volumes' data would go to a team made later under its name.
        let volumes = server.store.volumes(Some(&crate::store::VolumeFilter { teams: vec![name.clone()], ..Default::default() })).await?;
        if !volumes.is_empty() {
            refs.push(format!("Volumes: {}", volumes.iter().map(|v| v.name.as_str()).collect::<Vec<_>>().join(", ")));
        }
        if !refs.is_empty() {
            return Err(ApiError::forbidden_with(format!(
                "This team cannot be removed because there are still references to it:\n{}",
                refs.join("\n")
            )));
        }
        server.store.delete_team(&name).await?;
        server.auth.invalidate();
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn quota_get(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("team.read.quota", &[Context::team(&name)])?;
    let team = server.store.team(&name).await?.ok_or_else(|| ApiError::not_found("team not found"))?;
    let inuse = server.store.app_names_where(AppColumn::TeamOwner, &name).await?.len() as i64;
    Ok(json(StatusCode::OK, &QuotaJson { limit: team.quota_limit, inuse }))
}

async fn quota_set(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("team.update.quota", &[Context::team(&name)])?;
    let limit = parse_limit(&params)?;
    if server.store.team(&name).await?.is_none() {
        return Err(ApiError::not_found("team not found"));
    }
    let inuse = server.store.app_names_where(AppColumn::TeamOwner, &name).await?.len() as i64;
    if limit >= 0 && limit < inuse {
        return Err(ApiError::forbidden_with("New limit is less than the current allocated value"));
    }
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "team.update.quota", Target::new("team", &name), data).await?;
    let work = async {
        server.store.set_team_quota(&name, limit).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}
