//! Plugin admin (DESIGN §2, torii's own paths): every loaded plugin with
//! its source, contract version, digest, grants, health, call counts and
//! warm instances (count, memory held), and the swap of a plugin's component
//! for an uploaded one.
//!
//! - `GET /torii/v1/plugins`, `GET /torii/v1/plugins/{name}`: `plugin.read`.
//! - `PUT /torii/v1/plugins/{name}` with the `.wasm` as the body:
//!   `plugin.update`. The new component is checked (contract version, kind),
//!   linked and started with the entry's config and grants before it
//!   replaces the old one; calls in flight finish on the old one, and a
//!   component that fails leaves the old one serving (400, the reason).

use super::events::{record, request_data};
use super::params::Params;
use super::{AppState, Caller, ClientIp, Routes, json};
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::plugin::instance::{PluginAdmin, PluginStatus};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::sync::Arc;

pub(super) fn routes(r: Routes) -> Routes {
    r.torii(Method::GET, "/torii/v1/plugins", list).torii(Method::GET, "/torii/v1/plugins/{name}", show).torii(Method::PUT, "/torii/v1/plugins/{name}", swap)
}

/// A plugin, with the answer of its own `health`.
#[derive(Serialize)]
struct PluginJson {
    #[serde(flatten)]
    status: PluginStatus,
    /// `ok`, or why the plugin is not healthy.
    health: String,
}

async fn describe(plugin: &dyn PluginAdmin) -> PluginJson {
    let health = match plugin.health().await {
        Ok(()) => "ok".to_string(),
        Err(e) => e,
    };
    PluginJson { status: plugin.status(), health }
}

fn find<'a>(server: &'a crate::server::Server, name: &str) -> ApiResult<&'a Arc<dyn PluginAdmin>> {
    server.plugins.get(name).ok_or_else(|| ApiError::not_found(format!("plugin {name:?} not found")))
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("plugin.read", &[])?;
    let mut out = Vec::with_capacity(server.plugins.len());
    for plugin in server.plugins.values() {
        out.push(describe(plugin.as_ref()).await);
    }
    Ok(json(StatusCode::OK, &out))
}

async fn show(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("plugin.read", &[])?;
    let plugin = find(&server, &name)?;
    Ok(json(StatusCode::OK, &describe(plugin.as_ref()).await))
}

async fn swap(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, body: Bytes) -> ApiResult<Response> {
    caller.require("plugin.update", &[])?;
    let plugin = find(&server, &name)?.clone();
    if body.is_empty() {
        return Err(ApiError::bad_request("the body must be the plugin's new component (.wasm)"));
    }
    let digest = crate::blobs::Blobs::digest(&body);
    let data = request_data(&Params::default(), &[("name", &name), ("digest", &digest)]);
    let event = record(&server, Some(&caller), &ip, "plugin.update", Target::new("plugin", &name), data).await?;
    let result = plugin.swap(&body).await.map_err(|e| ApiError::bad_request(e.to_string()));
    let result = match result {
        Ok(()) => Ok(json(StatusCode::OK, &describe(plugin.as_ref()).await)),
        Err(e) => Err(e),
    };
    event.done(result).await
}
