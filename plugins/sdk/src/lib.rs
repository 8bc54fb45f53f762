//! The torii plugin SDK: write a plugin of any kind as a plain Rust trait.
//!
//! Implement the kind's trait and name the type in its export macro:
//! [`auth::AuthScheme`] with `export_auth_scheme!`, [`provisioner::Provisioner`]
//! with `export_provisioner!`, [`router::Router`] with `export_router!`,
//! [`broker::Broker`] with `export_broker!`, [`iaas::Iaas`] with `export_iaas!`. Each
//! kind's interface carries its own `init` (the entry's config table, as
//! JSON) and `health`.
//!
//! The WIT bindings are generated here and stay here: plugin crates never see
//! wit-bindgen. Host capabilities are plain functions: [`log`], [`kv`],
//! [`app_runtime`], [`containers`], [`swarm`], [`proxy`], and outbound HTTP in [`http`].
//! A call to a capability the plugin's entry does not grant traps in the
//! host (an outbound request fails instead, with the reason), and the host
//! reports it naming the plugin. Built natively (not for `wasm32`), `kv`,
//! `log`, `proxy` and `http` reach the test doubles of [`testing`], so
//! plugin logic is unit-tested with plain `cargo test`.

extern crate self as torii_plugin_sdk;

/// `From<String>` and `From<&str>` for a kind's `Error`, as its `Invalid`
/// case: capabilities answer `Result<_, String>`, so `?` on them gives a
/// refusal the user reads.
macro_rules! invalid_from_text {
    ($error:ty) => {
        impl From<String> for $error {
            fn from(message: String) -> $error {
                <$error>::Invalid(message)
            }
        }

        impl From<&str> for $error {
            fn from(message: &str) -> $error {
                <$error>::Invalid(message.to_string())
            }
        }
    };
}

pub mod app_runtime;
pub mod auth;
pub mod broker;
#[doc(hidden)]
pub mod capabilities;
pub mod containers;
pub mod http;
pub mod iaas;
pub mod kv;
pub mod log;
pub mod provisioner;
pub mod proxy;
pub mod router;
pub mod swarm;
#[cfg(not(target_arch = "wasm32"))]
pub mod testing;
pub mod time;
pub mod validate;

#[doc(hidden)]
pub mod __private {
    pub use serde_json;

    /// The entry's config table as `init` receives it (JSON; empty: null).
    pub fn config(json: &str) -> Result<serde_json::Value, String> {
        if json.is_empty() {
            return Ok(serde_json::Value::Null);
        }
        serde_json::from_str(json).map_err(|e| format!("config is not JSON: {e}"))
    }
}

/// The one value of a plugin type each instance keeps, made by its `init`:
/// defines `init_state(config)` and `with(|value| ...)` for the export glue.
#[doc(hidden)]
#[macro_export]
macro_rules! __plugin_state {
    ($ty:ty, $init:expr) => {
        ::std::thread_local! {
            static STATE: ::std::cell::RefCell<::std::option::Option<$ty>> = const { ::std::cell::RefCell::new(None) };
        }

        fn init_state(config: String) -> Result<(), String> {
            let value = $init($crate::__private::config(&config)?)?;
            STATE.with(|s| *s.borrow_mut() = Some(value));
            Ok(())
        }

        fn with<R>(f: impl FnOnce(&$ty) -> R) -> R {
            STATE.with(|s| {
                let s = s.borrow();
                f(s.as_ref().expect("the host calls init before any other export"))
            })
        }
    };
}
