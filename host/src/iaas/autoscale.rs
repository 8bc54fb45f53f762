//! Node autoscale (`/1.3/node/autoscale`, API-NOTES §2.17): pools whose
//! nodes come from an IaaS grow and shrink with their units, as tsuru's
//! count scaler does. A pool's rule (else the default rule, `""`) gives
//! each node room for `MaxContainerCount` units:
//!
//! - free slots = nodes × MaxContainerCount − units the pool's apps run;
//! - below zero: ⌈−free ÷ MaxContainerCount⌉ machines are made from the
//!   parameters of one of the pool's IaaS nodes, join the pool, and the
//!   apps are rebalanced onto them (unless `PreventRebalance`);
//! - above MaxContainerCount × ScaleDownRatio: ⌊free ÷ that⌋ IaaS nodes
//!   with the fewest units leave (their units move first) and their
//!   machines are destroyed.
//!
//! Each change is an `autoscale` event on the pool (the history route lists
//! them). Rounds run every `[node_autoscale] run_interval_secs` when
//! `enabled`, and on `POST /1.3/node/autoscale/run`.

use crate::apps::{Progress, Quiet};
use crate::events::{Allowed, EventSpec, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{AppColumn, NODE_READY, NODE_REMOVING, NodeRecord};
use serde::{Deserialize, Serialize};
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;

/// The pool setting kind of the rules.
pub const SETTING: &str = "node-autoscale";
/// The event kind of a node autoscale change.
pub const KIND: &str = "autoscale";
/// `ScaleDownRatio` when a rule gives none.
const DEFAULT_SCALE_DOWN_RATIO: f64 = 1.333;

/// A rule as tsuru shows it.
#[derive(Debug, Clone, Serialize, Deserialize, PartialEq)]
#[serde(rename_all = "PascalCase")]
pub struct Rule {
    pub metadata_filter: String,
    #[serde(default)]
    pub error: String,
    pub max_container_count: i64,
    pub scale_down_ratio: f64,
    pub max_memory_ratio: f64,
    pub enabled: bool,
    pub prevent_rebalance: bool,
}

impl Rule {
    /// Defaults filled in and checked, as tsuru's `normalize`; the message
    /// when it cannot be kept.
    pub fn normalize(&mut self) -> Result<(), String> {
        if self.scale_down_ratio == 0.0 {
            self.scale_down_ratio = DEFAULT_SCALE_DOWN_RATIO;
        } else if self.scale_down_ratio <= 1.0 {
            return Err(format!("invalid rule, scale down ratio needs to be greater than 1.0, got {:.6}", self.scale_down_ratio));
        }
        if !(0..=MAX_CONTAINER_COUNT).contains(&self.max_container_count) {
            return Err(format!("invalid rule, max container count must be between 0 and {MAX_CONTAINER_COUNT}"));
        }
        if !self.scale_down_ratio.is_finite() || self.scale_down_ratio > 1000.0 {
            return Err("invalid rule, scale down ratio must be at most 1000".into());
        }
        if self.enabled && self.max_container_count <= 0 {
            // torii knows no node memory metadata: the count is the rule.
            return Err("invalid rule, either memory information or max container count must be set".into());
        }
        Ok(())
    }
}

/// Every rule, by pool (`""`: the default).
pub async fn rules(server: &Server) -> crate::store::StoreResult<BTreeMap<String, Rule>> {
    Ok(server.store.pool_settings(SETTING).await?.into_iter().filter_map(|(pool, v)| serde_json::from_value(v).ok().map(|r| (pool, r))).collect())
}

/// What a round decided for one pool.
#[derive(Debug, PartialEq, Eq)]
pub enum Decision {
    Add(usize),
    Remove(usize),
    Keep,
}

/// Machines one round adds to a pool at most (the next round adds more
/// if still short), so a burst of units cannot order a fleet at once.
pub const MAX_ADD_PER_ROUND: usize = 4;
/// The largest `MaxContainerCount` a rule takes.
pub const MAX_CONTAINER_COUNT: i64 = 1_000_000;

/// tsuru's count scaler: `nodes` nodes, `units` units, the rule's room and ratio.
pub fn decide(nodes: usize, units: i64, max: i64, ratio: f64) -> (Decision, i64) {
    let max = max.clamp(1, MAX_CONTAINER_COUNT);
    let free = i64::try_from(nodes).unwrap_or(i64::MAX).saturating_mul(max).saturating_sub(units.max(0));
    let scaled = ((max as f64) * ratio) as i64;
    if scaled > 0 && free > scaled {
        return (Decision::Remove((free / scaled) as usize), free);
    }
    if free >= 0 {
        return (Decision::Keep, free);
    }
    let short = free.unsigned_abs().div_ceil(max as u64);
    (Decision::Add(usize::try_from(short).unwrap_or(usize::MAX).min(MAX_ADD_PER_ROUND)), free)
}

/// Starts the rounds; they end when the server is gone.
pub fn start(server: Weak<Server>, every: Duration) {
    crate::server::rounds(server, every, |server| Box::pin(async move {
        if let Err(e) = run(&server, &Quiet).await {
            tracing::warn!(error = %e, "node autoscale: the round failed");
        }
    }));
}

/// One round over every pool with an enabled rule; progress to `out`.
pub async fn run(server: &Arc<Server>, out: &impl Progress) -> Result<(), String> {
    let rules = rules(server).await.map_err(|e| e.to_string())?;
    let pools: std::collections::BTreeSet<String> = server.store.nodes().await.map_err(|e| e.to_string())?.into_iter().map(|n| n.pool).collect();
    for pool in pools {
        let Some(rule) = rules.get(&pool).or_else(|| rules.get("")).filter(|r| r.enabled) else { continue };
        // One round per pool at a time, over every replica and `POST /run`.
        let Some(lock) = pool_lock(server, &pool).await else {
            out.line(format!("---- pool {pool}: another round is at work there ----\n")).await;
            continue;
        };
        let result = pool_round(server, &pool, rule, out).await;
        lock.discard().await;
        result?;
    }
    Ok(())
}

/// The pool's autoscale lock: an internal event, discarded after the round.
async fn pool_lock(server: &Arc<Server>, pool: &str) -> Option<crate::events::RunningEvent> {
    let allowed = Allowed::new("pool.read.events", vec![Context::new(ContextType::Pool, pool)]);
    let spec = EventSpec { internal: true, lock: true, ..EventSpec::by_torii(Target::new("node-autoscale", pool), KIND, allowed, serde_json::json!({"pool": pool})) };
    server.events.start(spec).await.ok()
}

/// One pool's decision, read under its lock; changes stop at the first failure.
async fn pool_round(server: &Arc<Server>, pool: &str, rule: &Rule, out: &impl Progress) -> Result<(), String> {
    let nodes = server.store.pool_nodes(pool).await.map_err(|e| e.to_string())?;
    let mine: Vec<&NodeRecord> = nodes.iter().filter(|n| n.status == NODE_READY).collect();
    let mut units = 0;
    for app in server.store.app_names_where(AppColumn::Pool, pool).await.map_err(|e| e.to_string())? {
        if let Some(d) = server.store.desired(&app).await.map_err(|e| e.to_string())? {
            units += crate::store::units_in_use(&d.versions);
        }
    }
    let (decision, free) = decide(mine.len(), units, rule.max_container_count, rule.scale_down_ratio);
    let reason = format!("number of free slots is {free}");
    out.line(format!("---- pool {pool}: {} node(s), {units} unit(s), {reason} ----\n", mine.len())).await;
    match decision {
        Decision::Keep => {}
        Decision::Add(n) => {
            for _ in 0..n {
                if !change(server, pool, "add", &reason, out, add_node(server, pool, &mine, rule, out)).await {
                    break;
                }
            }
        }
        Decision::Remove(n) => {
            for node in removable(server, &mine, n).await {
                if !change(server, pool, "remove", &reason, out, remove_node(server, &node, out)).await {
                    break;
                }
            }
        }
    }
    Ok(())
}

/// Runs one change as an `autoscale` event on the pool; whether it worked.
async fn change(server: &Arc<Server>, pool: &str, action: &str, reason: &str, out: &impl Progress, work: impl std::future::Future<Output = Result<String, String>>) -> bool {
    let allowed = Allowed::new("pool.read.events", vec![Context::new(ContextType::Pool, pool)]);
    let spec = EventSpec::by_torii(Target::new("pool", pool), KIND, allowed, serde_json::json!({"pool": pool, "action": action, "reason": reason}));
    let event = match server.events.start(spec).await {
        Ok(e) => e,
        Err(e) => {
            out.line(format!(" ---> {action} skipped: {e}\n")).await;
            return false;
        }
    };
    let result = work.await;
    match &result {
        Ok(node) => {
            event.set_end_data(serde_json::json!({"node": node}));
            out.line(format!(" ---> {action} node {node}: done\n")).await;
        }
        Err(e) => out.line(format!(" ---> {action} failed: {e}\n")).await,
    }
    event.done(result).await.is_ok()
}

/// A machine from the parameters of one of the pool's IaaS nodes joins the
/// pool; the apps are rebalanced onto it unless the rule prevents it.
async fn add_node(server: &Arc<Server>, pool: &str, nodes: &[&NodeRecord], rule: &Rule, out: &impl Progress) -> Result<String, String> {
    let mut source = None;
    for n in nodes.iter().filter(|n| !n.iaas_id.is_empty()) {
        if let Some(m) = server.store.machine(&n.iaas_id).await.map_err(|e| e.to_string())? {
            source = Some((m, (*n).clone()));
            break;
        }
    }
    let (machine, like) = source.ok_or_else(|| format!("pool {pool} has no node from an IaaS to make more like"))?;
    let wait = Duration::from_secs(server.config.node_autoscale.wait_new_machine_secs.max(1));
    let node = super::join_like(server, &machine, pool, &like.metadata, wait, out).await?;
    if !rule.prevent_rebalance {
        for app in server.store.app_names_where(AppColumn::Pool, pool).await.map_err(|e| e.to_string())? {
            let Some(lock) = crate::healing::lock(server, &app).await else { continue };
            let moved = async {
                let record = server.store.app(&app).await.map_err(|e| e.to_string())?.ok_or("app gone")?;
                let provisioner = crate::apps::provisioner_of(server, &record).await.map_err(|e| e.message)?;
                let view = server.store.app_view(&app).await.map_err(|e| e.to_string())?.ok_or("app gone")?;
                for line in provisioner.rebalance(crate::plugin::provisioner::app_state(&view), false).await.map_err(|e| e.to_string())? {
                    out.line(line).await;
                }
                crate::apps::refresh(server, &app, out).await.map_err(|e| e.message)
            }
            .await;
            lock.discard().await;
            if let Err(e) = moved {
                out.line(format!(" ---> app {app} was not rebalanced: {e}\n")).await;
            }
        }
    }
    Ok(node.address)
}

/// The `n` IaaS nodes of `nodes` running the fewest of the pool's units
/// (as the apps' provisioners list them).
async fn removable(server: &Arc<Server>, nodes: &[&NodeRecord], n: usize) -> Vec<NodeRecord> {
    let mut load: BTreeMap<String, usize> = BTreeMap::new();
    let pool = nodes.first().map(|n| n.pool.clone()).unwrap_or_default();
    for app in server.store.app_names_where(AppColumn::Pool, &pool).await.unwrap_or_default() {
        let Ok(Some(view)) = server.store.app_view(&app).await else { continue };
        let Ok(provisioner) = crate::apps::provisioner_of(server, &view.app).await else { continue };
        for unit in provisioner.units(crate::plugin::provisioner::app_state(&view)).await.unwrap_or_default() {
            *load.entry(unit.node).or_default() += 1;
        }
    }
    let mut counted = Vec::new();
    for node in nodes.iter().filter(|n| !n.iaas_id.is_empty()) {
        counted.push((load.get(&node.address).copied().unwrap_or(0), (*node).clone()));
    }
    counted.sort_by_key(|(load, node)| (*load, node.address.clone()));
    // A pool keeps one node at least.
    let keep = nodes.len().saturating_sub(1);
    counted.into_iter().take(n.min(keep)).map(|(_, node)| node).collect()
}

/// The node's units move off, then it leaves and its machine is destroyed.
async fn remove_node(server: &Arc<Server>, node: &NodeRecord, out: &impl Progress) -> Result<String, String> {
    let mut leaving = node.clone();
    leaving.status = NODE_REMOVING.into();
    server.store.update_node(&leaving).await.map_err(|e| e.to_string())?;
    for app in server.store.app_names_where(AppColumn::Pool, &node.pool).await.map_err(|e| e.to_string())? {
        let Some(lock) = crate::healing::lock(server, &app).await else {
            server.store.update_node(node).await.map_err(|e| e.to_string())?;
            return Err(format!("app {app} is busy: node {} stays", node.address));
        };
        let moved = crate::apps::refresh(server, &app, out).await;
        lock.discard().await;
        if let Err(e) = moved {
            server.store.update_node(node).await.map_err(|e| e.to_string())?;
            return Err(format!("the units of app {app} did not move off {}: {}", node.address, e.message));
        }
    }
    server.store.remove_node(&node.address).await.map_err(|e| e.to_string())?;
    server.docker.forget(&node.address);
    if let Some(m) = server.store.machine(&node.iaas_id).await.map_err(|e| e.to_string())? {
        super::destroy(server, &m).await.map_err(|e| e.message)?;
    }
    Ok(node.address.clone())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn counts_as_tsuru_does() {
        // 1 node of room 2, 3 units: one node more.
        assert_eq!(decide(1, 3, 2, 1.333), (Decision::Add(1), -1));
        assert_eq!(decide(1, 7, 2, 1.333), (Decision::Add(3), -5));
        // Never more than a few machines a round, whatever the shortfall.
        assert_eq!(decide(1, 1_000_000, 2, 1.333).0, Decision::Add(MAX_ADD_PER_ROUND));
        assert_eq!(decide(usize::MAX, i64::MAX, i64::MAX, 1.333).0, Decision::Keep);
        assert_eq!(decide(2, 4, 2, 1.333), (Decision::Keep, 0));
        // 2 nodes, 1 unit: 3 free > 2 (2 × 1.333): one node less.
        assert_eq!(decide(2, 1, 2, 1.333), (Decision::Remove(1), 3));
        assert_eq!(decide(3, 1, 2, 1.333).0, Decision::Remove(2));
    }

    #[test]
    fn rules_are_normalized() {
        let mut r = Rule { metadata_filter: "p".into(), error: String::new(), max_container_count: 2, scale_down_ratio: 0.0, max_memory_ratio: 0.0, enabled: true, prevent_rebalance: false };
        r.normalize().unwrap();
        assert_eq!(r.scale_down_ratio, DEFAULT_SCALE_DOWN_RATIO);
        r.scale_down_ratio = 0.5;
        assert_eq!(r.normalize().unwrap_err(), "invalid rule, scale down ratio needs to be greater than 1.0, got 0.500000");
        r.scale_down_ratio = 2.0;
        r.max_container_count = 0;
        assert!(r.normalize().is_err());
        r.enabled = false;
        assert!(r.normalize().is_ok());
    }
}
