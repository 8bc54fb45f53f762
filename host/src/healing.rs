//! Unit healing: every `[healing] interval_secs`, each app of a pool whose
//! provisioner runs units on nodes (is granted `containers`) is handed to
//! its provisioner's `reconcile`, which replaces dead or missing units. Every
//! repair becomes a finished `healer` event on the new unit (`/1.3/healing`
//! lists them).
//!
//! A round holds the app's lock while it reconciles (an internal event,
//! discarded afterwards), so no operation changes the app's units meanwhile;
//! an app an operation holds is left for the next round.

use crate::events::{Allowed, EventSpec, Owner, Target};
use crate::plugin::provisioner::{Repair, app_state};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::AppColumn;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The event kind of a repair.
pub const HEALER: &str = "healer";
/// The pool setting kind of the node healing config (`/1.2/healing/node`).
pub const SETTING: &str = "healing";

/// Starts the rounds; they end when the server is gone.
pub fn start(server: Weak<Server>, every: Duration) {
    crate::server::rounds(server, every, |server| Box::pin(async move {
        let repaired = round(&server).await;
        server.metrics.healing_repairs(repaired);
    }));
}

/// One pass over the apps of node-running provisioners; the repairs made.
pub async fn round(server: &Arc<Server>) -> usize {
    let mut repaired = 0;
    let pools = match server.store.pools().await {
        Ok(p) => p,
        Err(e) => {
            tracing::warn!(error = %e, "healing: cannot list pools");
            return 0;
        }
    };
    // `/1.2/healing/node`: a pool's `Enabled`, else the default's, else on.
    let settings = server.store.pool_settings(SETTING).await.unwrap_or_default();
    let enabled = |pool: &str| {
        [settings.get(pool), settings.get("")].into_iter().flatten().find_map(|v| v.get("Enabled").and_then(serde_json::Value::as_bool)).unwrap_or(true)
    };
    for pool in pools {
        if !enabled(&pool.name) {
            continue;
        }
        let name = server.config.pool_provisioner(&pool.provisioner);
        let Some(provisioner) = server.provisioners.get(name).filter(|_| server.config.uses_nodes(name)) else { continue };
        let apps = server.store.app_names_where(AppColumn::Pool, &pool.name).await.unwrap_or_default();
        for app in apps {
            let Ok(Some(view)) = server.store.app_view(&app).await else { continue };
            if view.lock_event.is_some() || !view.versions.iter().any(|v| v.routable) {
                continue;
            }
            // The app's lock, so no operation changes its units meanwhile;
            // held by a running operation: next round.
            let Some(lock) = lock(server, &app).await else { continue };
            // The state as it is under the lock.
            let Ok(Some(view)) = server.store.app_view(&app).await else {
                lock.discard().await;
                continue;
            };
            let outcome = provisioner.reconcile(app_state(&view)).await;
            // Replaced units serve at new addresses: the routes follow.
            if outcome.as_ref().is_ok_and(|r| !r.is_empty())
                && let Err(e) = crate::apps::refresh(server, &app, &crate::apps::Quiet).await
            {
                tracing::warn!(app, error = %e.message, "healing: the routes could not follow the repairs");
            }
            lock.discard().await;
            match outcome {
                Ok(repairs) => {
                    for r in repairs {
                        record(server, &app, &r).await;
                        repaired += 1;
                    }
                }
                Err(e) => tracing::warn!(app, error = %e, "healing: reconcile failed"),
            }
        }
    }
    repaired
}

/// Takes `app`'s lock for a round, as an internal event that is discarded
/// afterwards; `None` when an operation holds the app.
async fn lock(server: &Arc<Server>, app: &str) -> Option<crate::events::RunningEvent> {
    server.events.start(healer_event(Target::new("app", app), app, serde_json::json!({"app": app}), true)).await.ok()
}

/// An internal `healer` event on `target`, readable by whoever reads `app`'s events.
fn healer_event(target: Target, app: &str, data: serde_json::Value, lock: bool) -> EventSpec {
    EventSpec {
        target,
        kind: HEALER.into(),
        internal: true,
        owner: Owner::Internal,
        source_ip: String::new(),
        allowed: Allowed::new("app.read.events", vec![Context::new(ContextType::App, app)]),
        allowed_cancel: None,
        cancelable: false,
        start_custom: data,
        lock,
    }
}

async fn record(server: &Arc<Server>, app: &str, r: &Repair) {
    tracing::info!(app, failing = r.failing_unit, created = r.created_unit, reason = r.reason, "healing: unit replaced");
    let data = serde_json::json!({
        "app": app,
        "failingUnit": r.failing_unit,
        "failingNode": r.failing_node,
        "createdUnit": r.created_unit,
        "createdNode": r.created_node,
        "reason": r.reason,
    });
    match server.events.start(healer_event(Target::new("container", &r.created_unit), app, data, false)).await {
        Ok(event) => {
            let _ = event.done(Ok::<(), String>(())).await;
        }
        Err(e) => tracing::warn!(app, error = %e, "healing: cannot record the repair"),
    }
}
