//! Deploy history (API-NOTES §2.7): `app.deploy` events seen as deploys.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use std::sync::LazyLock;

use super::params::Params;
use super::{AppState, Caller, Routes, json, json_list, time_json};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::parse_allowed;
use crate::store::{EventQuery, EventRecord};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/deploys", list).add("1.0", Method::GET, "/deploys/{deploy}", info)
}

#[derive(Serialize)]
struct DeployJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "App")]
    app: String,
    #[serde(rename = "Timestamp")]
    timestamp: String,
    /// Nanoseconds.
    #[serde(rename = "Duration")]
    duration: i64,
    #[serde(rename = "Commit")]
    commit: String,
    #[serde(rename = "Error")]
    error: String,
    #[serde(rename = "Image")]
    image: String,
    #[serde(rename = "Version")]
    version: i64,
    #[serde(rename = "Log")]
    log: String,
    #[serde(rename = "User")]
    user: String,
    #[serde(rename = "Origin")]
    origin: String,
    #[serde(rename = "CanRollback")]
    can_rollback: bool,
    #[serde(rename = "Diff")]
    diff: String,
    #[serde(rename = "Message")]
    message: String,
}

/// A field of the deploy options recorded as the event's start data.
fn option(e: &EventRecord, key: &str) -> String {
    let data: Value = serde_json::from_str(&e.start_custom).unwrap_or(Value::Null);
    let field = data.as_object().and_then(|o| o.iter().find(|(k, _)| k.eq_ignore_ascii_case(key))).map(|(_, v)| v.clone());
    match field {
        Some(Value::String(s)) => s,
        _ => String::new(),
    }
}

/// `N` from an image tagged `…:vN`.
fn version_of(image: &str) -> i64 {
    image.rsplit_once(":v").and_then(|(_, v)| v.parse().ok()).unwrap_or(0)
}

fn deploy_json(e: &EventRecord, with_log: bool) -> DeployJson {
    let end_custom: Value = serde_json::from_str(&e.end_custom).unwrap_or(Value::Null);
    let image = end_custom.get("image").and_then(Value::as_str).map(str::to_string).unwrap_or_else(|| option(e, "image"));
    let duration = if e.end_time > 0 { (e.end_time - e.start_time) * 1_000_000 } else { 0 };
    DeployJson {
        id: e.id.clone(),
        app: e.target_value.clone(),
        timestamp: time_json(e.start_time),
        duration,
        commit: option(e, "commit"),
        error: e.error.clone(),
        version: version_of(&image),
        can_rollback: !with_log && e.error.is_empty() && !e.running && !image.is_empty(),
        image,
        log: if with_log { crate::events::event_json(e).log_text() } else { String::new() },
        user: e.owner_name.clone(),
        origin: option(e, "origin"),
        diff: String::new(),
        message: option(e, "message"),
    }
}

/// Deploys are visible through `app.read.deploy` in the app's contexts
/// (recorded with the event).
fn may_see(caller: &Identity, e: &EventRecord) -> bool {
    parse_allowed(&e.allowed).is_some_and(|a| caller.allows("app.read.deploy", &a.contexts))
}

async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    let number = |key: &str, default: i64| -> ApiResult<i64> {
        match params.get(key).filter(|s| !s.is_empty()) {
            None => Ok(default),
            Some(raw) => raw.parse::<i64>().ok().filter(|n| *n >= 0).ok_or_else(|| ApiError::bad_request(format!("invalid {key}: {raw:?}"))),
        }
    };
    let (skip, limit) = (number("skip", 0)?, number("limit", 100)?);
    let query = EventQuery {
        target_type: Some("app".into()),
        target_value: params.get("app").filter(|s| !s.is_empty()),
        kind_names: vec!["app.deploy".into()],
        ..Default::default()
    };
    let visible: Vec<DeployJson> = server
        .store
        .events(&query, 0, i64::MAX / 2)
        .await?
        .iter()
        .filter(|e| may_see(&caller, e))
        .skip(skip as usize)
        .take(limit as usize)
        .map(|e| deploy_json(e, false))
        .collect();
    Ok(json_list(&visible))
}

static OBJECT_ID: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new("^[0-9a-fA-F]{24}$").unwrap());

async fn info(State(server): AppState, Caller(caller): Caller, Path(id): Path<String>) -> ApiResult<Response> {
    if !OBJECT_ID.is_match(&id) {
        return Err(ApiError::internal(format!("id parameter is not ObjectId: {id}")));
    }
    let not_found = || ApiError::not_found("Deploy not found.");
    let e = server.store.event(&id.to_ascii_lowercase()).await?.ok_or_else(not_found)?;
    if e.kind_name != "app.deploy" || !may_see(&caller, &e) {
        return Err(not_found());
    }
    Ok(json(StatusCode::OK, &deploy_json(&e, true)))
}
