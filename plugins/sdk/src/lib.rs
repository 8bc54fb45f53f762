//! The torii plugin SDK: write a plugin as a plain Rust trait.
//!
//! A plugin author implements one trait per plugin kind ([`auth::AuthScheme`]; the
//! provisioner kind is in `torii-provisioner-sdk`) and names the type in the kind's
//! export macro (`export_auth_scheme!(MyScheme)`).
//! The WIT bindings are generated here and stay here: plugin crates never see
//! wit-bindgen. Host capabilities are plain functions in [`log`] and [`kv`]; a call
//! to a capability the plugin's config did not grant traps in the host, which
//! reports it as an error naming the plugin.

pub mod auth;
pub mod http;
pub mod kv;
pub mod log;
pub mod validate;

#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}
