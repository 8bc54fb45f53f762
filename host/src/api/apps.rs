//! Apps: create, info, list, remove, team access, quota (API-NOTES §2.4).
//!
//! Routes with an `{app}` path variable take [`AppTarget`], which applies
//! tsuru's checks before the handler: an app token may only reach its own
//! app (403), and a missing app is 404 before any permission check.

use axum::extract::{FromRequestParts, Path, State};
use axum::http::request::Parts;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};
use std::collections::{BTreeMap, HashMap};
use std::sync::{Arc, LazyLock};

use super::events::{record_cancelable, request_data};
use super::params::{Params, parse_bool};
use super::plans::plan_json;
use super::stream::{KEEPALIVE, json_stream};
use super::tokens::select_team;
use super::users::{QuotaJson, parse_limit};
use super::{AppState, Caller, ClientIp, Resolved, Routes, empty, json, json_list, time_json};
use crate::auth::{Subject, hash_token, new_session_token};
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::pools::{self, Constraint};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use serde::Serialize;
use crate::plugin::provisioner::{Unit, app_state};
use crate::routers;
use crate::store::{AppColumn, AppRecord, AppRouter, AppView, EnvVar, Metadata, MetadataItem, PlanRecord, PoolRecord, now_millis};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/apps", list)
        .add("1.0", Method::POST, "/apps", create)
        .add("1.0", Method::GET, "/apps/{app}", info)
        .add("1.0", Method::DELETE, "/apps/{app}", remove)
        .add("1.0", Method::PUT, "/apps/{app}", update)
        .add("1.0", Method::PUT, "/apps/{app}/teams/{team}", grant)
        .add("1.0", Method::DELETE, "/apps/{app}/teams/{team}", revoke)
        .add("1.0", Method::GET, "/apps/{app}/quota", quota_get)
        .add("1.0", Method::PUT, "/apps/{app}/quota", quota_set)
        .add("1.0", Method::DELETE, "/apps/{app}/lock", unlock)
        .add("1.0", Method::GET, "/apps/{app}/metric/envs", metric_envs)
}

/// The app named by the `{app}` path variable, after tsuru's token checks.
pub struct AppTarget(pub AppRecord);

impl FromRequestParts<Arc<Server>> for AppTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, ApiError> {
        let name = app_path(parts, server).await?;
        match server.store.app(&name).await? {
            Some(app) => Ok(AppTarget(app)),
            None => Err(ApiError::not_found(format!("App {name} not found."))),
        }
    }
}

/// The app named by the path, as its info page shows it (one query).
pub struct AppViewTarget(pub Arc<AppView>);

impl FromRequestParts<Arc<Server>> for AppViewTarget {
    type Rejection = ApiError;

    async fn from_request_parts(parts: &mut Parts, server: &Arc<Server>) -> Result<Self, ApiError> {
        let name = app_path(parts, server).await?;
        view_of(server, &name).await.map(AppViewTarget)
    }
}

/// The view of app `name` (cached), or tsuru's 404.
pub(super) async fn view_of(server: &Server, name: &str) -> ApiResult<Arc<AppView>> {
    server.store.app_view(name).await?.ok_or_else(|| ApiError::not_found(format!("App {name} not found.")))
}

/// The `{app}` of the path; an app token may only name its own app. A wake
/// of the app the data plane recorded beside a request it answered is
/// waited for (`events::claims`), so what the request did shows.
async fn app_path(parts: &mut Parts, server: &Arc<Server>) -> Result<String, ApiError> {
    let Path(vars) = Path::<HashMap<String, String>>::from_request_parts(parts, server)
        .await
        .map_err(|e| ApiError::bad_request(e.to_string()))?;
    let name = vars.get("app").cloned().unwrap_or_default();
    if let Some(Resolved(Some(identity))) = parts.extensions.get::<Resolved>()
        && let Subject::App { app } = &identity.subject
        && *app != name
    {
        return Err(ApiError::forbidden_with(format!("app token mismatch, token for {app:?}, request for {name:?}")));
    }
    server.events.claims.settled(&crate::events::Target::new("app", name.as_str())).await;
    Ok(name)
}

/// An app's description, bounded (`names::text`).
fn description(d: String) -> ApiResult<String> {
    if super::names::text(&d, super::names::MAX_DESCRIPTION) {
        Ok(d)
    } else {
        Err(ApiError::bad_request(format!("invalid description: at most {} characters", super::names::MAX_DESCRIPTION)))
    }
}

/// The contexts an app permission is checked against: its teams, itself, its pool.
pub fn app_contexts(app: &AppRecord) -> Vec<Context> {
    let mut out: Vec<Context> = app.teams.iter().map(Context::team).collect();
    out.push(Context::new(ContextType::App, &app.name));
    out.push(Context::new(ContextType::Pool, &app.pool));
    out
}

const INVALID_APP: &str = "Invalid app name, your app should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";

