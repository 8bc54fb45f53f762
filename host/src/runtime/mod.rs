//! The app runtime: runs app versions that are wasi:http components.
//!
//! Its own wasmtime engine (separate from the plugin engine, so apps never
//! compete with plugins for pool slots), with the pooling allocator and a
//! fresh instance per request from an `InstancePre` (`ProxyPre`). A request
//! gets the app's env vars, a memory cap (its plan's memory, bounded by the
//! runtime's slot size) and a CPU deadline counted in epoch ticks (yielding
//! to other requests at each tick, so one computing guest never holds a data
//! plane thread for more than a tick at a time). Apps get no
//! capability beyond wasi:http: no preopened directories, no sockets, and
//! outgoing HTTP requests are refused.
//!
//! Code comes in two tiers, each with its own engine: a large version (see
//! `catalog::BASELINE_FROM_BYTES`) seen for the first time is compiled by
//! Winch (baseline code, in a fraction of the time: the 18 MB CPython
//! component of `cargo bench --bench apps` serves under a second after its
//! deploy began, where Cranelift alone took eight),
//! and the catalog has Cranelift optimise it in the background, then swaps
//! the optimised code in for the requests that follow. Only optimised code is
//! cached on disk by content hash (shared with the plugin engine's cache
//! format), so loading bytes seen before costs a file read.

mod budget;
pub mod catalog;
mod lanes;

use crate::plugin::engine::{MemoryCap, MemoryLimit, cached_component};
use crate::plugin::ticker::{EPOCH_TICK, EpochTicker, Running};
use budget::{BudgetSpent, MemoryBudget, Taken};
use lanes::{CpuLanes, Held};
use bytes::Bytes;
use http_body_util::BodyExt;
use http_body_util::combinators::UnsyncBoxBody;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::sync::atomic::Ordering;
use std::time::Duration;
use wasmtime::component::{Linker, ResourceTable};
use wasmtime::{Config, Engine, InstanceAllocationStrategy, PoolingAllocationConfig, ResourceLimiter, Store, Strategy, Trap, UpdateDeadline};
use wasmtime_wasi::p2::pipe::MemoryOutputPipe;
use wasmtime_wasi::{WasiCtx, WasiCtxView, WasiView};
use wasmtime_wasi_http::p2::bindings::ProxyPre;
use wasmtime_wasi_http::p2::bindings::http::types::Scheme;
use wasmtime_wasi_http::p2::body::HyperOutgoingBody;
use crate::outbound::{Guest, GuestHttp};
use wasmtime_wasi_http::{WasiHttpCtx, WasiHttpCtxView, WasiHttpView};

/// How the runtime is sized.
#[derive(Debug, Clone)]
pub struct RuntimeLimits {
    /// The largest memory any app instance may use (the pool's slot size).
    pub max_memory_bytes: usize,
    /// App instances alive at once, across all apps.
    pub instances: u32,
    /// CPU time a request may run before it is cut.
    pub cpu_deadline: Duration,
    /// Time a request's instance may live, answering and streaming, whatever
    /// it does (sleeping, or writing to a client that does not read).
    pub wall_deadline: Duration,
    /// Time a streamed body may go without the client taking any of it.
    pub body_idle: Duration,
    /// What the linear memories of all instances may add up to.
    pub memory_budget_bytes: usize,
    /// Requests computing at once (see `lanes`).
    pub cpu_lanes: usize,
}

impl RuntimeLimits {
    /// Limits for tests and tools: `max_memory_bytes`, `instances` and the
    /// CPU deadline given, generous others.
    pub fn new(max_memory_bytes: usize, instances: u32, cpu_deadline: Duration) -> RuntimeLimits {
        RuntimeLimits {
            max_memory_bytes,
            instances,
            cpu_deadline,
            wall_deadline: Duration::from_secs(60),
            body_idle: Duration::from_secs(15),
            memory_budget_bytes: usize::MAX,
            cpu_lanes: 1,
        }
    }
}

