//! Team tokens (`/1.6/tokens`, info at `/1.7/tokens/{id}`).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::params::{Params, parse_bool};
use super::events::{record, request_data};
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_list, json_untyped, time_json};
use crate::events::Target;
use crate::auth::{Identity, Subject, hash_token, new_generation};
use crate::error::{ApiError, ApiResult};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{SubjectKind, TeamTokenRecord, now_millis};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.6", Method::GET, "/tokens", list)
        .add("1.6", Method::POST, "/tokens", create)
        .add("1.7", Method::GET, "/tokens/{token_id}", info)
        .add("1.6", Method::PUT, "/tokens/{token_id}", update)
        .add("1.6", Method::DELETE, "/tokens/{token_id}", remove)
}


#[derive(Serialize)]
struct RoleRefJson {
    #[serde(rename = "Name")]
    name: String,
    #[serde(rename = "ContextValue")]
    context_value: String,
}

#[derive(Serialize)]
struct TokenJson {
    token: String,
    token_id: String,
    description: String,
    created_at: String,
    expires_at: String,
    last_access: String,
    creator_email: String,
    team: String,
    #[serde(skip_serializing_if = "Vec::is_empty")]
    roles: Vec<RoleRefJson>,
}

/// The token as `caller` may see it: the value only if the caller holds
/// every permission the token's roles grant.
async fn token_json(server: &Server, caller: &Identity, t: &TeamTokenRecord) -> ApiResult<TokenJson> {
    let bindings = server.store.bindings(SubjectKind::Token, &t.token_id, &[]).await?;
    let may_see = bindings.iter().all(|b| {
        let ctx = ContextType::parse(&b.role.context_type)
            .filter(|k| *k != ContextType::Global)
            .map(|k| Context::new(k, b.context_value.clone()));
        caller.grants.holds_all(&b.role.schemes, ctx.as_ref()).is_ok()
    });
    Ok(TokenJson {
        token: if may_see { server.auth.key().team_token(&t.token_id, t.token_gen) } else { String::new() },
        token_id: t.token_id.clone(),
        description: t.description.clone(),
        created_at: time_json(t.created_at),
        expires_at: time_json(t.expires_at),
        last_access: time_json(t.last_access),
        creator_email: t.creator_email.clone(),
        team: t.team.clone(),
        roles: bindings
            .into_iter()
            .map(|b| RoleRefJson { name: b.role.name, context_value: b.context_value })
            .collect(),
    })
}

/// tsuru's "auto team selection" (API-NOTES §1.8): an omitted team is fine
/// when the caller's permission resolves to exactly one team.
pub async fn select_team(server: &Server, caller: &Identity, scheme: &str, given: Option<String>) -> ApiResult<String> {
    if let Some(team) = given.filter(|t| !t.is_empty()) {
        caller.require(scheme, &[Context::team(&team)])?;
        if server.store.team(&team).await?.is_none() {
            return Err(ApiError::not_found("team not found"));
        }
        return Ok(team);
    }
    let must_choose = || ApiError::bad_request("You must provide a team to execute this action.");
    match caller.grants.contexts_for(scheme, ContextType::Team) {
        None => {
            let teams = server.store.teams().await?;
            match teams.as_slice() {
                [only] => Ok(only.name.clone()),
                [] => Err(ApiError::not_found("team not found")),
                _ => Err(must_choose()),
            }
        }
        Some(teams) => match teams.as_slice() {
            [only] => Ok(only.clone()),
            [] => Err(ApiError::forbidden()),
            _ => Err(must_choose()),
        },
    }
}

async fn load(server: &Server, token_id: &str) -> ApiResult<TeamTokenRecord> {
    server.store.team_token(token_id).await?.ok_or_else(|| ApiError::not_found("team token not found"))
}

