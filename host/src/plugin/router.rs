//! The `router` plugin kind: bindings and the typed API the host uses.
//!
//! The host tells a router what an app's routes are after every change to
//! them (see `routers::sync`); the plugin turns them into its backend's
//! configuration (the `embedded` one: the host proxy table).

use super::instance::PluginPool;

mod bindings {
    wasmtime::component::bindgen!({
        path: "../wit",
        world: "torii:plugin/router-plugin",
        imports: { default: async | trappable },
        exports: { default: async },
        with: {
            "torii:plugin/log": crate::plugin::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv": crate::plugin::capabilities::bindings::torii::plugin::kv,
            "torii:plugin/proxy": crate::plugin::capabilities::bindings::torii::plugin::proxy,
        },
    });
}

pub use bindings::exports::torii::plugin::router::{Error as RouterRefusal, Route};
pub use crate::plugin::capabilities::bindings::torii::plugin::proxy::Backend;

super::instance::plugin_world!(RouterWorld, "router", bindings::RouterPlugin, bindings::RouterPluginPre, torii_plugin_router);

/// A configured router plugin; its name is the router type it serves.
pub struct RouterPlugin {
    pool: std::sync::Arc<PluginPool<RouterWorld>>,
}

impl RouterPlugin {
    pub fn new(pool: std::sync::Arc<PluginPool<RouterWorld>>) -> RouterPlugin {
        RouterPlugin { pool }
    }

    /// Makes the router serve `route`: the names it answers for the app.
    pub async fn ensure(&self, route: Route) -> Result<Vec<String>, RouteFailure> {
        let r = self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_router().call_ensure(s, &route).await })).await;
        r.map_err(RouteFailure::plugin).and_then(|answer| answer.map_err(RouteFailure::from))
    }

    pub async fn remove(&self, router: &str, app: &str) -> Result<(), RouteFailure> {
        let (router, app) = (router.to_string(), app.to_string());
        let r = self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_router().call_remove(s, &router, &app).await })).await;
        r.map_err(RouteFailure::plugin).and_then(|answer| answer.map_err(RouteFailure::from))
    }
}

/// A router that did not do as told: it refused what it was given (the
/// change cannot be served as it is), or failed (it may later: retried).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct RouteFailure {
    pub refused: bool,
    pub message: String,
}

impl RouteFailure {
    fn plugin(e: crate::plugin::PluginError) -> RouteFailure {
        RouteFailure { refused: false, message: e.to_string() }
    }

    pub fn failed(message: impl Into<String>) -> RouteFailure {
        RouteFailure { refused: false, message: message.into() }
    }
}

impl From<RouterRefusal> for RouteFailure {
    fn from(e: RouterRefusal) -> RouteFailure {
        match e {
            RouterRefusal::Invalid(message) => RouteFailure { refused: true, message },
            RouterRefusal::Internal(message) => RouteFailure { refused: false, message },
            RouterRefusal::Unavailable(m) => RouteFailure { refused: false, message: format!("the router does not answer: {m}") },
        }
    }
}
