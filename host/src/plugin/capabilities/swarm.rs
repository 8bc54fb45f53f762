//! `swarm`: Docker Swarm operations for provisioner plugins. Each call names
//! a pool; the host checks the calling plugin provisions it, finds the
//! plugin's cluster serving it (`/1.3/provisioner/clusters`), and sends the
//! call to that cluster's managers through its own client (`crate::docker`),
//! bounded in time. A plugin acts only on the services it made (they carry
//! its name as owner), and a probe goes only to a node of the cluster.

use super::bindings::torii::plugin::swarm::{Host, Image, Mount, Node, Service, ServiceSpec, Task};
use crate::config::Capability;
use crate::docker::swarm::{ServiceDef, ServiceInfo, SwarmNode, TaskInfo};
use crate::docker::{EngineError, Engines};
use crate::plugin::PluginState;
use crate::plugin::instance::HostCtx;
use std::sync::Arc;
use std::time::{Duration, Instant};

const UNAVAILABLE: &str = "docker swarm clusters are not available to this plugin";

/// The manager addresses of the plugin's cluster serving `pool`.
async fn managers(host: &HostCtx, pool: &str) -> Result<Vec<String>, String> {
    let Some(apps) = host.apps.as_ref() else { return Err(UNAVAILABLE.into()) };
    let record = host.store.pool(pool).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no pool {pool:?}"))?;
    let provisioner = crate::config::provisioner_or(&record.provisioner, &apps.default_provisioner);
    if provisioner != host.name {
        return Err(format!("pool {pool:?} is not provisioned by {:?}", host.name));
    }
    let cluster = host.store.cluster_of_pool(&host.name, pool).await.map_err(|e| e.to_string())?.ok_or_else(|| {
        format!("pool {pool:?} has no {:?} cluster: add one with POST /1.3/provisioner/clusters naming the pool", host.name)
    })?;
    if cluster.addresses.is_empty() {
        return Err(format!("cluster {:?} names no manager address", cluster.name));
    }
    Ok(cluster.addresses)
}

impl PluginState {
    /// Runs `f` against a manager of `pool`'s cluster: the first that
    /// answers a ping when the cluster names several.
    async fn on_cluster<T>(&mut self, pool: &str, f: impl AsyncFnOnce(&Engines, &str) -> Result<T, EngineError>) -> wasmtime::Result<Result<T, String>> {
        self.check(Capability::Swarm)?;
        let host = self.host.clone();
        let Some(engines) = host.apps.as_ref().and_then(|a| a.docker.clone()) else { return Ok(Err(UNAVAILABLE.into())) };
        let addresses = match managers(&host, pool).await {
            Ok(a) => a,
            Err(e) => return Ok(Err(e)),
        };
        let mut chosen = addresses[0].clone();
        if addresses.len() > 1 {
            let mut last = String::new();
            let mut found = false;
            for address in &addresses {
                match engines.swarm_ping(address).await {
                    Ok(()) => {
                        chosen = address.clone();
                        found = true;
                        break;
                    }
                    Err(e) => last = e.to_string(),
                }
            }
            if !found {
                return Ok(Err(format!("no manager of the pool's cluster answers: {last}")));
            }
        }
        Ok(f(&engines, &chosen).await.map_err(|e| e.to_string()))
    }

    /// The Swarm spec of `spec`, once the capability is granted: its mounts
    /// resolved from the volumes of `pool`.
    async fn service_def(&mut self, pool: &str, spec: ServiceSpec) -> wasmtime::Result<Result<ServiceDef, String>> {
        self.check(Capability::Swarm)?;
        Ok(def_in(&self.host, pool, spec).await)
    }

    fn owner(&self) -> String {
        self.host.name.clone()
    }
}

/// The Swarm spec of `s`, its mounts resolved from the volumes of `pool`.
async fn def_in(host: &HostCtx, pool: &str, s: ServiceSpec) -> Result<ServiceDef, String> {
    let wanted: Vec<super::Mounted> = s.mounts.iter().map(|m| super::Mounted { volume: &m.volume, target: &m.target, read_only: m.read_only }).collect();
    let mounts = super::resolve_mounts(host, pool, &wanted).await?;
    Ok(ServiceDef { mounts, ..def(s) })
}

