//! The `provisioner` plugin kind: bindings and the typed API the host uses.
//!
//! The host owns an app's desired state and hands it over after each change;
//! the plugin makes it so through its capabilities (`app-runtime` for WASM
//! apps) and reports units.

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::PluginError;
use super::instance::{BoxFuture, PluginPool, PluginState, World};
use crate::store::{AppView, Store as Db};

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "torii:plugin/provisioner-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "torii:plugin/log": crate::plugin::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv": crate::plugin::capabilities::bindings::torii::plugin::kv,
            "torii:plugin/app-runtime": crate::plugin::capabilities::bindings::torii::plugin::app_runtime,
            "torii:plugin/containers": crate::plugin::capabilities::bindings::torii::plugin::containers,
        },
    });
}

pub use bindings::exports::torii::plugin::provisioner::{AppState, AppVersion, EnvVar, Process, Repair, Unit};

/// Why a provisioner call did not succeed: the plugin failed, or it
/// answered with a refusal (shown to the user as it is).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{0}")]
    Refused(String),
}

pub struct ProvisionerWorld;

impl World for ProvisionerWorld {
    type Pre = bindings::ProvisionerPluginPre<PluginState>;
    type Bindings = bindings::ProvisionerPlugin;

    fn pre(instance_pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
        bindings::ProvisionerPluginPre::new(instance_pre)
    }

    fn instantiate<'a>(pre: &'a Self::Pre, store: &'a mut Store<PluginState>) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>> {
        Box::pin(pre.instantiate_async(store))
    }

    fn init<'a>(
        bindings: &'a Self::Bindings,
        store: &'a mut Store<PluginState>,
        config: &'a str,
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), String>>> {
        Box::pin(bindings.torii_plugin_lifecycle().call_init(store, config))
    }
}

/// A configured provisioner.
pub struct Provisioner {
    pool: PluginPool<ProvisionerWorld>,
}

fn flatten<T>(r: Result<Result<T, String>, PluginError>) -> Result<T, ProvisionError> {
    match r {
        Err(e) => Err(ProvisionError::Plugin(e)),
        Ok(Err(e)) => Err(ProvisionError::Refused(e)),
        Ok(Ok(v)) => Ok(v),
    }
}

/// What the provisioner is told about an app: its desired state.
pub fn app_state(view: &AppView) -> AppState {
    AppState {
        name: view.app.name.clone(),
        pool: view.app.pool.clone(),
        plan_memory: u64::try_from(view.memory()).unwrap_or(0),
        plan_cpu_milli: u32::try_from(view.cpu_milli()).unwrap_or(0),
        env: view.env.iter().map(|e| EnvVar { name: e.name.clone(), value: view.env_value(e), public: e.public }).collect(),
        versions: view.versions.iter().map(|v| app_version(v.version, &v.digest, &v.processes, v.units, v.routable, v.weight)).collect(),
        status: if view.app.status.is_empty() { "started".into() } else { view.app.status.clone() },
    }
}

/// A version as a provisioner is told of it: each process with `units` units.
pub fn app_version(version: i64, digest: &str, processes: &[String], units: i64, routable: bool, weight: i64) -> AppVersion {
    AppVersion {
        version: u32::try_from(version).unwrap_or(0),
        artifact: digest.to_string(),
        processes: processes.iter().map(|p| Process { name: p.clone(), command: String::new(), units: u32::try_from(units).unwrap_or(0) }).collect(),
        routable,
        weight: u32::try_from(weight).unwrap_or(0),
    }
}

impl Provisioner {
    pub fn new(pool: PluginPool<ProvisionerWorld>) -> Provisioner {
        Provisioner { pool }
    }

    pub fn name(&self) -> &str {
        self.pool.name()
    }

    pub async fn can_deploy(&self, kind: &str) -> Result<(), ProvisionError> {
        let kind = kind.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_can_deploy(s, &kind).await })).await)
    }

    pub async fn prepare(&self, desired: AppState, version: AppVersion) -> Result<Vec<String>, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_prepare(s, &desired, &version).await })).await)
    }

    pub async fn apply(&self, desired: AppState) -> Result<Vec<String>, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_apply(s, &desired).await })).await)
    }

    /// Applies `app`'s desired state as the store holds it now; the lines the
    /// provisioner reports.
    pub async fn apply_stored(&self, store: &Db, app: &str) -> Result<Vec<String>, String> {
        let view = store.app_view(app).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("App {app} not found."))?;
        self.apply(app_state(&view)).await.map_err(|e| format!("provisioner {:?}: {e}", self.name()))
    }

    pub async fn units(&self, desired: AppState) -> Result<Vec<Unit>, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_units(s, &desired).await })).await)
    }

    pub async fn kill_unit(&self, desired: AppState, unit: &str) -> Result<(), ProvisionError> {
        let unit = unit.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_kill_unit(s, &desired, &unit).await })).await)
    }

    pub async fn set_unit_status(&self, desired: AppState, unit: &str, status: &str) -> Result<(), ProvisionError> {
        let (unit, status) = (unit.to_string(), status.to_string());
        flatten(
            self.pool
                .call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_set_unit_status(s, &desired, &unit, &status).await }))
                .await,
        )
    }

    pub async fn run(&self, desired: AppState, command: &str, once: bool, isolated: bool) -> Result<Vec<String>, ProvisionError> {
        let command = command.to_string();
        flatten(
            self.pool
                .call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_run(s, &desired, &command, once, isolated).await }))
                .await,
        )
    }

    /// Moves the app's `units` to node `to`; progress lines.
    pub async fn move_units(&self, desired: AppState, units: Vec<String>, to: &str) -> Result<Vec<String>, ProvisionError> {
        let to = to.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_move_units(s, &desired, &units, &to).await })).await)
    }

    /// Spreads the app's units over its nodes (`dry`: says what it would do).
    pub async fn rebalance(&self, desired: AppState, dry: bool) -> Result<Vec<String>, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_rebalance(s, &desired, dry).await })).await)
    }

    /// Repairs the app's drift from `desired` (healing); the repairs made.
    pub async fn reconcile(&self, desired: AppState) -> Result<Vec<Repair>, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_reconcile(s, &desired).await })).await)
    }

    pub async fn destroy(&self, app: &str) -> Result<(), ProvisionError> {
        let app = app.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_destroy(s, &app).await })).await)
    }
}