/// A Kubernetes qualified name, optionally with a DNS prefix.
static QUALIFIED_NAME: LazyLock<regex::Regex> = LazyLock::new(|| {
    regex::Regex::new(r"^([a-z0-9]([-a-z0-9.]{0,251}[a-z0-9])?/)?[A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?$").unwrap()
});
static LABEL_VALUE: LazyLock<regex::Regex> =
    LazyLock::new(|| regex::Regex::new(r"^([A-Za-z0-9]([-A-Za-z0-9_.]{0,61}[A-Za-z0-9])?)?$").unwrap());
const MAX_ANNOTATIONS: usize = 256 * 1024;

/// Applies metadata changes (`delete` removes by name) after validating them.
fn apply_metadata(current: &mut Metadata, params: &Params) -> ApiResult<()> {
    for (inner, is_label) in [("labels", true), ("annotations", false)] {
        let list = if is_label { &mut current.labels } else { &mut current.annotations };
        for (name, value, delete) in params.named_items("metadata", inner) {
            if !QUALIFIED_NAME.is_match(&name) {
                return Err(ApiError::bad_request(format!("metadata.{inner}: {name:?} is not a valid name")));
            }
            if name.starts_with("tsuru.io/") {
                return Err(ApiError::bad_request(format!("metadata.{inner}: prefix tsuru.io/ is reserved ({name})")));
            }
            if is_label && !LABEL_VALUE.is_match(&value) {
                return Err(ApiError::bad_request(format!("metadata.labels: {value:?} is not a valid label value")));
            }
            list.retain(|i| i.name != name);
            if !delete {
                list.push(MetadataItem { name, value });
            }
        }
    }
    let size: usize = current.annotations.iter().map(|a| a.name.len() + a.value.len()).sum();
    if size > MAX_ANNOTATIONS {
        return Err(ApiError::bad_request("metadata.annotations: total size must be at most 256 KiB"));
    }
    Ok(())
}

fn number(raw: Option<String>, what: &str) -> ApiResult<i64> {
    match raw.filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(r) => r.trim().parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| ApiError::bad_request(format!("invalid {what}: {r:?}"))),
    }
}

/// tsuru's pool choice: the given pool; else the only pool whose team
/// constraint names the team; else the default pool.
async fn choose_pool(server: &Server, constraints: &[Constraint], given: Option<String>, team: &str) -> ApiResult<PoolRecord> {
    let pool = match given.filter(|p| !p.is_empty()) {
        Some(name) => server.store.pool(&name).await?.ok_or_else(|| ApiError::bad_request("Pool does not exist."))?,
        None => {
            let all = server.store.pools().await?;
            let naming: Vec<&PoolRecord> = all
                .iter()
                .filter(|p| {
                    pools::governing(constraints, &p.name, "team")
                        .is_some_and(|c| !c.blacklist && c.values.iter().any(|v| v == team))
                })
                .collect();
            match naming.as_slice() {
                [one] => (*one).clone(),
                [] => all.iter().find(|p| p.default).cloned().ok_or_else(|| {
                    ApiError::bad_request("No pool available: there is no default pool and none is open to this team. Please choose one in app creation")
                })?,
                several => {
                    let names: Vec<String> = several.iter().map(|p| format!("{:?}", p.name)).collect();
                    return Err(ApiError::internal(format!(
                        "you have access to {} pools. Please choose one in app creation",
                        names.join(",")
                    )));
                }
            }
        }
    };
    if !pools::admits(constraints, &pool.name, "team", team) {
        return Err(ApiError::bad_request(format!("App team owner {team:?} has no access to pool {:?}", pool.name)));
    }
    Ok(pool)
}

async fn choose_plan(server: &Server, constraints: &[Constraint], given: Option<String>, pool: &str) -> ApiResult<PlanRecord> {
    match given.filter(|p| !p.is_empty()) {
        Some(name) => {
            let plan = server.store.plan(&name).await?.ok_or_else(|| ApiError::bad_request("plan not found"))?;
            if !pools::admits(constraints, pool, "plan", &plan.name) {
                return Err(ApiError::bad_request(format!("App plan {:?} is not allowed on pool {pool:?}", plan.name)));
            }
            Ok(plan)
        }
        None => {
            let plans = server.store.plans().await?;
            let allowed: Vec<&PlanRecord> = plans.iter().filter(|p| pools::admits(constraints, pool, "plan", &p.name)).collect();
            allowed
                .iter()
                .find(|p| p.default)
                .or(allowed.first())
                .map(|p| (*p).clone())
                .ok_or_else(|| ApiError::bad_request(format!("no plan is allowed on pool {pool:?}")))
        }
    }
}

/// `name` or `name:version` of a platform the caller may use: unknown → 500
/// `Invalid platform` (as tsuru), disabled → 400 unless the caller manages platforms.
async fn resolve_platform(server: &Server, caller: &crate::auth::Identity, raw: &str) -> ApiResult<(String, String)> {
    let (name, version) = raw.split_once(':').unwrap_or((raw, ""));
    match server.store.platform_disabled(name).await? {
        None => Err(ApiError::internal("Invalid platform")),
        Some(true) if !super::platforms::may_manage(caller) => Err(ApiError::bad_request("Invalid platform")),
        Some(_) => Ok((name.to_string(), version.to_string())),
    }
}

