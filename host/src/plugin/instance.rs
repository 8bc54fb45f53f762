//! Warm instance pools. A configured plugin keeps a few ready instances; a call
//! takes one, runs under an epoch deadline and a memory cap, and puts it back.
//! On any failure the instance is dropped (a trapped instance is poisoned) and
//! the next call gets a fresh one, so the plugin heals itself. An instance
//! whose memory grew past [`KEEP_WARM_MEMORY`] is dropped too: linear memory
//! never shrinks, and one login's argon2 hash (19 MiB) would otherwise stay
//! resident for good, once per warm instance.

use std::collections::BTreeSet;
use std::future::Future;
use std::pin::Pin;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use wasmtime::component::{Component, InstancePre, Linker, ResourceTable};
use super::engine::{MemoryCap, MemoryLimit};
use wasmtime::{Store, Trap};
use wasmtime_wasi::cli::{IsTerminal, StdoutStream};
use wasmtime_wasi::{WasiCtx, WasiCtxBuilder, WasiCtxView, WasiView};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

use crate::outbound::{Guest, GuestHttp};

use super::PluginError;
use super::capabilities::{self, Denied};
use super::engine::PluginEngine;
use super::ticker::{EPOCH_TICK, EpochTicker};
use crate::config::Capability;
use crate::store::Store as Db;

/// Idle instances kept per plugin; more may run at once, the rest are dropped.
const MAX_IDLE: usize = 16;
/// Guest stderr kept per instance (the tail, to report a panic message).
const STDERR_TAIL: usize = 4 * 1024;
/// Most memory (all its linear memories) an instance may hold and still be
/// kept warm. A plugin's usual call stays far below (a Rust guest starts
/// at ~1 MiB); one that needed more gives it back by being dropped, and the
/// next call instantiates afresh (tens of microseconds).
pub const KEEP_WARM_MEMORY: usize = 8 << 20;

pub type BoxFuture<'a, T> = Pin<Box<dyn Future<Output = T> + Send + 'a>>;

/// What every instance of one configured plugin shares.
pub struct HostCtx {
    pub name: String,
    pub grants: BTreeSet<Capability>,
    pub store: Db,
    /// The WASM app runtime, for provisioners (capability `app-runtime`).
    pub apps: Option<AppsHost>,
    /// Outbound HTTP, for entries granted `http`.
    pub outbound: Option<Arc<crate::outbound::Outbound>>,
}

/// The app runtime's parts a provisioner plugin reaches.
pub struct AppsHost {
    pub catalog: Arc<crate::runtime::catalog::Catalog>,
    pub units: Arc<crate::dataplane::units::Units>,
    /// The provisioner of pools that name none (`[pools] default_provisioner`).
    pub default_provisioner: String,
    /// Docker engines, for provisioners granted `containers` or `swarm`.
    pub docker: Option<Arc<crate::docker::Engines>>,
    /// The volume plans of this provisioner (`[[volume_plan]]`).
    pub volume_plans: Vec<crate::config::VolumePlan>,
}

/// The data of one plugin instance's store.
pub struct PluginState {
    wasi: WasiCtx,
    table: ResourceTable,
    limits: MemoryCap,
    stderr: StderrTail,
    http: WasiHttpCtx,
    http_hooks: GuestHttp,
    pub host: Arc<HostCtx>,
}

impl WasiView for PluginState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for PluginState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.http_hooks }
    }
}

#[derive(Debug, Clone, Copy)]
pub struct Limits {
    pub timeout: Duration,
    pub memory_bytes: usize,
}

/// The last [`STDERR_TAIL`] bytes a guest wrote to stderr. Never refuses a
/// write, so a chatty plugin cannot fail by filling it.
#[derive(Clone, Default)]
struct StderrTail(Arc<Mutex<std::collections::VecDeque<u8>>>);

impl StderrTail {
    fn clear(&self) {
        self.0.lock().unwrap().clear();
    }

    fn text(&self) -> String {
        let buf = self.0.lock().unwrap();
        String::from_utf8_lossy(&buf.iter().copied().collect::<Vec<u8>>()).into_owned()
    }
}

impl IsTerminal for StderrTail {
    fn is_terminal(&self) -> bool {
        false
    }
}

impl StdoutStream for StderrTail {
    fn async_stream(&self) -> Box<dyn tokio::io::AsyncWrite + Send + Sync> {
        Box::new(self.clone())
    }
}