fn def(s: ServiceSpec) -> ServiceDef {
    ServiceDef {
        mounts: Vec::new(),
        job: s.job,
        name: s.name,
        image: s.image,
        cmd: s.cmd,
        env: s.env,
        labels: s.labels.into_iter().collect(),
        replicas: s.replicas,
        port: s.port,
        memory: s.memory,
        cpu_milli: s.cpu_milli,
        constraints: s.constraints,
        stop_grace_secs: s.stop_grace_secs,
        force_update: s.force_update,
    }
}

fn spec(d: ServiceDef) -> ServiceSpec {
    ServiceSpec {
        name: d.name,
        image: d.image,
        cmd: d.cmd,
        env: d.env,
        labels: d.labels.into_iter().collect(),
        replicas: d.replicas,
        port: d.port,
        memory: d.memory,
        cpu_milli: d.cpu_milli,
        constraints: d.constraints,
        stop_grace_secs: d.stop_grace_secs,
        force_update: d.force_update,
        mounts: d
            .mounts
            .into_iter()
            .map(|m| Mount { volume: m.source.strip_prefix("torii-vol-").unwrap_or(&m.source).to_string(), target: m.target, read_only: m.read_only })
            .collect(),
        job: d.job,
    }
}

fn service(s: ServiceInfo) -> Service {
    Service { id: s.id, spec: spec(s.def), update_state: s.update_state, update_message: s.update_message }
}

fn node(n: SwarmNode) -> Node {
    Node {
        id: n.id,
        hostname: n.hostname,
        address: n.address,
        role: n.role,
        state: n.state,
        availability: n.availability,
        labels: n.labels.into_iter().collect(),
    }
}

fn task(t: TaskInfo) -> Task {
    Task {
        id: t.id,
        service: t.service,
        slot: t.slot,
        node_id: t.node_id,
        state: t.state,
        desired_state: t.desired_state,
        message: t.message,
        container: t.container,
        force_update: t.force_update,
        labels: t.labels.into_iter().collect(),
        address: t.address,
        created_ms: t.created_ms,
    }
}

/// A service name Swarm takes: letters, digits and dashes, at most 63.
fn check_name(name: &str) -> Result<(), EngineError> {
    let fine = !name.is_empty() && name.len() <= 63 && name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-') && !name.starts_with('-');
    if fine { Ok(()) } else { Err(EngineError::Invalid(format!("{name:?} is not a service name (letters, digits and dashes, at most 63)"))) }
}

/// The most of a task's output `task-output` hands over (its last bytes).
const MAX_OUTPUT: usize = 1 << 20;

/// How often a task's address is probed while waiting for it.
const PROBE_EVERY: Duration = Duration::from_millis(200);

impl Host for PluginState {
    async fn nodes(&mut self, pool: String) -> wasmtime::Result<Result<Vec<Node>, String>> {
        self.on_cluster(&pool, async |e, a| e.swarm_nodes(a).await).await.map(|r| r.map(|n| n.into_iter().map(node).collect()))
    }

    async fn create_service(&mut self, pool: String, spec: ServiceSpec) -> wasmtime::Result<Result<String, String>> {
        let def = match self.service_def(&pool, spec).await? {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| {
            check_name(&def.name)?;
            e.create_service(a, &owner, &def).await
        })
        .await
    }

