//! The `router` plugin kind: turn an app's routes into a proxy's
//! configuration. The `embedded` router writes torii's own proxy table
//! ([`crate::proxy`]); a router of an external proxy speaks to it with
//! [`crate::http`].

#[doc(hidden)]
pub mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/router-plugin",
        pub_export_macro: true,
        export_macro_name: "__export_router_world",
        default_bindings_module: "torii_plugin_sdk::router::bindings",
        with: {
            "torii:plugin/log@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::log,
            "torii:plugin/kv@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::kv,
            "torii:plugin/proxy@0.7.0": torii_plugin_sdk::capabilities::bindings::torii::plugin::proxy,
        },
    });
}

pub use bindings::exports::torii::plugin::router::{Error, Route};
pub use crate::proxy::Backend;

/// What a router call answers: the value, or a typed [`Error`].
pub type Outcome<T> = Result<T, Error>;

// A plain message is a route or config the router cannot serve
// ([`Error::Invalid`]); say [`Error::Unavailable`] when the proxy does not
// answer, so the host retries.
invalid_from_text!(Error);

/// Where an external proxy sends part of an app's traffic: `host:port`,
/// and its share.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Upstream {
    pub address: String,
    pub weight: u32,
}

impl Route {
    /// Config key `key` as an `http(s)` URL without a trailing `/`; a
    /// refusal saying it is `what` when it is missing or not one.
    pub fn config_url(&self, key: &str, what: &str) -> Outcome<String> {
        self.config(key)
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .map(|u| u.trim_end_matches('/').to_string())
            .ok_or_else(|| Error::Invalid(format!("router {:?} needs config {key}: {what}", self.router)))
    }

    /// The routable versions that run in torii's WASM runtime (no
    /// addresses): an external proxy reaches them through torii's data
    /// plane, which answers the app's names once the router writes them to
    /// torii's proxy table ([`crate::proxy::set_app`]).
    pub fn in_torii(&self) -> Vec<Backend> {
        self.backends.iter().filter(|b| b.weight > 0 && b.addresses.is_empty()).cloned().collect()
    }

    /// Where an external proxy sends the app's traffic: the units that run
    /// outside torii at their addresses (a version's weight shared among
    /// them, at least 1 each), the versions in torii's runtime at torii's
    /// app-traffic address (`unavailable` while torii takes none).
    pub fn upstreams(&self) -> Outcome<Vec<Upstream>> {
        let mut out = Vec::new();
        for b in self.backends.iter().filter(|b| b.weight > 0) {
            if b.addresses.is_empty() {
                let traffic = self.traffic.iter().find_map(|t| t.strip_prefix("http://"));
                let address = traffic.ok_or_else(|| Error::Unavailable("torii does not take app traffic yet".into()))?;
                out.push(Upstream { address: address.to_string(), weight: b.weight });
            } else {
                let each = (b.weight / b.addresses.len() as u32).max(1);
                out.extend(b.addresses.iter().map(|a| Upstream { address: a.clone(), weight: each }));
            }
        }
        Ok(out)
    }

    /// The value of router option `key` (`tsuru router add -o key=value`).
    pub fn option(&self, key: &str) -> Option<&str> {
        self.options.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// The value of the router's config key `key`.
    pub fn config(&self, key: &str) -> Option<&str> {
        self.config.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    /// Every name the app answers at on this router: addresses, then cnames.
    pub fn hosts(&self) -> Vec<String> {
        self.addresses.iter().chain(&self.cnames).cloned().collect()
    }
}

/// What a router plugin implements. One value lives per plugin instance,
/// made by [`Router::init`] from the plugin's config table.
pub trait Router: Sized + 'static {
    fn init(config: serde_json::Value) -> Result<Self, String>;

    fn health(&self) -> Result<(), String> {
        Ok(())
    }

    /// Serves `route` in place of what was served for the app; the names
    /// the router now answers for it.
    fn ensure(&self, route: &Route) -> Outcome<Vec<String>>;

    /// Forgets the app on `router`.
    fn remove(&self, router: &str, app: &str) -> Outcome<()>;
}

/// Exports a type implementing [`Router`] as the plugin's component exports.
#[macro_export]
macro_rules! export_router {
    ($router:ty) => {
        const _: () = {
            use $crate::router::bindings::exports::torii::plugin::router;
            use $crate::router::{Error, Route, Router};

            $crate::__plugin_state!($router, <$router as Router>::init);

            struct ToriiExport;

            impl router::Guest for ToriiExport {
                fn init(config: String) -> Result<(), String> {
                    init_state(config)
                }
                fn health() -> Result<(), String> {
                    with(|s| s.health())
                }
                fn ensure(route: Route) -> Result<Vec<String>, Error> {
                    with(|s| s.ensure(&route))
                }
                fn remove(router: String, app: String) -> Result<(), Error> {
                    with(|s| s.remove(&router, &app))
                }
            }

            $crate::router::bindings::__export_router_world!(ToriiExport with_types_in $crate::router::bindings);
        };
    };
}
