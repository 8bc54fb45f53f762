//! `PUT/DELETE /apps/{app}/units` (API-NOTES §2.5). For WASM apps a unit is a
//! concurrency slot of a version: N units serve N requests at once, more wait
//! briefly in the data plane and then get 503.

use super::apps::{AppTarget, app_contexts, app_event};
use super::params::Params;
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty};
use crate::error::{ApiError, ApiResult};
use crate::server::Server;
use crate::store::{AppView, VersionRecord, units_in_use};
use axum::extract::{Path, State};
use std::sync::Arc;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::PUT, "/apps/{app}/units", add)
        .add("1.0", Method::DELETE, "/apps/{app}/units", remove)
        .add("1.12", Method::DELETE, "/apps/{app}/units/{unit}", kill)
        .add("1.0", Method::POST, "/apps/{app}/units/{unit}", set_status)
}

/// Every unit of the app: (id, process, version), as app info lists them.
pub fn units_of(view: &AppView) -> Vec<(String, &str, &VersionRecord)> {
    let mut out = Vec::new();
    for v in view.versions.iter().filter(|v| v.routable) {
        for process in &v.processes {
            for i in 0..v.units.max(0) {
                out.push((format!("{}-{process}-v{}-{i}", view.app.name, v.version), process.as_str(), v));
            }
        }
    }
    out
}

/// Unit statuses tsuru knows (API-NOTES §2.4.3).
const STATUSES: [&str; 7] = ["created", "building", "error", "starting", "started", "stopped", "asleep"];

async fn view_of(server: &Server, app: &str) -> ApiResult<Arc<AppView>> {
    server.store.app_view(app).await?.ok_or_else(|| ApiError::not_found(format!("App {app} not found.")))
}

/// `DELETE /1.12/apps/{app}/units/{unit}`: cuts the request the unit is
/// serving, if any (its caller gets 503), and counts a restart; the unit
/// serves the next request.
async fn kill(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    Path((_, unit)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("app.update.unit.kill", &app_contexts(&app))?;
    let view = view_of(&server, &app.name).await?;
    if !units_of(&view).iter().any(|(id, _, _)| *id == unit) {
        return Err(ApiError::not_found(format!("unit {unit:?} not found")));
    }
    let event = app_event(&server, &caller, &ip, "app.update.unit.kill", &app, json!({"app": app.name, "unit": unit})).await?;
    server.units.kill(&app.name, &unit);
    event.done(Ok(empty(StatusCode::OK))).await
}

/// `POST /apps/{app}/units/{unit}`: records a unit's status (the unit is
/// matched by id prefix); app info shows it while the app runs.
async fn set_status(
    State(server): AppState,
    Caller(caller): Caller,
    AppTarget(app): AppTarget,
    Path((_, unit)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    let status = params.get("status").unwrap_or_default();
    if !STATUSES.contains(&status.as_str()) {
        return Err(ApiError::bad_request("invalid status"));
    }
    caller.require("app.update.unit.status", &app_contexts(&app))?;
    let view = view_of(&server, &app.name).await?;
    let Some((id, _, _)) = units_of(&view).into_iter().find(|(id, _, _)| id.starts_with(&unit)) else {
        return Err(ApiError::not_found(format!("unit {unit:?} not found")));
    };
    server.units.set_status(&app.name, &id, &status);
    Ok(empty(StatusCode::OK))
}

async fn add(state: AppState, caller: Caller, ip: ClientIp, app: AppTarget, params: Params) -> ApiResult<Response> {
    change(state, caller, ip, app, params, true).await
}

async fn remove(state: AppState, caller: Caller, ip: ClientIp, app: AppTarget, params: Params) -> ApiResult<Response> {
    change(state, caller, ip, app, params, false).await
}

async fn change(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    params: Params,
    adding: bool,
) -> ApiResult<Response> {
    let raw = params.get("units").unwrap_or_default();
    if raw.is_empty() {
        return Err(ApiError::bad_request("You must provide the number of units."));
    }
    let count: i64 = match raw.parse::<u32>() {
        Ok(n) if n > 0 => i64::from(n),
        _ => return Err(ApiError::bad_request("Invalid number of units: the number must be an integer greater than 0.")),
    };
    let permission = if adding { "app.update.unit.add" } else { "app.update.unit.remove" };
    caller.require(permission, &app_contexts(&app))?;
    let versions = server.store.versions(&app.name).await?;
    let routable: Vec<&VersionRecord> = versions.iter().filter(|v| v.routable).collect();
    let wanted = params.get("version").unwrap_or_default();
    let target = match (wanted.as_str(), routable.as_slice()) {
        ("" | "0", []) => return Err(ApiError::bad_request(format!("app {:?} has no deployed version", app.name))),
        ("" | "0", [one]) => (*one).clone(),
        ("" | "0", _) => return Err(ApiError::bad_request("more than one version deployed, you must select one")),
        (n, _) => match versions.iter().find(|v| v.version.to_string() == n) {
            Some(v) => v.clone(),
            None => return Err(ApiError::bad_request(format!("invalid version {n:?} for app {:?}", app.name))),
        },
    };
    let process = params.get("process").unwrap_or_default();
    if !process.is_empty() && !target.processes.contains(&process) {
        return Err(ApiError::bad_request(format!("process error: no command declared in Procfile for process \"{process}\"")));
    }
    if adding && app.status != "started" {
        return Err(ApiError::bad_request(format!("cannot add units to an app that is {}: start it first", app.status)));
    }
    let units = if adding { target.units + count } else { target.units - count };
    if units < 0 {
        return Err(ApiError::bad_request(format!("version {} has only {} unit(s)", target.version, target.units)));
    }
    if adding && app.quota_limit >= 0 {
        let in_use = units_in_use(&versions);
        if in_use + count * target.processes.len() as i64 > app.quota_limit {
            return Err(ApiError::forbidden_with(format!("Quota exceeded. Available: {}, Requested: {count}.", (app.quota_limit - in_use).max(0))));
        }
    }
    let data = json!({"app": app.name, "units": count, "process": process, "version": target.version});
    let event = app_event(&server, &caller, &ip, permission, &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let verb = if adding { "Adding" } else { "Removing" };
        w.message(&format!("---- {verb} {count} unit(s) of version {} ----\n", target.version)).await;
        let result = server.store.set_version_units(&app.name, target.version, units).await;
        match event.done(result).await {
            Ok(()) => {
                w.message(&format!(" ---> version {} now runs {units} unit(s)\n", target.version)).await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }))
}
