//! The host's proxy table (capability `proxy`), for routers that serve
//! through torii's data plane (the `embedded` one).

pub use crate::capabilities::bindings::torii::plugin::proxy::Backend;

/// Points `hosts` of `app` on `router` (one of this plugin's type) at `backends`.
pub fn set_app(router: &str, app: &str, hosts: &[String], backends: &[Backend]) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return crate::capabilities::bindings::torii::plugin::proxy::set_app(router, app, hosts, backends);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::proxy_set(router, app, hosts, backends.iter().map(|b| b.version).collect());
}

/// Forgets `app` on `router`.
pub fn remove_app(router: &str, app: &str) -> Result<(), String> {
    #[cfg(target_arch = "wasm32")]
    return crate::capabilities::bindings::torii::plugin::proxy::remove_app(router, app);
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::proxy_remove(router, app);
}
