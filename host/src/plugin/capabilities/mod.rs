//! Capabilities the host offers plugins. Each lives in its own module and
//! implements the host side of one WIT interface; every call first checks the
//! plugin's grant and traps with [`Denied`] when it is missing.

mod app_runtime;
mod containers;
mod kv;
mod log;
mod proxy;

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
/// address): backends named by plugins are on this machine's loopback, so
/// app traffic never leaves it.
/// Every address a loopback socket address with a port: where the data
/// plane may send app traffic.
pub(crate) fn check_loopback(addresses: &[String]) -> Result<(), String> {
    let loopback = |a: &String| matches!(a.parse::<std::net::SocketAddr>(), Ok(a) if a.ip().is_loopback() && a.port() != 0);
    match addresses.iter().find(|a| !loopback(a)) {
        Some(bad) => Err(format!("backend address {bad:?} is not a loopback address with a port, such as 127.0.0.1:8000")),
        None => Ok(()),
    }
}

pub fn add_to_linker(linker: &mut wasmtime::component::Linker<PluginState>) -> wasmtime::Result<()> {
    bindings::HostCapabilities::add_to_linker::<_, wasmtime::component::HasSelf<_>>(linker, |s| s)
}