impl tokio::io::AsyncWrite for StderrTail {
    fn poll_write(
        self: Pin<&mut Self>,
        _: &mut std::task::Context<'_>,
        data: &[u8],
    ) -> std::task::Poll<std::io::Result<usize>> {
        let mut buf = self.0.lock().unwrap();
        buf.extend(data);
        let excess = buf.len().saturating_sub(STDERR_TAIL);
        buf.drain(..excess);
        std::task::Poll::Ready(Ok(data.len()))
    }

    fn poll_flush(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }

    fn poll_shutdown(self: Pin<&mut Self>, _: &mut std::task::Context<'_>) -> std::task::Poll<std::io::Result<()>> {
        std::task::Poll::Ready(Ok(()))
    }
}

/// What a guest wrote to stderr before failing (a Rust panic message), on one
/// line and bounded, without the runtime's backtrace hint.
fn guest_said(stderr: &str) -> String {
    const MAX: usize = 500;
    let text = stderr
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !l.starts_with("note: run with `RUST_BACKTRACE"))
        .collect::<Vec<_>>()
        .join(" ");
    match text.char_indices().rev().nth(MAX - 1) {
        Some((i, _)) => format!("…{}", &text[i..]),
        None => text,
    }
}

/// Most table elements a plugin may hold; tables are small in practice.
const MAX_TABLE_ELEMENTS: usize = 100_000;

/// A plugin kind's bindings, as the pool needs them.
pub trait World: Send + Sync + 'static {
    /// The kind, as its exported interface is named (`router`).
    const KIND: &'static str;
    type Pre: Send + Sync + 'static;
    type Bindings: Send + Sync + 'static;

    fn pre(instance_pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre>;
    fn instantiate<'a>(pre: &'a Self::Pre, store: &'a mut Store<PluginState>) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>>;
    fn init<'a>(
        bindings: &'a Self::Bindings,
        store: &'a mut Store<PluginState>,
        config: &'a str,
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), String>>>;
    fn health<'a>(bindings: &'a Self::Bindings, store: &'a mut Store<PluginState>) -> BoxFuture<'a, wasmtime::Result<Result<(), String>>>;
}

/// The [`World`] of one plugin kind from its generated bindings:
/// `plugin_world!(RouterWorld, "router", bindings::RouterPlugin, bindings::RouterPluginPre, torii_plugin_router)`.
macro_rules! plugin_world {
    ($world:ident, $kind:literal, $plugin:path, $pre:ident :: $pre_ty:ident, $interface:ident) => {
        pub struct $world;

        impl $crate::plugin::instance::World for $world {
            const KIND: &'static str = $kind;
            type Pre = $pre::$pre_ty<$crate::plugin::instance::PluginState>;
            type Bindings = $plugin;

            fn pre(
                instance_pre: ::wasmtime::component::InstancePre<$crate::plugin::instance::PluginState>,
            ) -> ::wasmtime::Result<Self::Pre> {
                $pre::$pre_ty::new(instance_pre)
            }

            fn instantiate<'a>(
                pre: &'a Self::Pre,
                store: &'a mut ::wasmtime::Store<$crate::plugin::instance::PluginState>,
            ) -> $crate::plugin::instance::BoxFuture<'a, ::wasmtime::Result<Self::Bindings>> {
                Box::pin(pre.instantiate_async(store))
            }

            fn init<'a>(
                bindings: &'a Self::Bindings,
                store: &'a mut ::wasmtime::Store<$crate::plugin::instance::PluginState>,
                config: &'a str,
            ) -> $crate::plugin::instance::BoxFuture<'a, ::wasmtime::Result<Result<(), String>>> {
                Box::pin(bindings.$interface().call_init(store, config))
            }

            fn health<'a>(
                bindings: &'a Self::Bindings,
                store: &'a mut ::wasmtime::Store<$crate::plugin::instance::PluginState>,
            ) -> $crate::plugin::instance::BoxFuture<'a, ::wasmtime::Result<Result<(), String>>> {
                Box::pin(bindings.$interface().call_health(store))
            }
        }
    };
}
pub(crate) use plugin_world;

struct Ready<W: World> {
    store: Store<PluginState>,
    bindings: W::Bindings,
}

