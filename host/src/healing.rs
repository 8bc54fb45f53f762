//! Unit healing: every `[healing] interval_secs`, each app of a pool whose
//! provisioner runs units on nodes or on a Swarm (is granted `containers` or
//! `swarm`) is handed to its provisioner's `reconcile`, which replaces dead
//! or missing units (or, on a Swarm, reports the tasks Swarm replaced). Every
//! repair becomes a finished `healer` event on the new unit (`/1.3/healing`
//! lists them).
//!
//! A round holds the app's lock while it reconciles (an internal event,
//! discarded afterwards), so no operation changes the app's units meanwhile;
//! an app an operation holds is left for the next round.
//!
//! Nodes that came from an IaaS are healed too, by replacement: a node
//! whose engine failed `[healing] node_max_failures` checks in a row, none
//! answered for its pool's `MaxTimeSinceSuccess` (`/1.2/healing/node`,
//! default 300 s) and healing `Enabled` there, gets a new machine from the
//! same parameters; once its engine answers it joins the pool, the old node
//! leaves it, the pool's apps converge (their units start on the new node)
//! and the old machine is destroyed. Each replacement is a `healer` event on
//! the node (`/1.3/healing?filter=node`).

use crate::events::{Allowed, EventSpec, Target};
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

/// Starts the rounds; they end when the server is gone. With `follow`, the
/// apps on clusters that heal themselves (Swarm) get rounds of their own
/// that often.
pub fn start(server: Weak<Server>, every: Duration, follow: Option<Duration>) {
    async fn heal(server: Arc<Server>, which: Healed) {
        let replaced = nodes_round(&server).await;
        let repaired = round(&server, which).await;
        server.metrics.healing_repairs(repaired + replaced);
    }
    if follow.is_some() {
        crate::server::rounds(server.clone(), every, |server| Box::pin(heal(server, Healed::OnNodes)));
    } else {
        crate::server::rounds(server.clone(), every, |server| Box::pin(heal(server, Healed::All)));
    }
    if let Some(follow) = follow {
        crate::server::rounds(server, follow, |server| Box::pin(async move {
            let repaired = round(&server, Healed::OnClusters).await;
            server.metrics.healing_repairs(repaired);
        }));
    }
}

/// Whose apps a round reconciles.
#[derive(Clone, Copy, PartialEq)]
pub enum Healed {
    /// Of provisioners that run units on nodes (`containers`).
    OnNodes,
    /// Of provisioners whose cluster heals itself (`swarm`).
    OnClusters,
    All,
}

impl Healed {
    fn takes(self, server: &Server, provisioner: &str) -> bool {
        let (nodes, clusters) = (server.config.uses_nodes(provisioner), server.config.uses_clusters(provisioner));
        match self {
            Healed::OnNodes => nodes,
            Healed::OnClusters => clusters,
            Healed::All => nodes || clusters,
        }
    }
}

/// How long a new machine's engine may take to answer.
const NEW_ENGINE_LIMIT: Duration = Duration::from_secs(120);
/// `MaxTimeSinceSuccess` when neither the pool nor the default sets it.
const MAX_TIME_SINCE_SUCCESS: u64 = 300;
/// Nodes replaced in one round at most (a wide outage is not answered by
/// replacing everything at once).
const REPLACEMENTS_PER_ROUND: usize = 2;

/// Each IaaS node's failed checks in a row and its last answer (this process).
#[derive(Default)]
pub struct NodeChecks(std::sync::Mutex<std::collections::HashMap<String, (u32, std::time::Instant)>>);

impl NodeChecks {
    /// Records a check; the failures in a row and the last success then.
    fn record(&self, address: &str, ok: bool) -> (u32, std::time::Instant) {
        let mut map = self.0.lock().unwrap();
        let entry = map.entry(address.to_string()).or_insert((0, std::time::Instant::now()));
        if ok {
            *entry = (0, std::time::Instant::now());
        } else {
            entry.0 += 1;
        }
        *entry
    }

    fn forget(&self, address: &str) {
        self.0.lock().unwrap().remove(address);
    }
}

/// Checks every node that came from an IaaS; replaces the ones gone; how
/// many. Machines made for a node that never joined go first.
pub async fn nodes_round(server: &Arc<Server>) -> usize {
    crate::iaas::sweep_orphans(server, Duration::from_secs(server.config.healing.orphan_machine_secs)).await;
    let Ok(nodes) = server.store.nodes().await else { return 0 };
    let settings = server.store.pool_settings(SETTING).await.unwrap_or_default();
    let setting = |pool: &str, field: &str| [settings.get(pool), settings.get("")].into_iter().flatten().find_map(|v| v.get(field).filter(|v| !v.is_null()).cloned());
    let mut replaced = 0;
    for node in nodes.into_iter().filter(|n| !n.iaas_id.is_empty() && n.status != crate::store::NODE_REMOVING) {
        if !setting(&node.pool, "Enabled").and_then(|v| v.as_bool()).unwrap_or(true) {
            continue;
        }
        let ok = server.docker.ping(&node.address).await.is_ok();
        let (failures, last_success) = server.node_checks.record(&node.address, ok);
        let since = setting(&node.pool, "MaxTimeSinceSuccess").and_then(|v| v.as_u64()).unwrap_or(MAX_TIME_SINCE_SUCCESS);
        if ok || failures < server.config.healing.node_max_failures || last_success.elapsed() < Duration::from_secs(since) {
            continue;
        }
        if replaced >= REPLACEMENTS_PER_ROUND {
            break;
        }
        let reason = format!("{failures} checks in a row failed, no answer for {} s", last_success.elapsed().as_secs());
        match replace(server, &node, &reason).await {
            Ok(created) => {
                server.node_checks.forget(&node.address);
                record_node(server, &node, &created, &reason, "").await;
                replaced += 1;
            }
            Err(e) => {
                tracing::warn!(node = node.address, error = %e, "healing: the node could not be replaced");
                record_node(server, &node, "", &reason, &e).await;
            }
        }
    }
    replaced
}

