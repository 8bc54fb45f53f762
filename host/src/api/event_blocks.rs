//! Event blocks (`/1.3/events/blocks`): while active, a block refuses every
//! operation it matches (see `events::blocks`).

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use std::collections::BTreeMap;

use super::events::{record, request_data};
use super::params::{Params, parse_bool};
use super::{AppState, Caller, ClientIp, Routes, empty, json_list, time_json};
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::store::{BlockRecord, now_millis};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.3", Method::GET, "/events/blocks", list)
        .add("1.3", Method::POST, "/events/blocks", add)
        .add("1.3", Method::DELETE, "/events/blocks/{uuid}", remove)
}

#[derive(Serialize)]
struct BlockJson {
    #[serde(rename = "ID")]
    id: String,
    #[serde(rename = "StartTime")]
    start_time: String,
    #[serde(rename = "EndTime")]
    end_time: String,
    #[serde(rename = "KindName")]
    kind_name: String,
    #[serde(rename = "OwnerName")]
    owner_name: String,
    #[serde(rename = "Target")]
    target: Target,
    #[serde(rename = "Conditions")]
    conditions: Option<BTreeMap<String, String>>,
    #[serde(rename = "Reason")]
    reason: String,
    #[serde(rename = "Active")]
    active: bool,
}

fn block_json(b: BlockRecord) -> BlockJson {
    BlockJson {
        id: b.id,
        start_time: time_json(b.start_time),
        end_time: time_json(b.end_time),
        kind_name: b.kind_name,
        owner_name: b.owner_name,
        target: Target { kind: b.target_type, value: b.target_value },
        conditions: if b.conditions.is_empty() { None } else { Some(b.conditions) },
        reason: b.reason,
        active: b.active,
    }
}

async fn list(State(server): AppState, Caller(caller): Caller, params: Params) -> ApiResult<Response> {
    caller.require("event-block.read", &[])?;
    let active = match params.get("active").filter(|s| !s.is_empty()) {
        None => None,
        Some(raw) => Some(parse_bool(&raw).ok_or_else(|| ApiError::bad_request(format!("invalid active: {raw:?}")))?),
    };
    let blocks: Vec<BlockJson> = server.store.blocks(active).await?.into_iter().map(block_json).collect();
    Ok(json_list(&blocks))
}

async fn add(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("event-block.add", &[])?;
    let reason = params.field("reason").unwrap_or_default();
    if reason.trim().is_empty() {
        return Err(ApiError::bad_request("reason is required"));
    }
    let block = BlockRecord {
        id: bson::oid::ObjectId::new().to_hex(),
        start_time: now_millis(),
        end_time: 0,
        kind_name: params.field("kindname").unwrap_or_default(),
        owner_name: params.field("ownername").unwrap_or_default(),
        target_type: params.field("target.type").unwrap_or_default(),
        target_value: params.field("target.value").unwrap_or_default(),
        conditions: params.field_map("conditions"),
        reason,
        active: true,
    };
    let data = request_data(&params, &[]);
    let event = record(&server, Some(&caller), &ip, "event-block.add", Target::new("event-block", &block.id), data).await?;
    let result = server.store.add_block(&block).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(id): Path<String>) -> ApiResult<Response> {
    caller.require("event-block.remove", &[])?;
    let data = request_data(&Params::default(), &[("uuid", &id)]);
    let event = record(&server, Some(&caller), &ip, "event-block.remove", Target::new("event-block", &id), data).await?;
    let work = async {
        if !server.store.deactivate_block(&id, now_millis()).await? {
            return Err(ApiError::not_found(format!("active event block with id {id} not found")));
        }
        Ok(empty(StatusCode::OK))
    };
    event.done(work.await).await
}