/// One loaded component of a plugin: its pre-linked code, where it came
/// from and its idle instances. A swap installs a new one; calls in flight
/// finish on the one they took.
struct Loaded<W: World> {
    pre: W::Pre,
    source: String,
    digest: String,
    idle: Mutex<Vec<Ready<W>>>,
}

impl<W: World> Loaded<W> {
    /// Keeps `ready` warm for the next call, unless enough are, or it holds
    /// more memory than [`KEEP_WARM_MEMORY`] (then dropping it gives the
    /// memory back).
    fn keep(&self, ready: Ready<W>) {
        if ready.store.data().limits.held > KEEP_WARM_MEMORY {
            return;
        }
        let mut idle = self.idle.lock().unwrap();
        if idle.len() < MAX_IDLE {
            idle.push(ready);
        }
    }
}

/// What a plugin has done since it was loaded (swaps keep counting).
#[derive(Default)]
struct Stats {
    calls: std::sync::atomic::AtomicU64,
    errors: std::sync::atomic::AtomicU64,
    last_error: Mutex<String>,
}

/// A plugin as the admin API shows it.
#[derive(Debug, Clone, serde::Serialize)]
pub struct PluginStatus {
    pub name: String,
    pub kind: &'static str,
    /// `builtin:<name>`, the file it was read from, or `upload` after a swap.
    pub source: String,
    /// The `torii:plugin` version it speaks (a component of another is refused).
    pub contract: &'static str,
    /// SHA-256 of the component.
    pub digest: String,
    pub grants: Vec<&'static str>,
    pub calls: u64,
    pub errors: u64,
    #[serde(rename = "lastError")]
    pub last_error: String,
    /// Instances kept ready for the next call, and the linear memory they hold.
    #[serde(rename = "warmInstances")]
    pub warm_instances: usize,
    #[serde(rename = "warmMemoryBytes")]
    pub warm_memory_bytes: usize,
}

/// What the admin API does with any plugin, whatever its kind.
pub trait PluginAdmin: Send + Sync {
    fn status(&self) -> PluginStatus;
    fn health(&self) -> BoxFuture<'_, Result<(), String>>;
    fn swap<'a>(&'a self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), PluginError>>;
}

impl<W: World> PluginAdmin for PluginPool<W> {
    fn status(&self) -> PluginStatus {
        PluginPool::status(self)
    }

    fn health(&self) -> BoxFuture<'_, Result<(), String>> {
        Box::pin(PluginPool::health(self))
    }

    fn swap<'a>(&'a self, bytes: &'a [u8]) -> BoxFuture<'a, Result<(), PluginError>> {
        Box::pin(PluginPool::swap(self, bytes))
    }
}

/// One configured plugin: its loaded component, swappable, and what
/// every instance of it shares.
pub struct PluginPool<W: World> {
    engine: wasmtime::Engine,
    ticker: EpochTicker,
    cache_dir: std::path::PathBuf,
    host: Arc<HostCtx>,
    config_json: String,
    limits: Limits,
    current: std::sync::RwLock<Arc<Loaded<W>>>,
    stats: Stats,
}

impl<W: World> PluginPool<W> {
    /// Links `component` against the capabilities and WASI, checks it exports
    /// the kind's world, and starts one instance to prove `init` accepts the config.
    pub async fn new(
        engine: &PluginEngine,
        component: &Component,
        host: HostCtx,
        config_json: String,
        limits: Limits,
        source: String,
        digest: String,
    ) -> Result<Self, PluginError> {
        let host = Arc::new(host);
        let loaded = Self::load(engine.engine(), &host, component, source, digest)?;
        let pool = PluginPool {
            engine: engine.engine().clone(),
            ticker: engine.ticker().clone(),
            cache_dir: engine.cache_dir().to_path_buf(),
            host,
            config_json,
            limits,
            current: std::sync::RwLock::new(Arc::new(loaded)),
            stats: Stats::default(),
        };
        let current = pool.loaded();
        let first = pool.instantiate(&current).await?;
        current.keep(first);
        Ok(pool)
    }

