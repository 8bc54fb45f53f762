//! Docker engines (the docker provisioner's nodes), reached through bollard.
//!
//! The host holds the clients; plugins reach them through the `containers`
//! capability, addressed by node. Every call is bounded by a timeout, a
//! container gets no mounts, no privileges and no host network, and its port
//! is published on 127.0.0.1 only. What containers print goes to their app's
//! log ([`logs`]).

pub mod logs;
pub mod nodecontainers;
pub mod swarm;
pub mod terminal;

use bollard::Docker;
use bollard::models::{ContainerCreateBody, HostConfig, PortBinding};
use bollard::query_parameters as q;
use futures_util::StreamExt;
use std::collections::{BTreeMap, HashMap};
use std::sync::Mutex;
use std::time::Duration;

/// The label the host puts on every container a plugin creates: its entry
/// name. Only the plugin named there may act on the container.
pub const OWNER_LABEL: &str = "torii.plugin";

/// The pool setting kind of container log configs (`/docker/logs`).
pub const LOGS_SETTING: &str = "logs";

/// Why an engine call did not succeed (shown to the plugin, and from it to the user).
#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("{0}")]
    Invalid(String),
    #[error("docker node {address}: cannot connect: {message}")]
    Connect { address: String, message: String },
    #[error("docker node {address}: {what} did not answer{}", if *secs > 0 { format!(" within {secs} s") } else { String::new() })]
    Timeout { address: String, what: &'static str, secs: u64 },
    #[error("docker node {address}: {what}: {message}")]
    Docker { address: String, what: &'static str, message: String },
}

/// Checks a node address: a unix socket (`unix:///path` or an absolute path)
/// or an engine on loopback TCP (`tcp://127.0.0.1:port`, `http://...`). The
/// canonical form, as stored.
pub fn check_address(address: &str) -> Result<String, EngineError> {
    let bad = |why: &str| EngineError::Invalid(format!("Invalid address url: {address:?}: {why}"));
    if let Some(path) = address.strip_prefix("unix://").or_else(|| address.starts_with('/').then_some(address)) {
        if !path.starts_with('/') || path.len() < 2 {
            return Err(bad("a unix socket needs an absolute path"));
        }
        return Ok(format!("unix://{path}"));
    }
    let rest = address.strip_prefix("tcp://").or_else(|| address.strip_prefix("http://")).ok_or_else(|| {
        bad("use unix:///path/to/docker.sock or tcp://127.0.0.1:PORT")
    })?;
    let rest = rest.trim_end_matches('/');
    match rest.parse::<std::net::SocketAddr>() {
        Ok(a) if a.ip().is_loopback() && a.port() != 0 => Ok(format!("tcp://{a}")),
        Ok(_) => Err(bad("engines are reached on loopback only (127.0.0.1)")),
        Err(_) => Err(bad("expected host:port")),
    }
}

/// What a container is started with.
#[derive(Debug, Clone, Default)]
pub struct Spec {
    pub name: String,
    pub image: String,
    pub cmd: Vec<String>,
    pub env: Vec<(String, String)>,
    pub labels: Vec<(String, String)>,
    pub port: Option<u16>,
    pub memory: u64,
    pub cpu_milli: u32,
    /// The log driver and its options (`/docker/logs`); `None`: the engine's default.
    pub log: Option<(String, BTreeMap<String, String>)>,
    /// The app's volumes; nothing else is mounted.
    pub mounts: Vec<VolumeMount>,
}

/// A torii volume (`/1.4/volumes`) mounted in a container or a service's
/// tasks: Docker volume `source`, made by the engine with the plan's
/// `driver` and `options` where it is first used.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct VolumeMount {
    pub source: String,
    pub target: String,
    pub read_only: bool,
    pub driver: String,
    pub options: BTreeMap<String, String>,
}

/// The Docker volume of torii volume `name`.
pub fn volume_source(name: &str) -> String {
    format!("torii-vol-{name}")
}

