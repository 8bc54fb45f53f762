//! `PUT/DELETE /apps/{app}/units`, kill unit and unit status (API-NOTES §2.5),
//! each handed to the app's provisioner. For WASM apps a unit is a
//! concurrency slot of a version: N units serve N requests at once, more wait
//! briefly in the data plane and then get 503.

use super::apps::{AppTarget, app_contexts, app_event};
use super::params::Params;
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty};
use crate::error::{ApiError, ApiResult};
use super::provision::{api_error, desired};
use crate::apps::{change, converge, provisioner_of};
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::PUT, "/apps/{app}/units", add)
        .add("1.0", Method::DELETE, "/apps/{app}/units", remove)
        .add("1.12", Method::DELETE, "/apps/{app}/units/{unit}", kill)
        .add("1.0", Method::POST, "/apps/{app}/units/{unit}", set_status)
        .add("1.0", Method::POST, "/apps/{app}/units/register", register)
}

/// `POST /apps/{app}/units/register`: a unit's agent (tsuru's deploy agent,
/// with the app's token) says it is up; the answer is the app's env, as
/// `GET /apps/{app}/env` lists it. `hostname` must name one of the app's
/// units; `customdata`, when given, must be a JSON object.
async fn register(
    State(server): AppState,
    Caller(caller): Caller,
    AppTarget(app): AppTarget,
    headers: axum::http::HeaderMap,
    params: Params,
) -> ApiResult<Response> {
    caller.require("app.update.unit.register", &app_contexts(&app))?;
    let agent = headers.get(axum::http::header::USER_AGENT).and_then(|v| v.to_str().ok()).unwrap_or_default().to_ascii_lowercase();
    if (agent.starts_with("go-http-client") || agent.starts_with("tsuru-deploy-agent")) && !headers.contains_key("x-agent-version") {
        return Err(ApiError::bad_request(format!(
            "Please contact admin. {} platform is using outdated deploy-agent version, minimum required version is 0.2.4",
            app.platform
        )));
    }
    let hostname = params.get("hostname").unwrap_or_default();
    if let Some(raw) = params.get("customdata").filter(|c| !c.is_empty())
        && !matches!(serde_json::from_str::<serde_json::Value>(&raw), Ok(serde_json::Value::Object(_)))
    {
        return Err(ApiError::bad_request("customdata must be a JSON object"));
    }
    let view = server.store.app_view(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    let units = super::apps::units_of(&server, &view).await.map_err(ApiError::internal)?;
    if !units.iter().any(|u| u.id == hostname || u.name == hostname) {
        return Err(ApiError::not_found(format!("unit {hostname:?} not found")));
    }
    Ok(super::json(StatusCode::OK, &super::env::env_list(&view)))
}

/// Unit statuses tsuru knows (API-NOTES §2.4.3).
const STATUSES: [&str; 7] = ["created", "building", "error", "starting", "started", "stopped", "asleep"];

/// `DELETE /1.12/apps/{app}/units/{unit}`: the provisioner kills the unit
/// (for WASM apps: the request it serves is cut with a 503, a restart is
/// counted, and the unit serves the next request).
async fn kill(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    Path((_, unit)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("app.update.unit.kill", &app_contexts(&app))?;
    let provisioner = provisioner_of(&server, &app).await?;
    let state = desired(&server, &app.name).await?;
    if !provisioner.units(state.clone()).await.map_err(api_error)?.iter().any(|u| u.id == unit || u.name == unit) {
        return Err(ApiError::not_found(format!("unit {unit:?} not found")));
    }
    let event = app_event(&server, &caller, &ip, "app.update.unit.kill", &app, json!({"app": app.name, "unit": unit})).await?;
    let result = async {
        provisioner.kill_unit(state, &unit).await.map_err(api_error)?;
        // The provisioner may start a unit in its place: the routes follow.
        crate::apps::refresh(&server, &app.name, &crate::apps::Quiet).await
    }
    .await;
    event.done(result.map(|()| empty(StatusCode::OK))).await
}

/// `POST /apps/{app}/units/{unit}`: the provisioner records a unit's status
/// (the unit is matched by id prefix); app info shows it while the app runs.
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
    let provisioner = provisioner_of(&server, &app).await?;
    let state = desired(&server, &app.name).await?;
    provisioner.set_unit_status(state, &unit, &status).await.map_err(api_error)?;
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
    // Checked before the stream starts, so bad input is a plain 400.
    let desired = server.store.desired(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    let version = change::target_version(&desired, &params.get("version").unwrap_or_default())?;
    let process = change::target_process(desired.version(version).expect("a target version exists"), &params.get("process").unwrap_or_default())?;
    if server.store.autoscales(&app.name).await?.iter().any(|s| s.process == process) {
        return Err(ApiError::bad_request(if adding {
            "cannot add units to an app with autoscaler configured, please update autoscale settings"
        } else {
            "cannot remove units from an app with autoscaler configured, please update autoscale settings"
        }));
    }
    let delta = if adding { count } else { -count };
    crate::apps::plan(&server, &desired, |d| change::scale(d, version, &process, delta).map(|_| ()))?;
    let data = json!({"app": app.name, "units": count, "process": process, "version": version});
    let event = app_event(&server, &caller, &ip, permission, &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let verb = if adding { "Adding" } else { "Removing" };
        w.message(&format!("---- {verb} {count} unit(s) of process {process} of version {version} ----\n")).await;
        let mut units = 0;
        let result = converge(&server, &app.name, &w, |d| {
            units = change::scale(d, version, &process, delta)?;
            Ok(())
        })
        .await
        .map(|_| ());
        event.done(result).await.map_err(|e| e.message)?;
        w.message(&format!(" ---> process {process} of version {version} now runs {units} unit(s)\n")).await;
        Ok(())
    }))
}