/// Why bytes cannot be an app version.
#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("the file is not WebAssembly")]
    NotWasm,
    #[error(
        "the file is a core WebAssembly module, not a component: build it for the wasm32-wasip2 target (or wrap it with `wasm-tools component new`)"
    )]
    CoreModule,
    #[error("the file is not a valid WebAssembly component: {0}")]
    Invalid(String),
    #[error("the component does not export wasi:http/incoming-handler (the wasi:http proxy world): {0}")]
    NotHttp(String),
    #[error("the component imports something the wasm platform does not grant: {0}")]
    Import(String),
    #[error("cannot cache compiled code: {0}")]
    Cache(String),
}

/// A loaded app version: compiled, linked, ready to instantiate.
pub struct AppCode {
    pre: ProxyPre<AppState>,
    tier: Tier,
}

/// How a version's code was compiled.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Tier {
    /// By Winch: compiled fast, runs slower; for the seconds until the
    /// optimised code is ready.
    Baseline,
    /// By Cranelift: what a version runs on for good (and what is cached).
    Optimized,
}

impl AppCode {
    pub fn tier(&self) -> Tier {
        self.tier
    }
}

/// Receives what a request's instance wrote to stdout and stderr, once it ends.
pub type OutputSink = Arc<dyn Fn(Bytes, Bytes) + Send + Sync>;

/// What one request runs with.
#[derive(Clone, Default)]
pub struct Invocation {
    pub env: Vec<(String, String)>,
    /// The plan's memory; 0 or more than the slot size means the slot size.
    pub memory_bytes: usize,
    /// Where the guest's stdout/stderr go; discarded without one.
    pub output: Option<OutputSink>,
    /// The app, for CPU fairness (requests without one share a lane queue).
    pub app: Option<Arc<str>>,
    /// Held until the instance ends, answered or not (the request's unit).
    pub hold: Option<Arc<dyn std::any::Any + Send + Sync>>,
    /// What the version's outbound HTTP may reach; nothing without one.
    pub outbound: Option<Arc<crate::outbound::Outbound>>,
}

/// What a request may write to stdout (and again to stderr); more fails the
/// guest's write.
const MAX_OUTPUT: usize = 1 << 20;

/// Bytes of each instance's memory reset in place (not decommitted) after use.
const KEEP_RESIDENT: usize = 8 << 20;

pub type ResponseBody = UnsyncBoxBody<Bytes, wasmtime_wasi_http::Error>;

pub struct AppRuntime {
    optimizing: Compiler,
    baseline: Compiler,
    cache_dir: PathBuf,
    limits: RuntimeLimits,
    ticker: EpochTicker,
    lanes: Arc<CpuLanes>,
    budget: Arc<MemoryBudget>,
}

/// The baseline tier's memory reservation and guard: a 32-bit memory's
/// whole index space, and room for the offsets of nearly every access.
const BASELINE_RESERVATION: u64 = 1 << 32;
const BASELINE_GUARD: u64 = 32 << 20;

/// One tier's engine (with its instance pool) and linker.
struct Compiler {
    engine: Engine,
    linker: Linker<AppState>,
}

