//! Docker Swarm managers (the clusters of `/1.3/provisioner/clusters`),
//! reached through bollard for the `swarm` capability.
//!
//! A cluster's address is what an operator with `cluster.admin` named: a
//! unix socket or a TCP endpoint, on any host (unlike a node's, which is on
//! loopback). Every call is bounded by the engines' timeout. A service is
//! made from a [`ServiceDef`]: no mounts but its app's volumes, no
//! privileges, no host network, its one port published in host mode on each
//! task's node; it is rolled start-first and rolled back by Swarm when a new
//! task fails.

use super::{EngineError, Engines, OWNER_LABEL, VolumeMount, docker_error};
use bollard::Docker;
use bollard::models::{
    EndpointPortConfig, EndpointPortConfigPublishModeEnum, EndpointSpec, Limit, ServiceSpec, ServiceSpecMode, ServiceSpecModeReplicated, ServiceSpecModeReplicatedJob,
    ServiceSpecRollbackConfig, ServiceSpecRollbackConfigOrderEnum, ServiceSpecUpdateConfig, ServiceSpecUpdateConfigFailureActionEnum,
    ServiceSpecUpdateConfigOrderEnum, TaskSpec, TaskSpecContainerSpec, TaskSpecPlacement, TaskSpecResources, TaskSpecRestartPolicy,
    TaskSpecRestartPolicyConditionEnum,
};
use bollard::query_parameters as q;
use std::collections::{BTreeMap, HashMap};
use std::time::Duration;

/// How long Swarm watches a new task for failure before the roll goes on.
const MONITOR: Duration = Duration::from_secs(2);

/// A node of a Swarm.
#[derive(Debug, Clone, Default)]
pub struct SwarmNode {
    pub id: String,
    pub hostname: String,
    pub address: String,
    pub role: String,
    pub state: String,
    pub availability: String,
    pub labels: BTreeMap<String, String>,
}

/// What a service runs, as a provisioner asks for it.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct ServiceDef {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: BTreeMap<String, String>,
    pub replicas: u32,
    pub port: Option<u16>,
    pub memory: u64,
    pub cpu_milli: u32,
    pub constraints: Vec<String>,
    pub stop_grace_secs: u32,
    pub force_update: u64,
    pub mounts: Vec<VolumeMount>,
    /// Runs once to completion, never restarted.
    pub job: bool,
}

/// A service as the manager knows it.
#[derive(Debug, Clone, Default)]
pub struct ServiceInfo {
    pub id: String,
    pub def: ServiceDef,
    pub update_state: String,
    pub update_message: String,
}

/// A task of a service.
#[derive(Debug, Clone, Default)]
pub struct TaskInfo {
    pub id: String,
    pub service: String,
    pub slot: u32,
    pub node_id: String,
    pub state: String,
    pub desired_state: String,
    pub message: String,
    pub container: String,
    pub force_update: u64,
    pub labels: BTreeMap<String, String>,
    /// `<node address>:<published port>` while running.
    pub address: Option<String>,
    pub created_ms: u64,
}

/// Checks a cluster's address as the client takes it: `unix:///path`, or
/// `tcp://host:port` / `http://host:port`; the canonical form.
pub fn check_cluster_address(address: &str) -> Result<String, EngineError> {
    let bad = |why: &str| EngineError::Invalid(format!("cluster address {address:?}: {why}"));
    if let Some(path) = address.strip_prefix("unix://") {
        return if path.starts_with('/') && path.len() > 1 { Ok(address.to_string()) } else { Err(bad("a unix socket needs an absolute path")) };
    }
    if address.starts_with("https://") {
        return Err(bad("TLS endpoints are not supported yet: use a unix socket or tcp://"));
    }
    let rest = address.strip_prefix("tcp://").or_else(|| address.strip_prefix("http://")).ok_or_else(|| bad("use unix:///path or tcp://host:port"))?;
    let rest = rest.trim_end_matches('/');
    match rest.rsplit_once(':') {
        Some((host, port)) if !host.is_empty() && port.parse::<u16>().is_ok_and(|p| p != 0) => Ok(format!("tcp://{rest}")),
        _ => Err(bad("expected host:port")),
    }
}

fn text<T: ToString>(v: Option<T>) -> String {
    v.map(|v| v.to_string()).unwrap_or_default()
}

/// Swarm's enum values as the API spells them (`running`, `start-first`).
fn spelled<T: serde::Serialize>(v: &Option<T>) -> String {
    v.as_ref().and_then(|v| serde_json::to_value(v).ok()).and_then(|v| v.as_str().map(str::to_string)).unwrap_or_default()
}

