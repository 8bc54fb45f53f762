//! `/volumes` and `/volumeplans` (API-NOTES §2.18): storage an app's units
//! mount. A volume is of a plan the operator configured for its pool's
//! provisioner (`[[volume_plan]]`: a Docker volume driver and its options),
//! admitted by the pool's `volume-plan` constraint, owned by a team. Users
//! name a plan and a mount point, never a driver option or a host path.
//! Changes are `volume.*` events on the volume; a bind or an unbind changes
//! the app too, so it runs under the app's lock, and restarts the app
//! through the converge path unless `NoRestart`.

use super::apps::{app_contexts, app_event};
use super::events::record_allowed;
use super::params::{Params, parse_bool};
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{StoreError, VolumeBindRecord, VolumeFilter, VolumeRecord};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.4", Method::GET, "/volumes", list)
        .add("1.4", Method::POST, "/volumes", create)
        .add("1.4", Method::GET, "/volumes/{name}", info)
        .add("1.4", Method::POST, "/volumes/{name}", update)
        .add("1.4", Method::DELETE, "/volumes/{name}", remove)
        .add("1.4", Method::POST, "/volumes/{name}/bind", bind)
        .add("1.4", Method::DELETE, "/volumes/{name}/bind", unbind)
        .add("1.4", Method::GET, "/volumeplans", plans)
}

/// Most options a volume keeps, and the longest key or value.
const MAX_OPTS: usize = 32;
const MAX_OPT: usize = 256;
/// The longest mount point.
const MAX_MOUNT_POINT: usize = 1024;
/// Most volumes one team owns, and most binds one app has.
const MAX_VOLUMES_PER_TEAM: usize = 200;
const MAX_BINDS_PER_APP: usize = 16;

fn contexts(v: &VolumeRecord) -> Vec<Context> {
    vec![Context::new(ContextType::Volume, &v.name), Context::new(ContextType::Team, &v.team_owner), Context::new(ContextType::Pool, &v.pool)]
}

/// A volume as tsuru shows it; `binds` only in its info.
async fn volume_json(server: &Server, v: &VolumeRecord, binds: Option<&[VolumeBindRecord]>) -> ApiResult<Value> {
    let plan = plan_of(server, v).await?.map(plan_opts);
    Ok(json!({
        "Name": v.name,
        "Pool": v.pool,
        "Plan": {"Name": v.plan, "Opts": plan},
        "TeamOwner": v.team_owner,
        "Status": "",
        "Binds": binds.filter(|b| !b.is_empty()).map(|b| b.iter().map(bind_json).collect::<Vec<_>>()),
        "Opts": if v.opts.is_empty() { Value::Null } else { json!(v.opts) },
    }))
}

pub(super) fn bind_json(b: &VolumeBindRecord) -> Value {
    json!({"ID": {"App": b.app, "MountPoint": b.mount_point, "Volume": b.volume}, "ReadOnly": b.read_only})
}

/// A plan's options as `/volumeplans` shows them: its driver and its options.
fn plan_opts(p: &crate::config::VolumePlan) -> Value {
    json!({"driver": p.driver, "opt": p.opt})
}

/// The plan `v` names, as configured for its pool's provisioner.
async fn plan_of<'a>(server: &'a Server, v: &VolumeRecord) -> ApiResult<Option<&'a crate::config::VolumePlan>> {
    let Some(pool) = server.store.pool(&v.pool).await? else { return Ok(None) };
    let provisioner = server.config.pool_provisioner(&pool.provisioner).to_string();
    Ok(server.config.volume_plans(&provisioner).find(|p| p.name == v.plan))
}

async fn find(server: &Server, name: &str) -> ApiResult<VolumeRecord> {
    server.store.volume(name).await?.ok_or_else(|| ApiError::not_found("volume not found"))
}

/// `GET /1.4/volumes`: the volumes the caller may read; 204 without any.
async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let grants = &caller.grants;
    let global = grants.contexts_for("volume.read", ContextType::Team).is_none();
    let filter = VolumeFilter {
        teams: grants.contexts_for("volume.read", ContextType::Team).unwrap_or_default(),
        names: grants.contexts_for("volume.read", ContextType::Volume).unwrap_or_default(),
        pools: grants.contexts_for("volume.read", ContextType::Pool).unwrap_or_default(),
    };
    if !global && filter.teams.is_empty() && filter.names.is_empty() && filter.pools.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let volumes = server.store.volumes((!global).then_some(&filter)).await?;
    if volumes.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let mut out = Vec::with_capacity(volumes.len());
    for v in &volumes {
        out.push(volume_json(&server, v, None).await?);
    }
    Ok(json(StatusCode::OK, &out))
}

