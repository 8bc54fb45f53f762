//! Start, stop, restart and sleep of an app (API-NOTES §2.4.8), as
//! x-json-streams: the app's status is recorded, then its provisioner applies
//! it. For WASM apps every request runs a fresh instance, so these switch what
//! the router does with the app's traffic: serve it, refuse it (stopped: 503),
//! or wake the app on the next request (asleep: the `wasm` provisioner drops
//! its loaded code; the compiled code on disk stays). `app run` is the
//! provisioner's to answer.

use super::apps::{AppTarget, app_contexts, app_event};
use super::provision::{api_error, apply_streamed, desired, provisioner_of};
use super::params::Params;
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes};
use crate::error::{ApiError, ApiResult};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::POST, "/apps/{app}/start", start)
        .add("1.0", Method::POST, "/apps/{app}/stop", stop)
        .add("1.0", Method::POST, "/apps/{app}/restart", restart)
        .add("1.0", Method::POST, "/apps/{app}/sleep", sleep)
        .add("1.0", Method::POST, "/apps/{app}/run", run_command)
}

/// `POST /apps/{app}/run`: the app's provisioner runs the command, in its
/// units or (`isolated`) in a container of its own; WASM apps have no shell
/// to run a command in, so the wasm provisioner says so instead of pretending.
async fn run_command(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    if params.get("command").is_none_or(|c| c.is_empty()) {
        return Err(ApiError::bad_request("You must provide the command to run"));
    }
    caller.require("app.run", &app_contexts(&app))?;
    let command = params.get("command").unwrap_or_default();
    let once = params.get("once").and_then(|v| super::params::parse_bool(&v)).unwrap_or(false);
    let isolated = params.get("isolated").and_then(|v| super::params::parse_bool(&v)).unwrap_or(false);
    let provisioner = provisioner_of(&server, &app).await?;
    let state = desired(&server, &app.name).await?;
    let lines = provisioner.run(state, &command, once, isolated).await.map_err(api_error)?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        for line in lines {
            w.message(&line).await;
        }
        Ok(())
    }))
}

#[derive(Clone, Copy)]
enum Action {
    Start,
    Stop,
    Restart,
    Sleep,
}

impl Action {
    fn permission(self) -> &'static str {
        match self {
            Action::Start => "app.update.start",
            Action::Stop => "app.update.stop",
            Action::Restart => "app.update.restart",
            Action::Sleep => "app.update.sleep",
        }
    }

    fn status(self) -> &'static str {
        match self {
            Action::Start | Action::Restart => "started",
            Action::Stop => "stopped",
            Action::Sleep => "asleep",
        }
    }

    fn verb(self) -> &'static str {
        match self {
            Action::Start => "Starting",
            Action::Stop => "Stopping",
            Action::Restart => "Restarting",
            Action::Sleep => "Putting to sleep",
        }
    }
}

async fn start(state: AppState, caller: Caller, ip: ClientIp, app: AppTarget, params: Params) -> ApiResult<Response> {
    run(state, caller, ip, app, params, Action::Start).await
}

async fn stop(state: AppState, caller: Caller, ip: ClientIp, app: AppTarget, params: Params) -> ApiResult<Response> {
    run(state, caller, ip, app, params, Action::Stop).await
}

async fn restart(state: AppState, caller: Caller, ip: ClientIp, app: AppTarget, params: Params) -> ApiResult<Response> {
    run(state, caller, ip, app, params, Action::Restart).await
}

async fn sleep(state: AppState, caller: Caller, ip: ClientIp, app: AppTarget, params: Params) -> ApiResult<Response> {
    run(state, caller, ip, app, params, Action::Sleep).await
}

async fn run(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    params: Params,
    action: Action,
) -> ApiResult<Response> {
    caller.require(action.permission(), &app_contexts(&app))?;
    if matches!(action, Action::Sleep) && params.get("proxy").is_none_or(|p| p.is_empty()) {
        return Err(ApiError::bad_request("Empty proxy URL"));
    }
    let process = params.get("process").unwrap_or_default();
    let version = params.get("version").unwrap_or_default();
    let versions = server.store.versions(&app.name).await?;
    if !process.is_empty() && !versions.iter().any(|v| v.processes.contains(&process)) {
        return Err(ApiError::bad_request(format!("process error: no command declared in Procfile for process \"{process}\"")));
    }
    if !version.is_empty() && version != "0" && !versions.iter().any(|v| v.version.to_string() == version) {
        return Err(ApiError::bad_request(format!("invalid version {version:?} for app {:?}", app.name)));
    }
    let data = json!({"app": app.name, "process": process, "version": version});
    let event = app_event(&server, &caller, &ip, action.permission(), &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---- {} the app {:?} ----\n", action.verb(), app.name)).await;
        let result = async {
            server.store.set_app_status(&app.name, action.status()).await.map_err(|e| e.to_string())?;
            server.units.reset_statuses(&app.name);
            // The provisioner makes it so (the wasm one unloads a sleeping or stopped app's code).
            apply_streamed(&server, &app, &w).await
        }
        .await;
        match event.done(result).await {
            Ok(()) => {
                let units = crate::store::units_in_use(&versions);
                w.message(&format!(" ---> {units} unit(s) {}\n", action.status())).await;
                Ok(())
            }
            Err(e) => Err(e.to_string()),
        }
    }))
}
