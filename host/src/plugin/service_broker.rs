//! The `service-broker` plugin kind: bindings and the typed API the host
//! uses. The host keeps services, instances and binds (see `services`);
//! a broker turns each call into its provider's requests.

use std::sync::Arc;

use super::instance::PluginPool;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "torii:plugin/service-broker-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "torii:plugin/log": crate::plugin::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv": crate::plugin::capabilities::bindings::torii::plugin::kv,
        },
    });
}

pub use bindings::exports::torii::plugin::service_broker::{
    App, Auth, Binding, Change, Error as BrokerRefusal, Instance, OperationState, Plan, Provider, ProxyTarget, Requester, Service, Unit,
};

super::instance::plugin_world!(BrokerWorld, "service-broker", bindings::ServiceBrokerPlugin, bindings::ServiceBrokerPluginPre, torii_plugin_service_broker);

/// How a broker call did not succeed, in the terms the API answers with.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct BrokerFailure {
    pub kind: FailureKind,
    pub message: String,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum FailureKind {
    NotFound,
    Invalid,
    NotReady,
    Conflict,
    /// The provider did not answer, or failed: nothing is known to have changed.
    Unavailable,
    /// The plugin itself failed (trap, timeout) or said so.
    Internal,
}

impl From<BrokerRefusal> for BrokerFailure {
    fn from(e: BrokerRefusal) -> BrokerFailure {
        let (kind, message) = match e {
            BrokerRefusal::NotFound(m) => (FailureKind::NotFound, m),
            BrokerRefusal::Invalid(m) => (FailureKind::Invalid, m),
            BrokerRefusal::NotReady(m) => (FailureKind::NotReady, m),
            BrokerRefusal::Conflict(m) => (FailureKind::Conflict, m),
            BrokerRefusal::Unavailable(m) => (FailureKind::Unavailable, m),
            BrokerRefusal::Internal(m) => (FailureKind::Internal, m),
        };
        BrokerFailure { kind, message }
    }
}

impl From<super::PluginError> for BrokerFailure {
    fn from(e: super::PluginError) -> BrokerFailure {
        BrokerFailure { kind: FailureKind::Internal, message: e.to_string() }
    }
}

/// A configured service-broker plugin.
pub struct BrokerPlugin {
    pool: Arc<PluginPool<BrokerWorld>>,
}

/// One call of the `service-broker` interface, by its generated method.
macro_rules! broker_call {
    ($self:ident, $method:ident, $($arg:ident),*) => {{
        let r = $self
            .pool
            .call(move |b, s| Box::pin(async move { b.torii_plugin_service_broker().$method(s, $(&$arg),*).await }))
            .await;
        match r {
            Err(e) => Err(BrokerFailure::from(e)),
            Ok(answer) => answer.map_err(BrokerFailure::from),
        }
    }};
}

type Outcome<T> = Result<T, BrokerFailure>;

impl BrokerPlugin {
    pub fn new(pool: Arc<PluginPool<BrokerWorld>>) -> BrokerPlugin {
        BrokerPlugin { pool }
    }

    pub fn name(&self) -> &str {
        self.pool.name()
    }

    /// The entry's outbound rule: what a proxied request may reach.
    pub fn outbound(&self) -> Option<Arc<crate::outbound::Outbound>> {
        self.pool.outbound()
    }

    pub async fn catalog(&self, provider: Provider) -> Outcome<Vec<Service>> {
        broker_call!(self, call_catalog, provider)
    }

    pub async fn create_instance(&self, provider: Provider, instance: Instance, who: Requester) -> Outcome<Change> {
        broker_call!(self, call_create_instance, provider, instance, who)
    }

    pub async fn update_instance(&self, provider: Provider, instance: Instance, who: Requester) -> Outcome<Change> {
        broker_call!(self, call_update_instance, provider, instance, who)
    }

    pub async fn remove_instance(&self, provider: Provider, instance: Instance, who: Requester) -> Outcome<Change> {
        broker_call!(self, call_remove_instance, provider, instance, who)
    }

    pub async fn last_operation(&self, provider: Provider, instance: Instance, operation: String) -> Outcome<OperationState> {
        broker_call!(self, call_last_operation, provider, instance, operation)
    }

    pub async fn bind_app(&self, provider: Provider, instance: Instance, app: App, parameters: Vec<(String, String)>, who: Requester) -> Outcome<Binding> {
        broker_call!(self, call_bind_app, provider, instance, app, parameters, who)
    }

    pub async fn unbind_app(&self, provider: Provider, instance: Instance, app: App, binding: String, who: Requester) -> Outcome<()> {
        broker_call!(self, call_unbind_app, provider, instance, app, binding, who)
    }

    pub async fn bind_unit(&self, provider: Provider, instance: Instance, app: App, unit: Unit) -> Outcome<()> {
        broker_call!(self, call_bind_unit, provider, instance, app, unit)
    }

    pub async fn unbind_unit(&self, provider: Provider, instance: Instance, app: App, unit: Unit) -> Outcome<()> {
        broker_call!(self, call_unbind_unit, provider, instance, app, unit)
    }

    pub async fn status(&self, provider: Provider, instance: Instance) -> Outcome<String> {
        broker_call!(self, call_status, provider, instance)
    }

    pub async fn info(&self, provider: Provider, instance: Instance) -> Outcome<Vec<(String, String)>> {
        broker_call!(self, call_info, provider, instance)
    }

    pub async fn proxy(&self, provider: Provider, instance: Option<Instance>, path: String) -> Outcome<ProxyTarget> {
        let r = self
            .pool
            .call(move |b, s| Box::pin(async move { b.torii_plugin_service_broker().call_proxy(s, &provider, instance.as_ref(), &path).await }))
            .await;
        match r {
            Err(e) => Err(BrokerFailure::from(e)),
            Ok(answer) => answer.map_err(BrokerFailure::from),
        }
    }
}
