//! Capabilities the host offers plugins. Each lives in its own module and
//! implements the host side of one WIT interface; every call first checks the
//! plugin's grant and traps with [`Denied`] when it is missing.

mod app_runtime;
mod containers;
mod kv;
mod log;
mod proxy;
pub mod swarm;

use crate::config::Capability;
use crate::plugin::PluginState;

pub mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "torii:plugin/host-capabilities",
        imports: { default: async | trappable },
    });
}

/// The trap raised when a plugin calls a capability it was not granted.
#[derive(Debug, thiserror::Error)]
#[error("capability {capability:?} is not granted to plugin {plugin:?}")]
pub struct Denied {
    pub plugin: String,
    pub capability: &'static str,
}

impl PluginState {
    fn check(&self, capability: Capability) -> wasmtime::Result<()> {
        if self.host.grants.contains(&capability) {
            Ok(())
        } else {
            Err(wasmtime::Error::new(Denied { plugin: self.host.name.clone(), capability: capability.name() }))
        }
    }
}

/// `Ok` when every address is `127.0.0.1:<port>` (or another loopback
/// address), or on one of `nodes` (the nodes of the app's Swarm cluster):
/// where the data plane may send app traffic. Backends named by plugins are
/// on this machine's loopback or on the cluster an operator registered, so
/// app traffic never goes anywhere else.
pub(crate) fn check_backends(addresses: &[String], nodes: &[std::net::IpAddr]) -> Result<(), String> {
    let allowed = |a: &String| matches!(a.parse::<std::net::SocketAddr>(), Ok(a) if a.port() != 0 && (a.ip().is_loopback() || nodes.contains(&a.ip())));
    match addresses.iter().find(|a| !allowed(a)) {
        Some(bad) if nodes.is_empty() => Err(format!("backend address {bad:?} is not a loopback address with a port, such as 127.0.0.1:8000")),
        Some(bad) => Err(format!("backend address {bad:?} is neither a loopback address nor on a node of the app's cluster, with a port")),
        None => Ok(()),
    }
}

/// A mount a plugin asks for (`containers` and `swarm` each have their record).
pub(crate) struct Mounted<'a> {
    pub volume: &'a str,
    pub target: &'a str,
    pub read_only: bool,
}

/// The mounts a plugin asks for in `pool`, as the engine makes them: each a
/// volume of `pool` bound (by an app) at that target, read-only when its
/// bind is, made from its plan's driver and options. Anything else is
/// refused: a plugin mounts volumes, never a path of its choice.
pub(crate) async fn resolve_mounts(host: &crate::plugin::instance::HostCtx, pool: &str, mounts: &[Mounted<'_>]) -> Result<Vec<crate::docker::VolumeMount>, String> {
    let plans = host.apps.as_ref().map(|a| a.volume_plans.as_slice()).unwrap_or_default();
    let mut out = Vec::with_capacity(mounts.len());
    for m in mounts {
        let volume = host.store.volume(m.volume).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no volume {:?}", m.volume))?;
        if volume.pool != pool {
            return Err(format!("volume {:?} is in pool {:?}, not {pool:?}", volume.name, volume.pool));
        }
        let binds = host.store.volume_binds(&volume.name).await.map_err(|e| e.to_string())?;
        let Some(bind) = binds.iter().find(|b| b.mount_point == m.target) else {
            return Err(format!("volume {:?} is not bound at {:?}", volume.name, m.target));
        };
        let plan = plans.iter().find(|p| p.name == volume.plan).ok_or_else(|| format!("volume plan {:?} of volume {:?} is not configured for {:?}", volume.plan, volume.name, host.name))?;
        out.push(crate::docker::VolumeMount {
            source: crate::docker::volume_source(&volume.name),
            target: m.target.to_string(),
            read_only: m.read_only || bind.read_only,
            driver: plan.driver.clone(),
            options: plan.options_for(&volume.name),
        });
    }
    Ok(out)
}

/// Whether any of `addresses` is off loopback (only a cluster's node may then take it).
pub(crate) fn off_loopback(addresses: &[String]) -> bool {
    addresses.iter().any(|a| !a.parse::<std::net::SocketAddr>().is_ok_and(|a| a.ip().is_loopback()))
}

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<PluginState>) -> wasmtime::Result<()> {
    bindings::HostCapabilities::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)
}
