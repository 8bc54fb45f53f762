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
pub use instance::{Limits, PluginState};

#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum PluginError {
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
