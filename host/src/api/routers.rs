//! Routers: the catalogue (`/1.3/routers`), dynamic routers (`/1.8/routers`),
//! an app's routers (`/1.5/apps/{app}/routers`) and routes rebuild
//! (API-NOTES §2.10). What a router does is in `crate::routers`.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::json;
use std::collections::BTreeMap;

use super::apps::{AppTarget, app_contexts, app_event, view_of};
use super::events::{record, request_data};
use super::params::{Params, parse_bool};
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_list};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::pools;
use crate::rbac::{Context, ContextType};
use crate::routers::{self, RouterDef};
use crate::server::Server;
use crate::store::{AppRouter, AppView, RouterRecord, StoreError};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.3", Method::GET, "/routers", list)
        .add("1.0", Method::GET, "/plans/routers", list)
        .add("1.8", Method::POST, "/routers", add)
        .add("1.8", Method::PUT, "/routers/{name}", update)
        .add("1.8", Method::DELETE, "/routers/{name}", remove)
        .add("1.5", Method::GET, "/apps/{app}/routers", app_list)
        .add("1.5", Method::POST, "/apps/{app}/routers", app_add)
        .add("1.5", Method::PUT, "/apps/{app}/routers/{router}", app_update)
        .add("1.5", Method::DELETE, "/apps/{app}/routers/{router}", app_remove)
        .add("1.0", Method::POST, "/apps/{app}/routes", rebuild)
}

fn router_ctx(name: &str) -> Context {
    Context::new(ContextType::Router, name)
}

#[derive(Serialize)]
struct RouterJson<'a> {
    name: &'a str,
    #[serde(rename = "type")]
    kind: &'a str,
    info: BTreeMap<&'static str, String>,
    config: Option<&'a serde_json::Map<String, serde_json::Value>>,
    #[serde(rename = "readinessGates")]
    readiness_gates: Option<&'a [String]>,
    dynamic: bool,
    default: bool,
}

/// Routers the caller may use: all with global `app.create`, otherwise those
/// allowed in the pools its `app.create` teams reach.
fn usable(caller: &Identity, constraints: &[pools::Constraint], pool_names: &[String], r: &RouterDef) -> bool {
    match caller.grants.contexts_for("app.create", ContextType::Team) {
        None => true,
        Some(teams) => pool_names.iter().any(|p| {
            pools::governing(constraints, p, "team").is_some()
                && teams.iter().any(|t| pools::admits(constraints, p, "team", t))
                && pools::admits(constraints, p, "router", &r.name)
        }),
    }
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let all = routers::catalogue(&server).await?;
    let constraints = server.store.constraints().await?;
    let pool_names: Vec<String> = server.store.pools().await?.into_iter().map(|p| p.name).collect();
    let show_config = caller.allows("router.create", &[]);
    let out: Vec<RouterJson> = all
        .iter()
        .filter(|r| usable(&caller, &constraints, &pool_names, r))
        .map(|r| RouterJson {
            name: &r.name,
            kind: &r.kind,
            info: info(&server, r),
            config: show_config.then_some(&r.config),
            readiness_gates: (!r.readiness_gates.is_empty()).then_some(r.readiness_gates.as_slice()),
            dynamic: r.dynamic,
            default: r.default,
        })
        .collect();
    Ok(json_list(&out))
}

fn info(server: &Server, r: &RouterDef) -> BTreeMap<&'static str, String> {
    let mut info = BTreeMap::new();
    info.insert("domain", r.domain.clone());
    info.insert("listen", server.config.router.listen.to_string());
    let tls = server.config.router.tls_listen.map(|a| a.to_string());
    info.insert("tls", tls.unwrap_or_else(|| "disabled".into()));
    info
}

/// A dynamic router from the request (JSON keys matched case-insensitively,
/// or form keys `Name`, `Type`, `ReadinessGates.N`, `Config.k`).
fn dynamic_router(params: &Params, name: String) -> RouterRecord {
    let config = match params.json_field("config") {
        Some(serde_json::Value::Object(map)) => map.clone(),
        _ => params.field_map("config").into_iter().map(|(k, v)| (k, v.into())).collect(),
    };
    RouterRecord { name, kind: params.field("type").unwrap_or_default(), config, readiness_gates: params.field_list("readinessGates") }
}

