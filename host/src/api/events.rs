//! `/1.1/events`: list, kinds, info, cancel; and [`record`], which every
//! state-changing handler uses to run its work inside an event.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::Value;
use std::sync::{Arc, LazyLock};
use std::time::{Duration, Instant};

use super::params::Params;
use super::{AppState, Caller, ClientIp, Routes, json, json_list};
use crate::auth::{Identity, Subject};
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, EventError, EventSpec, Owner, RunningEvent, Target, TypeName, event_json};
use crate::rbac::Context;
use crate::server::Server;
use crate::store::EventQuery;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.1", Method::GET, "/events", list)
        .add("1.1", Method::GET, "/events/kinds", kinds)
        .add("1.1", Method::GET, "/events/{id}", info)
        .add("1.1", Method::POST, "/events/{id}/cancel", cancel)
}

/// Keys whose values never go into an event's data.
const SECRET_KEYS: &[&str] = &["password", "old", "new", "confirm", "token"];

/// The request as tsuru stores it in `StartCustomData`:
/// `[{"name": key, "value": "v" | ["v1", "v2"]}]`, path variables as `:name`.
pub fn request_data(params: &Params, path: &[(&str, &str)]) -> Value {
    let mut out: Vec<Value> = path
        .iter()
        .map(|(k, v)| serde_json::json!({"name": format!(":{k}"), "value": v}))
        .collect();
    let mut keys: Vec<String> = Vec::new();
    for (k, _) in params.pairs() {
        if !keys.contains(&k) && !SECRET_KEYS.contains(&k.to_ascii_lowercase().as_str()) {
            keys.push(k);
        }
    }
    for k in keys {
        let values = params.all(&k);
        let value = if values.len() == 1 { Value::String(values[0].clone()) } else { Value::from(values) };
        out.push(serde_json::json!({"name": k, "value": value}));
    }
    Value::Array(out)
}

/// Who can see events about a target.
fn allowed_for(target: &Target) -> Allowed {
    match target.kind.as_str() {
        "user" => Allowed::new("user.read.events", vec![Context::user(&target.value)]),
        "team" => Allowed::new("team.read.events", vec![Context::team(&target.value)]),
        "role" => Allowed::new("role.read.events", vec![]),
        "plan" => Allowed::new("plan.read.events", vec![]),
        "app" => Allowed::new("app.read.events", vec![Context::new(crate::rbac::ContextType::App, &target.value)]),
        "pool" => Allowed::new("pool.read.events", vec![Context::new(crate::rbac::ContextType::Pool, &target.value)]),
        other => Allowed::new(&format!("{other}.read.events"), vec![]),
    }
}

/// Starts the event of a state-changing request: kind = the permission
/// name, target locked while it runs. Finish it with `RunningEvent::done`.
pub async fn record(
    server: &Arc<Server>,
    caller: Option<&Identity>,
    ip: &ClientIp,
    kind: &str,
    target: Target,
    data: Value,
) -> ApiResult<RunningEvent> {
    let allowed = allowed_for(&target);
    record_allowed(server, caller, ip, kind, target, data, allowed).await
}

/// [`record`] with an explicit permission for reading the event (e.g. an
/// app's events are visible in all of the app's contexts).
pub async fn record_allowed(
    server: &Arc<Server>,
    caller: Option<&Identity>,
    ip: &ClientIp,
    kind: &str,
    target: Target,
    data: Value,
    allowed: Allowed,
) -> ApiResult<RunningEvent> {
    record_cancelable(server, caller, ip, kind, target, data, allowed, None).await
}

/// [`record_allowed`]; with `allowed_cancel`, for work that checks for a
/// cancel between its steps (`POST /1.1/events/{id}/cancel` by a holder of
/// that permission).
#[allow(clippy::too_many_arguments)]
pub async fn record_cancelable(
    server: &Arc<Server>,
    caller: Option<&Identity>,
    ip: &ClientIp,
    kind: &str,
    target: Target,
    data: Value,
    allowed: Allowed,
    allowed_cancel: Option<Allowed>,
) -> ApiResult<RunningEvent> {
    let mut spec = event_spec(caller, ip, kind, target, data, allowed);
    spec.cancelable = allowed_cancel.is_some();
    spec.allowed_cancel = allowed_cancel;
    start_event(server, spec).await
}