    async fn update_service(&mut self, pool: String, spec: ServiceSpec, parallelism: u32) -> wasmtime::Result<Result<(), String>> {
        let def = match self.service_def(&pool, spec).await? {
            Ok(d) => d,
            Err(e) => return Ok(Err(e)),
        };
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| e.update_service(a, &owner, &def, parallelism).await).await
    }

    async fn get_service(&mut self, pool: String, name: String) -> wasmtime::Result<Result<Option<Service>, String>> {
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| e.service(a, &owner, &name).await).await.map(|r| r.map(|s| s.map(service)))
    }

    async fn services(&mut self, pool: String, labels: Vec<(String, String)>) -> wasmtime::Result<Result<Vec<Service>, String>> {
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| e.services(a, &owner, &labels).await).await.map(|r| r.map(|s| s.into_iter().map(service).collect()))
    }

    async fn remove_service(&mut self, pool: String, name: String) -> wasmtime::Result<Result<(), String>> {
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| e.remove_service(a, &owner, &name).await).await
    }

    async fn tasks(&mut self, pool: String, service: String) -> wasmtime::Result<Result<Vec<Task>, String>> {
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| {
            let nodes = e.swarm_nodes(a).await?;
            e.tasks(a, &owner, &service, &nodes).await
        })
        .await
        .map(|r| r.map(|t| t.into_iter().map(task).collect()))
    }

    async fn task_output(&mut self, pool: String, task: String) -> wasmtime::Result<Result<String, String>> {
        let owner = self.owner();
        self.on_cluster(&pool, async |e, a| e.task_output(a, &owner, &task, MAX_OUTPUT).await).await
    }

    async fn wait_listening(&mut self, pool: String, address: String, timeout_ms: u32) -> wasmtime::Result<Result<bool, String>> {
        // Only a node of the pool's cluster is probed.
        let target = self
            .on_cluster(&pool, async |e, a| {
                let nodes = e.swarm_nodes(a).await?;
                node_socket(&nodes, &address)
            })
            .await?;
        let target = match target {
            Ok(t) => t,
            Err(e) => return Ok(Err(e)),
        };
        let deadline = Instant::now() + Duration::from_millis(u64::from(timeout_ms));
        loop {
            if crate::docker::swarm::answers_at(target).await {
                return Ok(Ok(true));
            }
            if Instant::now() + PROBE_EVERY > deadline {
                return Ok(Ok(false));
            }
            tokio::time::sleep(PROBE_EVERY).await;
        }
    }

    async fn follow_logs(&mut self, pool: String, service: String, app: String) -> wasmtime::Result<Result<(), String>> {
        let owner = self.owner();
        let host = self.host.clone();
        // The app must be in the pool: a plugin writes only into the logs of the apps it runs.
        match host.store.app_view(&app).await {
            Ok(Some(view)) if view.app.pool == pool => {}
            Ok(_) => return Ok(Err(format!("app {app:?} is not in pool {pool:?}"))),
            Err(e) => return Ok(Err(e.to_string())),
        }
        self.on_cluster(&pool, async |e, a| {
            let nodes = e.swarm_nodes(a).await?;
            let tasks = e.tasks(a, &owner, &service, &nodes).await?;
            e.follow_tasks(a, &tasks, &app).await
        })
        .await
    }

    async fn image_info(&mut self, pool: String, image: String) -> wasmtime::Result<Result<Option<Image>, String>> {
        self.on_cluster(&pool, async |e, a| e.cluster_image(a, &image).await).await.map(|r| {
            r.map(|i| i.map(|i| Image { id: i.id, ports: i.ports, cmd: i.cmd, entrypoint: i.entrypoint, working_dir: i.working_dir }))
        })
    }
}

/// `address` as a socket address when its host is a node of `nodes`.
fn node_socket(nodes: &[SwarmNode], address: &str) -> Result<std::net::SocketAddr, EngineError> {
    let parsed: std::net::SocketAddr = address.parse().map_err(|_| EngineError::Invalid(format!("{address:?} is not an address with a port")))?;
    if parsed.port() == 0 || !nodes.iter().any(|n| n.address.parse::<std::net::IpAddr>().is_ok_and(|ip| ip == parsed.ip())) {
        return Err(EngineError::Invalid(format!("{address:?} is not on a node of the pool's cluster")));
    }
    Ok(parsed)
}

/// The IP addresses of the nodes of the cluster of `provisioner` serving
/// `pool`: where routes of its apps may send traffic besides loopback.
pub async fn node_ips(engines: &Arc<Engines>, store: &crate::store::Store, provisioner: &str, pool: &str) -> Result<Vec<std::net::IpAddr>, String> {
    let cluster = store.cluster_of_pool(provisioner, pool).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("pool {pool:?} has no {provisioner:?} cluster"))?;
    let mut last = format!("cluster {:?} names no manager address", cluster.name);
    for address in &cluster.addresses {
        match engines.swarm_nodes(address).await {
            Ok(nodes) => return Ok(nodes.iter().filter_map(|n| n.address.parse().ok()).collect()),
            Err(e) => last = e.to_string(),
        }
    }
    Err(last)
}