/// 403 `Quota exceeded` when `limit` is set and reached.
fn check_quota(limit: i64, inuse: usize) -> ApiResult<()> {
    if limit >= 0 && inuse as i64 >= limit { Err(ApiError::forbidden_with("Quota exceeded")) } else { Ok(()) }
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let name = params.field("name").unwrap_or_default();
    if !super::names::valid(&name) || name == "tsr" {
        return Err(ApiError::bad_request(INVALID_APP));
    }
    let team = match select_team(&server, &caller, "app.create", params.field("teamOwner")).await {
        Err(e) if e.status == StatusCode::FORBIDDEN && params.field("teamOwner").is_none_or(|t| t.is_empty()) => {
            return Err(ApiError::bad_request("In order to create an app, you should be member of at least one team"));
        }
        other => other?,
    };
    let constraints = server.store.constraints().await?;
    let pool = choose_pool(&server, &constraints, params.field("pool"), &team).await?;
    let plan = choose_plan(&server, &constraints, params.field("plan"), &pool.name).await?;
    let app_routers = choose_routers(&server, &constraints, &params, &pool.name).await?;
    let (platform, platform_version) = match params.field("platform").filter(|p| !p.is_empty()) {
        None => (String::new(), String::new()),
        Some(p) => resolve_platform(&server, &caller, &p).await?,
    };
    let mut metadata = Metadata::default();
    apply_metadata(&mut metadata, &params)?;
    let owner = match &caller.subject {
        Subject::User { email } => email.clone(),
        _ => caller.email.clone(),
    };
    if let Some(user) = server.store.user(&owner).await? {
        check_quota(user.quota_limit, server.store.app_names_where(AppColumn::Owner, &owner).await?.len())?;
    }
    if let Some(t) = server.store.team(&team).await? {
        check_quota(t.quota_limit, server.store.app_names_where(AppColumn::TeamOwner, &team).await?.len())?;
    }
    let app = AppRecord {
        name: name.clone(),
        platform,
        platform_version,
        team_owner: team.clone(),
        owner,
        pool: pool.name.clone(),
        plan: plan.name.clone(),
        override_memory: number(params.nested("planOverride", "memory"), "planOverride.memory")?,
        override_cpumilli: number(params.nested("planOverride", "cpumilli"), "planOverride.cpumilli")?,
        description: description(params.field("description").unwrap_or_default())?,
        tags: params.tags()?,
        metadata,
        cnames: vec![],
        quota_limit: -1,
        deploys: 0,
        created_at: now_millis(),
        teams: vec![team],
    };
    let token = new_session_token();
    let env = [
        ("TSURU_APPNAME", name.clone()),
        ("TSURU_APPDIR", "/home/application/current".to_string()),
        ("TSURU_APP_TOKEN", token.clone()),
    ]
    .map(|(n, v)| EnvVar { name: n.into(), value: v, public: false, alias: String::new(), managed_by: String::new() });
    let event = app_event(&server, &caller, &ip, "app.create", &app, request_data(&params, &[])).await?;
    let ip = match app_routers.first() {
        Some(r) => routers::find(&routers::catalogue(&server).await?, &r.router).map(|r| r.address(&name)),
        None => None,
    };
    let result = match server.store.create_app(&app, &env, &app_routers, &hash_token(&token)).await {
        Ok(()) => super::routers::sync_routes(&server, &name).await,
        Err(e) => Err(e.into()),
    };
    let answer = match ip {
        Some(ip) => json!({"status": "success", "ip": ip}),
        None => json!({"status": "success"}),
    };
    event.done(result.map(|()| json(StatusCode::CREATED, &answer))).await
}

/// The routers of a new app: `router` (`none`: no router) with `routerOpts`,
/// else the pool's default router. Unknown or disallowed routers are 400s.
async fn choose_routers(server: &Server, constraints: &[Constraint], params: &Params, pool: &str) -> ApiResult<Vec<AppRouter>> {
    let opts = params.field_map("routerOpts");
    routers::check_opts(&opts).map_err(ApiError::bad_request)?;
    let name = match params.field("router").filter(|r| !r.is_empty()) {
        Some(none) if none == "none" => return Ok(vec![]),
        Some(name) => {
            super::routers::router_for_pool(server, &name, pool).await.map_err(|e| ApiError::bad_request(e.message))?.name
        }
        None => match routers::default_for_pool(constraints, pool, &routers::catalogue(server).await?) {
            Some(r) => r.name.clone(),
            None => return Ok(vec![]),
        },
    };
    Ok(vec![AppRouter { router: name, opts }])
}

/// An app's lock as tsuru shows it (Go field names).
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
struct LockJson<'a> {
    locked: bool,
    reason: &'a str,
    owner: &'a str,
    acquire_date: String,
}

fn lock_json(lock: Option<&crate::store::EventRecord>) -> LockJson<'_> {
    match lock {
        None => LockJson { locked: false, reason: "", owner: "", acquire_date: time_json(0) },
        Some(e) => LockJson { locked: true, reason: &e.kind_name, owner: &e.owner_name, acquire_date: time_json(e.start_time) },
    }
}

/// Labels and annotations; an empty list shows as null.
#[derive(Serialize)]
struct MetadataJson<'a> {
    labels: Option<&'a [MetadataItem]>,
    annotations: Option<&'a [MetadataItem]>,
}

