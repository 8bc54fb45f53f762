//! The plugin runtime: wasmtime components behind typed, per-kind facades.
//!
//! - [`engine`]: one engine for plugins (pooling allocator, epoch ticker) and
//!   the compiled-component cache keyed by content hash.
//! - [`instance`]: a pool of warm instances per configured plugin; every call
//!   runs under an epoch deadline and a memory cap, and a trap, a timeout or an
//!   out-of-memory throws the instance away and becomes a [`PluginError`].
//! - [`capabilities`]: what the host offers plugins (`log`, `kv`,
//!   `app-runtime`, `proxy`), denied unless the plugin's config entry grants it.
//! - one module per plugin kind ([`auth_scheme`], [`provisioner`], [`router`])
//!   with the WIT bindings and a typed API for the rest of the host.
//!
//! **Invariant: nothing a plugin does can take the host down.** Plugins never
//! see the database, the network or another plugin's data except through a
//! granted capability.

pub mod auth_scheme;
pub mod provisioner;
pub mod router;
pub mod capabilities;
pub mod engine;
pub mod instance;

pub use engine::PluginEngine;

/// The WIT package plugins are built against (`wit/worlds.wit`).
pub const CONTRACT_PACKAGE: &str = "torii:plugin";
/// The contract version this host speaks. Every incompatible change to
/// `wit/` bumps it; a plugin built against another version is refused at
/// load with both versions named.
pub const CONTRACT_VERSION: &str = "0.2.0";

/// The contract version `component` was built against when it is not
/// this host's (read from the versions in its import and export names).
pub fn foreign_contract(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> Option<String> {
    let ty = component.component_type();
    let names = ty.imports(engine).map(|(n, _)| n.to_string()).chain(ty.exports(engine).map(|(n, _)| n.to_string()));
    for name in names.collect::<Vec<_>>() {
        let Some(rest) = name.strip_prefix(CONTRACT_PACKAGE).and_then(|r| r.strip_prefix('/')) else { continue };
        let version = rest.split_once('@').map(|(_, v)| v).unwrap_or("");
        if version != CONTRACT_VERSION {
            return Some(if version.is_empty() { "an unversioned package".to_string() } else { version.to_string() });
        }
    }
    None
}
pub use instance::{Limits, PluginState};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error(
        "plugin {plugin:?} was built against {CONTRACT_PACKAGE}@{built}, but this torii speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}: \
         rebuild it with the plugin SDK of {CONTRACT_PACKAGE}@{CONTRACT_VERSION}"
    )]
    Contract { plugin: String, built: String },
    #[error("plugin {plugin:?} timed out: its call ran past the {ms} ms deadline")]
    Timeout { plugin: String, ms: u64 },
    #[error("plugin {plugin:?} ran out of memory: it tried to grow past its {mb} MiB limit")]
    OutOfMemory { plugin: String, mb: u64 },
    #[error("plugin {plugin:?} called capability {capability:?}, which its config does not grant")]
    CapabilityDenied { plugin: String, capability: String },
    #[error("plugin {plugin:?} trapped: {message}")]
    Trap { plugin: String, message: String },
    #[error("plugin {plugin:?} failed to initialise: {message}")]
    Init { plugin: String, message: String },
    #[error("plugin {plugin:?} cannot be loaded: {message}")]
    Load { plugin: String, message: String },
}

#[cfg(test)]
mod tests {
    #[test]
    fn the_contract_version_is_the_wit_package_version() {
        let worlds = include_str!("../../../wit/worlds.wit");
        let package = format!("package {}@{};", super::CONTRACT_PACKAGE, super::CONTRACT_VERSION);
        assert!(worlds.lines().any(|l| l.trim() == package), "wit/worlds.wit does not declare {package}");
    }
}
