//! Docker Engine operations (capability `containers`), for provisioners of
//! container apps. Every call names a node registered through the `/1.2/node`
//! API in a pool the plugin provisions; the host holds the engine client.

pub use crate::capabilities::bindings::torii::plugin::containers::*;
