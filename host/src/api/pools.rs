//! Pools and constraints (API-NOTES §2.11).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;

use super::events::{record, request_data};
use super::params::{Params, parse_bool};
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_list};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::pools::{self, Constraint, FIELDS};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::PoolRecord;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/pools", list)
        .add("1.0", Method::POST, "/pools", create)
        .add("1.8", Method::GET, "/pools/{name}", info)
        .add("1.0", Method::PUT, "/pools/{name}", update)
        .add("1.0", Method::DELETE, "/pools/{name}", remove)
        .add("1.0", Method::POST, "/pools/{name}/team", team_add)
        .add("1.0", Method::DELETE, "/pools/{name}/team", team_remove)
        .add("1.3", Method::GET, "/constraints", constraints_list)
        .add("1.3", Method::PUT, "/constraints", constraints_set)
}


const INVALID_POOL: &str = "Invalid pool name, pool name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";

pub(super) fn pool_ctx(name: &str) -> Context {
    Context::new(ContextType::Pool, name)
}

/// The contexts of an operation on `pool`; `""` (every pool) is global.
pub(super) fn pool_contexts(pool: &str) -> Vec<Context> {
    if pool.is_empty() { vec![] } else { vec![pool_ctx(pool)] }
}

/// The event target of an operation on `pool`; `""` (every pool) is global.
pub(super) fn pool_target(pool: &str) -> Target {
    if pool.is_empty() { Target::new("global", "") } else { Target::new("pool", pool) }
}

/// The pools in which the caller holds `scheme` (`None`: every pool); 403
/// when none (tsuru's "needs at least one context").
pub(super) fn readable_pools(caller: &Identity, scheme: &str) -> ApiResult<Option<Vec<String>>> {
    match caller.grants.contexts_for(scheme, ContextType::Pool) {
        Some(pools) if pools.is_empty() => Err(ApiError::forbidden()),
        other => Ok(other),
    }
}

/// Whether a per-pool setting of `pool` shows to a caller reading `readable`
/// pools; the default (`""`) shows to everyone who may read some pool's.
pub(super) fn shows(pool: &str, readable: &Option<Vec<String>>) -> bool {
    pool.is_empty() || readable.as_ref().is_none_or(|r| r.iter().any(|p| p == pool))
}

#[derive(Serialize)]
struct AllowedJson {
    team: Option<Vec<String>>,
    router: Option<Vec<String>>,
    service: Option<Vec<String>>,
    plan: Option<Vec<String>>,
    #[serde(rename = "volume-plan")]
    volume_plan: Option<Vec<String>>,
}

#[derive(Serialize)]
pub(super) struct PoolJson {
    name: String,
    default: bool,
    provisioner: String,
    labels: Option<BTreeMap<String, String>>,
    public: bool,
    teams: Option<Vec<String>>,
    allowed: AllowedJson,
}

fn nil_if_empty(v: Vec<String>) -> Option<Vec<String>> {
    if v.is_empty() { None } else { Some(v) }
}

/// Everything needed to resolve pools' allowed lists, read once.
struct World {
    constraints: Vec<Constraint>,
    teams: Vec<String>,
    plans: Vec<String>,
    routers: Vec<String>,
    /// Registered services (brokers' are left out: listing pools does not
    /// wait on every broker's catalogue).
    services: Vec<String>,
    /// The provisioner of pools that name none, and the volume plans of each provisioner.
    default_provisioner: String,
    volume_plans: Vec<(String, String)>,
}

async fn world(server: &Server) -> ApiResult<World> {
    Ok(World {
        default_provisioner: server.config.pools.default_provisioner.clone(),
        volume_plans: server.config.volume_plan.iter().map(|v| (v.provisioner.clone(), v.name.clone())).collect(),
        constraints: server.store.constraints().await?,
        teams: server.store.teams().await?.into_iter().map(|t| t.name).collect(),
        plans: server.store.plans().await?.into_iter().map(|p| p.name).collect(),
        routers: crate::routers::catalogue(server).await?.into_iter().map(|r| r.name).collect(),
        services: server.store.services().await?.into_iter().map(|s| s.name).collect(),
    })
}

