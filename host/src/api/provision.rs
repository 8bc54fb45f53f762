//! Calls into an app's provisioner plugin from the API that change nothing
//! of the app's desired state (unit lists, kill, run, node moves); changes
//! go through `crate::apps`.

use crate::error::{ApiError, ApiResult};
use crate::plugin::provisioner::{AppState, ProvisionError, app_state};
use crate::server::Server;
use crate::store::AppRecord;

/// The desired state of `app`, read from the database.
pub async fn desired(server: &Server, app: &str) -> ApiResult<AppState> {
    let view = super::apps::view_of(server, app).await?;
    Ok(app_state(&view))
}

/// A provisioner's answer as an API error: its status from the one table
/// (`ProvisionError::status`), its text as it is.
pub fn api_error(e: ProvisionError) -> ApiError {
    ApiError::from(e)
}

/// The apps of every pool whose provisioner runs units on nodes (or of
/// `pool` alone, when it does).
pub async fn node_apps(server: &Server, pool: Option<&str>) -> ApiResult<Vec<String>> {
    let mut apps = Vec::new();
    for p in server.store.pools().await? {
        if pool.is_some_and(|want| want != p.name) || !server.config.uses_nodes(server.config.pool_provisioner(&p.provisioner)) {
            continue;
        }
        apps.extend(server.store.app_names_where(crate::store::AppColumn::Pool, &p.name).await?);
    }
    Ok(apps)
}

/// Runs `work` on `app` under the app's lock (an event of `kind` on the app,
/// as the caller), so node operations (moves, rebalance, node removal, log
/// restarts) never race a deploy, a scale or a healing round on it.
pub async fn under_app_lock<F, Fut>(
    server: &std::sync::Arc<Server>,
    caller: &crate::auth::Identity,
    ip: &super::ClientIp,
    kind: &str,
    app: &str,
    work: F,
) -> Result<(), String>
where
    F: FnOnce(AppRecord) -> Fut,
    Fut: std::future::Future<Output = Result<(), String>>,
{
    let record = server.store.app(app).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("App {app} not found."))?;
    let event = super::apps::app_event(server, caller, ip, kind, &record, serde_json::json!({"app": app})).await.map_err(|e| e.message)?;
    event.done(work(record).await).await
}
