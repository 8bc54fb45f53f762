//! Container log config (`/docker/logs`, API-NOTES §2.17): the log driver
//! and options units of a pool's nodes are created with (pool `""`: the
//! default). `restart=true` replaces the pool's units so they take it now;
//! otherwise units get it when they are next replaced.

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde_json::json;

use super::events::{record, request_data};
use super::params::Params;
use super::pools::{pool_contexts, pool_target, readable_pools, shows};
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, json};
use crate::docker::LOGS_SETTING;
use crate::error::{ApiError, ApiResult};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/docker/logs", read).add("1.0", Method::POST, "/docker/logs", update)
}

async fn read(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    let readable = readable_pools(&caller, "pool.update.logs")?;
    let mut settings = server.store.pool_settings(LOGS_SETTING).await?;
    settings.entry(String::new()).or_insert_with(|| json!({"Driver": "", "LogOpts": {}}));
    settings.retain(|pool, _| shows(pool, &readable));
    Ok(json(StatusCode::OK, &settings))
}

/// `POST` keys `pool`, `restart`; fields `Driver`, `LogOpts.<key>`.
async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    let pool = params.get("pool").unwrap_or_default();
    caller.require("pool.update.logs", &pool_contexts(&pool))?;
    let driver = params.field("driver").unwrap_or_default();
    if driver.is_empty() {
        return Err(ApiError::bad_request("log driver is mandatory"));
    }
    if !pool.is_empty() && server.store.pool(&pool).await?.is_none() {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    let restart = params.get("restart").and_then(|r| super::params::parse_bool(&r)).unwrap_or(false);
    let value = json!({"Driver": driver, "LogOpts": params.field_map("logopts")});
    let event = record(&server, Some(&caller), &ip, "pool.update.logs", pool_target(&pool), request_data(&params, &[])).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        let result = async {
            server.store.set_pool_setting(LOGS_SETTING, &pool, Some(&value)).await.map_err(|e| e.to_string())?;
            w.message("Log config successfully updated.\n").await;
            if restart {
                restart_units(&server, &caller, &ip, &pool, &w).await?;
            }
            Ok(())
        }
        .await;
        event.done(result).await
    }))
}

/// Replaces every unit of the pool's apps (every node pool's with `pool` ""),
/// one at a time, so they are created with the new log config.
async fn restart_units(
    server: &std::sync::Arc<crate::server::Server>,
    caller: &crate::auth::Identity,
    ip: &ClientIp,
    pool: &str,
    w: &super::stream::StreamWriter,
) -> Result<(), String> {
    let pool = (!pool.is_empty()).then_some(pool);
    for app in super::provision::node_apps(server, pool).await.map_err(|e| e.message)? {
        super::provision::under_app_lock(server, caller, ip, "pool.update.logs", &app, async |record| {
            let provisioner = crate::apps::provisioner_of(server, &record).await.map_err(|e| e.message)?;
            let desired = super::provision::desired(server, &app).await.map_err(|e| e.message)?;
            for unit in provisioner.units(desired.clone()).await.map_err(|e| e.to_string())? {
                w.message(&format!(" ---> restarting unit {} of app {app:?}\n", unit.name)).await;
                provisioner.kill_unit(desired.clone(), &unit.id).await.map_err(|e| format!("unit {}: {e}", unit.name))?;
                // One at a time: its replacement serves before the next goes.
                crate::apps::refresh(server, &app, &crate::apps::Quiet).await.map_err(|e| e.message)?;
            }
            Ok(())
        })
        .await?;
    }
    Ok(())
}
