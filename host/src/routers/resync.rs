//! The resync loop: every `[routers] resync_secs`, the apps some router
//! failed for (an external router that did not answer, or did not forget a
//! removed app) are synced again, until every router does as told.

use crate::server::Server;
use std::sync::Weak;
use std::time::Duration;

/// Starts the rounds; they end when the server is gone.
pub fn start(server: Weak<Server>, every: Duration) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(server) = server.upgrade() else { return };
            server.routing.resync().await;
        }
    });
}
