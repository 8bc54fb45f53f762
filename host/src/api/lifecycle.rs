//! Start, stop, restart and sleep of an app or one of its processes
//! (API-NOTES §2.4.8), as x-json-streams through the converge path: the
//! selected processes' status changes, the provisioner makes it so. A
//! stopped app's router answers 503; a sleeping app is woken by its first
//! request (`crate::apps::wake`). `app run` is the provisioner's to answer.

use super::apps::{AppTarget, app_contexts, app_event};
use super::provision::{api_error, desired};
use crate::apps::{change, converge, provisioner_of};
use crate::store::ProcessStatus;
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

    fn status(self) -> ProcessStatus {
        match self {
            Action::Start | Action::Restart => ProcessStatus::Started,
            Action::Stop => ProcessStatus::Stopped,
            Action::Sleep => ProcessStatus::Asleep,
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
    let desired = server.store.desired(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    change::check_selection(&desired, &process, &version)?;
    let data = json!({"app": app.name, "process": process, "version": version});
    let event = app_event(&server, &caller, &ip, action.permission(), &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let what = if process.is_empty() { format!("the app {:?}", app.name) } else { format!("process {process} of the app {:?}", app.name) };
        w.message(&format!("---- {} {what} ----\n", action.verb())).await;
        let mut units = 0;
        let result = converge(&server, &app.name, &w, |d| {
            units = change::set_status(d, &process, &version, action.status(), None);
            Ok(())
        })
        .await;
        server.units.reset_statuses(&app.name);
        event.done(result).await.map_err(|e| e.message)?;
        w.message(&format!(" ---> {units} unit(s) {}\n", action.status().as_str())).await;
        Ok(())
    }))
}