impl VolumeMount {
    pub(crate) fn docker(&self) -> bollard::models::Mount {
        bollard::models::Mount {
            typ: Some(bollard::models::MountType::VOLUME),
            source: Some(self.source.clone()),
            target: Some(self.target.clone()),
            read_only: Some(self.read_only),
            volume_options: Some(bollard::models::MountVolumeOptions {
                driver_config: Some(bollard::models::MountVolumeOptionsDriverConfig {
                    name: Some(self.driver.clone()),
                    options: Some(self.options.iter().map(|(k, v)| (k.clone(), v.clone())).collect()),
                }),
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    pub(crate) fn of(m: &bollard::models::Mount) -> VolumeMount {
        let driver = m.volume_options.as_ref().and_then(|o| o.driver_config.as_ref());
        VolumeMount {
            source: m.source.clone().unwrap_or_default(),
            target: m.target.clone().unwrap_or_default(),
            read_only: m.read_only.unwrap_or(false),
            driver: driver.and_then(|d| d.name.clone()).unwrap_or_default(),
            options: driver.and_then(|d| d.options.clone()).unwrap_or_default().into_iter().collect(),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ContainerInfo {
    pub id: String,
    pub name: String,
    pub image: String,
    pub labels: BTreeMap<String, String>,
    pub state: String,
    /// `127.0.0.1:port` where the published port answers.
    pub address: Option<String>,
    pub restarts: u32,
    pub exit_code: i64,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ImageInfo {
    pub id: String,
    pub ports: Vec<u16>,
    pub cmd: Vec<String>,
    pub entrypoint: Vec<String>,
    pub working_dir: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct EngineInfo {
    pub name: String,
    pub version: String,
    pub containers: u32,
    pub images: u32,
    pub cpus: u32,
    pub memory: u64,
}

/// What a container uses.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Usage {
    /// CPU in thousandths of a core.
    pub cpu_milli: u32,
    pub memory: u64,
}

/// Thousandths of a core from a container's CPU time and the host's (all
/// its CPUs) over the same span, as `docker stats` computes its percentage.
fn cpu_milli(container_ns: u64, system_ns: u64, cpus: u32) -> u32 {
    if system_ns == 0 {
        return 0;
    }
    let milli = container_ns as f64 / system_ns as f64 * f64::from(cpus) * 1000.0;
    milli.round().min(f64::from(u32::MAX)) as u32
}

/// Clients of the registered engines, connected on first use.
pub struct Engines {
    clients: Mutex<HashMap<String, Docker>>,
    /// Bound of one call (builds and waits get their own).
    pub timeout: Duration,
    pub logs: logs::Followers,
}

impl Engines {
    pub fn new(timeout: Duration, logs: logs::Followers) -> Engines {
        Engines { clients: Mutex::new(HashMap::new()), timeout, logs }
    }

    /// The client of node `address`, connected (and its API version agreed) once.
    async fn client(&self, address: &str) -> Result<Docker, EngineError> {
        self.connect(address.to_string(), address, check_address).await
    }

    /// The client of `address`, checked by `check` (which gives its
    /// canonical form) and connected once; kept under `key` (a node's and a
    /// cluster's clients apart, as their checks differ).
    async fn connect(&self, key: String, address: &str, check: fn(&str) -> Result<String, EngineError>) -> Result<Docker, EngineError> {
        if let Some(c) = self.clients.lock().unwrap().get(&key) {
            return Ok(c.clone());
        }
        let canonical = check(address)?;
        let connect = |e: bollard::errors::Error| EngineError::Connect { address: address.to_string(), message: e.to_string() };
        // bollard's own bound, past ours: a slow engine is reported by `bounded`.
        let secs = self.timeout.as_secs() + 1;
        let client = match canonical.strip_prefix("unix://") {
            Some(path) => Docker::connect_with_unix(path, secs, bollard::API_DEFAULT_VERSION).map_err(connect)?,
            None => Docker::connect_with_http(&canonical, secs, bollard::API_DEFAULT_VERSION).map_err(connect)?,
        };
        // Talk the engine's API version when it is older than bollard's.
        let client = self.bounded(address, "version", client.negotiate_version()).await?.map_err(connect)?;
        self.clients.lock().unwrap().insert(key, client.clone());
        Ok(client)
    }

    /// Forgets the client of a removed node.
    pub fn forget(&self, address: &str) {
        self.clients.lock().unwrap().remove(address);
    }

    async fn bounded<T>(&self, address: &str, what: &'static str, f: impl Future<Output = T>) -> Result<T, EngineError> {
        self.bounded_for(self.timeout, address, what, f).await
    }

    async fn bounded_for<T>(&self, limit: Duration, address: &str, what: &'static str, f: impl Future<Output = T>) -> Result<T, EngineError> {
        tokio::time::timeout(limit, f).await.map_err(|_| EngineError::Timeout { address: address.to_string(), what, secs: limit.as_secs() })
    }

    /// Runs one engine call under the timeout, errors named after `what`.
    async fn call<T>(
        &self,
        address: &str,
        what: &'static str,
        f: impl AsyncFnOnce(Docker) -> Result<T, bollard::errors::Error>,
    ) -> Result<T, EngineError> {
        let client = self.client(address).await?;
        self.bounded(address, what, f(client)).await?.map_err(|e| docker_error(address, what, e))
    }

    pub async fn ping(&self, address: &str) -> Result<(), EngineError> {
        self.call(address, "ping", async |d| d.ping().await.map(|_| ())).await
    }

    pub async fn info(&self, address: &str) -> Result<EngineInfo, EngineError> {
        let info = self.call(address, "info", async |d| d.info().await).await?;
        let count = |n: Option<i64>| u32::try_from(n.unwrap_or(0)).unwrap_or(0);
        Ok(EngineInfo {
            name: info.name.unwrap_or_default(),
            version: info.server_version.unwrap_or_default(),
            containers: count(info.containers),
            images: count(info.images),
            cpus: count(info.ncpu),
            memory: u64::try_from(info.mem_total.unwrap_or(0)).unwrap_or(0),
        })
    }

    pub async fn create(&self, address: &str, spec: Spec) -> Result<String, EngineError> {
        let port_key = spec.port.map(|p| format!("{p}/tcp"));
        let bindings = port_key.as_ref().map(|k| {
            HashMap::from([(k.clone(), Some(vec![PortBinding { host_ip: Some("127.0.0.1".into()), host_port: Some(String::new()) }]))])
        });
        let body = ContainerCreateBody {
            image: Some(spec.image),
            cmd: (!spec.cmd.is_empty()).then_some(spec.cmd),
            env: Some(spec.env.into_iter().map(|(k, v)| format!("{k}={v}")).collect()),
            labels: Some(spec.labels.into_iter().collect()),
            exposed_ports: port_key.map(|k| vec![k]),
            host_config: Some(HostConfig {
                port_bindings: bindings,
                memory: (spec.memory > 0).then(|| i64::try_from(spec.memory).unwrap_or(i64::MAX)),
                nano_cpus: (spec.cpu_milli > 0).then(|| i64::from(spec.cpu_milli) * 1_000_000),
                log_config: spec.log.map(|(driver, opts)| bollard::models::HostConfigLogConfig { typ: Some(driver), config: Some(opts.into_iter().collect()) }),
                privileged: Some(false),
                mounts: (!spec.mounts.is_empty()).then(|| spec.mounts.iter().map(VolumeMount::docker).collect()),
                ..Default::default()
            }),
            ..Default::default()
        };
        let options = q::CreateContainerOptionsBuilder::new().name(&spec.name).build();
        let created = self.call(address, "create container", async |d| d.create_container(Some(options), body).await).await?;
        Ok(created.id)
    }

    pub async fn start(&self, address: &str, id: &str) -> Result<(), EngineError> {
        self.call(address, "start container", async |d| d.start_container(id, None::<q::StartContainerOptions>).await).await
    }

    pub async fn stop(&self, address: &str, id: &str, timeout_secs: u32) -> Result<(), EngineError> {
        let options = q::StopContainerOptionsBuilder::new().t(i32::try_from(timeout_secs).unwrap_or(i32::MAX)).build();
        let limit = self.timeout + Duration::from_secs(u64::from(timeout_secs));
        let client = self.client(address).await?;
        match self.bounded_for(limit, address, "stop container", client.stop_container(id, Some(options))).await? {
            Ok(()) => Ok(()),
            // 304: already stopped; 404: gone.
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 304 | 404, .. }) => Ok(()),
            Err(e) => Err(docker_error(address, "stop container", e)),
        }
    }

    pub async fn remove(&self, address: &str, id: &str) -> Result<(), EngineError> {
        let options = q::RemoveContainerOptionsBuilder::new().force(true).v(true).build();
        let client = self.client(address).await?;
        match self.bounded(address, "remove container", client.remove_container(id, Some(options))).await? {
            Ok(()) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(docker_error(address, "remove container", e)),
        }
    }

    pub async fn inspect(&self, address: &str, id: &str) -> Result<Option<ContainerInfo>, EngineError> {
        let client = self.client(address).await?;
        let c = match self.bounded(address, "inspect container", client.inspect_container(id, None::<q::InspectContainerOptions>)).await? {
            Ok(c) => c,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(e) => return Err(docker_error(address, "inspect container", e)),
        };
        let state = c.state.as_ref();
        let running = state.and_then(|s| s.running).unwrap_or(false);
        let published = c.network_settings.and_then(|n| n.ports).unwrap_or_default();
        let address = published
            .values()
            .flatten()
            .flatten()
            .find_map(|b| loopback(b.host_ip.as_deref(), b.host_port.as_deref().and_then(|p| p.parse().ok())))
            .filter(|_| running);
        let config = c.config.unwrap_or_default();
        Ok(Some(ContainerInfo {
            id: c.id.unwrap_or_default(),
            name: c.name.unwrap_or_default().trim_start_matches('/').to_string(),
            image: config.image.unwrap_or_default(),
            labels: config.labels.unwrap_or_default().into_iter().collect(),
            state: state.and_then(|s| s.status).map(|s| s.to_string()).unwrap_or_default(),
            address,
            restarts: u32::try_from(c.restart_count.unwrap_or(0)).unwrap_or(0),
            exit_code: state.and_then(|s| s.exit_code).unwrap_or(0),
        }))
    }

    /// What container `id` uses: CPU over the engine's last second of
    /// samples (its one-shot stats wait for two), memory now.
    pub async fn stats(&self, address: &str, id: &str) -> Result<Usage, EngineError> {
        let options = q::StatsOptionsBuilder::new().stream(false).one_shot(false).build();
        let sample = self.call(address, "container stats", async |d| d.stats(id, Some(options)).next().await.transpose()).await?;
        let sample = sample.ok_or_else(|| EngineError::Invalid(format!("docker node {address}: no stats for container {id}")))?;
        let total = |c: &Option<bollard::models::ContainerCpuStats>| {
            let c = c.as_ref();
            (c.and_then(|c| c.cpu_usage.as_ref()).and_then(|u| u.total_usage).unwrap_or(0), c.and_then(|c| c.system_cpu_usage).unwrap_or(0))
        };
        let (cpu, system) = total(&sample.cpu_stats);
        let (pre_cpu, pre_system) = total(&sample.precpu_stats);
        let cpus = sample.cpu_stats.as_ref().and_then(|c| c.online_cpus).unwrap_or(1).max(1);
        Ok(Usage { cpu_milli: cpu_milli(cpu.saturating_sub(pre_cpu), system.saturating_sub(pre_system), cpus), memory: sample.memory_stats.and_then(|m| m.usage).unwrap_or(0) })
    }

    /// Containers carrying every one of `labels`, running or not.
    pub async fn list(&self, address: &str, labels: &[(String, String)]) -> Result<Vec<ContainerInfo>, EngineError> {
        let filters = HashMap::from([("label".to_string(), labels.iter().map(|(k, v)| format!("{k}={v}")).collect::<Vec<_>>())]);
        let options = q::ListContainersOptionsBuilder::new().all(true).filters(&filters).build();
        let list = self.call(address, "list containers", async |d| d.list_containers(Some(options)).await).await?;
        Ok(list
            .into_iter()
            .map(|c| {
                let state = c.state.map(|s| s.to_string()).unwrap_or_default();
                let address = (state == "running")
                    .then(|| c.ports.unwrap_or_default().iter().find_map(|p| loopback(p.ip.as_deref(), p.public_port)))
                    .flatten();
                ContainerInfo {
                    id: c.id.unwrap_or_default(),
                    name: c.names.unwrap_or_default().first().map(|n| n.trim_start_matches('/').to_string()).unwrap_or_default(),
                    image: c.image.unwrap_or_default(),
                    labels: c.labels.unwrap_or_default().into_iter().collect(),
                    state,
                    address,
                    restarts: 0,
                    exit_code: 0,
                }
            })
            .collect())
    }

    /// Creates and starts a container; with `listening`, waits (up to
    /// `limit`) until its published port answers, else checks it keeps
    /// running for a moment. One that does not come up is removed.
    pub async fn run(&self, address: &str, spec: Spec, listening: bool, limit: Duration) -> Result<ContainerInfo, EngineError> {
        let (name, port) = (spec.name.clone(), spec.port);
        let id = self.create(address, spec).await?;
        let up = async {
            self.start(address, &id).await?;
            if listening {
                if self.wait_listening(address, &id, limit).await?.is_none() {
                    let port = port.map(|p| p.to_string()).unwrap_or_default();
                    return Err(EngineError::Invalid(format!("unit {name} on {address} did not answer on port {port} within {} s", limit.as_secs())));
                }
            } else if let Ok(code) = self.wait(address, &id, 1).await {
                return Err(EngineError::Invalid(format!("unit {name} on {address} ended at once (exit code {code})")));
            }
            self.inspect(address, &id).await?.ok_or_else(|| EngineError::Invalid(format!("unit {name} vanished from {address} as it started")))
        };
        match up.await {
            Ok(c) => Ok(c),
            Err(e) => {
                // No container is left behind that nothing asked for.
                let _ = self.remove(address, &id).await;
                Err(e)
            }
        }
    }

    /// Waits until the container's published port accepts a connection on
    /// loopback; its address. `None` when the time ran out or it ended.
    pub async fn wait_listening(&self, address: &str, id: &str, limit: Duration) -> Result<Option<String>, EngineError> {
        let deadline = tokio::time::Instant::now() + limit;
        loop {
            let Some(c) = self.inspect(address, id).await? else { return Ok(None) };
            if c.state != "running" && c.state != "created" {
                return Ok(None);
            }
            if let Some(addr) = &c.address {
                // docker-proxy accepts before the app listens; a read that
                // ends at once means nothing listens behind it yet.
                if answers(addr).await {
                    return Ok(Some(addr.clone()));
                }
            }
            if tokio::time::Instant::now() >= deadline {
                return Ok(None);
            }
            tokio::time::sleep(Duration::from_millis(50)).await;
        }
    }

    /// Waits for the container to end; its exit code.
    pub async fn wait(&self, address: &str, id: &str, timeout_secs: u32) -> Result<i64, EngineError> {
        let client = self.client(address).await?;
        let limit = Duration::from_secs(u64::from(timeout_secs));
        let mut stream = client.wait_container(id, None::<q::WaitContainerOptions>);
        match self.bounded_for(limit, address, "wait for container", stream.next()).await? {
            Some(Ok(r)) => Ok(r.status_code),
            // bollard reports a non-zero exit as an error carrying the code.
            Some(Err(bollard::errors::Error::DockerContainerWaitError { code, .. })) => Ok(code),
            Some(Err(e)) => Err(docker_error(address, "wait for container", e)),
            None => Ok(0),
        }
    }

    /// Runs `cmd` in a running container; exit code and output (stdout and stderr).
    pub async fn exec(&self, address: &str, id: &str, cmd: Vec<String>) -> Result<(i64, String), EngineError> {
        use bollard::exec::{CreateExecOptions, StartExecResults};
        self.call(address, "exec", async |d| {
            let options = CreateExecOptions { cmd: Some(cmd), attach_stdout: Some(true), attach_stderr: Some(true), ..Default::default() };
            let exec = d.create_exec(id, options).await?;
            let mut output = String::new();
            if let StartExecResults::Attached { output: mut stream, .. } = d.start_exec(&exec.id, None).await? {
                while let Some(chunk) = stream.next().await {
                    output.push_str(&String::from_utf8_lossy(&chunk?.into_bytes()));
                }
            }
            let inspected = d.inspect_exec(&exec.id).await?;
            Ok((inspected.exit_code.unwrap_or(0), output))
        })
        .await
    }

    /// What the container wrote to stdout and stderr so far: its last `max` bytes.
    pub async fn output(&self, address: &str, id: &str, max: usize) -> Result<String, EngineError> {
        self.call(address, "read container output", async |d| {
            let options = q::LogsOptionsBuilder::new().stdout(true).stderr(true).build();
            let mut stream = d.logs(id, Some(options));
            let mut output = Vec::new();
            while let Some(chunk) = stream.next().await {
                output.extend_from_slice(&chunk?.into_bytes());
                if output.len() > 2 * max {
                    output.drain(..output.len() - max);
                }
            }
            output.drain(..output.len().saturating_sub(max));
            Ok(String::from_utf8_lossy(&output).into_owned())
        })
        .await
    }

    pub async fn image(&self, address: &str, image: &str) -> Result<Option<ImageInfo>, EngineError> {
        let client = self.client(address).await?;
        self.image_with(&client, address, image).await
    }

    async fn image_with(&self, client: &Docker, address: &str, image: &str) -> Result<Option<ImageInfo>, EngineError> {
        let i = match self.bounded(address, "inspect image", client.inspect_image(image)).await? {
            Ok(i) => i,
            Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => return Ok(None),
            Err(e) => return Err(docker_error(address, "inspect image", e)),
        };
        let config = i.config.unwrap_or_default();
        let mut ports: Vec<u16> = config
            .exposed_ports
            .unwrap_or_default()
            .iter()
            .filter_map(|p| p.strip_suffix("/tcp").or(Some(p.as_str())).and_then(|p| p.parse().ok()))
            .collect();
        ports.sort_unstable();
        Ok(Some(ImageInfo {
            id: i.id.unwrap_or_default(),
            ports,
            cmd: config.cmd.unwrap_or_default(),
            entrypoint: config.entrypoint.unwrap_or_default(),
            working_dir: config.working_dir.unwrap_or_default(),
        }))
    }

    /// Builds `tag` from a context tar; the build's output lines. Bounded by
    /// `limit` (builds run longer than other calls).
    pub async fn build(
        &self,
        address: &str,
        context: Vec<u8>,
        dockerfile: &str,
        tag: &str,
        args: &[(String, String)],
        limit: Duration,
    ) -> Result<Vec<String>, EngineError> {
        let client = self.client(address).await?;
        let args: HashMap<String, String> = args.iter().cloned().collect();
        let options = q::BuildImageOptionsBuilder::new().dockerfile(dockerfile).t(tag).rm(true).forcerm(true).buildargs(&args).build();
        let work = async {
            let mut lines = Vec::new();
            let mut stream = client.build_image(options, None, Some(bollard::body_full(context.into())));
            while let Some(item) = stream.next().await {
                let info = item.map_err(|e| docker_error(address, "build image", e))?;
                if let Some(message) = info.error_detail.and_then(|d| d.message) {
                    lines.push(message.clone());
                    return Err(EngineError::Docker { address: address.to_string(), what: "build image", message });
                }
                if let Some(text) = info.stream.filter(|s| !s.trim().is_empty()) {
                    lines.push(text.trim_end().to_string());
                }
            }
            Ok(lines)
        };
        self.bounded_for(limit, address, "build image", work).await?
    }

    /// Imports a root filesystem tar as image `tag`.
    pub async fn import(&self, address: &str, rootfs: Vec<u8>, tag: &str) -> Result<(), EngineError> {
        let (repo, version) = split_tag(tag);
        let options = q::CreateImageOptionsBuilder::new().from_src("-").repo(repo).tag(version).build();
        let client = self.client(address).await?;
        let work = async {
            let mut stream = client.create_image(Some(options), Some(bollard::body_full(rootfs.into())), None);
            while let Some(item) = stream.next().await {
                item?;
            }
            Ok(())
        };
        self.bounded(address, "import image", work).await?.map_err(|e| docker_error(address, "import image", e))
    }

    pub async fn tag(&self, address: &str, image: &str, tag: &str) -> Result<(), EngineError> {
        let (repo, version) = split_tag(tag);
        let options = q::TagImageOptionsBuilder::new().repo(repo).tag(version).build();
        self.call(address, "tag image", async |d| d.tag_image(image, Some(options)).await).await
    }

    /// The node's image names (`repository:tag`) in `repository`, sorted.
    pub async fn image_names(&self, address: &str, repository: &str) -> Result<Vec<String>, EngineError> {
        let filters = HashMap::from([("reference".to_string(), vec![repository.to_string()])]);
        let options = q::ListImagesOptionsBuilder::new().filters(&filters).build();
        let images = self.call(address, "list images", async |d| d.list_images(Some(options)).await).await?;
        let mut names: Vec<String> =
            images.into_iter().flat_map(|i| i.repo_tags).filter(|name| name.rsplit_once(':').is_some_and(|(repo, _)| repo == repository)).collect();
        names.sort();
        Ok(names)
    }

    pub async fn remove_image(&self, address: &str, image: &str) -> Result<(), EngineError> {
        let client = self.client(address).await?;
        match self.bounded(address, "remove image", client.remove_image(image, None::<q::RemoveImageOptions>, None)).await? {
            Ok(_) | Err(bollard::errors::Error::DockerResponseServerError { status_code: 404, .. }) => Ok(()),
            Err(e) => Err(docker_error(address, "remove image", e)),
        }
    }

    /// Copies what a container prints into its app's log (see [`logs`]).
    pub async fn follow_logs(&self, address: &str, id: &str, app: &str, unit: &str) -> Result<(), EngineError> {
        let client = self.client(address).await?;
        self.logs.follow(client, address, id, app, unit);
        Ok(())
    }
}

/// Whether the unit's web server answers behind `addr` (127.0.0.1 only): an
/// HTTP request gets any answer within a second. Accepting is not enough:
/// docker-proxy accepts on the published port before the container's
/// server is up (and holds the connection when it cannot reach it).
async fn answers(addr: &str) -> bool {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let Ok(parsed) = addr.parse::<std::net::SocketAddr>() else { return false };
    if !parsed.ip().is_loopback() {
        return false;
    }
    let probe = async {
        let mut stream = tokio::net::TcpStream::connect(parsed).await.ok()?;
        stream.write_all(b"GET / HTTP/1.0\r\nHost: torii-probe\r\nUser-Agent: torii-readiness\r\n\r\n").await.ok()?;
        let mut first = [0u8; 5];
        let n = stream.read(&mut first).await.ok()?;
        Some(n > 0)
    };
    matches!(tokio::time::timeout(Duration::from_secs(1), probe).await, Ok(Some(true)))
}

/// `repo:tag` split at the last colon after the last slash; `latest` without one.
fn split_tag(tag: &str) -> (&str, &str) {
    match tag.rsplit_once(':') {
        Some((repo, version)) if !version.contains('/') => (repo, version),
        _ => (tag, "latest"),
    }
}

/// `127.0.0.1:port` for a binding on a loopback address (or on every address,
/// reached through loopback).
fn loopback(ip: Option<&str>, port: Option<u16>) -> Option<String> {
    let port = port.filter(|p| *p != 0)?;
    match ip.unwrap_or("") {
        "127.0.0.1" | "" | "0.0.0.0" => Some(format!("127.0.0.1:{port}")),
        _ => None,
    }
}

fn docker_error(address: &str, what: &'static str, e: bollard::errors::Error) -> EngineError {
    let message = match e {
        bollard::errors::Error::RequestTimeoutError => {
            return EngineError::Timeout { address: address.to_string(), what, secs: 0 };
        }
        bollard::errors::Error::DockerResponseServerError { status_code, message } => format!("{message} (status {status_code})"),
        other => other.to_string(),
    };
    EngineError::Docker { address: address.to_string(), what, message }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn cpu_is_the_containers_share_of_all_cpus() {
        // Half of the host's time on a 2-CPU host: one core.
        assert_eq!(cpu_milli(500, 1000, 2), 1000);
        assert_eq!(cpu_milli(50, 1000, 4), 200);
        assert_eq!(cpu_milli(5, 0, 2), 0);
    }

    #[test]
    fn addresses_are_sockets_or_loopback() {
        assert_eq!(check_address("unix:///run/docker.sock").unwrap(), "unix:///run/docker.sock");
        assert_eq!(check_address("/run/docker.sock").unwrap(), "unix:///run/docker.sock");
        assert_eq!(check_address("tcp://127.0.0.1:2375").unwrap(), "tcp://127.0.0.1:2375");
        assert_eq!(check_address("http://127.0.0.1:2375/").unwrap(), "tcp://127.0.0.1:2375");
        for bad in ["unix://relative", "tcp://10.0.0.1:2375", "https://1.2.3.4:2376", "tcp://127.0.0.1", "docker.sock", ""] {
            assert!(check_address(bad).is_err(), "{bad} accepted");
        }
        assert_eq!(split_tag("torii/app-a:v3"), ("torii/app-a", "v3"));
        assert_eq!(split_tag("localhost:5000/img"), ("localhost:5000/img", "latest"));
        assert_eq!(loopback(Some("127.0.0.1"), Some(32768)).as_deref(), Some("127.0.0.1:32768"));
        assert_eq!(loopback(Some("10.0.0.2"), Some(80)), None);
    }
}