/// Replaces a node gone silent with a new machine from the same
/// parameters; the new node's address.
async fn replace(server: &Arc<Server>, node: &crate::store::NodeRecord, reason: &str) -> Result<String, String> {
    use crate::apps::Quiet;
    // The node's lock: one replacement at a time, over every replica.
    let spec = healer_event(Target::new("node", &node.address), "", serde_json::json!({"node": node.address, "reason": reason}), true);
    let spec = EventSpec { allowed: Allowed::new("pool.read.events", vec![Context::new(ContextType::Pool, &node.pool)]), ..spec };
    let node_lock = server.events.start(spec).await.map_err(|e| e.to_string())?;
    let outcome = async {
        // Under the lock, as it is now: another replica may have replaced it.
        match server.store.node(&node.address).await.map_err(|e| e.to_string())? {
            Some(now) if now.iaas_id == node.iaas_id => {}
            _ => return Err(format!("node {} was replaced or removed meanwhile", node.address)),
        }
        let old = server.store.machine(&node.iaas_id).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("machine {} of the node is not recorded", node.iaas_id))?;
        tracing::info!(node = node.address, machine = old.id, reason, "healing: replacing the node");
        let new = crate::iaas::join_like(server, &old, &node.pool, &node.metadata, NEW_ENGINE_LIMIT, &Quiet).await?;
        // The old node leaves; the pool's apps start their missing units.
        server.store.remove_node(&node.address).await.map_err(|e| e.to_string())?;
        server.docker.forget(&node.address);
        for app in server.store.app_names_where(AppColumn::Pool, &node.pool).await.unwrap_or_default() {
            let Some(app_lock) = lock(server, &app).await else {
                tracing::warn!(app, "healing: the app is busy; its units follow at the next round");
                continue;
            };
            if let Err(e) = crate::apps::refresh(server, &app, &Quiet).await {
                tracing::warn!(app, error = %e.message, "healing: the app's units did not all move to the new node");
            }
            app_lock.discard().await;
        }
        if let Err(e) = crate::iaas::destroy(server, &old).await {
            // Left joining no node: the orphan sweep tries again.
            tracing::warn!(machine = old.id, error = %e.message, "healing: the old machine could not be destroyed; tried again later");
            let _ = server.store.set_machine_joining(&old.id, &node.pool).await;
        }
        Ok(new.address)
    }
    .await;
    node_lock.discard().await;
    outcome
}

/// A finished `healer` event on the failing node: what replaced it, or why nothing did.
async fn record_node(server: &Arc<Server>, node: &crate::store::NodeRecord, created: &str, reason: &str, error: &str) {
    let data = serde_json::json!({"failingNode": node.address, "createdNode": created, "reason": reason, "pool": node.pool});
    let spec = healer_event(Target::new("node", &node.address), "", data, false);
    let spec = EventSpec { allowed: Allowed::new("pool.read.events", vec![Context::new(ContextType::Pool, &node.pool)]), ..spec };
    match server.events.start(spec).await {
        Ok(event) => {
            let result = if error.is_empty() { Ok(()) } else { Err(error.to_string()) };
            let _ = event.done(result).await;
        }
        Err(e) => tracing::warn!(node = node.address, error = %e, "healing: cannot record the node's replacement"),
    }
}

/// One pass over the apps of node-running provisioners; the repairs made.
pub async fn round(server: &Arc<Server>, which: Healed) -> usize {
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
        let Some(provisioner) = server.provisioners.get(name).filter(|_| which.takes(server, name)) else { continue };
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

pub(crate) async fn lock(server: &Arc<Server>, app: &str) -> Option<crate::events::RunningEvent> {
    server.events.start(healer_event(Target::new("app", app), app, serde_json::json!({"app": app}), true)).await.ok()
}

/// An internal `healer` event on `target`, readable by whoever reads `app`'s events.
fn healer_event(target: Target, app: &str, data: serde_json::Value, lock: bool) -> EventSpec {
    let allowed = Allowed::new("app.read.events", vec![Context::new(ContextType::App, app)]);
    EventSpec { internal: true, lock, ..EventSpec::by_torii(target, HEALER, allowed, data) }
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