impl Compiler {
    fn new(strategy: Strategy, instances: u32, max_memory_bytes: usize) -> anyhow::Result<Compiler> {
        let mut pool = PoolingAllocationConfig::default();
        pool.total_component_instances(instances)
            .total_core_instances(instances * 4)
            .total_memories(instances * 2)
            .total_tables(instances * 2)
            .max_memory_size(max_memory_bytes)
            // A request instance lives for microseconds: reset the pages it
            // touched with memset instead of madvise (whose TLB shootdowns
            // across cores dominated a hello request), and batch what must
            // still be decommitted.
            .linear_memory_keep_resident(KEEP_RESIDENT)
            .table_keep_resident(KEEP_RESIDENT / 16)
            .decommit_batch_size(32)
            .pagemap_scan(wasmtime::Enabled::Auto);
        let mut config = Config::new();
        config
            .strategy(strategy)
            // Baseline code lives for seconds: it skips the map from native
            // to wasm offsets (a trap's backtrace names functions, not
            // offsets), a tenth of its compile.
            .generate_address_map(strategy != Strategy::Winch)
            .epoch_interruption(true)
            .memory_reservation(max_memory_bytes as u64)
            .memory_guard_size(0)
            .memory_reservation_for_growth(0);
        if strategy == Strategy::Winch {
            // Baseline code is compiled while a deploy waits. A 32-bit
            // memory in a 4 GiB reservation with a guard needs no bounds
            // check on most accesses: Winch emits (and compiles) far less
            // code, 15% less time for CPython. The baseline pool is small
            // (a quarter of the instances), so its reservations stay
            // address space only (~2 TiB at the default 1,000 instances;
            // nothing resident). The Cranelift trampolines Winch asks for
            // (one per function a table or export lets escape: thousands
            // in CPython) are not optimised and take the single-pass
            // register allocator: 10% less.
            config
                .memory_reservation(BASELINE_RESERVATION.max(max_memory_bytes as u64))
                .memory_guard_size(BASELINE_GUARD)
                .cranelift_opt_level(wasmtime::OptLevel::None)
                .cranelift_regalloc_algorithm(wasmtime::RegallocAlgorithm::SinglePass);
        }
        config.allocation_strategy(InstanceAllocationStrategy::Pooling(pool));
        let engine = Engine::new(&config).map_err(anyhow::Error::from)?;
        let mut linker = Linker::new(&engine);
        wasmtime_wasi::p2::add_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        wasmtime_wasi_http::p2::add_only_http_to_linker_async(&mut linker).map_err(anyhow::Error::from)?;
        Ok(Compiler { engine, linker })
    }

    fn link(&self, component: &wasmtime::component::Component, tier: Tier) -> Result<AppCode, LoadError> {
        let pre = self.linker.instantiate_pre(component).map_err(|e| LoadError::Import(format!("{e:#}")))?;
        let pre = ProxyPre::new(pre).map_err(|e| LoadError::NotHttp(format!("{e:#}")))?;
        Ok(AppCode { pre, tier })
    }
}

/// Refuses what is not a component by its first bytes.
fn check_magic(bytes: &[u8]) -> Result<(), LoadError> {
    match bytes.get(..8) {
        Some([0, b'a', b's', b'm', 1, 0, 0, 0]) => Err(LoadError::CoreModule),
        Some([0, b'a', b's', b'm', _, _, 1, 0]) => Ok(()),
        _ => Err(LoadError::NotWasm),
    }
}

impl AppRuntime {
    pub fn new(limits: RuntimeLimits, cache_dir: &Path) -> anyhow::Result<AppRuntime> {
        let optimizing = Compiler::new(Strategy::Cranelift, limits.instances, limits.max_memory_bytes)?;
        // Baseline code serves only while a new version is optimised: a
        // quarter of the instances may run on it at once (the memory budget
        // is one for both).
        let baseline = Compiler::new(Strategy::Winch, (limits.instances / 4).max(1), limits.max_memory_bytes)?;
        std::fs::create_dir_all(cache_dir)?;
        let ticker = EpochTicker::spawn(vec![optimizing.engine.clone(), baseline.engine.clone()], "app-epoch")?;
        // A turn lasts up to two ticks: a computing guest gives its lane
        // back at its next tick, one waiting on I/O when the lease ends.
        let lanes = Arc::new(CpuLanes::new(limits.cpu_lanes, EPOCH_TICK * 2));
        let budget = MemoryBudget::new(limits.memory_budget_bytes);
        Ok(AppRuntime { optimizing, baseline, cache_dir: cache_dir.to_path_buf(), limits, ticker, lanes, budget })
    }

    /// Checks and compiles `bytes` to optimised code (or finds them compiled
    /// in the cache). Seconds of work for a large component.
    pub fn load(&self, bytes: &[u8]) -> Result<AppCode, LoadError> {
        check_magic(bytes)?;
        let component = cached_component(&self.optimizing.engine, &self.cache_dir, bytes).map_err(|e| {
            if e.downcast_ref::<std::io::Error>().is_some() {
                LoadError::Cache(e.to_string())
            } else {
                LoadError::Invalid(format!("{e:#}"))
            }
        })?;
        self.optimizing.link(&component, Tier::Optimized)
    }

