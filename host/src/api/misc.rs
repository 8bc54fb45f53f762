//! `/`, `/info`, `/healthcheck`.

use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::{Html, IntoResponse, Response};
use std::time::Instant;

use super::params::Params;
use super::{AppState, Caller, MaybeCaller, Routes, json};
use crate::error::ApiResult;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/", index)
        .add("1.0", Method::GET, "/info", info)
        .add("1.0", Method::GET, "/healthcheck", healthcheck)
        .add("1.0", Method::GET, "/healthcheck/", healthcheck)
        .add("1.2", Method::GET, "/metrics", metrics)
}

async fn index(State(server): AppState) -> Response {
    if server.config.api.disable_index_page {
        return super::not_found().await;
    }
    let scheme = server.scheme.name().to_string();
    Html(format!(
        "<!DOCTYPE html>\n<html><head><meta charset=\"utf-8\"><title>torii</title></head><body>\n\
         <h1>torii</h1>\n<p>A PaaS control plane speaking the tsuru API.</p>\n\
         <p>Point the tsuru client here: <code>tsuru target-add torii &lt;this address&gt; -s</code>, \
         then <code>tsuru login</code> (auth scheme: {scheme}).</p>\n</body></html>\n"
    ))
    .into_response()
}

/// The tsuru API version this server speaks.
pub const TSURU_API_VERSION: &str = "1.14.0-rc1";

async fn info(_caller: Caller) -> Response {
    json(StatusCode::OK, &serde_json::json!({ "version": TSURU_API_VERSION }))
}

/// `GET /1.2/metrics`: torii's figures in Prometheus text format (no auth,
/// as tsuru's `promhttp` handler). The per-app series name every team's
/// apps and their traffic, so they come only to a token holding `app.read`
/// globally (an operator's scraper).
async fn metrics(State(server): AppState, MaybeCaller(caller): MaybeCaller) -> ApiResult<Response> {
    let plugins = server
        .plugins
        .values()
        .map(|p| {
            let s = p.status();
            (s.name, s.kind, s.calls, s.errors)
        })
        .collect();
    let readings = crate::metrics::Readings {
        units_in_use: server.units.in_use(),
        versions_optimizing: server.apps.optimizing(),
        plugins,
        event_locks: server.store.event_locks_held().await?,
        uptime: server.started.elapsed(),
    };
    let with_apps = caller.is_some_and(|c| c.allows("app.read", &[]));
    let mut r = server.metrics.render(&readings, with_apps).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; version=0.0.4; charset=utf-8"));
    Ok(r)
}

/// Without `check`: `WORKING`. With `check=<name>` (repeatable, `all`): one line
/// per checker, 500 if any failed.
async fn healthcheck(State(server): AppState, params: Params) -> ApiResult<Response> {
    let mut checks = params.all("check");
    if checks.is_empty() {
        let mut r = "WORKING".into_response();
        r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
        return Ok(r);
    }
    const CHECKERS: &[&str] = &["database", "auth-scheme"];
    if checks.iter().any(|c| c == "all") {
        checks = CHECKERS.iter().map(|c| c.to_string()).collect();
    }
    let mut out = String::new();
    let mut failed = false;
    for name in checks {
        let start = Instant::now();
        let result: Result<(), String> = match name.as_str() {
            "database" => server.store.ping().await.map_err(|e| e.to_string()),
            "auth-scheme" => match server.scheme.health().await {
                Ok(r) => r,
                Err(e) => Err(e.to_string()),
            },
            other => Err(format!("unknown checker {other:?}")),
        };
        let took = format!("{:?}", start.elapsed());
        match result {
            Ok(()) => out.push_str(&format!("{name}: WORKING ({took})\n")),
            Err(e) => {
                failed = true;
                out.push_str(&format!("{name}: fail - {e} ({took})\n"));
            }
        }
    }
    let status = if failed { StatusCode::INTERNAL_SERVER_ERROR } else { StatusCode::OK };
    let mut r = (status, out).into_response();
    r.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    Ok(r)
}