fn event_spec(caller: Option<&Identity>, ip: &ClientIp, kind: &str, target: Target, data: Value, allowed: Allowed) -> EventSpec {
    let owner = match caller.map(|c| &c.subject) {
        Some(Subject::User { email }) => Owner::User(email.clone()),
        Some(Subject::TeamToken { token_id, .. }) => Owner::Token(token_id.clone()),
        Some(Subject::App { app }) => Owner::App(app.clone()),
        // Anonymous requests (open registration, password reset) act on their own user.
        None => Owner::User(target.value.clone()),
    };
    EventSpec {
        allowed,
        target,
        kind: kind.into(),
        internal: false,
        owner,
        source_ip: ip.0.clone(),
        allowed_cancel: None,
        cancelable: false,
        start_custom: data,
        lock: true,
    }
}

async fn start_event(server: &Arc<Server>, spec: EventSpec) -> ApiResult<RunningEvent> {
    // Operations on an app wait up to 10 s for another one to finish, as tsuru's do.
    let patience = if spec.target.kind == "app" { APP_LOCK_PATIENCE } else { Duration::ZERO };
    let deadline = Instant::now() + patience;
    loop {
        match server.events.start(spec.clone()).await {
            Ok(running) => return Ok(running),
            Err(EventError::Locked(_)) if Instant::now() < deadline => {
                let jitter = rand::random::<u64>() % 40;
                tokio::time::sleep(Duration::from_millis(40 + jitter)).await;
            }
            Err(e @ (EventError::Locked(_) | EventError::Blocked { .. })) => return Err(ApiError::internal(e.to_string())),
            Err(EventError::Store(e)) => return Err(e.into()),
        }
    }
}

const APP_LOCK_PATIENCE: Duration = Duration::from_secs(10);

static OBJECT_ID: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new("^[0-9a-fA-F]{24}$").unwrap());

fn parse_time(key: &str, raw: &str) -> ApiResult<i64> {
    use chrono::{NaiveDate, NaiveDateTime};
    if let Ok(t) = chrono::DateTime::parse_from_rfc3339(raw) {
        return Ok(t.timestamp_millis());
    }
    for format in ["%Y-%m-%dT%H:%M:%S", "%Y-%m-%d %H:%M:%S", "%Y-%m-%dT%H:%M"] {
        if let Ok(t) = NaiveDateTime::parse_from_str(raw, format) {
            return Ok(t.and_utc().timestamp_millis());
        }
    }
    if let Ok(d) = NaiveDate::parse_from_str(raw, "%Y-%m-%d") {
        return Ok(d.and_hms_opt(0, 0, 0).expect("midnight").and_utc().timestamp_millis());
    }
    Err(ApiError::bad_request(format!("unable to decode form: invalid {key} {raw:?}")))
}

fn non_empty(v: Option<String>) -> Option<String> {
    v.filter(|s| !s.is_empty())
}

/// Whether the caller holds an event's stored permission (one rule with
/// webhook delivery: `events::visibility`).
fn may_see(caller: &Identity, allowed: &str) -> bool {
    crate::events::visibility::may_read(&caller.grants, allowed)
}

const MAX_LIMIT: i64 = 100;