fn pool_json(w: &World, p: PoolRecord) -> PoolJson {
    let admitted = |field: &str, existing: &[String]| nil_if_empty(pools::admitted(&w.constraints, &p.name, field, existing));
    let teams = admitted("team", &w.teams);
    let provisioner = crate::config::provisioner_or(&p.provisioner, &w.default_provisioner);
    let volume_plans: Vec<String> = w.volume_plans.iter().filter(|(prov, _)| prov == provisioner).map(|(_, name)| name.clone()).collect();
    PoolJson {
        default: p.default,
        provisioner: p.provisioner.clone(),
        labels: if p.labels.is_empty() { None } else { Some(p.labels.clone()) },
        public: pools::is_public(&w.constraints, &p.name),
        allowed: AllowedJson {
            team: teams.clone(),
            router: admitted("router", &w.routers),
            service: admitted("service", &w.services),
            plan: admitted("plan", &w.plans),
            // The plans of the pool's provisioner it admits.
            volume_plan: admitted("volume-plan", &volume_plans),
        },
        teams,
        name: p.name,
    }
}

/// Pools the caller may see (API-NOTES §2.11).
fn visible(caller: &Identity, w: &World, pool: &PoolRecord) -> bool {
    if caller.allows("pool.read", &[pool_ctx(&pool.name)]) {
        return true;
    }
    match caller.grants.contexts_for("app.create", ContextType::Team) {
        None => true,
        Some(teams) => teams.iter().any(|t| pools::admits(&w.constraints, &pool.name, "team", t) && governed(w, &pool.name)),
    }
}

/// A pool with no team constraint at all admits no one through team grants.
fn governed(w: &World, pool: &str) -> bool {
    pools::governing(&w.constraints, pool, "team").is_some()
}

/// The pools `team` may use (public ones, and those whose team constraint
/// admits it), as team info shows them.
pub(super) async fn team_pools_json(server: &Server, team: &str) -> ApiResult<Vec<PoolJson>> {
    let w = world(server).await?;
    Ok(server.store.pools().await?.into_iter().filter(|p| pools::admits(&w.constraints, &p.name, "team", team)).map(|p| pool_json(&w, p)).collect())
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let w = world(&server).await?;
    let out: Vec<PoolJson> = server
        .store
        .pools()
        .await?
        .into_iter()
        .filter(|p| visible(&caller, &w, p))
        .map(|p| pool_json(&w, p))
        .collect();
    Ok(json_list(&out))
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("pool.read", &[pool_ctx(&name)])?;
    let pool = server.store.pool(&name).await?.ok_or_else(|| ApiError::not_found("Pool does not exist."))?;
    let w = world(&server).await?;
    Ok(json(StatusCode::OK, &pool_json(&w, pool)))
}

fn labels(params: &Params) -> ApiResult<BTreeMap<String, String>> {
    let labels = params.field_map("labels");
    if let Some(affinity) = labels.get("affinity")
        && !serde_json::from_str::<serde_json::Value>(affinity).is_ok_and(|v| v.is_object())
    {
        return Err(ApiError::bad_request("label affinity must be a JSON object (a Kubernetes affinity)"));
    }
    Ok(labels)
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("pool.create", &[])?;
    let name = params.field("name").unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ApiError::bad_request("Pool name is required."));
    }
    if !super::names::valid(&name) {
        return Err(ApiError::bad_request(INVALID_POOL));
    }
    let provisioner = params.field("provisioner").unwrap_or_default();
    if !provisioner.is_empty() && !server.config.provisioner_exists(&provisioner)
    {
        return Err(ApiError::bad_request(format!("provisioner {provisioner:?} is not configured")));
    }
    let public = params.optional_bool("public")?.unwrap_or(false);
    let default = params.optional_bool("default")?.unwrap_or(false);
    let force = params.optional_bool("force")?.unwrap_or(false);
    let pool = PoolRecord { name, provisioner, default, labels: labels(&params)? };
    let event = record(&server, Some(&caller), &ip, "pool.create", Target::new("pool", &pool.name), request_data(&params, &[])).await?;
    let result = server.store.create_pool(&pool, public, force).await.map(|()| empty(StatusCode::CREATED));
    event.done(result.map_err(ApiError::from)).await
}

/// Adds or removes `values` in the pool's exact team constraint.
async fn edit_team_constraint(server: &Server, pool: &str, add: &[String], remove: &[String]) -> ApiResult<()> {
    let existing = server.store.constraints().await?.into_iter().find(|c| c.pool_expr == pool && c.field == "team");
    let mut c = existing.unwrap_or(Constraint { pool_expr: pool.into(), field: "team".into(), values: vec![], blacklist: false });
    for v in add {
        if !c.values.contains(v) {
            c.values.push(v.clone());
        }
    }
    c.values.retain(|v| !remove.contains(v));
    server.store.set_constraint(&c).await?;
    Ok(())
}