    /// Checks and compiles `bytes` to baseline code, fast, to serve until
    /// `load` has optimised them. Bytes Winch cannot compile (a feature it
    /// lacks) go to `load` at once, which names what is wrong with them.
    pub fn load_baseline(&self, bytes: &[u8]) -> Result<AppCode, LoadError> {
        check_magic(bytes)?;
        match wasmtime::component::Component::new(&self.baseline.engine, bytes) {
            Ok(component) => self.baseline.link(&component, Tier::Baseline),
            Err(_) => self.load(bytes),
        }
    }

    /// The version compiled before from bytes with SHA-256 `digest`, straight
    /// from the compiled cache (a wake-up: no blob read, no hashing); `None`
    /// when the cache does not hold it.
    pub fn load_compiled(&self, digest: &str) -> Option<AppCode> {
        let component = crate::plugin::engine::compiled_component(&self.optimizing.engine, &self.cache_dir, digest)?;
        self.optimizing.link(&component, Tier::Optimized).ok()
    }

    /// Serves one request with a fresh instance of `code`. Failures of the app
    /// (trap, deadline, memory, no answer) become plain-text 5xx answers.
    pub async fn handle<B>(&self, code: &AppCode, invocation: Invocation, request: hyper::Request<B>) -> hyper::Response<ResponseBody>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        match self.run(code, invocation, request).await {
            Ok(response) => response,
            Err(failure) => failure.response(),
        }
    }

    async fn run<B>(&self, code: &AppCode, invocation: Invocation, request: hyper::Request<B>) -> Result<hyper::Response<ResponseBody>, Failure>
    where
        B: hyper::body::Body<Data = Bytes> + Send + 'static,
        B::Error: Into<wasmtime_wasi_http::Error>,
    {
        let memory = match invocation.memory_bytes {
            0 => self.limits.max_memory_bytes,
            n => n.min(self.limits.max_memory_bytes),
        };
        let mut wasi = WasiCtx::builder();
        wasi.envs(&invocation.env);
        let pipes = invocation.output.map(|sink| {
            let (stdout, stderr) = (MemoryOutputPipe::new(MAX_OUTPUT), MemoryOutputPipe::new(MAX_OUTPUT));
            wasi.stdout(stdout.clone()).stderr(stderr.clone());
            (sink, stdout, stderr)
        });
        let state = AppState {
            wasi: wasi.build(),
            http: WasiHttpCtx::new(),
            table: ResourceTable::new(),
            hooks: GuestHttp { guest: Guest::App(invocation.app.clone().unwrap_or_else(|| Arc::from(""))), outbound: invocation.outbound.clone() },
            limiter: AppLimiter {
                cap: MemoryCap::new(memory, MAX_TABLE_ELEMENTS),
                taken: Taken::new(self.budget.clone()),
            },
            _running: self.ticker.running(),
        };
        let mut store = Store::new(code.pre.engine(), state);
        store.limiter(|s| &mut s.limiter);
        // The guest yields to the other requests of its thread at every
        // epoch tick it runs through, and is cut after `cpu_deadline` of
        // them (time spent waiting to run again does not count). Past its
        // first tick it computes only in a lane (see `lanes`).
        let mut ticks_left = (self.limits.cpu_deadline.as_millis() / EPOCH_TICK.as_millis()).max(1) as u64;
        let (lanes, app, held) = (self.lanes.clone(), invocation.app.clone().unwrap_or_else(|| Arc::from("")), Arc::new(std::sync::Mutex::new(Held::default())));
        store.set_epoch_deadline(1);
        store.epoch_deadline_callback(move |_| {
            ticks_left -= 1;
            Ok(if ticks_left == 0 { UpdateDeadline::Interrupt } else { UpdateDeadline::YieldCustom(1, lanes.next_turn(&app, &held)) })
        });

        let (sender, receiver) = tokio::sync::oneshot::channel();
        let req = store.data_mut().http().new_incoming_request(Scheme::Http, request).map_err(Failure::host)?;
        let out = store.data_mut().http().new_response_outparam(sender).map_err(Failure::host)?;
        let pre = code.pre.clone();
        let hold = invocation.hold;
        let (cpu, wall) = (self.limits.cpu_deadline, self.limits.wall_deadline);
        let wall_deadline = tokio::time::Instant::now() + wall;
        let mut guest = Box::pin(async move {
            let run = async {
                let proxy = pre.instantiate_async(&mut store).await?;
                proxy.wasi_http_incoming_handler().call_handle(&mut store, req, out).await
            };
            // Past the wall deadline the instance is dropped where it stands.
            let result = match tokio::time::timeout_at(wall_deadline, run).await {
                Ok(result) => result,
                Err(_) => Err(wasmtime::Error::new(WallDeadline)),
            };
            if let Some((sink, stdout, stderr)) = pipes {
                let (out, mut err) = (stdout.contents(), stderr.contents());
                // The trap's detail (a wasm backtrace) is for the app's team,
                // in its log; the client gets a plain 500.
                if let Err(e) = &result
                    && Failure::of_limit(e, memory, cpu, wall).is_none()
                {
                    let mut with_trap = err.to_vec();
                    with_trap.extend_from_slice(format!("torii: the request failed in the app: {e:#}\n").as_bytes());
                    err = Bytes::from(with_trap);
                }
                if !out.is_empty() || !err.is_empty() {
                    sink(out, err);
                }
            }
            // The unit is free once the instance is gone, not before.
            drop(hold);
            result
        });
        let mut receiver = receiver;
        // The guest runs in this task until it ends (the usual case: a small
        // answer, no task spawned) or hands over the response head while it
        // goes on streaming its body; then it goes on in its own task, ended
        // if the client takes nothing of the body for `body_idle`.
        let (answer, finished) = tokio::select! {
            biased;
            result = &mut guest => (receiver.await, Some(result)),
            answer = &mut receiver => (answer, None),
        };
        let answered = answer.is_ok();
        let (progress, base) = (Arc::new(std::sync::atomic::AtomicU64::new(0)), std::time::Instant::now());
        let finished = match finished {
            Some(result) => Some(result),
            None if answered => {
                let (progress, idle) = (progress.clone(), self.limits.body_idle);
                tokio::spawn(async move {
                    tokio::select! {
                        _ = guest => {}
                        _ = body_idle(progress, base, idle) => {}
                    }
                });
                None
            }
            None => Some(guest.await),
        };
        match answer {
            Ok(Ok(response)) => Ok(response.map(|body: HyperOutgoingBody| BodyProgress { body, progress, base }.boxed_unsync())),
            Ok(Err(code)) => Err(Failure::App(format!("the app answered with an error: {code:?}"))),
            Err(_) => Err(match finished {
                Some(Ok(())) | None => Failure::NoAnswer,
                Some(Err(e)) => Failure::of_limit(&e, memory, cpu, wall)
                    // The detail went to the app's log (above): it names the
                    // app's code and is nobody else's business.
                    .unwrap_or_else(|| Failure::App("the app failed while handling the request (its log has the details)".into())),
            }),
        }
    }
}

