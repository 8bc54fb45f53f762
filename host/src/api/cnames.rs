//! App CNAMEs and swapping them between apps (API-NOTES §2.9, §2.4.8).
//! Routers make CNAMEs take effect; here they are stored and validated.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::sync::LazyLock;

use super::apps::{AppTarget, app_contexts, app_event};
use super::params::{Params, parse_bool};
use super::routers::sync_routes;
use super::{AppState, Caller, ClientIp, Routes, empty};
use crate::error::{ApiError, ApiResult};
use crate::store::StoreError;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::POST, "/apps/{app}/cname", add)
        .add("1.0", Method::DELETE, "/apps/{app}/cname", remove)
        .add("1.0", Method::POST, "/swap", swap)
}

static CNAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^(\*\.)?[a-zA-Z0-9][\w\-.]+$").unwrap());

fn cnames(params: &Params) -> ApiResult<Vec<String>> {
    // Host names are compared in lower case (as DNS does), so they are kept so.
    let list: Vec<String> = params.all("cname").into_iter().filter(|c| !c.is_empty()).map(|c| c.to_ascii_lowercase()).collect();
    if list.is_empty() {
        return Err(ApiError::bad_request("You must provide the cname."));
    }
    Ok(list)
}

async fn add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.cname.add", &app_contexts(&app))?;
    let list = cnames(&params)?;
    if list.iter().any(|c| !CNAME.is_match(c) || c.len() > 253) {
        return Err(ApiError::bad_request("Invalid cname"));
    }
    let domains = crate::routers::domains(&server).await?;
    for c in &list {
        crate::routers::names::check_cname(c, &domains).map_err(ApiError::bad_request)?;
    }
    let data = json!([{"name": ":app", "value": app.name}, {"name": "cname", "value": list}]);
    let event = app_event(&server, &caller, &ip, "app.update.cname.add", &app, data).await?;
    let work = async {
        for c in &list {
            if let Some(owner) = server.store.cname_owner(c).await? {
                return Err(ApiError::internal(format!("cname {c} already exists for app {owner}")));
            }
        }
        server.store.add_cnames(&app.name, &list).await.map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::internal(m),
            other => other.into(),
        })?;
        // Stored and served as one step: routes that cannot take the names
        // give them back, and the app's routes are as they were.
        if let Err(e) = sync_routes(&server, &app.name).await {
            server.store.remove_cnames(&app.name, &list).await?;
            if let Err(again) = sync_routes(&server, &app.name).await {
                tracing::warn!(app = app.name, error = %again.message, "routes not restored after a refused cname");
            }
            return Err(e);
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.cname.remove", &app_contexts(&app))?;
    let list = cnames(&params)?;
    let data = json!([{"name": ":app", "value": app.name}, {"name": "cname", "value": list}]);
    let event = app_event(&server, &caller, &ip, "app.update.cname.remove", &app, data).await?;
    let work = async {
        server.store.remove_cnames(&app.name, &list).await.map_err(|e| match e {
            StoreError::NotFound(m) => ApiError::bad_request(m),
            other => other.into(),
        })?;
        sync_routes(&server, &app.name).await
    };
    event.done(work.await.map(|()| empty(StatusCode::OK))).await
}

/// `POST /swap`: exchanges two apps' addresses. Routers that torii speaks to
/// swap by CNAMEs only (tsuru's "router API v2" rule).
async fn swap(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let load = |name: String| {
        let server = server.clone();
        async move { server.store.app(&name).await?.ok_or_else(|| ApiError::not_found(format!("App {name} not found."))) }
    };
    let app1 = load(params.get("app1").unwrap_or_default()).await?;
    let app2 = load(params.get("app2").unwrap_or_default()).await?;
    if app1.name == app2.name {
        return Err(ApiError::bad_request("an app cannot be swapped with itself"));
    }
    caller.require("app.update.swap", &app_contexts(&app1))?;
    caller.require("app.update.swap", &app_contexts(&app2))?;
    let force = params.get("force").is_some_and(|f| !f.is_empty() && f != "false");
    let cname_only = params.get("cnameOnly").and_then(|v| parse_bool(&v)).unwrap_or(false);
    if !force && app1.platform != app2.platform {
        return Err(ApiError::new(StatusCode::PRECONDITION_FAILED, "platforms don't match"));
    }
    // Unit counts match: provisioners bring units, and until then both have none.
    if !cname_only {
        return Err(ApiError::internal("swapping using router api v2 will work only with cnameOnly"));
    }
    if app1.cnames.is_empty() && app2.cnames.is_empty() {
        return Err(ApiError::internal("no cnames to swap between applications"));
    }
    let data = json!([{"name": "app1", "value": app1.name}, {"name": "app2", "value": app2.name}, {"name": "cnameOnly", "value": "true"}]);
    let busy = |e: ApiError| if e.message.starts_with("event locked") { ApiError::conflict(e.message) } else { e };
    let first = app_event(&server, &caller, &ip, "app.update.swap", &app1, data.clone()).await.map_err(busy)?;
    let second = match app_event(&server, &caller, &ip, "app.update.swap", &app2, data).await {
        Ok(e) => e,
        Err(e) => {
            let e = busy(e);
            return first.done(Err::<Response, _>(e)).await;
        }
    };
    let work = async {
        server.store.swap_cnames(&app1.name, &app2.name).await?;
        match server.routing.sync_together(&[&app1.name, &app2.name]).await {
            Err(e) if e.refused => Err(ApiError::bad_request(format!("the routes of the swapped apps were refused: {e}"))),
            // The app routers' status shows it; the resync loop tells them again.
            Err(e) => {
                tracing::warn!(error = %e, "routers: the swapped apps are not served everywhere yet");
                Ok(())
            }
            Ok(()) => Ok(()),
        }
    };
    let result = work.await;
    let result = second.done(result).await;
    first.done(result.map(|()| empty(StatusCode::OK))).await
}