/// `GET /1.4/volumes/{name}`: with its binds.
async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let v = find(&server, &name).await?;
    caller.require("volume.read", &contexts(&v))?;
    let binds = server.store.volume_binds(&v.name).await?;
    Ok(json(StatusCode::OK, &volume_json(&server, &v, Some(&binds)).await?))
}

/// What a create or an update asks for (tsuru's `volume.Volume`, form or JSON).
fn input(params: &Params, name: Option<String>) -> ApiResult<VolumeRecord> {
    let opts: BTreeMap<String, String> = params.field_map("Opts");
    if opts.len() > MAX_OPTS || opts.iter().any(|(k, v)| k.len() > MAX_OPT || v.len() > MAX_OPT) {
        return Err(ApiError::bad_request(format!("a volume keeps at most {MAX_OPTS} options of at most {MAX_OPT} bytes each")));
    }
    let text = |f: &str| params.field(f).unwrap_or_default().trim().to_string();
    Ok(VolumeRecord {
        name: name.unwrap_or_else(|| text("Name")),
        pool: text("Pool"),
        plan: params.nested("Plan", "Name").unwrap_or_default().trim().to_string(),
        team_owner: text("TeamOwner"),
        opts,
        provisioned: false,
        created_at: 0,
    })
}

/// Checks `v` as tsuru does: its pool, team and plan exist, and the pool
/// admits the plan.
async fn checked(server: &Server, v: &VolumeRecord) -> ApiResult<()> {
    let pool = server.store.pool(&v.pool).await?.ok_or_else(|| ApiError::not_found("Pool does not exist."))?;
    if server.store.team(&v.team_owner).await?.is_none() {
        return Err(ApiError::not_found("Team not found"));
    }
    let provisioner = server.config.pool_provisioner(&pool.provisioner).to_string();
    let offered: Vec<String> = server.config.volume_plans(&provisioner).map(|p| p.name.clone()).collect();
    let constraints = server.store.constraints().await?;
    let admitted = crate::pools::admitted(&constraints, &pool.name, "volume-plan", &offered);
    if admitted.is_empty() {
        return Err(ApiError::bad_request("no volume-plan found for pool"));
    }
    if !admitted.contains(&v.plan) {
        return Err(ApiError::bad_request("volume-plan not present in pool constraint"));
    }
    Ok(())
}

/// `Ok` while `team` owns fewer volumes than a team may.
async fn allowance(server: &Server, team: &str) -> ApiResult<()> {
    let owned = server.store.volumes(Some(&VolumeFilter { teams: vec![team.to_string()], ..Default::default() })).await?;
    if owned.iter().filter(|o| o.team_owner == team).count() >= MAX_VOLUMES_PER_TEAM {
        return Err(ApiError::bad_request(format!("team {team:?} owns {MAX_VOLUMES_PER_TEAM} volumes, the most a team may own")));
    }
    Ok(())
}

async fn volume_event(server: &Arc<Server>, caller: &Identity, ip: &ClientIp, kind: &str, v: &VolumeRecord, data: Value) -> ApiResult<crate::events::RunningEvent> {
    record_allowed(server, Some(caller), ip, kind, Target::new("volume", &v.name), data, Allowed::new("volume.read.events", contexts(v))).await
}

fn event_data(v: &VolumeRecord) -> Value {
    json!({"name": v.name, "pool": v.pool, "plan": v.plan, "teamOwner": v.team_owner, "opts": v.opts})
}