    /// `component` checked (contract version, kind) and linked.
    fn load(engine: &wasmtime::Engine, host: &HostCtx, component: &Component, source: String, digest: String) -> Result<Loaded<W>, PluginError> {
        let name = host.name.clone();
        let load = |e: wasmtime::Error| PluginError::Load { plugin: name.clone(), message: format!("{e:#}") };
        if let Some(built) = super::foreign_contract(engine, component) {
            return Err(PluginError::Contract { plugin: name, built });
        }
        if let Some((component, export)) = super::other_kind(engine, component, W::KIND) {
            return Err(PluginError::Kind { plugin: name, entry: W::KIND.into(), component, export });
        }
        // Its imports against its kind's world (refused) and its grants (a
        // call to one not granted is denied when it happens: said now).
        let kind = crate::config::PluginKind::named(W::KIND).expect("every world is a kind");
        for capability in super::imported_capabilities(engine, component) {
            if !kind.usable().contains(&capability) {
                return Err(PluginError::Load {
                    plugin: name,
                    message: format!("it imports capability {:?}, which a {} plugin cannot use", capability.name(), W::KIND),
                });
            }
            if !host.grants.contains(&capability) {
                tracing::warn!(plugin = %name, capability = capability.name(), "the plugin imports a capability its entry does not grant: its calls to it will be denied");
            }
        }
        let mut linker = Linker::<PluginState>::new(engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(load)?;
        // Outbound HTTP is linked for every plugin; a request of one not
        // granted `http` fails with an error naming the grant.
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(load)?;
        capabilities::add_to_linker(&mut linker).map_err(load)?;
        let instance_pre = linker.instantiate_pre(component).map_err(load)?;
        let pre = W::pre(instance_pre).map_err(load)?;
        Ok(Loaded { pre, source, digest, idle: Mutex::new(Vec::new()) })
    }

    /// Replaces the plugin's component with `bytes`, once they load and an
    /// instance of them accepts the config; until then (and on any failure)
    /// the current one serves. Calls in flight finish on the one they took.
    pub async fn swap(&self, bytes: &[u8]) -> Result<(), PluginError> {
        let name = self.host.name.clone();
        let component = crate::plugin::engine::cached_component(&self.engine, &self.cache_dir, bytes)
            .map_err(|e| PluginError::Load { plugin: name.clone(), message: format!("not a valid component: {e:#}") })?;
        let digest = crate::blobs::Blobs::digest(bytes);
        let loaded = Self::load(&self.engine, &self.host, &component, "upload".into(), digest)?;
        let first = self.instantiate(&loaded).await?;
        loaded.keep(first);
        *self.current.write().unwrap() = Arc::new(loaded);
        tracing::info!(plugin = %name, "plugin swapped");
        Ok(())
    }

    fn loaded(&self) -> Arc<Loaded<W>> {
        self.current.read().unwrap().clone()
    }

    /// What the admin API shows of it.
    pub fn status(&self) -> PluginStatus {
        use std::sync::atomic::Ordering::Relaxed;
        let loaded = self.loaded();
        let (warm_instances, warm_memory_bytes) = {
            let idle = loaded.idle.lock().unwrap();
            (idle.len(), idle.iter().map(|r| r.store.data().limits.held).sum())
        };
        PluginStatus {
            name: self.host.name.clone(),
            kind: W::KIND,
            source: loaded.source.clone(),
            contract: super::CONTRACT_VERSION,
            digest: loaded.digest.clone(),
            grants: self.host.grants.iter().map(|g| g.name()).collect(),
            calls: self.stats.calls.load(Relaxed),
            errors: self.stats.errors.load(Relaxed),
            last_error: self.stats.last_error.lock().unwrap().clone(),
            warm_instances,
            warm_memory_bytes,
        }
    }

    /// The plugin's own liveness probe (`health`).
    pub async fn health(&self) -> Result<(), String> {
        match self.call(|b, s| W::health(b, s)).await {
            Ok(answer) => answer,
            Err(e) => Err(e.to_string()),
        }
    }

    pub fn name(&self) -> &str {
        &self.host.name
    }

    /// The entry's outbound HTTP rule and limits (granted `http`), for
    /// requests the host makes on the plugin's behalf (a proxied call).
    pub fn outbound(&self) -> Option<Arc<crate::outbound::Outbound>> {
        self.host.outbound.clone()
    }

    fn deadline_ticks(&self) -> u64 {
        (self.limits.timeout.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64
    }

    async fn instantiate(&self, loaded: &Loaded<W>) -> Result<Ready<W>, PluginError> {
        let _running = self.ticker.running();
        let stderr = StderrTail::default();
        let state = PluginState {
            wasi: WasiCtxBuilder::new().stderr(stderr.clone()).build(),
            table: ResourceTable::new(),
            limits: MemoryCap::new(self.limits.memory_bytes, MAX_TABLE_ELEMENTS),
            stderr,
            http: WasiHttpCtx::new(),
            http_hooks: GuestHttp { guest: Guest::Plugin(Arc::from(self.host.name.as_str())), outbound: self.host.outbound.clone() },
            host: self.host.clone(),
        };
        let mut store = Store::new(&self.engine, state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        store.set_epoch_deadline(self.deadline_ticks());
        let run = async {
            let bindings = W::instantiate(&loaded.pre, &mut store).await?;
            let init = W::init(&bindings, &mut store, &self.config_json).await?;
            Ok::<_, wasmtime::Error>((bindings, init))
        };
        match tokio::time::timeout(self.limits.timeout + Duration::from_secs(1), run).await {
            Err(_) => Err(self.timeout()),
            Ok(Err(e)) => Err(self.classify(e, &store)),
            Ok(Ok((_, Err(message)))) => Err(PluginError::Init { plugin: self.host.name.clone(), message }),
            Ok(Ok((bindings, Ok(())))) => Ok(Ready { store, bindings }),
        }
    }

    /// Runs `f` on a ready instance under the plugin's limits.
    pub async fn call<R, F>(&self, f: F) -> Result<R, PluginError>
    where
        R: Send,
        F: for<'a> FnOnce(&'a W::Bindings, &'a mut Store<PluginState>) -> BoxFuture<'a, wasmtime::Result<R>> + Send,
    {
        use std::sync::atomic::Ordering::Relaxed;
        let _running = self.ticker.running();
        self.stats.calls.fetch_add(1, Relaxed);
        let loaded = self.loaded();
        let taken = loaded.idle.lock().unwrap().pop();
        let mut ready = match taken {
            Some(ready) => ready,
            None => match self.instantiate(&loaded).await {
                Ok(ready) => ready,
                Err(e) => return Err(self.failed(e)),
            },
        };
        ready.store.set_epoch_deadline(self.deadline_ticks());
        ready.store.data().stderr.clear();
        // The epoch deadline cuts a spinning guest; this outer timeout also
        // covers a guest parked in a slow host call.
        let outcome = {
            let Ready { store, bindings } = &mut ready;
            tokio::time::timeout(self.limits.timeout + Duration::from_secs(1), f(bindings, store)).await
        };
        match outcome {
            Err(_) => Err(self.failed(self.timeout())),
            Ok(Err(e)) => Err(self.failed(self.classify(e, &ready.store))),
            Ok(Ok(value)) => {
                loaded.keep(ready);
                Ok(value)
            }
        }
    }

    /// Counts a failed call and keeps its error for the admin API.
    fn failed(&self, e: PluginError) -> PluginError {
        self.stats.errors.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
        *self.stats.last_error.lock().unwrap() = e.to_string();
        e
    }

    fn timeout(&self) -> PluginError {
        PluginError::Timeout { plugin: self.host.name.clone(), ms: self.limits.timeout.as_millis() as u64 }
    }

    /// Names the cause of a failed call. The instance is not reused after this.
    fn classify(&self, e: wasmtime::Error, store: &Store<PluginState>) -> PluginError {
        let plugin = self.host.name.clone();
        if let Some(denied) = e.downcast_ref::<Denied>() {
            return PluginError::CapabilityDenied { plugin, capability: denied.capability.to_string() };
        }
        if let Some(trap) = e.downcast_ref::<Trap>()
            && *trap == Trap::Interrupt
        {
            return self.timeout();
        }
        if e.downcast_ref::<MemoryLimit>().is_some() {
            return PluginError::OutOfMemory { plugin, mb: (self.limits.memory_bytes >> 20) as u64 };
        }
        let panic = guest_said(&store.data().stderr.text());
        // The root cause, not wasmtime's "error while executing at wasm backtrace" banner.
        let cause = match e.downcast_ref::<Trap>() {
            Some(trap) => trap.to_string(),
            None => e.chain().last().map(|c| c.to_string()).unwrap_or_else(|| e.to_string()),
        };
        let message = if panic.is_empty() { cause } else { format!("{cause}; guest said: {panic}") };
        PluginError::Trap { plugin, message }
    }
}
