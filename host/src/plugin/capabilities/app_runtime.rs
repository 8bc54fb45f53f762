//! `app-runtime`: the host's WASM app runtime, for provisioner plugins. The
//! plugin decides what an app serves; the host checks the request is about
//! an app of a pool that plugin provisions, then does it.

use super::bindings::torii::plugin::app_runtime::{Host, Prepared, UnitInfo};
use crate::config::Capability;
use crate::plugin::PluginState;
use crate::plugin::instance::HostCtx;
use std::sync::Arc;
use std::time::Instant;

const UNAVAILABLE: &str = "the app runtime is not available to this plugin";

/// `Ok` when the plugin has the runtime and provisions `app` (its pool's
/// provisioner, or the default one, is this plugin).
async fn owns(host: &HostCtx, app: &str) -> Result<(), String> {
    let Some(apps) = host.apps.as_ref() else { return Err(UNAVAILABLE.into()) };
    let view = match host.store.app_view(app).await {
        Ok(Some(view)) => view,
        Ok(None) => return Err(format!("no app {app:?}")),
        Err(e) => return Err(e.to_string()),
    };
    let provisioner = crate::config::provisioner_or(view.provisioner.as_deref().unwrap_or_default(), &apps.default_provisioner);
    if provisioner != host.name {
        return Err(format!("app {app:?} is not provisioned by {:?}", host.name));
    }
    Ok(())
}

impl PluginState {
    /// The plugin's host context, once the capability is granted.
    fn runtime_host(&self) -> wasmtime::Result<Arc<HostCtx>> {
        self.check(Capability::AppRuntime)?;
        Ok(self.host.clone())
    }
}

impl Host for PluginState {
    async fn prepare(&mut self, artifact: String) -> wasmtime::Result<Result<Prepared, String>> {
        let host = self.runtime_host()?;
        let Some(apps) = host.apps.as_ref() else { return Ok(Err(UNAVAILABLE.into())) };
        let started = Instant::now();
        let cached = apps.catalog.is_loaded(&artifact);
        let result = apps.catalog.code(&artifact).await.map_err(|e| e.to_string());
        Ok(result.map(|_| Prepared { cached, millis: started.elapsed().as_millis().min(u128::from(u32::MAX)) as u32 }))
    }

    async fn unload(&mut self, app: String) -> wasmtime::Result<()> {
        let host = self.runtime_host()?;
        if owns(&host, &app).await.is_ok()
            && let (Some(apps), Ok(versions)) = (host.apps.as_ref(), host.store.versions(&app).await)
        {
            for v in versions {
                apps.catalog.unload(&v.digest);
            }
        }
        Ok(())
    }

    async fn units_seen(&mut self, app: String) -> wasmtime::Result<Vec<UnitInfo>> {
        let host = self.runtime_host()?;
        let (Ok(()), Some(apps)) = (owns(&host, &app).await, host.apps.as_ref()) else { return Ok(vec![]) };
        Ok(apps
            .units
            .seen(&app)
            .into_iter()
            .map(|(name, restarts, status)| UnitInfo { name, restarts: u32::try_from(restarts).unwrap_or(u32::MAX), status })
            .collect())
    }

    async fn kill_unit(&mut self, app: String, unit: String) -> wasmtime::Result<()> {
        let host = self.runtime_host()?;
        if let (Ok(()), Some(apps)) = (owns(&host, &app).await, host.apps.as_ref()) {
            apps.units.kill(&app, &unit);
        }
        Ok(())
    }

    async fn set_unit_status(&mut self, app: String, unit: String, status: String) -> wasmtime::Result<()> {
        let host = self.runtime_host()?;
        if let (Ok(()), Some(apps)) = (owns(&host, &app).await, host.apps.as_ref()) {
            apps.units.set_status(&app, &unit, &status);
        }
        Ok(())
    }
}