async fn add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("router.create", &[])?;
    let r = dynamic_router(&params, params.field("name").unwrap_or_default());
    routers::check_dynamic(&r, &server.config.router.domain, &server.config.router_types()).map_err(ApiError::bad_request)?;
    if routers::find(&routers::catalogue(&server).await?, &r.name).is_some() {
        return Err(ApiError::conflict("dynamic router already exists"));
    }
    routers::check_domain_owner(&server, &r).await?.map_err(ApiError::bad_request)?;
    let event = record(&server, Some(&caller), &ip, "router.create", Target::new("router", &r.name), request_data(&params, &[])).await?;
    let result = server.store.add_router(&r).await.map(|()| empty(StatusCode::CREATED));
    event.done(result.map_err(ApiError::from)).await
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    caller.require("router.update", &[router_ctx(&name)])?;
    let known = routers::catalogue(&server).await?;
    if !routers::find(&known, &name).is_some_and(|r| r.dynamic) {
        return Err(ApiError::not_found("dynamic router not found"));
    }
    let r = dynamic_router(&params, name.clone());
    routers::check_dynamic(&r, &server.config.router.domain, &server.config.router_types()).map_err(ApiError::bad_request)?;
    routers::check_domain_owner(&server, &r).await?.map_err(ApiError::bad_request)?;
    let event = record(&server, Some(&caller), &ip, "router.update", Target::new("router", &name), request_data(&params, &[("name", &name)])).await?;
    let work = async {
        server.store.update_router(&r).await?;
        // Its apps answer at names in the new domain.
        for app in server.store.apps_of_router(&name).await? {
            sync_routes(&server, &app).await?;
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("router.delete", &[router_ctx(&name)])?;
    let known = routers::catalogue(&server).await?;
    if !routers::find(&known, &name).is_some_and(|r| r.dynamic) {
        return Err(ApiError::not_found("dynamic router not found"));
    }
    let data = request_data(&Params::default(), &[("name", &name)]);
    let event = record(&server, Some(&caller), &ip, "router.delete", Target::new("router", &name), data).await?;
    let result = server.store.delete_router(&name).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

/// An app router as app info and `/1.5/apps/{app}/routers` show it.
#[derive(Serialize)]
pub struct AppRouterJson {
    name: String,
    opts: BTreeMap<String, String>,
    pub address: String,
    addresses: Option<Vec<String>>,
    #[serde(rename = "type")]
    kind: String,
    #[serde(skip_serializing_if = "String::is_empty")]
    status: String,
    #[serde(rename = "status-detail", skip_serializing_if = "String::is_empty")]
    status_detail: String,
}

/// The app's routers with their addresses, main router first; `told` is
/// what each router did of the app (a failure shows as status `error`).
pub fn app_routers_json(view: &AppView, all: &[RouterDef], told: &[crate::store::RouterApp]) -> Vec<AppRouterJson> {
    view.routers
        .iter()
        .map(|ar| match routers::find(all, &ar.router) {
            Some(r) => {
                let error = told.iter().find(|t| t.router == ar.router).map(|t| t.error.clone()).unwrap_or_default();
                AppRouterJson {
                    name: ar.router.clone(),
                    opts: ar.opts.clone(),
                    address: r.address(&view.app.name),
                    addresses: Some(vec![r.address(&view.app.name)]),
                    kind: r.kind.clone(),
                    status: if error.is_empty() { "ready".into() } else { "error".into() },
                    status_detail: error,
                }
            }
            None => AppRouterJson {
                name: ar.router.clone(),
                opts: ar.opts.clone(),
                address: String::new(),
                addresses: None,
                kind: String::new(),
                status: "not ready".into(),
                status_detail: format!("router {:?} is not configured", ar.router),
            },
        })
        .collect()
}

async fn app_list(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.read.router", &app_contexts(&app))?;
    let view = view_of(&server, &app.name).await?;
    let told = server.store.router_apps_of(&app.name).await?;
    Ok(json_list(&app_routers_json(&view, &routers::catalogue(&server).await?, &told)))
}

/// The router `name` if it exists and `pool` may use it.
pub async fn router_for_pool(server: &Server, name: &str, pool: &str) -> ApiResult<RouterDef> {
    let all = routers::catalogue(server).await?;
    let r = routers::find(&all, name).ok_or_else(|| ApiError::not_found(format!("router {name:?} not found")))?;
    let constraints = server.store.constraints().await?;
    if !pools::admits(&constraints, pool, "router", name) {
        let allowed: Vec<&str> = routers::allowed_in_pool(&constraints, pool, &all).iter().map(|r| r.name.as_str()).collect();
        return Err(ApiError::bad_request(format!(
            "router {name:?} is not available for pool {pool:?}. Available routers are: {:?}",
            allowed.join(", ")
        )));
    }
    Ok(r.clone())
}

/// Hands `app`'s routes to its routers after a change. A router that
/// refuses them fails the request (400; callers that can take the change
/// back do); one that fails does not: the change stands, the app router's
/// status says `error`, and the resync loop tells it again.
pub(super) async fn sync_routes(server: &Server, app: &str) -> ApiResult<()> {
    match server.routing.sync(app).await {
        Ok(()) => Ok(()),
        Err(e) if e.refused => Err(ApiError::bad_request(format!("the routes of app {app} were refused: {e}"))),
        Err(e) => {
            tracing::warn!(app, error = %e, "routers: the app is not served everywhere yet; told again by the resync loop");
            Ok(())
        }
    }
}

fn opts(params: &Params) -> ApiResult<BTreeMap<String, String>> {
    let opts = params.field_map("opts");
    routers::check_opts(&opts).map_err(ApiError::bad_request)?;
    Ok(opts)
}

async fn app_add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.router.add", &app_contexts(&app))?;
    let name = params.field("name").unwrap_or_default();
    let r = router_for_pool(&server, &name, &app.pool).await?;
    let entry = AppRouter { router: r.name, opts: opts(&params)? };
    let event = app_event(&server, &caller, &ip, "app.update.router.add", &app, request_data(&params, &[("app", &app.name)])).await?;
    let work = async {
        server.store.add_app_router(&app.name, &entry).await.map_err(|e| match e {
            StoreError::Conflict(m) => ApiError::internal(m),
            other => other.into(),
        })?;
        sync_routes(&server, &app.name).await
    };
    event.done(work.await.map(|()| empty(StatusCode::OK))).await
}

async fn app_update(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    Path((_, router)): Path<(String, String)>,
    params: Params,
) -> ApiResult<Response> {
    caller.require("app.update.router.update", &app_contexts(&app))?;
    if routers::find(&routers::catalogue(&server).await?, &router).is_none() {
        return Err(ApiError::not_found(format!("router {router:?} not found")));
    }
    let entry = AppRouter { router: router.clone(), opts: opts(&params)? };
    let data = request_data(&params, &[("app", &app.name), ("router", &router)]);
    let event = app_event(&server, &caller, &ip, "app.update.router.update", &app, data).await?;
    let work = async {
        server.store.update_app_router(&app.name, &entry).await.map_err(|e| match e {
            // Only a router that does not exist at all is a 404 (API-NOTES §2.10).
            StoreError::NotFound(m) => ApiError::internal(m),
            other => other.into(),
        })?;
        sync_routes(&server, &app.name).await
    };
    event.done(work.await.map(|()| empty(StatusCode::OK))).await
}

async fn app_remove(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    Path((_, router)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("app.update.router.remove", &app_contexts(&app))?;
    let data = request_data(&Params::default(), &[("app", &app.name), ("router", &router)]);
    let event = app_event(&server, &caller, &ip, "app.update.router.remove", &app, data).await?;
    let work = async {
        server.store.remove_app_router(&app.name, &router).await?;
        sync_routes(&server, &app.name).await
    };
    event.done(work.await.map(|()| empty(StatusCode::OK))).await
}

/// The names `router` serves for `app`: an external router's in its own
/// words (what its last `ensure` answered), the embedded one's as torii's
/// proxy table holds them (the table is what it serves).
async fn served(server: &Server, router: &str, app: &str) -> ApiResult<Vec<String>> {
    let told = server.store.router_apps_of(app).await?;
    match told.into_iter().find(|t| t.router == router && t.error.is_empty()) {
        Some(t) if t.kind != crate::config::EMBEDDED_ROUTER => Ok(t.names),
        _ => Ok(server.store.proxy_hosts_of(router, app).await?),
    }
}

/// `POST /apps/{app}/routes[?dry=true]`: hands the app's routes to each of
/// its routers again, and reports per router the names it serves that were
/// added or removed, as the router answered (`dry`: the router's names now
/// against those torii's routes give it).
async fn rebuild(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.admin.routes", &app_contexts(&app))?;
    let dry = params.get("dry").and_then(|d| parse_bool(&d)).unwrap_or(false);
    let view = view_of(&server, &app.name).await?;
    let all = routers::catalogue(&server).await?;
    let mut before = BTreeMap::new();
    for r in &view.routers {
        before.insert(r.router.clone(), served(&server, &r.router, &app.name).await?);
    }
    if !dry {
        server.store.forget_view(&app.name);
        sync_routes(&server, &app.name).await?;
    }
    let mut out = serde_json::Map::new();
    for (position, r) in view.routers.iter().enumerate() {
        let after = match (dry, routers::find(&all, &r.router)) {
            (false, _) => served(&server, &r.router, &app.name).await?,
            (true, Some(def)) => routers::hosts_of(&view, def, position == 0),
            (true, None) => vec![],
        };
        let old = before.remove(&r.router).unwrap_or_default();
        let added: Vec<&String> = after.iter().filter(|h| !old.contains(h)).collect();
        let removed: Vec<&String> = old.iter().filter(|h| !after.contains(h)).collect();
        let list = |l: Vec<&String>| if l.is_empty() { serde_json::Value::Null } else { json!(l) };
        let (added, removed) = (list(added), list(removed));
        out.insert(
            r.router.clone(),
            json!({"PrefixResults": [{"Prefix": "", "Added": added, "Removed": removed}], "Added": added, "Removed": removed}),
        );
    }
    Ok(json(StatusCode::OK, &out))
}