const NO_METADATA: MetadataJson<'static> = MetadataJson { labels: None, annotations: None };

fn metadata_json(m: &Metadata) -> MetadataJson<'_> {
    fn items(v: &[MetadataItem]) -> Option<&[MetadataItem]> {
        (!v.is_empty()).then_some(v)
    }
    MetadataJson { labels: items(&m.labels), annotations: items(&m.annotations) }
}

fn app_plan_json(app: &AppRecord, plan: &Option<PlanRecord>, with_default: bool) -> super::plans::PlanJson {
    let json = match plan {
        Some(p) => plan_json(&PlanRecord { default: with_default && p.default, ..p.clone() }),
        None => plan_json(&PlanRecord { name: app.plan.clone(), memory: 0, cpumilli: 0, cpushare: 0, default: false }),
    };
    json.with_overrides(app.override_memory, app.override_cpumilli)
}

fn list_or_null(v: &[String]) -> Value {
    if v.is_empty() { Value::Null } else { json!(v) }
}

async fn info(State(server): AppState, Caller(caller): Caller, AppViewTarget(view): AppViewTarget) -> ApiResult<Response> {
    caller.require("app.read.info", &app_contexts(&view.app))?;
    Ok(json(StatusCode::OK, &info_json(&server, &view).await?))
}

/// An app's info (API-NOTES §2.4.3), as `GET /apps/{app}` and team info show it.
pub(super) async fn info_json(server: &Server, view: &Arc<AppView>) -> ApiResult<BTreeMap<&'static str, Value>> {
    let AppView { app, plan, provisioner, lock_event, routers: app_routers, .. } = &**view;
    let lock = match lock_event {
        None => None,
        Some(id) => server.store.event(id).await?,
    };
    let platform = if app.platform_version.is_empty() {
        app.platform.clone()
    } else {
        format!("{}:{}", app.platform, app.platform_version)
    };
    let mut out: BTreeMap<&str, Value> = BTreeMap::new();
    let autoscale = server.store.autoscales(&app.name).await?;
    if !autoscale.is_empty() {
        out.insert("autoscale", json!(autoscale.iter().map(super::autoscale::spec_json).collect::<Vec<_>>()));
    }
    out.insert("cname", list_or_null(&app.cnames));
    out.insert("deploys", json!(app.deploys));
    out.insert("description", json!(app.description));
    out.insert("lock", json!(lock_json(lock.as_ref())));
    out.insert("metadata", json!(metadata_json(&app.metadata)));
    out.insert("name", json!(app.name));
    out.insert("owner", json!(app.owner));
    let main_router = app_routers.first().map(|r| r.router.as_str());
    out.insert("plan", json!(app_plan_json(app, plan, false).with_router(main_router)));
    let told = if view.routers.is_empty() { Vec::new() } else { server.store.router_apps_of(&view.app.name).await? };
    let routers_json = super::routers::app_routers_json(view, &routers::catalogue(server).await?, &told);
    if let (Some(first), Some(main)) = (routers_json.first(), app_routers.first()) {
        out.insert("ip", json!(first.address));
        out.insert("router", json!(main.router));
        out.insert("routeropts", json!(main.opts));
    }
    out.insert("routers", json!(routers_json));
    out.insert("platform", json!(platform));
    out.insert("pool", json!(app.pool));
    // The pool's provisioner, or the configured default.
    let provisioner = server.config.pool_provisioner(provisioner.as_deref().unwrap_or_default());
    out.insert("provisioner", json!(provisioner));
    let units = match units_json(server, view).await {
        Ok(units) => units,
        Err(e) => {
            out.insert("error", json!(format!("unable to list app units: {e}")));
            vec![]
        }
    };
    out.insert("quota", json!(QuotaJson { limit: app.quota_limit, inuse: units.len() as i64 }));
    let mut binds = Vec::with_capacity(view.binds.len());
    for b in &view.binds {
        let plan = server.store.instance(&b.service, &b.instance).await?.map(|i| i.plan).unwrap_or_default();
        binds.push(json!({"service": b.service, "instance": b.instance, "plan": plan}));
    }
    out.insert("serviceInstanceBinds", json!(binds));
    out.insert("tags", list_or_null(&app.tags));
    out.insert("teamowner", json!(app.team_owner));
    out.insert("teams", json!(app.teams));
    out.insert("units", json!(units));
    let volume_binds: Vec<Value> = view.volume_binds.iter().map(super::volumes::bind_json).collect();
    out.insert("volumeBinds", if volume_binds.is_empty() { Value::Null } else { json!(volume_binds) });
    Ok(out)
}

/// A list flag as tsuru reads it: Go's `ParseBool`, anything else is false.
fn flag(params: &Params, key: &str) -> bool {
    params.get(key).and_then(|raw| parse_bool(&raw)).unwrap_or(false)
}