/// `POST /1.4/volumes`.
async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let v = input(&params, None)?;
    caller.require("volume.create", &[Context::new(ContextType::Team, &v.team_owner), Context::new(ContextType::Pool, &v.pool)])?;
    if v.name.is_empty() {
        return Err(ApiError::bad_request("volume name cannot be empty"));
    }
    if !super::names::valid(&v.name) {
        return Err(ApiError::bad_request(
            "Invalid volume name, volume name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.",
        ));
    }
    checked(&server, &v).await?;
    if server.store.volume_name_used(&v.name).await? {
        return Err(ApiError::conflict(format!(
            "volume name {:?} was used by a deleted volume, whose storage may still hold its data: choose another name",
            v.name
        )));
    }
    allowance(&server, &v.team_owner).await?;
    let event = volume_event(&server, &caller, &ip, "volume.create", &v, event_data(&v)).await?;
    let result = server.store.add_volume(&v).await.map(|()| empty(StatusCode::CREATED)).map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::conflict(m),
        other => other.into(),
    });
    event.done(result).await
}

/// `POST /1.4/volumes/{name}`: a volume not yet bound may change.
async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let existing = find(&server, &name).await?;
    caller.require("volume.update", &contexts(&existing))?;
    let v = input(&params, Some(name))?;
    if existing.provisioned {
        return Err(ApiError::bad_request(PROVISIONED));
    }
    // Moving it to another team or pool is creating it there.
    if (v.team_owner.as_str(), v.pool.as_str()) != (existing.team_owner.as_str(), existing.pool.as_str()) {
        caller.require("volume.create", &[Context::new(ContextType::Team, &v.team_owner), Context::new(ContextType::Pool, &v.pool)])?;
    }
    checked(&server, &v).await?;
    if v.team_owner != existing.team_owner {
        allowance(&server, &v.team_owner).await?;
    }
    let event = volume_event(&server, &caller, &ip, "volume.update", &existing, event_data(&v)).await?;
    let result = async {
        if !server.store.update_volume(&v).await? {
            return Err(ApiError::bad_request(PROVISIONED));
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(result.await).await
}

const PROVISIONED: &str =
    "updating a volume already provisioned is not supported, a new volume must be created and the old one deleted if necessary";

/// `DELETE /1.4/volumes/{name}`: only without binds.
async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    let v = find(&server, &name).await?;
    caller.require("volume.delete", &contexts(&v))?;
    let event = volume_event(&server, &caller, &ip, "volume.delete", &v, json!({"name": v.name})).await?;
    let result = async {
        if !server.store.remove_volume(&v.name).await? {
            return Err(ApiError::internal("cannot delete volume with existing binds"));
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(result.await).await
}

/// A mount point: an absolute path, not `/`, without `..` or odd characters.
fn check_mount_point(path: &str) -> ApiResult<()> {
    let system = ["/proc", "/sys", "/dev"].iter().any(|p| path == *p || path.starts_with(&format!("{p}/")));
    let fine = path.starts_with('/')
        && path.len() > 1
        && !system
        && path.len() <= MAX_MOUNT_POINT
        && !path.split('/').any(|part| part == ".." || part == ".")
        && path.bytes().all(|b| b.is_ascii_graphic() && b != b':' && b != b',');
    if fine { Ok(()) } else { Err(ApiError::bad_request(format!("invalid mount point {path:?}: an absolute path inside the container, not /"))) }
}

/// The app a bind names, with the caller's right over it checked.
async fn bound_app(server: &Server, caller: &Identity, params: &Params, permission: &str) -> ApiResult<crate::store::AppRecord> {
    let name = params.field("App").unwrap_or_default();
    let app = server.store.app(&name).await?.ok_or_else(|| ApiError::not_found(format!("App {name} not found.")))?;
    caller.require(permission, &app_contexts(&app))?;
    Ok(app)
}

/// `POST /1.4/volumes/{name}/bind`: the app restarts mounting it (an
/// x-json-stream of the restart), unless `NoRestart`.
async fn bind(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let v = find(&server, &name).await?;
    caller.require("volume.update.bind", &contexts(&v))?;
    let app = bound_app(&server, &caller, &params, "app.update.bind-volume").await?;
    if app.pool != v.pool {
        return Err(ApiError::bad_request(format!("volume {:?} is in pool {:?} and app {:?} in pool {:?}: they must be in the same pool", v.name, v.pool, app.name, app.pool)));
    }
    let mount_point = params.field("MountPoint").unwrap_or_default();
    check_mount_point(&mount_point)?;
    if server.store.volume_binds_of_app(&app.name).await?.len() >= MAX_BINDS_PER_APP {
        return Err(ApiError::bad_request(format!("app {:?} mounts {MAX_BINDS_PER_APP} volumes, the most an app may mount", app.name)));
    }
    let read_only = params.field("ReadOnly").and_then(|r| parse_bool(&r)).unwrap_or(false);
    let no_restart = params.field("NoRestart").and_then(|r| parse_bool(&r)).unwrap_or(false);
    let b = VolumeBindRecord { volume: v.name.clone(), app: app.name.clone(), mount_point, read_only };
    let data = json!({"app": b.app, "mountPoint": b.mount_point, "readOnly": b.read_only, "noRestart": no_restart});
    let event = volume_event(&server, &caller, &ip, "volume.update.bind", &v, data.clone()).await?;
    // The app changes: under its lock.
    let lock = match app_event(&server, &caller, &ip, "app.update.bind-volume", &app, data).await {
        Ok(lock) => lock,
        Err(e) => return event.done(Err(e)).await,
    };
    let added = server.store.add_volume_bind(&b, &v.pool).await.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::conflict(m),
        other => other.into(),
    });
    if let Err(e) = added {
        let _ = lock.done(Err::<(), _>(e.clone())).await;
        return event.done(Err(e)).await;
    }
    if no_restart {
        lock.done(Ok::<(), ApiError>(())).await?;
        return event.done(Ok(empty(StatusCode::OK))).await;
    }
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---- Volume {} bound to the app {:?} at {} ----\n", b.volume, b.app, b.mount_point)).await;
        let result = crate::apps::restart(&server, &b.app, &w).await;
        let _ = lock.done(result.clone()).await;
        event.done(result).await.map_err(|e| e.message)
    }))
}

