//! The `provisioner` plugin kind: bindings and the typed API the host uses.
//!
//! The host owns an app's desired state and hands it over after each change;
//! the plugin makes it so through its capabilities (`app-runtime` for WASM
//! apps) and reports units.

use super::PluginError;
use super::instance::PluginPool;
use crate::store::AppView;

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

pub use bindings::exports::torii::plugin::provisioner::{
    Applied, AppState, AppVersion, EnvVar, Error as Refusal, Process, ProcessStatus, Repair, Route, ShellTarget, Unit, UnitUsage, VolumeBind,
};

/// Why a provisioner call did not succeed: the plugin failed, or it
/// answered with a typed refusal (its text is shown to the user as it is).
#[derive(Debug, thiserror::Error)]
pub enum ProvisionError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{}", refusal_text(.0))]
    Refused(Refusal),
}

fn refusal_text(r: &Refusal) -> &str {
    match r {
        Refusal::Invalid(m) | Refusal::NotFound(m) | Refusal::Unavailable(m) | Refusal::Unsupported(m) | Refusal::Internal(m) => m,
    }
}

impl ProvisionError {
    /// The one table from a provisioner's answer to tsuru's HTTP status.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            ProvisionError::Refused(Refusal::Invalid(_) | Refusal::Unsupported(_)) => StatusCode::BAD_REQUEST,
            ProvisionError::Refused(Refusal::NotFound(_)) => StatusCode::NOT_FOUND,
            ProvisionError::Refused(Refusal::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            ProvisionError::Refused(Refusal::Internal(_)) | ProvisionError::Plugin(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<ProvisionError> for crate::error::ApiError {
    fn from(e: ProvisionError) -> Self {
        crate::error::ApiError::new(e.status(), e.to_string())
    }
}

impl ProcessStatus {
    pub fn of(status: crate::store::ProcessStatus) -> ProcessStatus {
        match status {
            crate::store::ProcessStatus::Started => ProcessStatus::Started,
            crate::store::ProcessStatus::Stopped => ProcessStatus::Stopped,
            crate::store::ProcessStatus::Asleep => ProcessStatus::Asleep,
        }
    }
}

super::instance::plugin_world!(ProvisionerWorld, "provisioner", bindings::ProvisionerPlugin, bindings::ProvisionerPluginPre, torii_plugin_provisioner);

/// A configured provisioner (cheap to clone: its pool is shared).
#[derive(Clone)]
pub struct Provisioner {
    pool: std::sync::Arc<PluginPool<ProvisionerWorld>>,
}

fn flatten<T>(r: Result<Result<T, Refusal>, PluginError>) -> Result<T, ProvisionError> {
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
        env: view.runtime_env().into_iter().map(|(name, value, public)| EnvVar { name, value, public }).collect(),
        versions: view.versions.iter().map(|v| app_version(v.version, &v.digest, &v.processes, v.routable, v.weight)).collect(),
        volumes: view
            .volume_binds
            .iter()
            .map(|b| VolumeBind { volume: b.volume.clone(), mount_point: b.mount_point.clone(), read_only: b.read_only })
            .collect(),
    }
}

/// A version as a provisioner is told of it.
pub fn app_version(version: i64, digest: &str, processes: &[crate::store::ProcessRecord], routable: bool, weight: i64) -> AppVersion {
    AppVersion {
        version: u32::try_from(version).unwrap_or(0),
        artifact: digest.to_string(),
        processes: processes
            .iter()
            .map(|p| Process {
                name: p.name.clone(),
                command: String::new(),
                units: u32::try_from(p.units).unwrap_or(0),
                status: ProcessStatus::of(p.status),
            })
            .collect(),
        routable,
        weight: u32::try_from(weight).unwrap_or(0),
    }
}

impl Provisioner {
    pub fn new(pool: std::sync::Arc<PluginPool<ProvisionerWorld>>) -> Provisioner {
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

    /// Makes the backend run `desired`; the routes it serves then.
    pub async fn apply(&self, desired: AppState) -> Result<Applied, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_apply(s, &desired).await })).await)
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

    /// Where a shell into the app runs (a unit, or an isolated container).
    pub async fn open_shell(&self, desired: AppState, unit: &str, isolated: bool) -> Result<ShellTarget, ProvisionError> {
        let unit = unit.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_open_shell(s, &desired, &unit, isolated).await })).await)
    }

    /// The shell opened in `target` ended.
    pub async fn close_shell(&self, desired: AppState, target: ShellTarget) -> Result<(), ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_close_shell(s, &desired, &target).await })).await)
    }

    /// What the app's running units use now.
    pub async fn usage(&self, desired: AppState) -> Result<Vec<UnitUsage>, ProvisionError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_usage(s, &desired).await })).await)
    }

    /// Builds a platform's image on the nodes of `pool`; progress lines.
    pub async fn build_platform(&self, pool: &str, name: &str, version: u32, context: &str, args: Vec<(String, String)>) -> Result<Vec<String>, ProvisionError> {
        let (pool, name, context) = (pool.to_string(), name.to_string(), context.to_string());
        flatten(
            self.pool
                .call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_build_platform(s, &pool, &name, version, &context, &args).await }))
                .await,
        )
    }

    pub async fn destroy(&self, app: &str) -> Result<(), ProvisionError> {
        let app = app.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_provisioner().call_destroy(s, &app).await })).await)
    }
}
