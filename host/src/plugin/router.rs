//! The `router` plugin kind: bindings and the typed API the host uses.
//!
//! The host tells a router what an app's routes are after every change to
//! them (see `routers::sync`); the plugin turns them into its backend's
//! configuration (the `embedded` one: the host proxy table).

use wasmtime::Store;
use wasmtime::component::InstancePre;

use super::instance::{BoxFuture, PluginPool, PluginState, World};

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

pub struct RouterWorld;

impl World for RouterWorld {
    const KIND: &'static str = "router";
    type Pre = bindings::RouterPluginPre<PluginState>;
    type Bindings = bindings::RouterPlugin;

    fn pre(instance_pre: InstancePre<PluginState>) -> wasmtime::Result<Self::Pre> {
        bindings::RouterPluginPre::new(instance_pre)
    }

    fn instantiate<'a>(pre: &'a Self::Pre, store: &'a mut Store<PluginState>) -> BoxFuture<'a, wasmtime::Result<Self::Bindings>> {
        Box::pin(pre.instantiate_async(store))
    }

    fn init<'a>(
        bindings: &'a Self::Bindings,
        store: &'a mut Store<PluginState>,
        config: &'a str,
    ) -> BoxFuture<'a, wasmtime::Result<Result<(), String>>> {
        Box::pin(bindings.torii_plugin_router().call_init(store, config))
    }
}

/// A configured router plugin; its name is the router type it serves.
pub struct RouterPlugin {
    pool: PluginPool<RouterWorld>,
}

impl RouterPlugin {
    pub fn new(pool: PluginPool<RouterWorld>) -> RouterPlugin {
        RouterPlugin { pool }
    }

    /// Makes the router serve `route`: the names it answers for the app, or
    /// a failure or refusal as the user sees it.
    pub async fn ensure(&self, route: Route) -> Result<Vec<String>, String> {
        let r = self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_router().call_ensure(s, &route).await })).await;
        r.map_err(|e| e.to_string()).and_then(|answer| answer.map_err(said))
    }

    pub async fn remove(&self, router: &str, app: &str) -> Result<(), String> {
        let (router, app) = (router.to_string(), app.to_string());
        let r = self.pool.call(move |b, s| Box::pin(async move { b.torii_plugin_router().call_remove(s, &router, &app).await })).await;
        r.map_err(|e| e.to_string()).and_then(|answer| answer.map_err(said))
    }
}

/// What a router's refusal says.
fn said(e: RouterRefusal) -> String {
    match e {
        RouterRefusal::Invalid(m) | RouterRefusal::Internal(m) => m,
        RouterRefusal::Unavailable(m) => format!("the router does not answer now: {m}"),
    }
}
