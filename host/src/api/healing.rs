//! Healing history (`GET /1.3/healing`, API-NOTES §2.17): the units healing
//! replaced, from the `healer` events `crate::healing` records.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::{Value, json};

use super::params::Params;
use super::{AppState, Caller, Routes, empty, json_list, time_json};
use crate::error::{ApiError, ApiResult};
use crate::healing::HEALER;
use crate::store::EventQuery;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.3", Method::GET, "/healing", history).add("1.0", Method::GET, "/docker/healing", history)
}

/// Newest repairs shown.
const HISTORY: i64 = 200;

async fn history(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    caller.require("healing.read", &[])?;
    let filter = params.get("filter").unwrap_or_default();
    let entries: Vec<Value> = match filter.as_str() {
        // torii heals units; nodes are not replaced (no IaaS makes new ones).
        "node" => Vec::new(),
        "" | "container" => {
            let q = EventQuery { kind_names: vec![HEALER.into()], ..EventQuery::default() };
            server.store.events(&q, 0, HISTORY).await?.iter().map(entry).collect()
        }
        _ => return Err(ApiError::bad_request("invalid filter, possible values are 'node' or 'container'")),
    };
    Ok(if entries.is_empty() { empty(StatusCode::NO_CONTENT) } else { json_list(&entries) })
}

/// tsuru's healing event: the failing and the created unit, with their nodes.
fn entry(e: &crate::store::EventRecord) -> Value {
    let data: Value = serde_json::from_str(&e.start_custom).unwrap_or(Value::Null);
    let text = |k: &str| data[k].as_str().unwrap_or_default().to_string();
    let container = |unit: String, node: String| json!({"ID": unit, "AppName": text("app"), "HostAddr": node});
    json!({
        "ID": e.id,
        "StartTime": time_json(e.start_time),
        "EndTime": time_json(e.end_time),
        "Action": "container-healing",
        "Reason": text("reason"),
        "Extra": null,
        "FailingNode": {"Address": text("failingNode")},
        "CreatedNode": {"Address": text("createdNode")},
        "FailingContainer": container(text("failingUnit"), text("failingNode")),
        "CreatedContainer": container(text("createdUnit"), text("createdNode")),
        "Successful": e.error.is_empty(),
        "Error": e.error,
    })
}
