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
pub mod iaas;
pub mod provisioner;
pub mod router;
pub mod service_broker;
pub mod capabilities;
pub mod engine;
pub mod instance;
pub mod ticker;

pub use engine::PluginEngine;

/// The WIT package plugins are built against (`wit/worlds.wit`).
pub const CONTRACT_PACKAGE: &str = "torii:plugin";
/// The contract version this host speaks. Every incompatible change to
/// `wit/` bumps it; a plugin built against another version is refused at
/// load with both versions named.
pub const CONTRACT_VERSION: &str = "0.7.0";

/// One name of a component's imports or exports in the `torii:plugin`
/// package: its interface and version (empty when unversioned).
struct ContractName {
    interface: String,
    version: String,
    full: String,
}

/// The `torii:plugin` names among `names`.
fn contract_names<'a>(names: impl Iterator<Item = &'a str>) -> Vec<ContractName> {
    names
        .filter_map(|name| {
            let rest = name.strip_prefix(CONTRACT_PACKAGE)?.strip_prefix('/')?;
            let (interface, version) = rest.split_once('@').unwrap_or((rest, ""));
            Some(ContractName { interface: interface.to_string(), version: version.to_string(), full: name.to_string() })
        })
        .collect()
}

fn imports(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> Vec<ContractName> {
    contract_names(component.component_type().imports(engine).map(|(n, _)| n))
}

fn exports(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> Vec<ContractName> {
    contract_names(component.component_type().exports(engine).map(|(n, _)| n))
}

/// The contract version `component` was built against when it is not
/// this host's (read from the versions in its import and export names).
pub fn foreign_contract(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> Option<String> {
    let names = imports(engine, component).into_iter().chain(exports(engine, component));
    names.map(|n| n.version).find(|v| v != CONTRACT_VERSION).map(|v| if v.is_empty() { "an unversioned package".to_string() } else { v })
}

/// The plugin kinds, as the interfaces their worlds export are named.
pub const KINDS: [&str; 5] = ["auth-scheme", "provisioner", "router", "iaas", "service-broker"];

/// When `component` exports no interface of kind `kind` but another
/// kind's: that kind and the export's full name.
pub fn other_kind(engine: &wasmtime::Engine, component: &wasmtime::component::Component, kind: &str) -> Option<(String, String)> {
    let kinds: Vec<ContractName> = exports(engine, component).into_iter().filter(|n| KINDS.contains(&n.interface.as_str())).collect();
    if kinds.iter().any(|n| n.interface == kind) {
        return None;
    }
    kinds.into_iter().next().map(|n| (n.interface, n.full))
}

/// The capabilities `component` imports (`torii:plugin/<capability>@…`).
pub fn imported_capabilities(engine: &wasmtime::Engine, component: &wasmtime::component::Component) -> Vec<crate::config::Capability> {
    use crate::config::Capability::*;
    let mut found = Vec::new();
    for name in imports(engine, component) {
        let capability = match name.interface.as_str() {
            "log" => Log,
            "kv" => Kv,
            "app-runtime" => AppRuntime,
            "proxy" => Proxy,
            "containers" => Containers,
            _ => continue,
        };
        if !found.contains(&capability) {
            found.push(capability);
        }
    }
    found
}

pub use instance::{Limits, PluginState};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
    #[error(
        "plugin {plugin:?} was built against {CONTRACT_PACKAGE}@{built}, but this torii speaks {CONTRACT_PACKAGE}@{CONTRACT_VERSION}: \
         rebuild it with the plugin SDK of {CONTRACT_PACKAGE}@{CONTRACT_VERSION}"
    )]
    Contract { plugin: String, built: String },
    #[error("plugin {plugin:?}: its entry says kind {entry}, but the component is of kind {component} (it exports {export})")]
    Kind { plugin: String, entry: String, component: String, export: String },
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
    use sha2::{Digest, Sha256};

    /// The digest of `wit/` each contract version was released with
    /// ([`wit_digest`]: comments and blank lines left out). A change to the
    /// contract is a new version: bump the package line in `wit/*.wit` and
    /// [`super::CONTRACT_VERSION`], and record the new digest here.
    const RELEASED: &[(&str, &str)] = &[
        ("0.2.0", "2dee1be22ceee35597af9fe41784a956a51fbb1a5c414eb038220ad6ef1880d2"),
        ("0.3.0", "13e28fe55e0353ba2681a789132af49d8e2f8f5c05b8ddfa167880915db50c6c"),
        ("0.4.0", "ddfaf1ec0d6123f2dc63065db7426339e15f45330ab59fa05a137a5b299317fd"),
        ("0.5.0", "812fe1509411b7eb4763d05979afa39b45d72fcb7fd5762a3b78ad90e69c6ad9"),
        ("0.6.0", "bed1d52996c825b29e2bb0de9aa924ca86066916725066b417cbe294a23a7b23"),
        ("0.7.0", "c1dc10cb7cdfc226d5f09a199396004d32c1f13381774d57595b8982b4199070"),
    ];

    /// sha256 over `wit/*.wit` by file name, each without comments, blank
    /// lines or indentation.
    fn wit_digest() -> String {
        let dir = std::path::Path::new(env!("CARGO_MANIFEST_DIR")).join("../wit");
        let mut files: Vec<_> = std::fs::read_dir(&dir).unwrap().map(|e| e.unwrap().path()).filter(|p| p.extension().is_some_and(|e| e == "wit")).collect();
        files.sort();
        let mut hash = Sha256::new();
        for file in files {
            hash.update(file.file_name().unwrap().to_string_lossy().as_bytes());
            hash.update(b"\n");
            for line in std::fs::read_to_string(&file).unwrap().lines() {
                let code = line.split("//").next().unwrap_or_default().trim();
                if !code.is_empty() {
                    hash.update(code.as_bytes());
                    hash.update(b"\n");
                }
            }
        }
        hex::encode(hash.finalize())
    }

    #[test]
    fn the_capabilities_a_component_imports_are_read_from_it() {
        use crate::config::Capability::*;
        let mut config = wasmtime::Config::new();
        config.wasm_component_model(true);
        let engine = wasmtime::Engine::new(&config).unwrap();
        let imports = |path: &str| super::imported_capabilities(&engine, &wasmtime::component::Component::from_file(&engine, path).unwrap());
        let chaos = imports(env!("TORII_GUEST_TEST_CHAOS"));
        assert!(chaos.contains(&Kv) && !chaos.contains(&Containers) && !chaos.contains(&Proxy), "{chaos:?}");
        let docker = imports(env!("TORII_GUEST_PROVISIONER_DOCKER"));
        assert!(docker.contains(&Containers) && !docker.contains(&Proxy), "{docker:?}");
        assert!(imports(env!("TORII_GUEST_ROUTER_EMBEDDED")).contains(&Proxy));
    }

    #[test]
    fn wit_does_not_change_without_a_new_contract_version() {
        let digest = wit_digest();
        let recorded = RELEASED.iter().find(|(v, _)| *v == super::CONTRACT_VERSION).map(|(_, d)| *d);
        assert_eq!(
            recorded,
            Some(digest.as_str()),
            "wit/ is not what torii:plugin@{} was released as (its digest is now {digest}): a change to the contract is a new \
             version (bump the package line in wit/*.wit and plugin::CONTRACT_VERSION) recorded in RELEASED",
            super::CONTRACT_VERSION
        );
    }
    #[test]
    fn the_contract_version_is_the_wit_package_version() {
        let worlds = include_str!("../../../wit/worlds.wit");
        let package = format!("package {}@{};", super::CONTRACT_PACKAGE, super::CONTRACT_VERSION);
        assert!(worlds.lines().any(|l| l.trim() == package), "wit/worlds.wit does not declare {package}");
    }
}