impl Drop for AppRuntime {
    fn drop(&mut self) {
        self.ticker.stop();
    }
}

/// The instance outlived `[apps] wall_deadline_ms`.
#[derive(Debug, thiserror::Error)]
#[error("the request ran past its wall-clock deadline")]
struct WallDeadline;

/// Resolves once the client has taken nothing of a streamed body for `idle`
/// (`progress`: milliseconds after `base` when it last took a frame).
async fn body_idle(progress: Arc<std::sync::atomic::AtomicU64>, base: std::time::Instant, idle: Duration) {
    let idle_ms = idle.as_millis() as u64;
    loop {
        tokio::time::sleep(idle / 4).await;
        let last = progress.load(Ordering::Relaxed);
        if (base.elapsed().as_millis() as u64).saturating_sub(last) >= idle_ms {
            return;
        }
    }
}

/// A response body that notes when the client last took a frame of it.
struct BodyProgress<B> {
    body: B,
    progress: Arc<std::sync::atomic::AtomicU64>,
    base: std::time::Instant,
}

impl<B: hyper::body::Body + Unpin> hyper::body::Body for BodyProgress<B> {
    type Data = B::Data;
    type Error = B::Error;

    fn poll_frame(
        mut self: std::pin::Pin<&mut Self>,
        cx: &mut std::task::Context<'_>,
    ) -> std::task::Poll<Option<Result<hyper::body::Frame<Self::Data>, Self::Error>>> {
        let polled = std::pin::Pin::new(&mut self.body).poll_frame(cx);
        if let std::task::Poll::Ready(Some(Ok(_))) = &polled {
            let now = self.base.elapsed().as_millis() as u64;
            self.progress.store(now, Ordering::Relaxed);
        }
        polled
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> hyper::body::SizeHint {
        self.body.size_hint()
    }
}

/// An instance's memory cap, and its share of the runtime's memory budget.
struct AppLimiter {
    cap: MemoryCap,
    taken: Taken,
}

impl ResourceLimiter for AppLimiter {
    fn memory_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        if !self.cap.memory_growing(current, desired, maximum)? {
            return Ok(false);
        }
        if !self.taken.grow(current, desired) {
            return Err(wasmtime::Error::new(BudgetSpent));
        }
        Ok(true)
    }

