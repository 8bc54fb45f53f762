//! App TLS certificates (`/1.2/apps/{app}/certificate`, API-NOTES §2.9): one
//! per address or cname, served by the routers with TLS support (SNI).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;
use std::collections::BTreeMap;

use super::apps::{AppTarget, app_contexts, app_event, view_of};
use super::params::Params;
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::error::{ApiError, ApiResult};
use crate::routers::{self, tls};
use crate::server::Server;
use crate::store::{AppView, CertificateRecord, StoreError};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.2", Method::GET, "/apps/{app}/certificate", list)
        .add("1.2", Method::PUT, "/apps/{app}/certificate", set)
        .add("1.2", Method::DELETE, "/apps/{app}/certificate", unset)
}

const NO_TLS: &str = "no router with tls support";

/// The app's routers with TLS support, each with the names it serves.
async fn tls_names(server: &Server, view: &AppView) -> ApiResult<Vec<(String, Vec<String>)>> {
    let all = routers::catalogue(server).await?;
    Ok(view
        .routers
        .iter()
        .filter_map(|ar| routers::find(&all, &ar.router))
        .filter(|r| routers::supports_tls(server, r))
        .map(|r| (r.name.clone(), routers::names_of(view, r)))
        .collect())
}

async fn list(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.read.certificate", &app_contexts(&app))?;
    let view = view_of(&server, &app.name).await?;
    let names = tls_names(&server, &view).await?;
    if names.is_empty() {
        return Err(ApiError::internal(NO_TLS));
    }
    let mut out: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
    for (router, names) in names {
        let certs = names
            .into_iter()
            .map(|n| {
                let pem = view.certificates.iter().find(|c| c.name == n).map(|c| c.certificate.clone()).unwrap_or_default();
                (n, pem)
            })
            .collect();
        out.insert(router, certs);
    }
    Ok(json(StatusCode::OK, &out))
}

/// The `cname` parameter, which must be one of the names the app's TLS
/// routers serve.
async fn target_name(server: &Server, view: &AppView, params: &Params) -> ApiResult<String> {
    let name = params.field("cname").unwrap_or_default();
    if name.is_empty() {
        return Err(ApiError::bad_request("You must provide a cname."));
    }
    let names = tls_names(server, view).await?;
    if names.is_empty() {
        return Err(ApiError::bad_request(NO_TLS));
    }
    if !names.iter().any(|(_, served)| served.contains(&name)) {
        return Err(ApiError::bad_request("invalid name"));
    }
    Ok(name)
}

async fn set(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.certificate.set", &app_contexts(&app))?;
    let view = view_of(&server, &app.name).await?;
    let name = target_name(&server, &view, &params).await?;
    let certificate = params.field("certificate").unwrap_or_default();
    let key = params.field("key").unwrap_or_default();
    let loaded = tls::load(&certificate, &key).map_err(ApiError::bad_request)?;
    tls::check_name(&loaded, &name).map_err(ApiError::bad_request)?;
    // The key never reaches the event log.
    let data = json!([
        {"name": ":app", "value": app.name},
        {"name": "cname", "value": name},
        {"name": "certificate", "value": certificate},
        {"name": "key", "value": "*****"},
    ]);
    let event = app_event(&server, &caller, &ip, "app.update.certificate.set", &app, data).await?;
    let record = CertificateRecord { name, certificate, key };
    let result = server.store.set_certificate(&app.name, &record).await.map_err(ApiError::from);
    event.done(result.map(|()| empty(StatusCode::OK))).await
}

async fn unset(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.certificate.unset", &app_contexts(&app))?;
    let view = view_of(&server, &app.name).await?;
    let name = target_name(&server, &view, &params).await?;
    let data = json!([{"name": ":app", "value": app.name}, {"name": "cname", "value": name}]);
    let event = app_event(&server, &caller, &ip, "app.update.certificate.unset", &app, data).await?;
    let result = server.store.unset_certificate(&app.name, &name).await.map_err(|e| match e {
        StoreError::NotFound(m) => ApiError::bad_request(m),
        other => other.into(),
    });
    event.done(result.map(|()| empty(StatusCode::OK))).await
}