fn parse_expires(params: &Params) -> ApiResult<i64> {
    match params.field("expires_in").filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(raw) => raw.trim().parse().map_err(|_| ApiError::bad_request(format!("invalid expires_in: {raw:?}"))),
    }
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let mut out = Vec::new();
    for t in server.store.team_tokens().await? {
        if caller.allows("team.token.read", &[Context::team(&t.team)]) {
            out.push(token_json(&server, &caller, &t).await?);
        }
    }
    Ok(json_list(&out))
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(token_id): Path<String>) -> ApiResult<Response> {
    let t = load(&server, &token_id).await?;
    caller.require("team.token.read", &[Context::team(&t.team)])?;
    Ok(json(StatusCode::OK, &token_json(&server, &caller, &t).await?))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let team = select_team(&server, &caller, "team.token.create", params.field("team")).await?;
    let expires_in = parse_expires(&params)?;
    let token_id = match params.field("token_id").filter(|s| !s.is_empty()) {
        Some(id) => id,
        None => format!("{team}-{}", &hex::encode(new_generation().to_be_bytes())[..5]),
    };
    if !super::names::valid(&token_id) {
        return Err(ApiError::internal("invalid token_id"));
    }
    let now = now_millis();
    let token = TeamTokenRecord {
        token_id: token_id.clone(),
        team,
        description: params.field("description").unwrap_or_default(),
        token_gen: new_generation(),
        creator_email: match &caller.subject {
            Subject::User { email } => email.clone(),
            Subject::TeamToken { .. } | Subject::App { .. } => caller.email.clone(),
        },
        created_at: now,
        expires_at: if expires_in > 0 { now + expires_in * 1000 } else { 0 },
        last_access: 0,
    };
    let hash = hash_token(&server.auth.key().team_token(&token_id, token.token_gen));
    let event =
        record(&server, Some(&caller), &ip, "team.token.create", Target::new("team", &token.team), request_data(&params, &[])).await?;
    let work = async {
        server.store.create_team_token(&token, &hash).await.map_err(|e| ApiError::internal(e.to_string()))?;
        Ok(json_untyped(StatusCode::CREATED, &token_json(&server, &caller, &token).await?))
    };
    event.done(work.await).await
}

async fn update(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(token_id): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    let mut t = load(&server, &token_id).await?;
    caller.require("team.token.update", &[Context::team(&t.team)])?;
    let regenerate = match params.field("regenerate").filter(|s| !s.is_empty()) {
        None => false,
        Some(raw) => parse_bool(&raw).ok_or_else(|| ApiError::bad_request(format!("invalid regenerate: {raw:?}")))?,
    };
    let expires_in = parse_expires(&params)?;
    if let Some(d) = params.field("description").filter(|s| !s.is_empty()) {
        t.description = d;
    }
    if expires_in > 0 {
        t.expires_at = now_millis() + expires_in * 1000;
    } else if expires_in < 0 {
        t.expires_at = 0;
    }
    let hash = if regenerate {
        t.token_gen = new_generation();
        Some(hash_token(&server.auth.key().team_token(&t.token_id, t.token_gen)))
    } else {
        None
    };
    let data = request_data(&params, &[("token_id", &token_id)]);
    let event = record(&server, Some(&caller), &ip, "team.token.update", Target::new("team", &t.team), data).await?;
    let work = async {
        server.store.update_team_token(&t, hash.as_deref()).await?;
        server.auth.invalidate();
        Ok(json_untyped(StatusCode::OK, &token_json(&server, &caller, &t).await?))
    };
    event.done(work.await).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(token_id): Path<String>) -> ApiResult<Response> {
    let t = load(&server, &token_id).await?;
    caller.require("team.token.delete", &[Context::team(&t.team)])?;
    let data = request_data(&Params::default(), &[("token_id", &token_id)]);
    let event = record(&server, Some(&caller), &ip, "team.token.delete", Target::new("team", &t.team), data).await?;
    let result = server.store.delete_team_token(&token_id).await.map(|()| empty(StatusCode::OK));
    server.auth.invalidate();
    event.done(result.map_err(ApiError::from)).await
}
