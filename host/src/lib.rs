//! torii: a tsuru-compatible PaaS control plane whose backends are WebAssembly
//! components. See ARCHITECTURE.md for the map.

pub mod apps;
pub mod auth;
pub mod blobs;
pub mod config;
pub mod dataplane;
pub mod docker;
pub mod egress;
pub mod outbound;
pub mod deploy;
pub mod error;
pub mod events;
pub mod healing;
pub mod iaas;
pub mod limits;
pub mod listener;
pub mod plugin;
pub mod pools;
pub mod routers;
pub mod rbac;
pub mod runtime;
pub mod store;
pub mod webhooks;
pub mod api;
pub mod mail;
pub mod metrics;
pub mod server;
pub mod services;