/// `DELETE /1.4/volumes/{name}/bind`: fields in the query string.
async fn unbind(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let v = find(&server, &name).await?;
    caller.require("volume.update.unbind", &contexts(&v))?;
    let app = bound_app(&server, &caller, &params, "app.update.unbind-volume").await?;
    let mount_point = params.field("MountPoint").unwrap_or_default();
    let no_restart = params.field("NoRestart").and_then(|r| parse_bool(&r)).unwrap_or(false);
    let data = json!({"app": app.name, "mountPoint": mount_point, "noRestart": no_restart});
    let event = volume_event(&server, &caller, &ip, "volume.update.unbind", &v, data.clone()).await?;
    let lock = match app_event(&server, &caller, &ip, "app.update.unbind-volume", &app, data).await {
        Ok(lock) => lock,
        Err(e) => return event.done(Err(e)).await,
    };
    let removed = match server.store.remove_volume_bind(&v.name, &app.name, &mount_point).await {
        Ok(true) => Ok(()),
        Ok(false) => Err(ApiError::not_found("volume bind not found")),
        Err(e) => Err(e.into()),
    };
    if let Err(e) = removed {
        let _ = lock.done(Err::<(), _>(e.clone())).await;
        return event.done(Err(e)).await;
    }
    if no_restart {
        lock.done(Ok::<(), ApiError>(())).await?;
        return event.done(Ok(empty(StatusCode::OK))).await;
    }
    let app_name = app.name.clone();
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---- Volume {} unbound from the app {app_name:?} ----\n", v.name)).await;
        let result = crate::apps::restart(&server, &app_name, &w).await;
        let _ = lock.done(result.clone()).await;
        event.done(result).await.map_err(|e| e.message)
    }))
}

/// `GET /1.4/volumeplans`: per provisioner; needs some `volume.create`.
async fn plans(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    // Globally (no list of contexts), or in some team or pool.
    let grants = &caller.grants;
    let (teams, pools) = (grants.contexts_for("volume.create", ContextType::Team), grants.contexts_for("volume.create", ContextType::Pool));
    let anywhere = teams.as_ref().is_none_or(|t| !t.is_empty()) || pools.is_some_and(|p| !p.is_empty());
    if !anywhere {
        return Err(ApiError::forbidden());
    }
    let mut out: BTreeMap<&str, Vec<Value>> = BTreeMap::new();
    for p in &server.config.volume_plan {
        out.entry(p.provisioner.as_str()).or_default().push(json!({"Name": p.name, "Opts": plan_opts(p)}));
    }
    if out.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    Ok(json(StatusCode::OK, &out))
}
