//! `proxy`: the host's proxy table, for router plugins. A plugin writes only
//! for routers of its own type (the router's type names the plugin entry),
//! only for existing apps, and only HTTP backends on the loopback interface
//! or the exact addresses the app's recorded routes name (tasks on its
//! cluster's nodes).

use super::bindings::torii::plugin::proxy::{Backend, Host};
use crate::config::Capability;
use crate::plugin::PluginState;
use crate::plugin::instance::HostCtx;
use crate::store::ProxyBackend;

/// `Ok` when `router` is of the calling plugin's type.
async fn serves(host: &HostCtx, router: &str) -> Result<(), String> {
    match crate::routers::kind_of(&host.store, router).await {
        Ok(Some(kind)) if kind == host.name => Ok(()),
        Ok(Some(kind)) => Err(format!("router {router:?} is of type {kind:?}, not served by plugin {:?}", host.name)),
        Ok(None) => Err(format!("no router {router:?}")),
        Err(e) => Err(e.to_string()),
    }
}

/// The backends as the table keeps them; `Err` for an address off the
/// loopback interface that the app's recorded routes do not name (the host
/// checked those against the app's cluster when it recorded them).
fn checked(backends: Vec<Backend>, routed: &[String]) -> Result<Vec<ProxyBackend>, String> {
    backends
        .into_iter()
        .map(|b| {
            let off: Vec<String> = b.addresses.iter().filter(|a| !routed.contains(a)).cloned().collect();
            super::check_backends(&off, &[])?;
            Ok(ProxyBackend { version: i64::from(b.version), addresses: b.addresses, weight: b.weight })
        })
        .collect()
}

impl Host for PluginState {
    async fn set_app(&mut self, router: String, app: String, hosts: Vec<String>, backends: Vec<Backend>) -> wasmtime::Result<Result<(), String>> {
        self.check(Capability::Proxy)?;
        let host = self.host.clone();
        if let Err(e) = serves(&host, &router).await {
            return Ok(Err(e));
        }
        let routed: Vec<String> = match host.store.app_view(&app).await {
            Ok(Some(view)) => view.routes.iter().flat_map(|r| r.addresses.iter().cloned()).collect(),
            Ok(None) => return Ok(Err(format!("no app {app:?}"))),
            Err(e) => return Ok(Err(e.to_string())),
        };
        let hosts: Vec<String> = hosts.iter().map(|h| h.to_ascii_lowercase()).collect();
        // `*.example.com` serves every name directly under example.com.
        if let Some(bad) = hosts.iter().find(|h| !crate::routers::valid_domain(h.strip_prefix("*.").unwrap_or(h))) {
            return Ok(Err(format!("{bad:?} is not a host name")));
        }
        let backends = match checked(backends, &routed) {
            Ok(b) => b,
            Err(e) => return Ok(Err(e)),
        };
        Ok(host.store.set_proxy_app(&router, &app, &hosts, &backends).await.map_err(|e| e.to_string()))
    }

    async fn remove_app(&mut self, router: String, app: String) -> wasmtime::Result<Result<(), String>> {
        self.check(Capability::Proxy)?;
        let host = self.host.clone();
        if let Err(e) = serves(&host, &router).await {
            return Ok(Err(e));
        }
        Ok(host.store.remove_proxy_app(&router, &app).await.map_err(|e| e.to_string()))
    }
}