async fn update(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("pool.update", &[])?;
    if server.store.pool(&name).await?.is_none() {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    let default = params.optional_bool("default")?;
    let public = params.optional_bool("public")?;
    let force = params.optional_bool("force")?.unwrap_or(false);
    let new_labels = if params.field_map("labels").is_empty() { None } else { Some(labels(&params)?) };
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "pool.update", Target::new("pool", &name), data).await?;
    let work = async {
        server.store.update_pool(&name, default, force, new_labels.as_ref()).await?;
        let everyone = ["*".to_string()];
        match public.or(default.filter(|d| *d)) {
            Some(true) => edit_team_constraint(&server, &name, &everyone, &[]).await?,
            Some(false) if public == Some(false) => edit_team_constraint(&server, &name, &[], &everyone).await?,
            _ => {}
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("pool.delete", &[])?;
    if server.store.pool(&name).await?.is_none() {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    let data = request_data(&Params::default(), &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "pool.delete", Target::new("pool", &name), data).await?;
    let work = async {
        if !server.store.app_names_where(crate::store::AppColumn::Pool, &name).await?.is_empty() {
            return Err(ApiError::forbidden_with(
                "This pool has apps, you need to migrate or remove them before removing the pool",
            ));
        }
        server.store.delete_pool(&name).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn team_add(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("pool.update.team.add", &[pool_ctx(&name)])?;
    let teams: Vec<String> = params.all("team").into_iter().filter(|t| !t.is_empty()).collect();
    if teams.is_empty() {
        return Err(ApiError::bad_request("You must provide the team."));
    }
    let pool = server.store.pool(&name).await?.ok_or_else(|| ApiError::not_found("Pool does not exist."))?;
    let constraints = server.store.constraints().await?;
    if pool.default || pools::is_public(&constraints, &name) {
        return Err(ApiError::internal("Public/Default pool can't have teams."));
    }
    let exact = constraints.iter().find(|c| c.pool_expr == name && c.field == "team");
    if exact.is_some_and(|c| c.blacklist) {
        return Err(ApiError::internal("This pool has a team blacklist: change the constraint instead."));
    }
    for team in &teams {
        if exact.is_some_and(|c| c.values.contains(team)) {
            return Err(ApiError::internal("Team already exists in pool."));
        }
        if server.store.team(team).await?.is_none() {
            return Err(ApiError::not_found(format!("Team {team:?} not found.")));
        }
    }
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "pool.update.team.add", Target::new("pool", &name), data).await?;
    let result = edit_team_constraint(&server, &name, &teams, &[]).await.map(|()| empty(StatusCode::OK));
    event.done(result).await
}

async fn team_remove(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    Path(name): Path<String>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("pool.update.team.remove", &[pool_ctx(&name)])?;
    let teams: Vec<String> = params.all("team").into_iter().filter(|t| !t.is_empty()).collect();
    if teams.is_empty() {
        return Err(ApiError::bad_request("You must provide the team."));
    }
    if server.store.pool(&name).await?.is_none() {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    let data = request_data(&params, &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "pool.update.team.remove", Target::new("pool", &name), data).await?;
    let result = edit_team_constraint(&server, &name, &[], &teams).await.map(|()| empty(StatusCode::OK));
    event.done(result).await
}

async fn constraints_list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("pool.read.constraints", &[])?;
    Ok(json_list(&server.store.constraints().await?))
}

async fn constraints_set(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("pool.update.constraints.set", &[])?;
    let pool_expr = params.field("poolexpr").unwrap_or_default();
    if pool_expr.is_empty() {
        return Err(ApiError::bad_request("You must provide a Pool Expression"));
    }
    let field = params.field("field").unwrap_or_default();
    if !FIELDS.contains(&field.as_str()) {
        return Err(ApiError::internal(format!("invalid constraint type. Valid types are: [{}]", FIELDS.join(" "))));
    }
    let mut values: Vec<String> = params.field_list("values").into_iter().filter(|v| !v.is_empty()).collect();
    let blacklist = params.optional_bool("blacklist")?.unwrap_or(false);
    let append = params.get("append").and_then(|a| parse_bool(&a)).unwrap_or(false);
    if append
        && let Some(existing) = server.store.constraints().await?.into_iter().find(|c| c.pool_expr == pool_expr && c.field == field)
    {
        let mut merged = existing.values;
        for v in values {
            if !merged.contains(&v) {
                merged.push(v);
            }
        }
        values = merged;
    }
    let c = Constraint { pool_expr: pool_expr.clone(), field, values, blacklist };
    let event = record(&server, Some(&caller), &ip, "pool.update.constraints.set", Target::new("pool", &pool_expr), request_data(&params, &[])).await?;
    let result = server.store.set_constraint(&c).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}
