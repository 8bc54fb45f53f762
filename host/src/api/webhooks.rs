//! Webhooks (`/1.6/events/webhooks`, API-NOTES §2.16) and torii's delivery
//! history (`/torii/v1/webhooks/{name}/deliveries`).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::Value;
use std::collections::BTreeMap;

use super::events::{record_allowed, request_data};
use super::params::{Params, parse_bool};
use super::tokens::select_team;
use super::{AppState, Caller, ClientIp, Routes, empty, json, json_list, time_json};
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::rbac::Context;
use crate::store::{EventFilter, WebhookRecord};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.6", Method::GET, "/events/webhooks", list)
        .add("1.6", Method::POST, "/events/webhooks", create)
        .add("1.6", Method::GET, "/events/webhooks/{name}", info)
        .add("1.6", Method::PUT, "/events/webhooks/{name}", update)
        .add("1.6", Method::DELETE, "/events/webhooks/{name}", remove)
        .torii(Method::GET, "/torii/v1/webhooks/{name}/deliveries", deliveries)
}

const INVALID_NAME: &str = "Invalid webhook name, webhook name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.";

/// A list field of a nested object: JSON `outer.inner` array or form `outer.inner.N`.
fn nested_list(params: &Params, outer: &str, inner: &str) -> Vec<String> {
    if let Some(Value::Object(o)) = params.json_field(outer) {
        return match o.iter().find(|(k, _)| k.eq_ignore_ascii_case(inner)).map(|(_, v)| v) {
            Some(Value::Array(items)) => items.iter().filter_map(|v| v.as_str().map(str::to_string)).collect(),
            _ => vec![],
        };
    }
    params.field_list(&format!("{outer}.{inner}"))
}

/// Reads a webhook from the request body (JSON or form, snake_case names).
fn from_params(params: &Params, name: String, team: String) -> ApiResult<WebhookRecord> {
    let flag = |v: Option<String>| v.and_then(|v| parse_bool(&v)).unwrap_or(false);
    let mut headers: BTreeMap<String, Vec<String>> = BTreeMap::new();
    if let Some(Value::Object(h)) = params.json_field("headers") {
        for (k, v) in h {
            let values = match v {
                Value::Array(items) => items.iter().filter_map(|i| i.as_str().map(str::to_string)).collect(),
                Value::String(s) => vec![s.clone()],
                _ => vec![],
            };
            headers.insert(k.clone(), values);
        }
    } else {
        for (k, v) in params.field_map("headers") {
            headers.entry(k).or_default().push(v);
        }
    }
    let url = params.field("url").unwrap_or_default();
    if url.trim().is_empty() {
        return Err(ApiError::bad_request("webhook url must not be empty"));
    }
    reqwest::Url::parse(&url).map_err(|e| ApiError::bad_request(format!("webhook url is not valid: {e}")))?;
    let proxy_url = params.field("proxy_url").unwrap_or_default();
    if !proxy_url.is_empty() {
        reqwest::Url::parse(&proxy_url).map_err(|e| ApiError::bad_request(format!("webhook proxy_url is not valid: {e}")))?;
    }
    let method = params.field("method").unwrap_or_default().to_ascii_uppercase();
    if !method.is_empty() && reqwest::Method::from_bytes(method.as_bytes()).is_err() {
        return Err(ApiError::bad_request(format!("invalid method {method:?}")));
    }
    Ok(WebhookRecord {
        name,
        description: params.field("description").unwrap_or_default(),
        team_owner: team,
        event_filter: EventFilter {
            target_types: nested_list(params, "event_filter", "target_types"),
            target_values: nested_list(params, "event_filter", "target_values"),
            kind_types: nested_list(params, "event_filter", "kind_types"),
            kind_names: nested_list(params, "event_filter", "kind_names"),
            error_only: flag(params.nested("event_filter", "error_only")),
            success_only: flag(params.nested("event_filter", "success_only")),
        },
        url,
        proxy_url,
        headers,
        method,
        body: params.field("body").unwrap_or_default(),
        insecure: flag(params.field("insecure")),
        created_at: crate::store::now_millis(),
    })
}

#[derive(Serialize)]
struct FilterJson<'a> {
    target_types: &'a [String],
    target_values: &'a [String],
    kind_types: &'a [String],
    kind_names: &'a [String],
    error_only: bool,
    success_only: bool,
}

