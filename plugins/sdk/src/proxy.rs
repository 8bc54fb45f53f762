//! The host's proxy table (capability `proxy`), for routers that serve
//! through torii's data plane (the `embedded` one).

pub use crate::capabilities::bindings::torii::plugin::proxy::{Backend, remove_app, set_app};
