//! Provisioner plugins for torii, as a plain Rust trait: implement
//! [`provisioner::Provisioner`] and name the type in `export_provisioner!`.
//!
//! A crate of its own because wit-bindgen's export macros of one world would
//! collide with another world's in one crate (both export `lifecycle`). Log
//! and kv come from `torii-plugin-sdk`; the `app-runtime` capability is in
//! [`app_runtime`], `containers` (Docker engines) in [`containers`].

pub mod app_runtime;
pub mod containers;
pub mod provisioner;

#[doc(hidden)]
pub mod __private {
    pub use serde_json;
}