/// A unit as tsuru shows it (Go field names). A WASM unit is a concurrency
/// slot of a routable version's process, in-process: it has no address.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UnitJson {
    #[serde(rename = "ID")]
    id: String,
    name: String,
    app_name: String,
    process_name: String,
    #[serde(rename = "Type")]
    kind: &'static str,
    #[serde(rename = "InternalIP")]
    internal_ip: String,
    status: String,
    status_reason: String,
    address: Option<UrlJson>,
    addresses: Option<Vec<UrlJson>>,
    version: i64,
    routable: bool,
    restarts: i64,
    created_at: String,
    ready: bool,
    host_addr: String,
    host_port: String,
    #[serde(rename = "IP")]
    ip: String,
}

/// A Go `url.URL` as tsuru's unit JSON shows it.
#[derive(Serialize)]
#[serde(rename_all = "PascalCase")]
pub(super) struct UrlJson {
    scheme: String,
    opaque: &'static str,
    user: Option<()>,
    host: String,
    path: &'static str,
    raw_path: &'static str,
    omit_host: bool,
    force_query: bool,
    raw_query: &'static str,
    fragment: &'static str,
    raw_fragment: &'static str,
}

/// A unit as tsuru shows it. Units on a node (containers) show where they
/// answer: `Address` is their published `127.0.0.1` port.
pub(super) fn unit_json(view: &AppView, u: &Unit) -> UnitJson {
    let url = u.address.as_deref().and_then(|a| a.split_once("://")).map(|(scheme, host)| UrlJson::new(scheme, host));
    let (ip, port) = url.as_ref().and_then(|u| u.host.rsplit_once(':')).map(|(h, p)| (h.to_string(), p.to_string())).unwrap_or_default();
    let container = !u.node.is_empty();
    UnitJson {
        id: u.id.clone(),
        name: u.name.clone(),
        app_name: u.app.clone(),
        process_name: u.process.clone(),
        kind: if container { "container" } else { "wasm" },
        internal_ip: ip.clone(),
        status: u.status.clone(),
        status_reason: u.status_reason.clone(),
        addresses: url.as_ref().map(|u| vec![UrlJson::new(&u.scheme, &u.host)]),
        address: url,
        version: i64::from(u.version),
        routable: true,
        restarts: i64::from(u.restarts),
        created_at: time_json(view.versions.iter().find(|v| v.version == i64::from(u.version)).map(|v| v.created_at).unwrap_or(0)),
        ready: u.ready,
        host_addr: ip.clone(),
        host_port: port,
        ip,
    }
}

impl UrlJson {
    fn new(scheme: &str, host: &str) -> UrlJson {
        UrlJson {
            scheme: scheme.to_string(),
            opaque: "",
            user: None,
            host: host.to_string(),
            path: "",
            raw_path: "",
            omit_host: false,
            force_query: false,
            raw_query: "",
            fragment: "",
            raw_fragment: "",
        }
    }
}

/// The app's units as its provisioner reports them. Kept per view and
/// unit-state generation, so app info does not call the plugin while
/// nothing changed.
pub(super) async fn units_of(server: &Server, view: &Arc<AppView>) -> Result<Arc<Vec<Unit>>, String> {
    let generation = server.units.generation();
    let cached = server.unit_lists.lock().unwrap().get(&view.app.name).and_then(|(v, g, units)| {
        (Arc::ptr_eq(v, view) && *g == generation).then(|| units.clone())
    });
    let units = match cached {
        Some(units) => units,
        None => {
            let name = server.config.pool_provisioner(view.provisioner.as_deref().unwrap_or_default());
            let provisioner = server.provisioners.get(name).ok_or_else(|| format!("provisioner {name:?} is not configured"))?;
            let units = Arc::new(provisioner.units(app_state(view)).await.map_err(|e| e.to_string())?);
            let mut lists = server.unit_lists.lock().unwrap();
            if lists.len() >= 100_000 {
                lists.clear();
            }
            lists.insert(view.app.name.clone(), (view.clone(), generation, units.clone()));
            units
        }
    };
    Ok(units)
}

async fn units_json(server: &Server, view: &Arc<AppView>) -> Result<Vec<UnitJson>, String> {
    Ok(units_of(server, view).await?.iter().map(|u| unit_json(view, u)).collect())
}

/// An app router as the list shows it: tsuru fills only name, opts and
/// address there (`addresses` null, `type` empty).
#[derive(Serialize)]
struct ListRouterJson<'a> {
    name: &'a str,
    opts: &'a BTreeMap<String, String>,
    address: String,
    addresses: Option<()>,
    #[serde(rename = "type")]
    kind: &'static str,
}

/// An app as the list shows it (tsuru's `app.App` with `json` omissions).
#[derive(Serialize)]
struct ListItem<'a> {
    name: &'a str,
    pool: &'a str,
    teamowner: &'a str,
    plan: super::plans::PlanJson,
    units: Vec<UnitJson>,
    cname: Option<&'a [String]>,
    ip: String,
    routers: Vec<ListRouterJson<'a>>,
    lock: LockJson<'a>,
    tags: Option<&'a [String]>,
    metadata: MetadataJson<'a>,
    /// Why the app's units could not be listed.
    #[serde(skip_serializing_if = "Option::is_none")]
    error: Option<String>,
    #[serde(skip_serializing_if = "Option::is_none")]
    platform: Option<&'a str>,
    #[serde(skip_serializing_if = "Option::is_none")]
    description: Option<&'a str>,
}