    fn memory_grow_failed(&mut self, error: wasmtime::Error) -> wasmtime::Result<()> {
        self.cap.memory_grow_failed(error)
    }

    fn table_growing(&mut self, current: usize, desired: usize, maximum: Option<usize>) -> wasmtime::Result<bool> {
        self.cap.table_growing(current, desired, maximum)
    }
}

/// How a request failed on the app's side.
#[derive(Debug)]
enum Failure {
    Deadline(Duration),
    Wall(Duration),
    Budget,
    Memory(usize),
    NoAnswer,
    App(String),
    Host(String),
}

impl Failure {
    fn host(e: wasmtime::Error) -> Failure {
        Failure::Host(format!("{e:#}"))
    }

    /// The failure of a guest that hit one of its limits (CPU or wall
    /// deadline, memory cap, memory budget); `None` when the error is the
    /// app's own fault (a trap, a panic).
    fn of_limit(e: &wasmtime::Error, memory: usize, cpu: Duration, wall: Duration) -> Option<Failure> {
        if e.downcast_ref::<Trap>() == Some(&Trap::Interrupt) {
            Some(Failure::Deadline(cpu))
        } else if e.downcast_ref::<WallDeadline>().is_some() {
            Some(Failure::Wall(wall))
        } else if e.downcast_ref::<BudgetSpent>().is_some() {
            Some(Failure::Budget)
        } else if e.downcast_ref::<MemoryLimit>().is_some() {
            Some(Failure::Memory(memory))
        } else {
            None
        }
    }

    fn response(self) -> hyper::Response<ResponseBody> {
        let (status, text) = match self {
            Failure::Deadline(d) => (504, format!("the request ran past the app's CPU deadline of {} ms", d.as_millis())),
            Failure::Wall(d) => (504, format!("the request ran past the {} ms a request may take", d.as_millis())),
            Failure::Budget => (503, "torii is short of memory for apps right now: retry shortly".to_string()),
            Failure::Memory(bytes) => (500, format!("the request needed more than the app's memory limit of {} MiB", bytes >> 20)),
            Failure::NoAnswer => (502, "the app ended the request without answering".to_string()),
            Failure::App(text) => (500, text),
            Failure::Host(text) => (500, format!("torii could not run the request: {text}")),
        };
        plain_text(status, &text)
    }
}

/// A plain-text answer (`text` and a newline), as torii answers app traffic
/// it cannot hand to an app.
pub fn plain_text(status: u16, text: &str) -> hyper::Response<ResponseBody> {
    let body = http_body_util::Full::new(Bytes::from(format!("{text}\n"))).map_err(|never| match never {}).boxed_unsync();
    hyper::Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(body)
        .expect("static response parts")
}

struct AppState {
    wasi: WasiCtx,
    http: WasiHttpCtx,
    table: ResourceTable,
    hooks: GuestHttp,
    limiter: AppLimiter,
    /// The epoch clock ticks while the store lives.
    _running: Running,
}

impl WasiView for AppState {
    fn ctx(&mut self) -> WasiCtxView<'_> {
        WasiCtxView { ctx: &mut self.wasi, table: &mut self.table }
    }
}

