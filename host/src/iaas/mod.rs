//! Machines from IaaS drivers: made from parameters (a template's, the
//! request's over them), recorded, waited for until their Docker engine
//! answers, and destroyed (record and all). The API (`api::iaas`,
//! `api::nodes`) calls in here.

pub mod autoscale;

use crate::apps::Progress;
use crate::error::{ApiError, ApiResult};
use crate::plugin::iaas::{IaasPlugin, Machine};
use crate::server::Server;
use crate::store::{MachineRecord, NODE_READY, NodeRecord};
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

/// The driver named `iaas`, or tsuru's error for an unknown one.
pub fn driver<'a>(server: &'a Server, iaas: &str) -> ApiResult<&'a IaasPlugin> {
    server.iaases.get(iaas).ok_or_else(|| ApiError::bad_request(format!("IaaS provider {iaas:?} based on {iaas:?} not registered")))
}

/// The parameters a machine is made from: template `template`'s (if any),
/// with `params` over them; `iaas` names the driver (the template's when
/// the request names none).
pub async fn expand(server: &Server, template: Option<&str>, mut params: BTreeMap<String, String>) -> ApiResult<BTreeMap<String, String>> {
    if let Some(name) = template.filter(|t| !t.is_empty()) {
        let t = server.store.template(name).await?.ok_or_else(|| ApiError::bad_request(format!("template {name:?} not found")))?;
        for (k, v) in t.data {
            params.entry(k).or_insert(v);
        }
        params.entry("iaas".into()).or_insert(t.iaas);
    }
    params.remove("template");
    Ok(params)
}

fn record(iaas: &str, m: Machine, joining: &str) -> MachineRecord {
    MachineRecord {
        joining: joining.to_string(),
        created_at: 0,
        id: m.id,
        iaas: iaas.to_string(),
        status: m.status,
        address: m.address,
        port: i64::from(m.port),
        protocol: m.protocol,
        creation_params: m.creation_params.into_iter().collect(),
    }
}

/// Makes a machine with driver `iaas` from `params` and records it, as
/// joining pool `joining` (empty: made for no node) until its node joins.
pub async fn create(server: &Server, iaas: &str, params: &BTreeMap<String, String>, joining: &str, out: &impl Progress) -> ApiResult<MachineRecord> {
    let driver = driver(server, iaas)?;
    out.line(format!("---- Creating a machine with IaaS {iaas:?} ----\n")).await;
    let pairs: Vec<(String, String)> = params.iter().filter(|(k, _)| k.as_str() != "iaas").map(|(k, v)| (k.clone(), v.clone())).collect();
    let machine = record(iaas, driver.create(pairs).await?, joining);
    if let Err(e) = server.store.add_machine(&machine).await {
        // Not recorded: not kept either.
        let _ = driver.destroy(&machine.id).await;
        return Err(e.into());
    }
    out.line(format!(" ---> machine {} ({}) at {}\n", machine.id, machine.status, machine.engine_address())).await;
    Ok(machine)
}

/// Waits until the machine's Docker engine answers, at most `limit`.
pub async fn wait_engine(server: &Server, machine: &MachineRecord, limit: Duration, out: &impl Progress) -> ApiResult<String> {
    // The driver answered an address torii does not reach: its fault, not the caller's.
    let address = crate::docker::check_address(&machine.engine_address()).map_err(|e| ApiError::new(axum::http::StatusCode::BAD_GATEWAY, e.to_string()))?;
    out.line(format!(" ---> waiting for the docker engine at {address} (at most {} s)\n", limit.as_secs())).await;
    let started = Instant::now();
    loop {
        let left = limit.saturating_sub(started.elapsed()).max(Duration::from_millis(100));
        let answered = match tokio::time::timeout(left, server.docker.ping(&address)).await {
            Ok(r) => r.map_err(|e| e.to_string()),
            Err(_) => Err(format!("no answer within {} ms", left.as_millis())),
        };
        match answered {
            Ok(()) => return Ok(address),
            Err(e) if started.elapsed() >= limit => {
                return Err(ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("the docker engine of machine {} did not answer within {} s: {e}", machine.id, limit.as_secs())));
            }
            Err(_) => tokio::time::sleep(Duration::from_millis(500)).await,
        }
    }
}

