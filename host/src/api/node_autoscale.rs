//! `/1.3/node/autoscale` and its legacy `/docker/autoscale` twins (API-NOTES
//! §2.17): node autoscale's config, rules, a run now, and its history.
//! `iaas::autoscale` does the scaling.

use super::events::{record_allowed, request_data};
use super::params::Params;
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::iaas::autoscale::{KIND, Rule, SETTING, rules};
use crate::rbac::{Context, ContextType};
use crate::store::EventQuery;
use axum::extract::{Path, State};
use axum::http::{Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use serde_json::{Value, json};

pub(super) fn routes(r: Routes) -> Routes {
    let r = r
        .add("1.3", Method::GET, "/node/autoscale", history)
        .add("1.3", Method::GET, "/node/autoscale/config", config)
        .add("1.3", Method::POST, "/node/autoscale/run", run)
        .add("1.3", Method::GET, "/node/autoscale/rules", list_rules)
        .add("1.3", Method::POST, "/node/autoscale/rules", set_rule)
        .add("1.3", Method::DELETE, "/node/autoscale/rules", delete_default_rule)
        .add("1.3", Method::DELETE, "/node/autoscale/rules/{id}", delete_rule);
    r.add("1.0", Method::GET, "/docker/autoscale", history)
        .add("1.0", Method::GET, "/docker/autoscale/config", config)
        .add("1.0", Method::POST, "/docker/autoscale/run", run)
        .add("1.0", Method::GET, "/docker/autoscale/rules", list_rules)
        .add("1.0", Method::POST, "/docker/autoscale/rules", set_rule)
        .add("1.0", Method::DELETE, "/docker/autoscale/rules", delete_default_rule)
        .add("1.0", Method::DELETE, "/docker/autoscale/rules/{id}", delete_rule)
}

fn pool_contexts(pool: &str) -> Vec<Context> {
    if pool.is_empty() { vec![] } else { vec![Context::new(ContextType::Pool, pool)] }
}

/// `GET /config`: durations in nanoseconds, as Go encodes them.
async fn config(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("node.autoscale.read", &[])?;
    let cfg = &server.config.node_autoscale;
    let ns = |secs: u64| secs.saturating_mul(1_000_000_000);
    Ok(json(
        StatusCode::OK,
        &json!({"WaitTimeNewMachine": ns(cfg.wait_new_machine_secs), "RunInterval": ns(cfg.run_interval_secs), "TotalMemoryMetadata": "", "Enabled": cfg.enabled}),
    ))
}

/// `GET /rules`: 204 when none; the JSON without a Content-Type, as tsuru's.
async fn list_rules(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("node.autoscale.read", &[])?;
    let list: Vec<Rule> = rules(&server).await?.into_values().collect();
    if list.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let mut r = (StatusCode::OK, format!("{}\n", serde_json::to_string(&list).expect("rules serialise"))).into_response();
    r.headers_mut().remove(header::CONTENT_TYPE);
    Ok(r)
}

async fn set_rule(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("node.autoscale.update", &[])?;
    let number = |name: &str| -> ApiResult<f64> {
        match params.field(name).filter(|v| !v.is_empty()) {
            None => Ok(0.0),
            Some(raw) => raw.parse::<f64>().ok().filter(|n| n.is_finite()).ok_or_else(|| ApiError::bad_request(format!("invalid {name}: {raw:?}"))),
        }
    };
    let flag = |name: &str| params.optional_bool(name).map(|b| b.unwrap_or(false));
    let mut rule = Rule {
        metadata_filter: params.field("MetadataFilter").unwrap_or_default(),
        error: String::new(),
        max_container_count: number("MaxContainerCount")? as i64,
        scale_down_ratio: number("ScaleDownRatio")?,
        max_memory_ratio: number("MaxMemoryRatio")?,
        enabled: flag("Enabled")?,
        prevent_rebalance: flag("PreventRebalance")?,
    };
    if !rule.metadata_filter.is_empty() && server.store.pool(&rule.metadata_filter).await?.is_none() {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    let pool = rule.metadata_filter.clone();
    let allowed = Allowed::new("pool.read.events", pool_contexts(&pool));
    let event = record_allowed(&server, Some(&caller), &ip, "node.autoscale.update", Target::new("pool", &pool), request_data(&params, &[]), allowed).await?;
    let work = async {
        rule.normalize().map_err(ApiError::bad_request)?;
        server.store.set_pool_setting(SETTING, &pool, Some(&serde_json::to_value(&rule).expect("rule serialises"))).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

async fn delete_default_rule(state: AppState, caller: Caller, ip: ClientIp) -> ApiResult<Response> {
    delete(state, caller, ip, String::new()).await
}

async fn delete_rule(state: AppState, caller: Caller, ip: ClientIp, Path(id): Path<String>) -> ApiResult<Response> {
    delete(state, caller, ip, id).await
}

async fn delete(State(server): AppState, Caller(caller): Caller, ip: ClientIp, pool: String) -> ApiResult<Response> {
    caller.require("node.autoscale", &[])?;
    let allowed = Allowed::new("pool.read.events", pool_contexts(&pool));
    let data = request_data(&Params::default(), &[("id", &pool)]);
    let event = record_allowed(&server, Some(&caller), &ip, "node.autoscale.delete", Target::new("pool", &pool), data, allowed).await?;
    let work = async {
        if !rules(&server).await?.contains_key(&pool) {
            return Err(ApiError::not_found("rule not found"));
        }
        server.store.set_pool_setting(SETTING, &pool, None).await?;
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}

/// `POST /run`: one round now, its progress as an x-json-stream.
async fn run(State(server): AppState, Caller(caller): Caller, ip: ClientIp) -> ApiResult<Response> {
    caller.require("node.autoscale.update.run", &[])?;
    let allowed = Allowed::new("pool.read.events", vec![]);
    let event = record_allowed(&server, Some(&caller), &ip, "node.autoscale.update.run", Target::new("pool", ""), json!([]), allowed).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = crate::iaas::autoscale::run(&server, &w).await;
        event.done(result).await
    }))
}

/// `GET /`: the changes made, newest first (`skip`, `limit`); 204 when none.
async fn history(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    caller.require("node.autoscale", &[])?;
    let skip = params.get("skip").and_then(|s| s.parse::<i64>().ok()).unwrap_or(0).max(0);
    let limit = params.get("limit").and_then(|s| s.parse::<i64>().ok()).filter(|l| *l > 0).unwrap_or(100).min(1000);
    let q = EventQuery { kind_names: vec![KIND.into()], target_type: Some("pool".into()), ..EventQuery::default() };
    let events = server.store.events(&q, skip, limit).await?;
    if events.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let list: Vec<Value> = events
        .iter()
        .map(|e| {
            let start: Value = serde_json::from_str(&e.start_custom).unwrap_or(Value::Null);
            let end: Value = serde_json::from_str(&e.end_custom).unwrap_or(Value::Null);
            let text = |v: &Value, k: &str| v[k].as_str().unwrap_or_default().to_string();
            let node = text(&end, "node");
            json!({
                "ID": e.id,
                "MetadataValue": text(&start, "pool"),
                "Action": text(&start, "action"),
                "Reason": text(&start, "reason"),
                "StartTime": super::time_json(e.start_time),
                "EndTime": super::time_json(e.end_time),
                "Successful": e.error.is_empty() && !e.running,
                "Error": e.error,
                "Node": {"Address": node, "Metadata": null, "Pool": text(&start, "pool")},
                "Log": "",
                "Nodes": null,
            })
        })
        .collect();
    Ok(json(StatusCode::OK, &list))
}
