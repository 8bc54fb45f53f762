//! torii's integration tests: one binary (it links once), one module per area.
//! Every test drives a real server over HTTP on loopback.

mod support;

mod apps;
mod caddy;
mod auth;
mod autoscale;
mod cli;
mod clusters;
mod converge;
mod crash;
mod deploy;
pub(crate) mod docker;
mod env;
mod events;
mod iaas;
mod isolation;
mod logs;
mod mail;
mod metrics;
mod outbound;
mod plans;
pub(crate) mod platforms;
mod plugins;
mod pools;
mod roles;
mod routers;
mod saml;
pub(crate) mod services;
mod shell;
mod swarm;
mod teams;
mod tokens;
mod users;
mod volumes;
mod webhooks;
mod wire;