fn non_empty(v: &[String]) -> Option<&[String]> {
    (!v.is_empty()).then_some(v)
}

/// How many apps' units `GET /apps` lists at once.
const UNIT_LISTINGS: usize = 16;

async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let name_re = match params.get("name").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(regex::Regex::new(&raw).map_err(|e| ApiError::bad_request(format!("invalid name filter: {e}")))?),
    };
    let platform = params.get("platform").filter(|s| !s.is_empty());
    let team_owner = params.get("teamOwner").filter(|s| !s.is_empty());
    let owner = params.get("owner").filter(|s| !s.is_empty());
    let pool = params.get("pool").filter(|s| !s.is_empty());
    // Only `locked=true` filters (tsuru: `if locked { filter.Locked = true }`).
    let locked_only = flag(&params, "locked");
    let statuses: Vec<String> = params.all("status").into_iter().filter(|s| !s.is_empty()).collect();
    let wanted_tags: Vec<String> = params.all("tag").into_iter().filter(|s| !s.is_empty()).collect();
    let extended = flag(&params, "extended");
    let simplified = flag(&params, "simplified");
    let readable = |app: &AppRecord| {
        let ctx = app_contexts(app);
        caller.allows("app.read", &ctx) || caller.allows("app.read.info", &ctx)
    };
    let mut all = server.store.app_views().await?;
    // Wakes of apps the caller sees, recorded beside requests already
    // answered, show as done (see `events::claims`).
    let claims = &server.events.claims;
    let waking: Vec<String> = claims.claimed("app").into_iter().filter(|name| all.iter().any(|v| v.app.name == *name && readable(&v.app))).collect();
    if !waking.is_empty() {
        for name in waking {
            claims.settled(&crate::events::Target::new("app", name)).await;
        }
        all = server.store.app_views().await?;
    }
    let locks = server.store.locking_events("app").await?;
    let catalogue = routers::catalogue(&server).await?;

    let mut shown = Vec::new();
    for view in &all {
        let app = &view.app;
        if !readable(app) {
            continue;
        }
        if name_re.as_ref().is_some_and(|re| !re.is_match(&app.name))
            || team_owner.as_ref().is_some_and(|t| *t != app.team_owner)
            || owner.as_ref().is_some_and(|o| *o != app.owner)
            || pool.as_ref().is_some_and(|p| *p != app.pool)
            || !wanted_tags.iter().all(|t| app.tags.contains(t))
        {
            continue;
        }
        if let Some(p) = &platform {
            let (n, v) = p.split_once(':').unwrap_or((p.as_str(), ""));
            let version_ok = match v {
                "" => true,
                "latest" => app.platform_version.is_empty(),
                v => app.platform_version == v,
            };
            if app.platform != n || !version_ok {
                continue;
            }
        }
        let lock = locks.get(&app.name);
        if locked_only && lock.is_none() {
            continue;
        }
        shown.push((view, lock));
    }
    // Each app's units from its provisioner (a few apps at a time, in
    // order), unless `simplified` and no unit status filters the list.
    let listings: Vec<Result<Vec<UnitJson>, String>> = if simplified && statuses.is_empty() {
        shown.iter().map(|_| Ok(Vec::new())).collect()
    } else {
        use futures_util::StreamExt;
        let views: Vec<Arc<AppView>> = shown.iter().map(|(view, _)| Arc::clone(view)).collect();
        let listing = |view: Arc<AppView>| {
            let server = server.clone();
            async move { units_json(&server, &view).await }
        };
        futures_util::stream::iter(views.into_iter().map(listing)).buffered(UNIT_LISTINGS).collect().await
    };
    let mut out = Vec::new();
    for ((view, lock), listing) in shown.into_iter().zip(listings) {
        let app = &view.app;
        let (units, error) = match listing {
            Ok(units) => (units, None),
            Err(e) => (Vec::new(), Some(format!("unable to list app units: {e}"))),
        };
        if !statuses.is_empty() && !units.iter().any(|u| statuses.contains(&u.status)) {
            continue;
        }
        let routers_json: Vec<ListRouterJson> = view
            .routers
            .iter()
            .map(|r| ListRouterJson {
                name: &r.router,
                opts: &r.opts,
                address: routers::find(&catalogue, &r.router).map(|d| d.address(&app.name)).unwrap_or_default(),
                addresses: None,
                kind: "",
            })
            .collect();
        out.push(ListItem {
            name: &app.name,
            pool: &app.pool,
            teamowner: &app.team_owner,
            plan: app_plan_json(app, &view.plan, true),
            units: if simplified { Vec::new() } else { units },
            cname: non_empty(&app.cnames),
            ip: routers_json.first().map(|r| r.address.clone()).unwrap_or_default(),
            routers: routers_json,
            lock: lock_json(lock),
            tags: non_empty(&app.tags),
            metadata: if extended { metadata_json(&app.metadata) } else { NO_METADATA },
            error,
            platform: Some(app.platform.as_str()).filter(|p| extended && !p.is_empty()),
            description: Some(app.description.as_str()).filter(|d| extended && !d.is_empty()),
        });
    }
    Ok(json_list(&out))
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.delete", &app_contexts(&app))?;
    let data = request_data(&Params::default(), &[("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.delete", &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let name = app.name.clone();
        w.message(&format!("---- Removing application {name:?}...\n")).await;
        let result = crate::apps::remove(&server, &app).await;
        // The app's token is gone: drop cached identities.
        server.auth.invalidate();
        let result = event.done(result).await;
        match result {
            Ok(()) => {
                w.message("---- Done removing application.\n").await;
                Ok(())
            }
            Err(e) => Err(e.message),
        }
    }))
}

