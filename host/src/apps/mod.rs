//! The apps domain service: the one way an app's desired state changes.
//!
//! A change (scale a process, start/stop/sleep/wake, routable, rollback,
//! version delete, deploy, plan or pool update) is a function over the app's
//! [`Desired`](crate::store::Desired) state ([`change`]), handed to
//! [`converge`], which records it, has the provisioner make it real, stores
//! the routes the provisioner answers and tells the routers, with a step
//! back for each step forward. Handlers in `api/` parse, check permissions,
//! take the app's lock (an event), call in here and render.
//!
//! The app's provisioner is resolved here and nowhere else
//! ([`provisioner_of`]).

pub mod autoscale;
pub mod env;
pub mod change;
mod converge;
pub mod shell;
pub mod wake;

pub use converge::{converge, plan, refresh};

use crate::error::{ApiError, ApiResult};
use crate::plugin::provisioner::Provisioner;
use crate::server::Server;
use crate::store::AppRecord;
use std::future::Future;

/// Where the lines of a long change go while it runs (a deploy's text
/// stream, an x-json-stream), or nowhere ([`Quiet`]).
pub trait Progress: Sync {
    fn line(&self, text: String) -> impl Future<Output = ()> + Send;
}

/// Progress nobody reads (the data plane's wake, healing).
pub struct Quiet;

impl Progress for Quiet {
    async fn line(&self, _text: String) {}
}

/// The name of the provisioner serving apps of `pool`: the pool's own, else
/// the configured default.
pub async fn provisioner_name(server: &Server, pool: &str) -> ApiResult<String> {
    let own = server.store.pool(pool).await?.map(|p| p.provisioner).unwrap_or_default();
    Ok(server.config.pool_provisioner(&own).to_string())
}

/// The provisioner serving `app`.
pub async fn provisioner_of<'a>(server: &'a Server, app: &AppRecord) -> ApiResult<&'a Provisioner> {
    let name = provisioner_name(server, &app.pool).await?;
    server.provisioners.get(&name).ok_or_else(|| ApiError::internal(format!("provisioner {name:?} is not configured")))
}

/// After a change to what an app's units run with (its env, its binds):
/// an app with units restarts through the converge path (its provisioner
/// gets the new state) and its lines join `out`; one without has nothing
/// to restart.
pub async fn restart(server: &Server, app: &str, out: &impl Progress) -> ApiResult<()> {
    let versions = server.store.versions(app).await?;
    if crate::store::units_in_use(&versions) == 0 {
        return Ok(());
    }
    out.line(format!("---- Restarting the app {app:?} ----\n")).await;
    refresh(server, app, out).await
}

/// Removes `app`: its provisioner lets go of it first (the wasm one stops
/// serving it, the docker one removes its containers), then the store
/// forgets it, then its routers do (a router that fails keeps its record and
/// is told again by the resync loop).
pub async fn remove(server: &Server, app: &AppRecord) -> ApiResult<()> {
    let name = &app.name;
    provisioner_of(server, app).await?.destroy(name).await?;
    // Its binds go with it: each provider is told (a provider that fails is
    // logged; the app is gone either way, as tsuru does).
    for b in server.store.binds_of_app(name).await? {
        if let Err(e) = crate::services::bind::forget_app(server, app, &b).await {
            tracing::warn!(app = %name, service = %b.service, instance = %b.instance, error = %e, "the service was not told the removed app is unbound");
        }
    }
    server.store.delete_app(name).await?;
    server.metrics.forget_app(name);
    server.units.forget_app(name);
    if let Err(e) = server.routing.remove(name).await {
        tracing::warn!(app = %name, error = %e, "the routers of a removed app did not all forget it; they are told again");
    }
    Ok(())
}