async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let mut kind_names: Vec<String> = params.all("kindname");
    kind_names.extend(params.all("kindName"));
    kind_names.extend(params.all("KindName"));
    kind_names.retain(|k| !k.is_empty());
    let query = EventQuery {
        target_type: non_empty(params.field("target.type")),
        target_value: non_empty(params.field("target.value")),
        kind_type: non_empty(params.field("kindtype")),
        kind_names,
        owner_type: non_empty(params.field("ownertype")),
        owner_name: non_empty(params.field("ownername")),
        since: non_empty(params.field("since")).map(|s| parse_time("since", &s)).transpose()?,
        until: non_empty(params.field("until")).map(|s| parse_time("until", &s)).transpose()?,
        running: params.optional_bool("running")?,
        error_only: params.optional_bool("erroronly")?.unwrap_or(false),
        ascending: match params.field("sort").unwrap_or_default().as_str() {
            "" | "-starttime" | "-StartTime" => false,
            "starttime" | "StartTime" => true,
            other => return Err(ApiError::bad_request(format!("invalid sort {other:?}: use starttime or -starttime"))),
        },
    };
    let number = |key: &str| -> ApiResult<i64> {
        match non_empty(params.field(key)) {
            None => Ok(0),
            Some(raw) => raw
                .parse::<i64>()
                .ok()
                .filter(|n| *n >= 0)
                .ok_or_else(|| ApiError::bad_request(format!("unable to decode form: invalid {key} {raw:?}"))),
        }
    };
    let limit = match number("limit")? {
        0 => MAX_LIMIT,
        n => n.min(MAX_LIMIT),
    };
    let skip = number("skip")?;
    // Permission filtering happens here, so read the store in pages until
    // enough visible events are found.
    const PAGE: i64 = 500;
    let (mut visible, mut offset, mut skipped) = (Vec::new(), 0i64, 0i64);
    'pages: loop {
        let page = server.store.events(&query, offset, PAGE).await?;
        let len = page.len() as i64;
        for e in page {
            if !may_see(&caller, &e.allowed) {
                continue;
            }
            if skipped < skip {
                skipped += 1;
                continue;
            }
            visible.push(event_json(&e));
            if visible.len() as i64 >= limit {
                break 'pages;
            }
        }
        if len < PAGE {
            break;
        }
        offset += PAGE;
    }
    Ok(json_list(&visible))
}

async fn kinds(State(server): AppState, Caller(_caller): Caller) -> ApiResult<Response> {
    let kinds: Vec<TypeName> =
        server.store.event_kinds().await?.into_iter().map(|(kind, name)| TypeName { kind, name }).collect();
    Ok(json_list(&kinds))
}

async fn load(server: &Server, id: &str) -> ApiResult<crate::store::EventRecord> {
    if !OBJECT_ID.is_match(id) {
        return Err(ApiError::bad_request(format!("uuid parameter is not ObjectId: {id}")));
    }
    server.store.event(&id.to_ascii_lowercase()).await?.ok_or_else(|| ApiError::not_found("event not found"))
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Response> {
    let e = load(&server, &id).await?;
    if !may_see(&caller, &e.allowed) {
        return Err(ApiError::forbidden());
    }
    Ok(json(StatusCode::OK, &event_json(&e)))
}

async fn cancel(State(server): AppState, Caller(caller): Caller, Path(id): Path<String>, params: Params) -> ApiResult<Response> {
    let e = load(&server, &id).await?;
    if params.get("reason").unwrap_or_default().trim().is_empty() {
        return Err(ApiError::bad_request("reason is mandatory"));
    }
    if !may_see(&caller, &e.allowed_cancel) {
        return Err(ApiError::forbidden());
    }
    if !e.cancelable || !e.running {
        return Err(ApiError::bad_request("event is not cancelable"));
    }
    let now = crate::api::time_json(crate::store::now_millis());
    let info = serde_json::json!({
        "Owner": caller.email,
        "StartTime": now,
        "AckTime": crate::api::time_json(0),
        "Reason": params.get("reason").unwrap_or_default(),
        "Asked": true,
        "Canceled": false,
    });
    if !server.store.request_cancel(&e.id, &info.to_string()).await? {
        return Err(ApiError::internal("event cancel already requested"));
    }
    Ok(super::empty(StatusCode::NO_CONTENT))
}