async fn grant(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    Path((_, team)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("app.update.grant", &app_contexts(&app))?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::not_found("Team not found"));
    }
    if app.teams.contains(&team) {
        return Err(ApiError::conflict("team already have access to this app"));
    }
    let data = request_data(&Params::default(), &[("app", &app.name), ("team", &team)]);
    let event = app_event(&server, &caller, &ip, "app.update.grant", &app, data).await?;
    let result = server.store.grant_app_team(&app.name, &team).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

async fn revoke(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    Path((_, team)): Path<(String, String)>,
) -> ApiResult<Response> {
    caller.require("app.update.revoke", &app_contexts(&app))?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::not_found("Team not found"));
    }
    if !app.teams.contains(&team) {
        return Err(ApiError::not_found("team does not have access to this app"));
    }
    if app.teams.len() == 1 {
        return Err(ApiError::forbidden_with(
            "You can not revoke the access from this team, because it is the unique team with access to the app, and an app can not be orphaned",
        ));
    }
    let data = request_data(&Params::default(), &[("app", &app.name), ("team", &team)]);
    let event = app_event(&server, &caller, &ip, "app.update.revoke", &app, data).await?;
    let result = server.store.revoke_app_team(&app.name, &team).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

/// Units in use: those of the routable versions (started, stopped or asleep).
async fn units_in_use(server: &Server, app: &str) -> ApiResult<i64> {
    Ok(crate::store::units_in_use(&server.store.versions(app).await?))
}

async fn quota_get(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.read", &app_contexts(&app))?;
    let inuse = units_in_use(&server, &app.name).await?;
    Ok(json(StatusCode::OK, &QuotaJson { limit: app.quota_limit, inuse }))
}