#[derive(Serialize)]
struct WebhookJson<'a> {
    name: &'a str,
    description: &'a str,
    team_owner: &'a str,
    event_filter: FilterJson<'a>,
    url: &'a str,
    proxy_url: &'a str,
    headers: &'a BTreeMap<String, Vec<String>>,
    method: &'a str,
    body: &'a str,
    insecure: bool,
}

fn webhook_json(w: &WebhookRecord) -> WebhookJson<'_> {
    let f = &w.event_filter;
    WebhookJson {
        name: &w.name,
        description: &w.description,
        team_owner: &w.team_owner,
        event_filter: FilterJson {
            target_types: &f.target_types,
            target_values: &f.target_values,
            kind_types: &f.kind_types,
            kind_names: &f.kind_names,
            error_only: f.error_only,
            success_only: f.success_only,
        },
        url: &w.url,
        proxy_url: &w.proxy_url,
        headers: &w.headers,
        method: &w.method,
        body: &w.body,
        insecure: w.insecure,
    }
}

fn allowed(team: &str) -> Allowed {
    Allowed::new("webhook.read.events", vec![Context::team(team)])
}

async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let hooks: Vec<WebhookRecord> = server
        .store
        .webhooks()
        .await?
        .into_iter()
        .filter(|w| caller.allows("webhook.read", &[Context::team(&w.team_owner)]))
        .collect();
    let out: Vec<WebhookJson> = hooks.iter().map(webhook_json).collect();
    Ok(json_list(&out))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let name = params.field("name").unwrap_or_default();
    if !super::names::valid(&name) {
        return Err(ApiError::bad_request(INVALID_NAME));
    }
    let team = select_team(&server, &caller, "webhook.create", params.field("team_owner")).await?;
    let hook = from_params(&params, name, team)?;
    let event = record_allowed(&server, Some(&caller), &ip, "webhook.create", Target::new("webhook", &hook.name),
        request_data(&params, &[]), allowed(&hook.team_owner)).await?;
    let result = server.store.save_webhook(&hook, false).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

async fn load(server: &crate::server::Server, name: &str) -> ApiResult<WebhookRecord> {
    server.store.webhook(name).await?.ok_or_else(|| ApiError::not_found("webhook not found"))
}

async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let hook = load(&server, &name).await?;
    caller.require("webhook.read", &[Context::team(&hook.team_owner)])?;
    Ok(json(StatusCode::OK, &webhook_json(&hook)))
}

async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, params: Params) -> ApiResult<Response> {
    let existing = load(&server, &name).await?;
    // tsuru checks only the team sent in the body, which would let a member of
    // another team take the webhook over; torii also requires the current team.
    caller.require("webhook.update", &[Context::team(&existing.team_owner)])?;
    let team = params.field("team_owner").filter(|t| !t.is_empty()).unwrap_or(existing.team_owner);
    caller.require("webhook.update", &[Context::team(&team)])?;
    if server.store.team(&team).await?.is_none() {
        return Err(ApiError::not_found("team not found"));
    }
    let hook = from_params(&params, name.clone(), team)?;
    let event = record_allowed(&server, Some(&caller), &ip, "webhook.update", Target::new("webhook", &name),
        request_data(&params, &[("name", &name)]), allowed(&hook.team_owner)).await?;
    let result = server.store.save_webhook(&hook, true).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    let hook = load(&server, &name).await?;
    caller.require("webhook.delete", &[Context::team(&hook.team_owner)])?;
    let event = record_allowed(&server, Some(&caller), &ip, "webhook.delete", Target::new("webhook", &name),
        request_data(&Params::default(), &[("name", &name)]), allowed(&hook.team_owner)).await?;
    let result = server.store.delete_webhook(&name).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

#[derive(Serialize)]
struct DeliveryJson {
    event_id: String,
    attempt: i64,
    at: String,
    status: i64,
    error: String,
    duration_ms: i64,
}

/// torii's delivery history: the newest attempts first.
async fn deliveries(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    let hook = load(&server, &name).await?;
    caller.require("webhook.read", &[Context::team(&hook.team_owner)])?;
    let out: Vec<DeliveryJson> = server
        .store
        .deliveries(&name)
        .await?
        .into_iter()
        .map(|d| DeliveryJson { event_id: d.event_id, attempt: d.attempt, at: time_json(d.at), status: d.status, error: d.error, duration_ms: d.duration_ms })
        .collect();
    Ok(json(StatusCode::OK, &out))
}