/// Checks the engine at `address` and records it as a node of `pool`; its
/// pool's node containers start there.
pub async fn register(
    server: &Server,
    w: &impl Progress,
    provisioner: &str,
    address: String,
    pool: String,
    mut metadata: std::collections::BTreeMap<String, String>,
    iaas_id: String,
) -> Result<NodeRecord, String> {
    metadata.remove("pool");
    metadata.remove("address");
    if server.store.node(&address).await.map_err(|e| e.to_string())?.is_some() {
        return Err(format!("node with address {address:?} already exists in provisioner {provisioner:?}"));
    }
    w.line(format!("---- Checking the docker engine at {address} ----\n")).await;
    let engine = server.docker.info(&address).await.map_err(|e| e.to_string())?;
    w.line(format!(" ---> docker {} on {:?}: {} CPUs, {} MiB\n", engine.version, engine.name, engine.cpus, engine.memory >> 20)).await;
    let node = NodeRecord { address: address.clone(), pool, metadata, status: NODE_READY.into(), iaas_id };
    server.store.add_node(&node).await.map_err(|e| match e {
        crate::store::StoreError::Conflict(_) => format!("node with address {address:?} already exists in provisioner {provisioner:?}"),
        other => other.to_string(),
    })?;
    if !node.iaas_id.is_empty()
        && let Err(e) = server.store.machine_joined(&node.iaas_id).await
    {
        // Not joined after all: the caller gives the machine back, so the node goes too.
        let _ = server.store.remove_node(&address).await;
        return Err(e.to_string());
    }
    w.line(format!("---- Node {address} added to pool {:?} ----\n", node.pool)).await;
    // The node containers of its pool start there (the node stays added if they do not).
    match crate::docker::nodecontainers::ensure_all(&server.docker, &server.store, None, Some(&node), false).await {
        Ok(lines) => {
            for line in lines {
                w.line(line).await;
            }
        }
        Err(e) => {
            w.line(format!(" ---> node containers did not start on {address}: {e}\n")).await;
        }
    }
    Ok(node)
}

/// A new machine made like `like` (its driver, its parameters) joins
/// `pool` as a node with `metadata` once its engine answers within `wait`;
/// given back if it does not join. Node healing and node autoscale grow
/// pools this way.
pub async fn join_like(
    server: &Server,
    like: &MachineRecord,
    pool: &str,
    metadata: &BTreeMap<String, String>,
    wait: Duration,
    out: &impl Progress,
) -> Result<NodeRecord, String> {
    let mut params = like.creation_params.clone();
    params.insert("iaas".into(), like.iaas.clone());
    let made = create(server, &like.iaas, &params, pool, out).await.map_err(|e| e.message)?;
    let joined = async {
        let address = wait_engine(server, &made, wait, out).await.map_err(|e| e.message)?;
        let provisioner = match server.store.pool(pool).await.map_err(|e| e.to_string())? {
            Some(p) => server.config.pool_provisioner(&p.provisioner).to_string(),
            None => return Err(format!("pool {pool} is gone")),
        };
        register(server, out, &provisioner, address, pool.to_string(), metadata.clone(), made.id.clone()).await
    }
    .await;
    if joined.is_err() {
        let _ = destroy(server, &made).await;
    }
    joined
}

/// Destroys the machines made for a node that never joined (their node add
/// died with its process): joining for longer than `older_than`. How many.
pub async fn sweep_orphans(server: &Server, older_than: std::time::Duration) -> usize {
    let Ok(machines) = server.store.machines().await else { return 0 };
    let limit = crate::store::now_millis() - i64::try_from(older_than.as_millis()).unwrap_or(i64::MAX);
    let mut swept = 0;
    for m in machines.into_iter().filter(|m| !m.joining.is_empty() && m.created_at < limit) {
        if server.store.node_of_machine(&m.id).await.ok().flatten().is_some() {
            // Its node is there after all: it joined.
            let _ = server.store.machine_joined(&m.id).await;
            continue;
        }
        match destroy(server, &m).await {
            Ok(()) => {
                tracing::info!(machine = m.id, pool = m.joining, "healing: a machine whose node never joined was destroyed");
                swept += 1;
            }
            Err(e) => tracing::warn!(machine = m.id, error = %e.message, "healing: a machine whose node never joined could not be destroyed"),
        }
    }
    swept
}

/// Destroys a machine through its driver, then its record.
pub async fn destroy(server: &Server, machine: &MachineRecord) -> ApiResult<()> {
    match server.iaases.get(&machine.iaas) {
        Some(driver) => driver.destroy(&machine.id).await?,
        None => return Err(ApiError::internal(format!("IaaS provider {:?} based on {:?} not registered", machine.iaas, machine.iaas))),
    }
    server.store.remove_machine(&machine.id).await?;
    Ok(())
}