fn millis(date: &Option<String>) -> u64 {
    date.as_deref()
        .and_then(|d| chrono::DateTime::parse_from_rfc3339(d).ok())
        .map(|t| t.timestamp_millis().max(0) as u64)
        .unwrap_or(0)
}

impl ServiceDef {
    /// The Swarm spec: `owner` labels the service and its containers.
    fn spec(&self, owner: &str) -> ServiceSpec {
        let mut labels: HashMap<String, String> = self.labels.iter().map(|(k, v)| (k.clone(), v.clone())).collect();
        labels.insert(OWNER_LABEL.to_string(), owner.to_string());
        let env: Vec<String> = self.env.iter().map(|(k, v)| format!("{k}={v}")).collect();
        let limits = Limit {
            memory_bytes: (self.memory > 0).then(|| i64::try_from(self.memory).unwrap_or(i64::MAX)),
            nano_cpus: (self.cpu_milli > 0).then(|| i64::from(self.cpu_milli) * 1_000_000),
            pids: None,
        };
        ServiceSpec {
            name: Some(self.name.clone()),
            labels: Some(labels.clone()),
            task_template: Some(TaskSpec {
                container_spec: Some(TaskSpecContainerSpec {
                    image: Some(self.image.clone()),
                    labels: Some(labels),
                    command: (!self.cmd.is_empty()).then(|| self.cmd.clone()),
                    env: Some(env),
                    stop_grace_period: Some(i64::from(self.stop_grace_secs) * 1_000_000_000),
                    mounts: (!self.mounts.is_empty()).then(|| self.mounts.iter().map(VolumeMount::docker).collect()),
                    ..Default::default()
                }),
                resources: Some(TaskSpecResources { limits: Some(limits), ..Default::default() }),
                restart_policy: Some(TaskSpecRestartPolicy {
                    condition: Some(if self.job { TaskSpecRestartPolicyConditionEnum::NONE } else { TaskSpecRestartPolicyConditionEnum::ANY }),
                    delay: Some(1_000_000_000),
                    ..Default::default()
                }),
                placement: Some(TaskSpecPlacement { constraints: Some(self.constraints.clone()), ..Default::default() }),
                force_update: Some(self.force_update),
                ..Default::default()
            }),
            mode: Some(if self.job {
                ServiceSpecMode {
                    replicated_job: Some(ServiceSpecModeReplicatedJob {
                        max_concurrent: Some(i64::from(self.replicas)),
                        total_completions: Some(i64::from(self.replicas)),
                    }),
                    ..Default::default()
                }
            } else {
                ServiceSpecMode { replicated: Some(ServiceSpecModeReplicated { replicas: Some(i64::from(self.replicas)) }), ..Default::default() }
            }),
            // A job is not rolled: Swarm refuses an update config on one.
            update_config: (!self.job).then(|| ServiceSpecUpdateConfig {
                parallelism: Some(1),
                order: Some(ServiceSpecUpdateConfigOrderEnum::START_FIRST),
                failure_action: Some(ServiceSpecUpdateConfigFailureActionEnum::ROLLBACK),
                monitor: Some(MONITOR.as_nanos() as i64),
                ..Default::default()
            }),
            rollback_config: (!self.job).then(|| ServiceSpecRollbackConfig {
                order: Some(ServiceSpecRollbackConfigOrderEnum::START_FIRST),
                ..Default::default()
            }),
            endpoint_spec: Some(EndpointSpec {
                ports: self.port.map(|p| {
                    vec![EndpointPortConfig {
                        target_port: Some(i64::from(p)),
                        publish_mode: Some(EndpointPortConfigPublishModeEnum::HOST),
                        ..Default::default()
                    }]
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    /// What `spec` asks for, read back (labels without the owner's).
    fn of(spec: &ServiceSpec) -> ServiceDef {
        let task = spec.task_template.clone().unwrap_or_default();
        let container = task.container_spec.unwrap_or_default();
        let limits = task.resources.and_then(|r| r.limits).unwrap_or_default();
        let mut labels: BTreeMap<String, String> = spec.labels.clone().unwrap_or_default().into_iter().collect();
        labels.remove(OWNER_LABEL);
        ServiceDef {
            name: text(spec.name.clone()),
            image: text(container.image),
            cmd: container.command.unwrap_or_default(),
            env: container
                .env
                .unwrap_or_default()
                .into_iter()
                .map(|e| match e.split_once('=') {
                    Some((k, v)) => (k.to_string(), v.to_string()),
                    None => (e, String::new()),
                })
                .collect(),
            labels,
            replicas: spec
                .mode
                .as_ref()
                .and_then(|m| m.replicated.as_ref().and_then(|r| r.replicas).or_else(|| m.replicated_job.as_ref().and_then(|j| j.total_completions)))
                .unwrap_or(0)
                .clamp(0, i64::from(u32::MAX)) as u32,
            job: spec.mode.as_ref().is_some_and(|m| m.replicated_job.is_some()),
            port: spec
                .endpoint_spec
                .as_ref()
                .and_then(|e| e.ports.as_ref())
                .and_then(|p| p.first())
                .and_then(|p| p.target_port)
                .and_then(|p| u16::try_from(p).ok()),
            memory: limits.memory_bytes.unwrap_or(0).max(0) as u64,
            cpu_milli: (limits.nano_cpus.unwrap_or(0).max(0) / 1_000_000).min(i64::from(u32::MAX)) as u32,
            constraints: task.placement.and_then(|p| p.constraints).unwrap_or_default(),
            stop_grace_secs: (container.stop_grace_period.unwrap_or(0).max(0) / 1_000_000_000).min(i64::from(u32::MAX)) as u32,
            force_update: task.force_update.unwrap_or(0),
            mounts: container.mounts.unwrap_or_default().iter().map(VolumeMount::of).collect(),
        }
    }
}

impl Engines {
    /// The client of cluster address `address`, connected once.
    async fn cluster_client(&self, address: &str) -> Result<Docker, EngineError> {
        self.connect(format!("cluster {address}"), address, check_cluster_address).await
    }

    async fn swarm_call<T>(&self, address: &str, what: &'static str, f: impl AsyncFnOnce(Docker) -> Result<T, bollard::errors::Error>) -> Result<T, EngineError> {
        let client = self.cluster_client(address).await?;
        self.bounded(address, what, f(client)).await?.map_err(|e| docker_error(address, what, e))
    }

    pub async fn swarm_ping(&self, address: &str) -> Result<(), EngineError> {
        self.swarm_call(address, "ping", async |d| d.ping().await.map(|_| ())).await
    }

    pub async fn swarm_nodes(&self, address: &str) -> Result<Vec<SwarmNode>, EngineError> {
        let nodes = self.swarm_call(address, "list nodes", async |d| d.list_nodes(None::<q::ListNodesOptions>).await).await?;
        Ok(nodes
            .into_iter()
            .map(|n| {
                let spec = n.spec.unwrap_or_default();
                let status = n.status.unwrap_or_default();
                SwarmNode {
                    id: text(n.id),
                    hostname: text(n.description.and_then(|d| d.hostname)),
                    address: text(status.addr),
                    role: spelled(&spec.role),
                    state: spelled(&status.state),
                    availability: spelled(&spec.availability),
                    labels: spec.labels.unwrap_or_default().into_iter().collect(),
                }
            })
            .collect())
    }

    pub async fn create_service(&self, address: &str, owner: &str, def: &ServiceDef) -> Result<String, EngineError> {
        let spec = def.spec(owner);
        let created = self.swarm_call(address, "create service", async |d| d.create_service(spec, None).await).await?;
        Ok(text(created.id))
    }

    /// Rolls `owner`'s service `def.name` onto `def`, `parallelism` tasks at a time (0: all).
    pub async fn update_service(&self, address: &str, owner: &str, def: &ServiceDef, parallelism: u32) -> Result<(), EngineError> {
        let Some(current) = self.inspect_service(address, &def.name).await?.filter(|s| owned(s, owner)) else {
            return Err(EngineError::Invalid(format!("no service {:?} of plugin {owner:?}", def.name)));
        };
        let mut spec = def.spec(owner);
        if let Some(u) = spec.update_config.as_mut() {
            u.parallelism = Some(i64::from(parallelism));
        }
        let version = current.version.and_then(|v| v.index).unwrap_or(0);
        let options = q::UpdateServiceOptions { version: i32::try_from(version).unwrap_or(i32::MAX), ..Default::default() };
        let name = def.name.clone();
        self.swarm_call(address, "update service", async |d| d.update_service(&name, spec, options, None).await).await?;
        Ok(())
    }

    async fn inspect_service(&self, address: &str, name: &str) -> Result<Option<bollard::models::Service>, EngineError> {
        let client = self.cluster_client(address).await?;
        match self.bounded(address, "inspect service", client.inspect_service(name, None::<q::InspectServiceOptions>)).await? {
            Ok(s) => Ok(Some(s)),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(None),
            Err(e) => Err(docker_error(address, "inspect service", e)),
        }
    }

    /// Service `name` when `owner` made it.
    pub async fn service(&self, address: &str, owner: &str, name: &str) -> Result<Option<ServiceInfo>, EngineError> {
        Ok(self.inspect_service(address, name).await?.filter(|s| owned(s, owner)).map(info))
    }

    /// `owner`'s services carrying every one of `labels`.
    pub async fn services(&self, address: &str, owner: &str, labels: &[(String, String)]) -> Result<Vec<ServiceInfo>, EngineError> {
        let mut wanted: Vec<String> = labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
        wanted.push(format!("{OWNER_LABEL}={owner}"));
        let options = q::ListServicesOptions { filters: Some(HashMap::from([("label".to_string(), wanted)])), ..Default::default() };
        let list = self.swarm_call(address, "list services", async |d| d.list_services(Some(options)).await).await?;
        Ok(list.into_iter().filter(|s| owned(s, owner)).map(info).collect())
    }

    /// Removes `owner`'s service `name`; a missing one is fine.
    pub async fn remove_service(&self, address: &str, owner: &str, name: &str) -> Result<(), EngineError> {
        if self.service(address, owner, name).await?.is_none() {
            return Ok(());
        }
        let client = self.cluster_client(address).await?;
        match self.bounded(address, "remove service", client.delete_service(name)).await? {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(docker_error(address, "remove service", e)),
        }
    }

    /// The tasks of `owner`'s service `name`, their addresses on `nodes`.
    pub async fn tasks(&self, address: &str, owner: &str, name: &str, nodes: &[SwarmNode]) -> Result<Vec<TaskInfo>, EngineError> {
        if self.service(address, owner, name).await?.is_none() {
            return Err(EngineError::Invalid(format!("no service {name:?}")));
        }
        let options = q::ListTasksOptions { filters: Some(HashMap::from([("service".to_string(), vec![name.to_string()])])) };
        let list = self.swarm_call(address, "list tasks", async |d| d.list_tasks(Some(options)).await).await?;
        Ok(list
            .into_iter()
            .map(|t| {
                let status = t.status.clone().unwrap_or_default();
                let node_id = text(t.node_id.clone());
                let state = spelled(&status.state);
                let port = status
                    .port_status
                    .and_then(|p| p.ports)
                    .and_then(|p| p.into_iter().find_map(|p| p.published_port))
                    .filter(|p| *p > 0);
                let node_address = nodes.iter().find(|n| n.id == node_id).map(|n| n.address.clone()).filter(|a| !a.is_empty());
                let address = match (port, node_address) {
                    (Some(port), Some(node)) if state == "running" => Some(format!("{node}:{port}")),
                    _ => None,
                };
                let message = match status.err.filter(|e| !e.is_empty()) {
                    Some(err) => err,
                    None => text(status.message),
                };
                TaskInfo {
                    id: text(t.id),
                    service: name.to_string(),
                    slot: t.slot.unwrap_or(0).clamp(0, i64::from(u32::MAX)) as u32,
                    node_id,
                    state,
                    desired_state: spelled(&t.desired_state),
                    message,
                    container: text(status.container_status.and_then(|c| c.container_id)),
                    force_update: t.spec.as_ref().and_then(|s| s.force_update).unwrap_or(0),
                    labels: t
                        .spec
                        .and_then(|s| s.container_spec)
                        .and_then(|c| c.labels)
                        .unwrap_or_default()
                        .into_iter()
                        .filter(|(k, _)| k != OWNER_LABEL)
                        .collect(),
                    address,
                    created_ms: millis(&t.created_at),
                }
            })
            .collect())
    }

    /// What task `task` of one of `owner`'s services wrote (its last `max` bytes).
    pub async fn task_output(&self, address: &str, owner: &str, task: &str, max: usize) -> Result<String, EngineError> {
        use futures_util::StreamExt;
        let client = self.cluster_client(address).await?;
        let found = match self.bounded(address, "inspect task", client.inspect_task(task)).await? {
            Ok(t) => Some(t),
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => None,
            Err(e) => return Err(docker_error(address, "inspect task", e)),
        };
        let service = found.and_then(|t| t.service_id).filter(|s| !s.is_empty());
        let theirs = match service {
            Some(service) => self.service(address, owner, &service).await?.is_some(),
            None => false,
        };
        if !theirs {
            return Err(EngineError::Invalid(format!("no task {task:?} of plugin {owner:?}")));
        }
        let options = q::LogsOptionsBuilder::new().stdout(true).stderr(true).build();
        let read = async {
            let mut stream = std::pin::pin!(client.task_logs(task, Some(options)));
            let mut out: Vec<u8> = Vec::new();
            while let Some(chunk) = stream.next().await {
                out.extend_from_slice(&chunk?.into_bytes());
                if out.len() > 2 * max {
                    out.drain(..out.len() - max);
                }
            }
            Ok::<_, bollard::errors::Error>(out)
        };
        let mut out = self.bounded(address, "task logs", read).await?.map_err(|e| docker_error(address, "task logs", e))?;
        if out.len() > max {
            out.drain(..out.len() - max);
        }
        Ok(String::from_utf8_lossy(&out).into_owned())
    }

    /// Follows the output of `tasks` (running ones) into `app`'s log, each under its id.
    pub async fn follow_tasks(&self, address: &str, tasks: &[TaskInfo], app: &str) -> Result<(), EngineError> {
        let client = self.cluster_client(address).await?;
        for t in tasks.iter().filter(|t| t.state == "running") {
            self.logs.follow_task(client.clone(), address, &t.id, t.created_ms, app);
        }
        Ok(())
    }

    /// An image as the manager's engine knows it.
    pub async fn cluster_image(&self, address: &str, image: &str) -> Result<Option<super::ImageInfo>, EngineError> {
        let client = self.cluster_client(address).await?;
        self.image_with(&client, address, image).await
    }
}

fn owned(s: &bollard::models::Service, owner: &str) -> bool {
    s.spec.as_ref().and_then(|s| s.labels.as_ref()).and_then(|l| l.get(OWNER_LABEL)).is_some_and(|o| o == owner)
}

fn info(s: bollard::models::Service) -> ServiceInfo {
    let status = s.update_status.unwrap_or_default();
    ServiceInfo {
        id: text(s.id),
        def: s.spec.as_ref().map(ServiceDef::of).unwrap_or_default(),
        update_state: spelled(&status.state),
        update_message: text(status.message),
    }
}

/// Whether a web server answers at `addr` (any address): an HTTP request
/// gets any answer within a second.
pub async fn answers_at(addr: std::net::SocketAddr) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(addr).await.ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: torii-probe\r\nUser-Agent: torii-readiness\r\n\r\n").await.ok()?;
        let mut first = [0u8; 5];
        let n = stream.read(&mut first).await.ok()?;
        Some(n > 0)
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(true)))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_spec_reads_back_as_it_was_asked() {
        let def = ServiceDef {
            name: "app-web-v1".into(),
            image: "torii/busybox:latest".into(),
            cmd: vec!["/bin/sh".into(), "-c".into(), "httpd -f".into()],
            env: vec![("A".into(), "b=c".into())],
            labels: BTreeMap::from([("torii.app".to_string(), "app".to_string())]),
            replicas: 3,
            port: Some(8888),
            memory: 64 << 20,
            cpu_milli: 500,
            constraints: vec!["node.labels.pool==a".into()],
            stop_grace_secs: 30,
            force_update: 2,
            mounts: vec![VolumeMount {
                source: "torii-vol-data".into(),
                target: "/data".into(),
                read_only: true,
                driver: "local".into(),
                options: BTreeMap::from([("o".to_string(), "bind".to_string())]),
            }],
            job: false,
        };
        assert_eq!(ServiceDef::of(&ServiceDef { job: true, ..def.clone() }.spec("swarm")).job, true);
        let spec = def.spec("swarm");
        assert_eq!(spec.labels.as_ref().unwrap().get(OWNER_LABEL).map(String::as_str), Some("swarm"));
        assert_eq!(ServiceDef::of(&spec), def);
        let update = spec.update_config.unwrap();
        assert_eq!((spelled(&update.order), spelled(&update.failure_action)), ("start-first".into(), "rollback".into()));
    }

    #[test]
    fn cluster_addresses_are_sockets_or_tcp() {
        assert_eq!(check_cluster_address("unix:///run/docker.sock").unwrap(), "unix:///run/docker.sock");
        assert_eq!(check_cluster_address("tcp://10.1.2.3:2375/").unwrap(), "tcp://10.1.2.3:2375");
        assert_eq!(check_cluster_address("http://manager:2375").unwrap(), "tcp://manager:2375");
        for bad in ["unix://relative", "https://1.2.3.4:2376", "tcp://10.1.2.3", "docker.sock", ""] {
            assert!(check_cluster_address(bad).is_err(), "{bad}");
        }
    }
}