impl WasiHttpView for AppState {
    fn http(&mut self) -> WasiHttpCtxView<'_> {
        WasiHttpCtxView { ctx: &mut self.http, table: &mut self.table, hooks: &mut self.hooks }
    }
}

/// Most table elements an app instance may hold.
const MAX_TABLE_ELEMENTS: usize = 1_000_000;

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::Empty;
    use std::sync::Mutex;

    fn runtime(dir: &Path) -> AppRuntime {
        let limits = RuntimeLimits::new(64 << 20, 16, Duration::from_millis(500));
        AppRuntime::new(limits, dir).unwrap()
    }

    fn get(path: &str) -> hyper::Request<Empty<Bytes>> {
        hyper::Request::get(path).header("host", "app.example").body(Empty::new()).unwrap()
    }

    async fn text(response: hyper::Response<ResponseBody>) -> (u16, String) {
        let status = response.status().as_u16();
        let body = response.into_body().collect().await.unwrap().to_bytes();
        (status, String::from_utf8_lossy(&body).into_owned())
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn serves_requests_with_the_apps_env() {
        let dir = tempfile::TempDir::new().unwrap();
        let rt = runtime(dir.path());
        let hello = rt.load(&std::fs::read(env!("TORII_GUEST_APP_HELLO")).unwrap()).unwrap();
        let output: Arc<Mutex<Vec<u8>>> = Arc::default();
        let seen = output.clone();
        let sink: OutputSink = Arc::new(move |out, _err| seen.lock().unwrap().extend_from_slice(&out));
        let quiet = Invocation { env: vec![("TSURU_APPNAME".into(), "web".into())], output: Some(sink), ..Invocation::default() };
        assert_eq!(text(rt.handle(&hello, quiet.clone(), get("/quiet")).await).await, (200, "hello from web at /quiet\n".into()));
        let mut env = quiet.clone();
        env.env.push(("ACCESS_LOG".into(), "1".into()));
        assert_eq!(text(rt.handle(&hello, env.clone(), get("/x?y=1")).await).await, (200, "hello from web at /x?y=1\n".into()));
        // With ACCESS_LOG the guest logs each request on stdout; the sink
        // gets it once the instance ends (and got nothing from the quiet one).
        let deadline = std::time::Instant::now() + Duration::from_secs(5);
        while output.lock().unwrap().is_empty() && std::time::Instant::now() < deadline {
            tokio::time::sleep(Duration::from_millis(5)).await;
        }
        assert_eq!(String::from_utf8_lossy(&output.lock().unwrap()), "served /x?y=1\n");
        let echo = rt.load(&std::fs::read(env!("TORII_GUEST_APP_ECHO_ENV")).unwrap()).unwrap();
        assert_eq!(text(rt.handle(&echo, env, get("/?name=TSURU_APPNAME")).await).await, (200, "web\n".into()));
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn a_request_past_its_limits_fails_alone() {
        let dir = tempfile::TempDir::new().unwrap();
        let rt = runtime(dir.path());
        let burn = rt.load(&std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap()).unwrap();
        let started = std::time::Instant::now();
        let (status, body) = text(rt.handle(&burn, Invocation::default(), get("/burn")).await).await;
        assert_eq!((status, body.as_str()), (504, "the request ran past the app's CPU deadline of 500 ms\n"));
        assert!(started.elapsed() < Duration::from_secs(3), "cut after {:?}", started.elapsed());
        assert_eq!(text(rt.handle(&burn, Invocation::default(), get("/")).await).await, (200, "awake\n".into()));

        let hog = rt.load(&std::fs::read(env!("TORII_GUEST_APP_HOG")).unwrap()).unwrap();
        let small = Invocation { memory_bytes: 16 << 20, ..Invocation::default() };
        assert_eq!(text(rt.handle(&hog, small.clone(), get("/?mb=4")).await).await, (200, "held 4 MiB\n".into()));
        let (status, body) = text(rt.handle(&hog, small.clone(), get("/?mb=32")).await).await;
        assert_eq!((status, body.as_str()), (500, "the request needed more than the app's memory limit of 16 MiB\n"));
        assert_eq!(text(rt.handle(&hog, small, get("/?mb=4")).await).await, (200, "held 4 MiB\n".into()));
    }

    /// Winch's code answers as Cranelift's does, within the same limits.
    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn baseline_code_serves_within_the_same_limits() {
        let dir = tempfile::TempDir::new().unwrap();
        let rt = runtime(dir.path());
        let load = |env: &str| rt.load_baseline(&std::fs::read(env).unwrap()).unwrap();
        let (hello, burn, hog) = (load(env!("TORII_GUEST_APP_HELLO")), load(env!("TORII_GUEST_APP_BURN")), load(env!("TORII_GUEST_APP_HOG")));
        assert!([&hello, &burn, &hog].iter().all(|code| code.tier() == Tier::Baseline));
        let env = Invocation { env: vec![("TSURU_APPNAME".into(), "web".into())], ..Invocation::default() };
        assert_eq!(text(rt.handle(&hello, env, get("/b")).await).await, (200, "hello from web at /b\n".into()));
        let (status, body) = text(rt.handle(&burn, Invocation::default(), get("/burn")).await).await;
        assert_eq!((status, body.as_str()), (504, "the request ran past the app's CPU deadline of 500 ms\n"));
        let small = Invocation { memory_bytes: 16 << 20, ..Invocation::default() };
        assert_eq!(text(rt.handle(&hog, small.clone(), get("/?mb=4")).await).await, (200, "held 4 MiB\n".into()));
        let (status, body) = text(rt.handle(&hog, small, get("/?mb=32")).await).await;
        assert_eq!((status, body.as_str()), (500, "the request needed more than the app's memory limit of 16 MiB\n"));
        // Nothing of baseline code is cached: the cache holds optimised code only.
        assert_eq!(std::fs::read_dir(dir.path()).unwrap().count(), 0);
        assert!(matches!(rt.load_baseline(b"garbage bytes"), Err(LoadError::NotWasm)));
    }

    #[tokio::test(flavor = "current_thread")]
    async fn a_computing_request_yields_to_the_others_on_its_thread() {
        let dir = tempfile::TempDir::new().unwrap();
        let rt = runtime(dir.path());
        let burn = rt.load(&std::fs::read(env!("TORII_GUEST_APP_BURN")).unwrap()).unwrap();
        let hello = rt.load(&std::fs::read(env!("TORII_GUEST_APP_HELLO")).unwrap()).unwrap();
        let burning = rt.handle(&burn, Invocation::default(), get("/burn"));
        let started = std::time::Instant::now();
        let quick = async {
            let answer = text(rt.handle(&hello, Invocation::default(), get("/")).await).await;
            (answer, started.elapsed())
        };
        // One thread: the quick request runs while the burning one yields at
        // its first tick, long before the burning one is cut at 500 ms.
        let ((status, _), ((hello_status, _), took)) = tokio::join!(async { text(burning.await).await }, quick);
        assert_eq!((status, hello_status), (504, 200));
        assert!(took < Duration::from_millis(250), "the quick request waited {took:?} for the burning one");
    }

    #[tokio::test(flavor = "multi_thread", worker_threads = 2)]
    async fn refuses_what_is_not_a_wasi_http_component() {
        let dir = tempfile::TempDir::new().unwrap();
        let rt = runtime(dir.path());
        assert!(matches!(rt.load(b"garbage bytes"), Err(LoadError::NotWasm)));
        // The smallest valid core module.
        assert!(matches!(rt.load(b"\0asm\x01\0\0\0"), Err(LoadError::CoreModule)));
        let mut truncated = std::fs::read(env!("TORII_GUEST_APP_HELLO")).unwrap();
        truncated.truncate(truncated.len() / 2);
        assert!(matches!(rt.load(&truncated), Err(LoadError::Invalid(_))));
        // A torii plugin: a component, but of another world.
        let plugin = std::fs::read(env!("TORII_GUEST_AUTH_NATIVE")).unwrap();
        match rt.load(&plugin) {
            Err(LoadError::Import(e)) | Err(LoadError::NotHttp(e)) => assert!(!e.is_empty()),
            other => panic!("loaded a plugin as an app: {:?}", other.err()),
        }
    }
}