async fn quota_set(
    State(server): AppState,
    Caller(caller): Caller,
    ip: ClientIp,
    AppTarget(app): AppTarget,
    params: Params,
) -> ApiResult<Response> {
    caller.require("app.admin.quota", &app_contexts(&app))?;
    let limit = parse_limit(&params)?;
    if limit >= 0 && limit < units_in_use(&server, &app.name).await? {
        return Err(ApiError::forbidden_with("New limit is less than the current allocated value"));
    }
    let data = request_data(&params, &[("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.admin.quota", &app, data).await?;
    let result = server.store.set_app_quota(&app.name, limit).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

/// The `METRICS_*` variables of the node container `big-sibling` (tsuru's
/// metrics agent) as it applies to the app's pool: the base config's, then
/// the pool's over them. No such node container: none (tsuru fails with
/// "node container not found" instead, which helps nobody).
async fn metric_envs(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.read.metric", &app_contexts(&app))?;
    let configs: std::collections::BTreeMap<String, Value> =
        server.store.node_containers().await?.into_iter().filter(|(name, _, _)| name == "big-sibling").map(|(_, pool, c)| (pool, c)).collect();
    let mut envs = serde_json::Map::new();
    if let Some(effective) = crate::docker::nodecontainers::effective(&configs, &app.pool) {
        for pair in &effective.env {
            if let Some((key, value)) = pair.split_once('=')
                && key.starts_with("METRICS_")
            {
                envs.insert(key.to_string(), Value::String(value.to_string()));
            }
        }
    }
    Ok(json(StatusCode::OK, &envs))
}

async fn unlock(Caller(_caller): Caller, AppTarget(_app): AppTarget) -> ApiResult<Response> {
    Err(ApiError::new(StatusCode::GONE, "app unlock is deprecated, this call does nothing"))
}


/// Starts the event of an operation on an app, readable in the app's contexts.
pub(super) async fn app_event(
    server: &Arc<Server>,
    caller: &crate::auth::Identity,
    ip: &ClientIp,
    kind: &str,
    app: &AppRecord,
    data: Value,
) -> ApiResult<crate::events::RunningEvent> {
    app_event_as(server, caller, ip, kind, app, data, false).await
}

/// [`app_event`] for work that stops at its next step when canceled
/// (deploys and builds, as tsuru's): holders of `app.update.events` on the
/// app may cancel it.
pub(super) async fn cancelable_app_event(
    server: &Arc<Server>,
    caller: &crate::auth::Identity,
    ip: &ClientIp,
    kind: &str,
    app: &AppRecord,
    data: Value,
) -> ApiResult<crate::events::RunningEvent> {
    app_event_as(server, caller, ip, kind, app, data, true).await
}

async fn app_event_as(
    server: &Arc<Server>,
    caller: &crate::auth::Identity,
    ip: &ClientIp,
    kind: &str,
    app: &AppRecord,
    data: Value,
    cancelable: bool,
) -> ApiResult<crate::events::RunningEvent> {
    let allowed = Allowed::new("app.read.events", app_contexts(app));
    let cancel = cancelable.then(|| Allowed::new("app.update.events", app_contexts(app)));
    record_cancelable(server, Some(caller), ip, kind, Target::new("app", &app.name), data, allowed, cancel).await
}

/// `PUT /apps/{app}`: each given field needs its own permission; the answer
/// is an x-json-stream (restart output once provisioners run units).
async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    if params.field("router").is_some_and(|r| !r.is_empty()) || !params.field_map("routerOpts").is_empty() {
        return Err(ApiError::bad_request("updating router was deprecated, please add the wanted router and remove the old one"));
    }
    let description = params.field("description");
    let given_tags = !params.field_list("tags").is_empty() || !params.all("tag").is_empty();
    let plan = params.field("plan").filter(|p| !p.is_empty());
    let override_memory = params.nested("planOverride", "memory");
    let override_cpumilli = params.nested("planOverride", "cpumilli");
    let pool = params.field("pool").filter(|p| !p.is_empty());
    let team_owner = params.field("teamOwner").filter(|t| !t.is_empty());
    let platform = params.get("platform").filter(|p| !p.is_empty());
    let image_reset = params.get("imageReset").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let metadata_given = !params.named_items("metadata", "labels").is_empty() || !params.named_items("metadata", "annotations").is_empty();
    let no_restart = params.get("noRestart").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let plan_override = override_memory.is_some() || override_cpumilli.is_some();
    if description.is_none() && !given_tags && plan.is_none() && !plan_override && pool.is_none() && team_owner.is_none()
        && platform.is_none() && !image_reset && !metadata_given
    {
        return Err(ApiError::bad_request(
            "Neither the description, tags, plan, pool, team owner or platform were set. You must define at least one.",
        ));
    }
    let ctx = app_contexts(&app);
    for (given, scheme) in [
        (description.is_some(), "app.update.description"),
        (given_tags, "app.update.tags"),
        (plan.is_some(), "app.update.plan"),
        (plan_override, "app.update.planoverride"),
        (pool.is_some(), "app.update.pool"),
        (team_owner.is_some(), "app.update.teamowner"),
        (platform.is_some(), "app.update.platform"),
        (platform.is_some() || image_reset, "app.update.image-reset"),
        (metadata_given, "app.update.metadata"),
    ] {
        if given {
            caller.require(scheme, &ctx)?;
        }
    }
    let mut next = app.clone();
    if let Some(d) = description {
        next.description = self::description(d)?;
    }
    if given_tags {
        next.tags = params.tags()?;
    }
    if let Some(team) = team_owner {
        if server.store.team(&team).await?.is_none() {
            return Err(ApiError::bad_request("team not found"));
        }
        next.team_owner = team;
    }
    if let Some(p) = pool {
        if no_restart {
            return Err(ApiError::bad_request("You must restart the app when changing the pool."));
        }
        next.pool = server.store.pool(&p).await?.ok_or_else(|| ApiError::bad_request("Pool does not exist."))?.name;
    }
    let constraints = server.store.constraints().await?;
    if next.pool != app.pool || next.team_owner != app.team_owner {
        if !pools::admits(&constraints, &next.pool, "team", &next.team_owner) {
            return Err(ApiError::bad_request(format!(
                "App team owner {:?} has no access to pool {:?}",
                next.team_owner, next.pool
            )));
        }
    }
    if let Some(p) = plan {
        next.plan = server.store.plan(&p).await?.ok_or_else(|| ApiError::bad_request("plan not found"))?.name;
    }
    if (next.plan != app.plan || next.pool != app.pool) && !pools::admits(&constraints, &next.pool, "plan", &next.plan) {
        return Err(ApiError::bad_request(format!("App plan {:?} is not allowed on pool {:?}", next.plan, next.pool)));
    }
    if override_memory.is_some() {
        next.override_memory = number(override_memory, "planOverride.memory")?;
    }
    if override_cpumilli.is_some() {
        next.override_cpumilli = number(override_cpumilli, "planOverride.cpumilli")?;
    }
    if let Some(p) = platform {
        (next.platform, next.platform_version) = resolve_platform(&server, &caller, &p).await?;
    }
    apply_metadata(&mut next.metadata, &params)?;
    let data = request_data(&params, &[("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.update", &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        // Through the converge path: a new plan reaches the units, a new
        // pool moves the app to that pool's provisioner (the old one lets go).
        let result = crate::apps::converge(&server, &app.name, &w, |d| {
            // The teams as recorded now; a new owner team gets access.
            let mut teams = d.app.teams.clone();
            if next.team_owner != d.app.team_owner && !teams.contains(&next.team_owner) {
                teams.push(next.team_owner.clone());
            }
            d.app = AppRecord { deploys: d.app.deploys, quota_limit: d.app.quota_limit, teams, ..next };
            Ok(())
        })
        .await
        .map(|_| ());
        event.done(result).await.map_err(|e| e.message)
    }))
}
