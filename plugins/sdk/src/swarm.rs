//! Docker Swarm operations (capability `swarm`), for provisioners of apps on
//! a Swarm cluster. Every call names a pool the plugin provisions; the host
//! sends it to a manager of the cluster serving that pool, whose address and
//! credentials the plugin never sees.

pub use crate::capabilities::bindings::torii::plugin::swarm::*;
