//! The resync loop: every `[routers] resync_secs`, the apps some router
//! failed for (an external router that did not answer, or did not forget a
//! removed app), and the apps of routers that keep their own state, are
//! synced again ([`crate::routers::sync::Routing::resync`]).

use crate::server::Server;
use std::sync::Weak;
use std::time::Duration;

/// Starts the rounds; they end when the server is gone.
pub fn start(server: Weak<Server>, every: Duration) {
    crate::server::rounds(server, every, |server| Box::pin(async move { server.routing.resync().await }));
}
