//! The `iaas` plugin kind: bindings and the typed API the host uses. The
//! host keeps the machine records and templates (`store::iaas`); a driver
//! makes, describes, lists and destroys the machines themselves.

use super::PluginError;
use super::instance::PluginPool;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "torii:plugin/iaas-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "torii:plugin/log": crate::plugin::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv": crate::plugin::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::iaas::{Error as Refusal, Machine};

super::instance::plugin_world!(IaasWorld, "iaas", bindings::IaasPlugin, bindings::IaasPluginPre, torii_plugin_iaas);

/// Why a driver call did not succeed: the plugin failed, or it refused.
#[derive(Debug, thiserror::Error)]
pub enum IaasError {
    #[error(transparent)]
    Plugin(#[from] PluginError),
    #[error("{}", refusal_text(.0))]
    Refused(Refusal),
}

fn refusal_text(r: &Refusal) -> &str {
    match r {
        Refusal::Invalid(m) | Refusal::NotFound(m) | Refusal::Unavailable(m) | Refusal::Internal(m) => m,
    }
}

impl IaasError {
    /// The one table from a driver's answer to an HTTP status.
    pub fn status(&self) -> axum::http::StatusCode {
        use axum::http::StatusCode;
        match self {
            IaasError::Refused(Refusal::Invalid(_)) => StatusCode::BAD_REQUEST,
            IaasError::Refused(Refusal::NotFound(_)) => StatusCode::NOT_FOUND,
            IaasError::Refused(Refusal::Unavailable(_)) => StatusCode::SERVICE_UNAVAILABLE,
            IaasError::Refused(Refusal::Internal(_)) | IaasError::Plugin(_) => StatusCode::INTERNAL_SERVER_ERROR,
        }
    }
}

impl From<IaasError> for crate::error::ApiError {
    fn from(e: IaasError) -> Self {
        crate::error::ApiError::new(e.status(), e.to_string())
    }
}

fn flatten<T>(r: Result<Result<T, Refusal>, PluginError>) -> Result<T, IaasError> {
    r?.map_err(IaasError::Refused)
}

/// A configured IaaS driver; its entry name is the IaaS name in the API.
#[derive(Clone)]
pub struct IaasPlugin {
    pool: std::sync::Arc<PluginPool<IaasWorld>>,
}

impl IaasPlugin {
    pub fn new(pool: std::sync::Arc<PluginPool<IaasWorld>>) -> IaasPlugin {
        IaasPlugin { pool }
    }

    pub fn name(&self) -> &str {
        self.pool.name()
    }

    pub async fn create(&self, params: Vec<(String, String)>) -> Result<Machine, IaasError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_iaas().call_create_machine(s, &params).await })).await)
    }

    pub async fn describe(&self, id: &str) -> Result<Machine, IaasError> {
        let id = id.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_iaas().call_describe_machine(s, &id).await })).await)
    }

    pub async fn destroy(&self, id: &str) -> Result<(), IaasError> {
        let id = id.to_string();
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_iaas().call_destroy_machine(s, &id).await })).await)
    }

    pub async fn list(&self) -> Result<Vec<Machine>, IaasError> {
        flatten(self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_iaas().call_list_machines(s).await })).await)
    }
}
