//! Calls into an app's provisioner plugin from the API: which provisioner an
//! app has, and telling it the app's desired state after a change.

use super::apps::app_provisioner;
use super::stream::StreamWriter;
use crate::error::{ApiError, ApiResult};
use crate::plugin::provisioner::{AppState, ProvisionError, Provisioner, app_state};
use crate::server::Server;
use crate::store::AppRecord;

/// The provisioner of `app`'s pool (or the default one).
pub async fn provisioner_of<'a>(server: &'a Server, app: &AppRecord) -> ApiResult<&'a Provisioner> {
    let name = app_provisioner(server, app).await?;
    server.provisioners.get(&name).ok_or_else(|| ApiError::internal(format!("provisioner {name:?} is not configured")))
}

/// The desired state of `app`, read from the database.
pub async fn desired(server: &Server, app: &str) -> ApiResult<AppState> {
    let view = super::apps::view_of(server, app).await?;
    Ok(app_state(&view))
}

/// A refusal keeps its words (a 400, or 404 for something not found); a
/// failing plugin is a 500 naming it.
pub fn api_error(e: ProvisionError) -> ApiError {
    match e {
        ProvisionError::Refused(m) if m.ends_with("not found") => ApiError::not_found(m),
        ProvisionError::Refused(m) => ApiError::bad_request(m),
        ProvisionError::Plugin(p) => ApiError::internal(p.to_string()),
    }
}

/// Hands `app`'s desired state to its provisioner; the lines it reports.
pub async fn apply(server: &Server, provisioner: &Provisioner, app: &str) -> Result<Vec<String>, String> {
    provisioner.apply_stored(&server.store, app).await
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

/// Hands `app`'s desired state to its pool's provisioner and writes the
/// lines it reports into the request's stream.
pub async fn apply_streamed(server: &Server, app: &AppRecord, w: &StreamWriter) -> Result<(), String> {
    let provisioner = provisioner_of(server, app).await.map_err(|e| e.message)?;
    for line in apply(server, provisioner, &app.name).await? {
        w.message(&line).await;
    }
    Ok(())
}
