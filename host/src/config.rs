//! The TOML configuration. Every key has a default, so `torii serve` with no
//! file runs the embedded defaults; an unknown key or a bad value stops
//! start-up with a message naming the key.

use serde::Deserialize;
use std::collections::{BTreeMap, BTreeSet};
use std::net::SocketAddr;
use std::path::{Path, PathBuf};

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct Config {
    pub data_dir: PathBuf,
    pub api: ApiConfig,
    pub router: RouterConfig,
    pub database: DatabaseConfig,
    pub auth: AuthConfig,
    pub quota: QuotaConfig,
    pub smtp: SmtpConfig,
    pub plugins: PluginsConfig,
    pub events: EventsConfig,
    pub logs: LogsConfig,
    pub healing: HealingConfig,
    pub routers: RoutersConfig,
    pub docker: DockerConfig,
    pub webhooks: WebhooksConfig,
    pub apps: AppsConfig,
    pub pools: PoolsConfig,
    pub egress: EgressConfig,
    pub services: ServicesConfig,
    pub shell: ShellConfig,
    pub autoscale: AutoscaleConfig,
    pub node_autoscale: NodeAutoscaleConfig,
    #[serde(rename = "plugin")]
    pub plugin: Vec<PluginEntry>,
    /// Per-pool bounds on what its apps may do (`[[pool_policy]]`).
    pub pool_policy: Vec<PoolPolicy>,
    /// What volumes (`/1.4/volumes`) may be made of (`[[volume_plan]]`).
    pub volume_plan: Vec<VolumePlan>,
}

/// `[[volume_plan]]`: a kind of volume the apps of one provisioner's pools
/// may mount, as the operator approves it: a Docker volume driver and its
/// options, where `{volume}` stands for the volume's name (so each volume
/// has storage of its own, e.g. `device = "/srv/volumes/{volume}"` with the
/// `local` driver's bind options). Users name a plan; they never give
/// driver options, so no one mounts a host path of their choice.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct VolumePlan {
    pub name: String,
    /// The provisioner entry whose pools may use it (`docker`, `swarm`).
    pub provisioner: String,
    #[serde(default = "local_driver")]
    pub driver: String,
    /// Driver options.
    #[serde(default)]
    pub opt: BTreeMap<String, String>,
}

fn local_driver() -> String {
    "local".into()
}

impl VolumePlan {
    /// The driver options of volume `volume` of this plan.
    pub fn options_for(&self, volume: &str) -> BTreeMap<String, String> {
        self.opt.iter().map(|(k, v)| (k.clone(), v.replace("{volume}", volume))).collect()
    }
}

/// `[[pool_policy]]`: what the apps of one pool may reach. Without an
/// entry a pool's apps reach nothing outside torii.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct PoolPolicy {
    pub pool: String,
    /// Allow entries (as `[plugin.outbound] allow`) bounding the
    /// `allowed_outbound_hosts` of the pool's app versions.
    #[serde(default)]
    pub outbound: Vec<String>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ApiConfig {
    pub listen: SocketAddr,
    /// Largest request body accepted, in bytes; larger ones get 413.
    pub max_body_bytes: usize,
    pub disable_index_page: bool,
    /// From a connection's start (or its previous answer) to the complete
    /// headers of its next request; slow headers and idle keep-alives are cut.
    pub header_read_timeout_ms: u64,
    /// A connection on which nothing moves for this long is closed.
    pub idle_timeout_ms: u64,
    /// Connections at once; past it new ones are closed on accept.
    pub max_connections: usize,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RouterConfig {
    /// Where app traffic arrives (the embedded router's data plane).
    pub listen: SocketAddr,
    /// Apps answer at `<app>.<domain>` (and at their cnames).
    pub domain: String,
    /// Where HTTPS app traffic arrives, served with the certificate set for
    /// the requested name (SNI). Unset: no TLS, and certificate calls answer
    /// `no router with tls support`.
    pub tls_listen: Option<SocketAddr>,
    /// Threads serving app traffic, each with its own connections; 0 means
    /// one per core. The first server a process starts sets it.
    pub workers: usize,
    /// As in `[api]`, for app traffic (HTTP and HTTPS each).
    pub header_read_timeout_ms: u64,
    pub idle_timeout_ms: u64,
    pub max_connections: usize,
}

/// A pool's provisioner: `own`, or `default` when the pool names none.
pub fn provisioner_or<'a>(own: &'a str, default: &'a str) -> &'a str {
    if own.is_empty() { default } else { own }
}

/// The default provisioner: the built-in `provisioner-wasm` plugin, which
/// runs WASM apps in the host's app runtime.
pub const WASM_PROVISIONER: &str = "wasm";

/// The built-in `provisioner-docker` plugin: container apps on the Docker
/// nodes registered through `/1.2/node`.
pub const DOCKER_PROVISIONER: &str = "docker";
/// Call deadline of the implicit `docker` entry (image builds are long).
const DOCKER_TIMEOUT_MS: u64 = 900_000;
/// The built-in `provisioner-swarm` plugin: container apps as services of
/// the Docker Swarm cluster (`/1.3/provisioner/clusters`) serving the pool.
pub const SWARM_PROVISIONER: &str = "swarm";

/// The built-in router (plugin `router-embedded`): its plugin entry, its
/// type and the name of the router in the catalogue. An entry of this name
/// in the config file replaces it.
pub const EMBEDDED_ROUTER: &str = "embedded";
/// A broker call may wait on its provider's answer (outbound HTTP's own
/// limit is 30 s) a little more than another plugin's call.
pub const SERVICE_BROKER_TIMEOUT_MS: u64 = 40_000;
/// The service-broker entry of services registered with `POST /services`
/// (built-in `service-tsuru`), unless `[services] api_plugin` names another.
pub const SERVICE_API_BROKER: &str = "tsuru";
/// The service-broker entry of `/1.7/brokers` (built-in `service-osb`),
/// unless `[services] broker_plugin` names another.
pub const SERVICE_OSB_BROKER: &str = "osb";

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PoolsConfig {
    /// The provisioner of pools created without one: `wasm` (built in) or
    /// the name of a provisioner plugin entry.
    pub default_provisioner: String,
}

impl Default for PoolsConfig {
    fn default() -> Self {
        PoolsConfig { default_provisioner: WASM_PROVISIONER.into() }
    }
}

/// The app runtime (WASM apps).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AppsConfig {
    /// CPU time one request may run before it is cut (504).
    pub cpu_deadline_ms: u64,
    /// The most memory one app instance may use, whatever its plan says.
    pub max_memory_mb: u64,
    /// App instances (requests in flight) at once, across all apps.
    pub max_instances: u32,
    /// How long a request waits for a free unit before it gets 503.
    pub queue_timeout_ms: u64,
    /// Wall-clock time one request's instance may live (answering and
    /// streaming its body, sleeping included); past it: 504, or the body is cut.
    pub wall_deadline_ms: u64,
    /// Time a streamed response body may go without the client taking any of it.
    pub body_idle_timeout_ms: u64,
    /// What the memories of all app instances together may use; a request
    /// that would pass it gets 503.
    pub memory_budget_mb: u64,
    /// Requests computing past their first epoch tick at once, served app by
    /// app in turn; 0: half the router workers (at least one).
    pub cpu_lanes: usize,
    /// Units one app may run, over its versions and processes; no app holds
    /// more instances than its units, so this is an app's share of
    /// `max_instances` too.
    pub max_units: u32,
    /// Processes one Procfile may name.
    pub max_processes: u32,
    /// How long the first request to a sleeping app waits for it to wake
    /// (its provisioner starting it) before it gets 503. A process its
    /// provisioner keeps routed while asleep (WASM) is served at once; its
    /// wake, recorded beside, waits this long at most for an operation
    /// holding the app.
    pub wake_timeout_ms: u64,
}

impl Default for AppsConfig {
    fn default() -> Self {
        AppsConfig {
            cpu_deadline_ms: 10_000,
            max_memory_mb: 512,
            max_instances: 1000,
            queue_timeout_ms: 1000,
            wall_deadline_ms: 60_000,
            body_idle_timeout_ms: 15_000,
            memory_budget_mb: 4096,
            cpu_lanes: 0,
            max_units: 100,
            max_processes: 32,
            wake_timeout_ms: 30_000,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DatabaseConfig {
    /// `sqlite://…` or `postgres://…`; default: `torii.db` in `data_dir`.
    pub url: Option<String>,
    pub max_connections: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AuthConfig {
    /// Name of the auth-scheme plugin entry.
    pub scheme: String,
    pub user_registration: bool,
    pub token_expire_days: u32,
    /// Most login sessions one user keeps; the oldest go first. 0 = no limit.
    pub max_simultaneous_sessions: u32,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct QuotaConfig {
    pub apps_per_user: i64,
    pub apps_per_team: i64,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct SmtpConfig {
    /// `host:port` of the SMTP server; unset means mail cannot be sent.
    pub server: Option<String>,
    pub user: Option<String>,
    pub password: Option<String>,
    pub from: String,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct PluginsConfig {
    /// Default per-call deadline.
    pub timeout_ms: u64,
    /// Default linear-memory cap per instance.
    pub memory_mb: u64,
    /// Where compiled components are cached; default `data_dir/cache`.
    pub cache_dir: Option<PathBuf>,
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct WebhooksConfig {
    /// Per-attempt deadline of a delivery.
    pub timeout_ms: u64,
    /// Attempts per event before giving up.
    pub attempts: u32,
    /// Wait before the second attempt; doubled after each failure.
    pub backoff_ms: u64,
    /// Delivery attempts kept per webhook.
    pub history: u32,
}

impl Default for WebhooksConfig {
    fn default() -> Self {
        WebhooksConfig { timeout_ms: 10_000, attempts: 3, backoff_ms: 500, history: 100 }
    }
}

/// The egress rule of the host's own fetches (webhooks, `archive-url`):
/// loopback, private and link-local addresses are refused unless their
/// origin is listed here exactly.
#[derive(Debug, Clone, Default, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EgressConfig {
    /// Origins reached whatever their address, e.g. `"http://127.0.0.1:9000"`.
    pub allow: Vec<String>,
}

/// The host's Docker engine client (nodes of the docker provisioner).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct DockerConfig {
    /// Bound of one engine call in milliseconds (image builds have their own).
    pub call_timeout_ms: u64,
}

impl Default for DockerConfig {
    fn default() -> Self {
        DockerConfig { call_timeout_ms: 60_000 }
    }
}

/// Unit healing: how often the provisioners that run units on nodes are
/// asked to repair each app (`reconcile`).
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct HealingConfig {
    /// Seconds between rounds; 0 turns healing off.
    pub interval_secs: u64,
    /// Failed checks in a row after which a node from an IaaS is replaced
    /// (with its pool's `MaxTimeSinceSuccess` passed too).
    pub node_max_failures: u32,
    /// A machine made for a node that has not joined after this long (its
    /// node add died with its process) is destroyed. Above the longest
    /// wait for an engine (`WaitTO`, at most an hour).
    pub orphan_machine_secs: u64,
    /// Seconds between rounds for the apps of provisioners whose cluster
    /// heals itself (Swarm): torii only follows the tasks it moved, so its
    /// routes should not lag; 0 leaves them to the `interval_secs` rounds.
    pub follow_interval_secs: u64,
}

impl Default for HealingConfig {
    fn default() -> Self {
        HealingConfig { interval_secs: 30, node_max_failures: 3, orphan_machine_secs: 3900, follow_interval_secs: 5 }
    }
}

/// App autoscale (`/1.9/apps/{app}/units/autoscale`): how often it looks
/// and how fast it moves.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct AutoscaleConfig {
    /// Seconds between decisions; 0 turns autoscale off.
    pub interval_secs: u64,
    /// Milliseconds between samples of WASM apps' requests in flight.
    pub sample_ms: u64,
    /// Seconds a process must need fewer units before it loses any.
    pub scale_down_delay_secs: u64,
    /// Seconds after a change before the next one.
    pub cooldown_secs: u64,
}

impl Default for AutoscaleConfig {
    fn default() -> Self {
        AutoscaleConfig { interval_secs: 15, sample_ms: 250, scale_down_delay_secs: 300, cooldown_secs: 30 }
    }
}

/// Node autoscale (`/1.3/node/autoscale`): pools of IaaS nodes grown and
/// shrunk by their rules.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct NodeAutoscaleConfig {
    /// Rounds run on their own (`POST /1.3/node/autoscale/run` runs one anyway).
    pub enabled: bool,
    pub run_interval_secs: u64,
    /// How long a new machine's engine may take to answer.
    pub wait_new_machine_secs: u64,
}

impl Default for NodeAutoscaleConfig {
    fn default() -> Self {
        NodeAutoscaleConfig { enabled: false, run_interval_secs: 60, wait_new_machine_secs: 120 }
    }
}

/// Interactive shells (`GET /apps/{app}/shell`): their keep-alive and bounds.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ShellConfig {
    /// Seconds between the server's pings.
    pub ping_interval_secs: u64,
    /// A shell whose client answered no ping for this long is closed.
    pub pong_timeout_secs: u64,
    /// The longest a shell lasts.
    pub max_secs: u64,
    /// Shells open at once into one app (isolated ones count: each is a container).
    pub max_per_app: usize,
}

impl Default for ShellConfig {
    fn default() -> Self {
        ShellConfig { ping_interval_secs: 20, pong_timeout_secs: 60, max_secs: 8 * 3600, max_per_app: 4 }
    }
}

/// Router plugins: a router that failed for an app (it did not answer,
/// or failed to forget a removed app) is told again every `resync_secs`.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct RoutersConfig {
    /// Seconds between rounds; 0 turns the retries off.
    pub resync_secs: u64,
}

impl Default for RoutersConfig {
    fn default() -> Self {
        RoutersConfig { resync_secs: 30 }
    }
}

/// `[services]`: which service-broker plugins speak to providers, and how
/// long their asynchronous operations may take.
#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct ServicesConfig {
    /// The plugin entry that speaks tsuru's service API to the services
    /// registered with `POST /services`.
    pub api_plugin: String,
    /// The plugin entry that speaks the Open Service Broker API to the
    /// brokers of `/1.7/brokers`.
    pub broker_plugin: String,
    /// Between two polls of a provider's operation in progress.
    pub poll_interval_ms: u64,
    /// A provider operation still running after this long counts as failed.
    pub operation_timeout_secs: u64,
    /// Service instances one team may own.
    pub max_instances_per_team: usize,
}

impl Default for ServicesConfig {
    fn default() -> Self {
        ServicesConfig {
            api_plugin: SERVICE_API_BROKER.into(),
            broker_plugin: SERVICE_OSB_BROKER.into(),
            poll_interval_ms: 2_000,
            operation_timeout_secs: 600,
            max_instances_per_team: 200,
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct LogsConfig {
    /// Newest log entries kept per app; older ones are dropped.
    pub max_lines_per_app: u32,
}

impl Default for LogsConfig {
    fn default() -> Self {
        LogsConfig { max_lines_per_app: 5000 }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(default, deny_unknown_fields)]
pub struct EventsConfig {
    /// A running event's lock is taken over when its holder has not renewed
    /// it for this long (the holder process died). Holders renew every third.
    pub lock_expire_secs: u64,
}

impl Default for EventsConfig {
    fn default() -> Self {
        EventsConfig { lock_expire_secs: 30 }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum PluginKind {
    AuthScheme,
    Provisioner,
    Router,
    Iaas,
    ServiceBroker,
}

impl PluginKind {
    pub fn name(self) -> &'static str {
        match self {
            PluginKind::AuthScheme => "auth-scheme",
            PluginKind::Provisioner => "provisioner",
            PluginKind::Router => "router",
            PluginKind::Iaas => "iaas",
            PluginKind::ServiceBroker => "service-broker",
        }
    }

    /// The capabilities a plugin of this kind can use (its world's imports,
    /// and outbound HTTP).
    pub fn usable(self) -> &'static [Capability] {
        use Capability::*;
        match self {
            PluginKind::AuthScheme | PluginKind::Iaas | PluginKind::ServiceBroker => &[Log, Kv, Http],
            PluginKind::Provisioner => &[Log, Kv, AppRuntime, Containers, Swarm, Http],
            PluginKind::Router => &[Log, Kv, Proxy, Http],
        }
    }

    /// The kind whose exported interface is named `name` (`auth-scheme`, …).
    pub fn named(name: &str) -> Option<PluginKind> {
        [PluginKind::AuthScheme, PluginKind::Provisioner, PluginKind::Router, PluginKind::Iaas, PluginKind::ServiceBroker]
            .into_iter()
            .find(|k| k.name() == name)
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Deserialize)]
#[serde(rename_all = "kebab-case")]
pub enum Capability {
    Log,
    Kv,
    AppRuntime,
    Proxy,
    Containers,
    /// Docker Swarm calls on the clusters serving the pools it provisions.
    Swarm,
    /// Outbound HTTP (`wasi:http/outgoing-handler`) to what `[plugin.outbound] allow` names.
    Http,
}

impl Capability {
    pub fn name(self) -> &'static str {
        match self {
            Capability::Log => "log",
            Capability::Kv => "kv",
            Capability::AppRuntime => "app-runtime",
            Capability::Proxy => "proxy",
            Capability::Containers => "containers",
            Capability::Swarm => "swarm",
            Capability::Http => "http",
        }
    }
}

#[derive(Debug, Clone, Deserialize)]
#[serde(deny_unknown_fields)]
pub struct PluginEntry {
    pub name: String,
    pub kind: PluginKind,
    /// Name of a plugin embedded in the binary (e.g. `auth-native`).
    pub builtin: Option<String>,
    /// A `.wasm` component file.
    pub path: Option<PathBuf>,
    #[serde(default)]
    pub capabilities: BTreeSet<Capability>,
    /// Handed to the plugin's `init` as JSON.
    #[serde(default)]
    pub config: toml::Table,
    pub timeout_ms: Option<u64>,
    pub memory_mb: Option<u64>,
    /// What the entry may reach with capability `http`, and its limits.
    pub outbound: Option<OutboundConfig>,
}

/// The most a `*_file` config value may read.
const MAX_CONFIG_FILE: u64 = 1 << 20;

impl PluginEntry {
    /// The JSON the plugin's `init` gets: its `config` table, with every
    /// top-level string `<key>_file` replaced by `<key>` holding that file's
    /// text (keys, certificates, metadata kept out of the config file).
    pub fn init_config(&self) -> anyhow::Result<String> {
        use std::io::Read;
        let mut table = self.config.clone();
        let files: Vec<String> = table.keys().filter(|k| k.ends_with("_file")).cloned().collect();
        for key in files {
            let Some(toml::Value::String(path)) = table.remove(&key) else {
                anyhow::bail!("config.{key} must be a file path");
            };
            let name = key.strip_suffix("_file").unwrap_or(&key).to_string();
            if table.contains_key(&name) {
                anyhow::bail!("config.{key} and config.{name} are both given");
            }
            let mut text = String::new();
            std::fs::File::open(&path)
                .and_then(|f| f.take(MAX_CONFIG_FILE + 1).read_to_string(&mut text))
                .map_err(|e| anyhow::anyhow!("config.{key}: cannot read {path}: {e}"))?;
            if text.len() as u64 > MAX_CONFIG_FILE {
                anyhow::bail!("config.{key}: {path} is larger than {MAX_CONFIG_FILE} bytes");
            }
            table.insert(name, toml::Value::String(text));
        }
        Ok(serde_json::to_string(&table)?)
    }
}

/// `[plugin.outbound]`: the destinations and limits of a plugin's outbound HTTP.
#[derive(Debug, Clone, Deserialize, PartialEq, Eq)]
#[serde(deny_unknown_fields)]
pub struct OutboundConfig {
    /// `scheme://host[:port]` entries; the host may be `*` or `*.example.com`,
    /// the port `*`. A loopback or private address is reached only through an
    /// entry naming its host itself.
    #[serde(default)]
    pub allow: Vec<String>,
    /// To resolve, connect and finish TLS.
    #[serde(default = "OutboundConfig::default_connect_timeout_ms")]
    pub connect_timeout_ms: u64,
    /// From the request to the last byte of the response.
    #[serde(default = "OutboundConfig::default_timeout_ms")]
    pub timeout_ms: u64,
    #[serde(default = "OutboundConfig::default_max_bytes")]
    pub max_request_bytes: u64,
    #[serde(default = "OutboundConfig::default_max_bytes")]
    pub max_response_bytes: u64,
    /// PEM files of CAs trusted beside the platform's roots.
    #[serde(default)]
    pub ca_files: Vec<PathBuf>,
}

impl Default for OutboundConfig {
    fn default() -> Self {
        OutboundConfig {
            allow: Vec::new(),
            connect_timeout_ms: Self::default_connect_timeout_ms(),
            timeout_ms: Self::default_timeout_ms(),
            max_request_bytes: Self::default_max_bytes(),
            max_response_bytes: Self::default_max_bytes(),
            ca_files: Vec::new(),
        }
    }
}

impl OutboundConfig {
    fn default_connect_timeout_ms() -> u64 {
        5_000
    }
    fn default_timeout_ms() -> u64 {
        30_000
    }
    fn default_max_bytes() -> u64 {
        8 << 20
    }

    pub fn limits(&self) -> crate::outbound::OutboundLimits {
        crate::outbound::OutboundLimits {
            connect: std::time::Duration::from_millis(self.connect_timeout_ms),
            total: std::time::Duration::from_millis(self.timeout_ms),
            request_bytes: self.max_request_bytes,
            response_bytes: self.max_response_bytes,
        }
    }
}

impl Default for Config {
    fn default() -> Self {
        Config {
            data_dir: PathBuf::from("./data"),
            api: ApiConfig::default(),
            router: RouterConfig::default(),
            database: DatabaseConfig::default(),
            auth: AuthConfig::default(),
            quota: QuotaConfig::default(),
            smtp: SmtpConfig::default(),
            plugins: PluginsConfig::default(),
            events: EventsConfig::default(),
            logs: LogsConfig::default(),
            healing: HealingConfig::default(),
            routers: RoutersConfig::default(),
            docker: DockerConfig::default(),
            webhooks: WebhooksConfig::default(),
            apps: AppsConfig::default(),
            pools: PoolsConfig::default(),
            egress: EgressConfig::default(),
            plugin: Vec::new(),
            services: ServicesConfig::default(),
            shell: ShellConfig::default(),
            autoscale: AutoscaleConfig::default(),
            node_autoscale: NodeAutoscaleConfig::default(),
            pool_policy: Vec::new(),
            volume_plan: Vec::new(),
        }
    }
}

impl Default for ApiConfig {
    fn default() -> Self {
        ApiConfig {
            listen: ([127, 0, 0, 1], 8080).into(),
            max_body_bytes: 32 << 20,
            disable_index_page: false,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_connections: 1024,
        }
    }
}

impl Default for RouterConfig {
    fn default() -> Self {
        RouterConfig {
            listen: ([127, 0, 0, 1], 8888).into(),
            domain: "torii.localhost".into(),
            tls_listen: None,
            workers: 0,
            header_read_timeout_ms: 10_000,
            idle_timeout_ms: 300_000,
            max_connections: 8192,
        }
    }
}

impl Default for DatabaseConfig {
    fn default() -> Self {
        DatabaseConfig { url: None, max_connections: 16 }
    }
}

impl Default for AuthConfig {
    fn default() -> Self {
        AuthConfig {
            scheme: "native".into(),
            user_registration: false,
            token_expire_days: 7,
            max_simultaneous_sessions: 0,
        }
    }
}

impl Default for QuotaConfig {
    fn default() -> Self {
        QuotaConfig { apps_per_user: -1, apps_per_team: -1 }
    }
}

impl Default for SmtpConfig {
    fn default() -> Self {
        SmtpConfig { server: None, user: None, password: None, from: "torii@localhost".into() }
    }
}

impl Default for PluginsConfig {
    fn default() -> Self {
        PluginsConfig { timeout_ms: 10_000, memory_mb: 64, cache_dir: None }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConfigError {
    #[error("cannot read config file {path}: {source}")]
    Read { path: PathBuf, source: std::io::Error },
    #[error("config file {path}: {message}")]
    Parse { path: PathBuf, message: String },
    #[error("config: `{key}`: {message}")]
    Invalid { key: String, message: String },
}

fn invalid(key: impl Into<String>, message: impl Into<String>) -> ConfigError {
    ConfigError::Invalid { key: key.into(), message: message.into() }
}

/// Built-in plugins that ship inside the binary: (name, kind).
pub const BUILTIN_PLUGINS: &[(&str, PluginKind)] = &[
    ("auth-native", PluginKind::AuthScheme),
    ("auth-saml", PluginKind::AuthScheme),
    ("provisioner-wasm", PluginKind::Provisioner),
    ("provisioner-docker", PluginKind::Provisioner),
    ("provisioner-swarm", PluginKind::Provisioner),
    ("router-embedded", PluginKind::Router),
    ("router-api", PluginKind::Router),
    ("router-caddy", PluginKind::Router),
    ("service-tsuru", PluginKind::ServiceBroker),
    ("service-osb", PluginKind::ServiceBroker),
    ("iaas-inventory", PluginKind::Iaas),
    ("iaas-ec2", PluginKind::Iaas),
];

impl Config {
    /// Loads `path` (or the defaults when `None`) and validates it.
    pub fn load(path: Option<&Path>) -> Result<Config, ConfigError> {
        let config = match path {
            None => Config::parse("")?,
            Some(path) => {
                let text = std::fs::read_to_string(path)
                    .map_err(|source| ConfigError::Read { path: path.into(), source })?;
                Config::parse(&text).map_err(|e| match e {
                    ConfigError::Parse { message, .. } => ConfigError::Parse { path: path.into(), message },
                    other => other,
                })?
            }
        };
        Ok(config)
    }

    pub fn parse(text: &str) -> Result<Config, ConfigError> {
        let mut config: Config = toml::from_str(text)
            .map_err(|e| ConfigError::Parse { path: PathBuf::from("<inline>"), message: e.to_string() })?;
        config.complete()?;
        Ok(config)
    }

    /// Adds the implicit defaults (the built-in `native` scheme, `wasm`
    /// provisioner and `embedded` router) and checks cross-key rules.
    fn complete(&mut self) -> Result<(), ConfigError> {
        // (entry name, kind, built-in plugin, grants, call deadline), each unless declared.
        let implicit: [(&str, PluginKind, &str, &[Capability], Option<u64>); 5] = [
            (WASM_PROVISIONER, PluginKind::Provisioner, "provisioner-wasm", &[Capability::Log, Capability::AppRuntime], None),
            // Its calls create, start and build containers: minutes, not seconds.
            (
                DOCKER_PROVISIONER,
                PluginKind::Provisioner,
                "provisioner-docker",
                &[Capability::Log, Capability::AppRuntime, Capability::Containers],
                Some(DOCKER_TIMEOUT_MS),
            ),
            // Its calls wait for rolling updates of every task.
            (SWARM_PROVISIONER, PluginKind::Provisioner, "provisioner-swarm", &[Capability::Log, Capability::Kv, Capability::Swarm], Some(DOCKER_TIMEOUT_MS)),
            (EMBEDDED_ROUTER, PluginKind::Router, "router-embedded", &[Capability::Log, Capability::Proxy], None),
            ("native", PluginKind::AuthScheme, "auth-native", &[Capability::Log, Capability::Kv], None),
        ];
        for (name, kind, builtin, grants, timeout_ms) in implicit {
            if !self.plugin.iter().any(|p| p.name == name) {
                self.plugin.push(PluginEntry {
                    name: name.into(),
                    kind,
                    builtin: Some(builtin.into()),
                    path: None,
                    capabilities: grants.iter().copied().collect(),
                    config: toml::Table::new(),
                    timeout_ms,
                    memory_mb: None,
                    outbound: None,
                });
            }
        }
        // The service brokers reach providers on public addresses by
        // default; a provider on loopback or a private network needs an
        // entry naming it (`[[plugin]] name = "tsuru"` with its own allow).
        for (name, builtin, configured) in
            [(SERVICE_API_BROKER, "service-tsuru", &self.services.api_plugin), (SERVICE_OSB_BROKER, "service-osb", &self.services.broker_plugin)]
        {
            if configured == name && !self.plugin.iter().any(|p| p.name == name) {
                self.plugin.push(PluginEntry {
                    name: name.into(),
                    kind: PluginKind::ServiceBroker,
                    builtin: Some(builtin.into()),
                    path: None,
                    capabilities: [Capability::Log, Capability::Kv, Capability::Http].into_iter().collect(),
                    config: toml::Table::new(),
                    timeout_ms: Some(SERVICE_BROKER_TIMEOUT_MS),
                    memory_mb: None,
                    outbound: Some(OutboundConfig { allow: vec!["https://*:*".into(), "http://*:*".into()], ..OutboundConfig::default() }),
                });
            }
        }
        let mut plans = BTreeSet::new();
        for (i, v) in self.volume_plan.iter().enumerate() {
            let key = format!("volume_plan[{i}]");
            if v.name.is_empty() || !v.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid(format!("{key}.name"), "must be letters, digits, '-' or '_'"));
            }
            if !plans.insert((v.name.clone(), v.provisioner.clone())) {
                return Err(invalid(format!("{key}.name"), format!("plan {:?} of provisioner {:?} is declared twice", v.name, v.provisioner)));
            }
            if v.driver.is_empty() {
                return Err(invalid(format!("{key}.driver"), "names a Docker volume driver, such as \"local\""));
            }
            if !self.runs_containers(&v.provisioner) {
                return Err(invalid(format!("{key}.provisioner"), format!("{:?} is not a provisioner entry that runs containers (docker, swarm)", v.provisioner)));
            }
        }
        let mut seen = BTreeSet::new();
        for (i, p) in self.plugin.iter().enumerate() {
            let key = format!("plugin[{i}]");
            if p.name.is_empty() || !p.name.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
                return Err(invalid(format!("{key}.name"), "must be letters, digits, '-' or '_'"));
            }
            if !seen.insert(p.name.clone()) {
                return Err(invalid(format!("{key}.name"), format!("plugin {:?} is declared twice", p.name)));
            }
            match (&p.builtin, &p.path) {
                (Some(_), Some(_)) | (None, None) => {
                    return Err(invalid(key, "give exactly one of `builtin` or `path`"));
                }
                (Some(b), None) => match BUILTIN_PLUGINS.iter().find(|(n, _)| n == b) {
                    None => {
                        let known: Vec<_> = BUILTIN_PLUGINS.iter().map(|(n, _)| *n).collect();
                        return Err(invalid(
                            format!("{key}.builtin"),
                            format!("no built-in plugin {b:?} (built-in: {})", known.join(", ")),
                        ));
                    }
                    Some((_, kind)) if *kind != p.kind => {
                        return Err(invalid(format!("{key}.kind"), format!("built-in {b:?} is not of this kind")));
                    }
                    Some(_) => {}
                },
                (None, Some(_)) => {}
            }
            if let Some(c) = p.capabilities.iter().find(|c| !p.kind.usable().contains(c)) {
                let usable: Vec<&str> = p.kind.usable().iter().map(|c| c.name()).collect();
                return Err(invalid(
                    format!("{key}.capabilities"),
                    format!(
                        "{} {} plugin cannot use capability {:?} (it may be granted {})",
                        if p.kind.name().starts_with(['a', 'e', 'i', 'o', 'u']) { "an" } else { "a" },
                        p.kind.name(),
                        c.name(),
                        usable.join(", ")
                    ),
                ));
            }
            if p.timeout_ms == Some(0) {
                return Err(invalid(format!("{key}.timeout_ms"), "must be positive"));
            }
            if matches!(p.memory_mb, Some(0)) {
                return Err(invalid(format!("{key}.memory_mb"), "must be positive"));
            }
            match (&p.outbound, p.capabilities.contains(&Capability::Http)) {
                (Some(_), false) => {
                    return Err(invalid(format!("{key}.outbound"), "is given, but the entry is not granted capability \"http\""));
                }
                (None, true) => {
                    return Err(invalid(format!("{key}.capabilities"), "grant \"http\" with [plugin.outbound] allow = [...], the destinations it may reach"));
                }
                (Some(o), true) => {
                    crate::outbound::AllowList::parse(&o.allow).map_err(|e| invalid(format!("{key}.outbound.allow"), e))?;
                    if o.connect_timeout_ms == 0 || o.timeout_ms == 0 || o.max_request_bytes == 0 || o.max_response_bytes == 0 {
                        return Err(invalid(format!("{key}.outbound"), "timeouts and byte limits must be positive"));
                    }
                }
                (None, false) => {}
            }
        }
        match self.plugin.iter().find(|p| p.name == self.auth.scheme) {
            None => return Err(invalid("auth.scheme", format!("no plugin named {:?}", self.auth.scheme))),
            Some(p) if p.kind != PluginKind::AuthScheme => {
                return Err(invalid("auth.scheme", format!("plugin {:?} is not an auth-scheme", p.name)));
            }
            Some(_) => {}
        }
        for (key, name) in [("services.api_plugin", &self.services.api_plugin), ("services.broker_plugin", &self.services.broker_plugin)] {
            match self.plugin.iter().find(|p| &p.name == name) {
                None => return Err(invalid(key, format!("no plugin named {name:?}"))),
                Some(p) if p.kind != PluginKind::ServiceBroker => {
                    return Err(invalid(key, format!("plugin {:?} is not a service-broker", p.name)));
                }
                Some(_) => {}
            }
        }
        if self.services.poll_interval_ms == 0 || self.services.operation_timeout_secs == 0 {
            return Err(invalid("services", "poll_interval_ms and operation_timeout_secs must be positive"));
        }
        if self.plugin.iter().any(|p| p.name == EMBEDDED_ROUTER && p.kind != PluginKind::Router) {
            return Err(invalid("plugin", format!("the plugin named {EMBEDDED_ROUTER:?} serves the built-in router: it must be of kind router")));
        }
        let mut policed = BTreeSet::new();
        for (i, policy) in self.pool_policy.iter().enumerate() {
            if !policed.insert(policy.pool.as_str()) {
                return Err(invalid(format!("pool_policy[{i}].pool"), format!("pool {:?} has two policies", policy.pool)));
            }
            crate::outbound::AllowList::parse(&policy.outbound).map_err(|e| invalid(format!("pool_policy[{i}].outbound"), e))?;
        }
        if self.auth.token_expire_days == 0 {
            return Err(invalid("auth.token_expire_days", "must be at least 1"));
        }
        if self.plugins.timeout_ms == 0 {
            return Err(invalid("plugins.timeout_ms", "must be positive"));
        }
        if self.plugins.memory_mb == 0 {
            return Err(invalid("plugins.memory_mb", "must be positive"));
        }
        if self.webhooks.timeout_ms == 0 || self.webhooks.attempts == 0 || self.webhooks.history == 0 {
            return Err(invalid("webhooks", "timeout_ms, attempts and history must be positive"));
        }
        if self.logs.max_lines_per_app == 0 {
            return Err(invalid("logs.max_lines_per_app", "must be at least 1"));
        }
        if self.events.lock_expire_secs == 0 {
            return Err(invalid("events.lock_expire_secs", "must be at least 1"));
        }
        if !self.provisioner_exists(&self.pools.default_provisioner) {
            return Err(invalid(
                "pools.default_provisioner",
                format!("{:?} is not a provisioner plugin entry (the built-in one is \"wasm\")", self.pools.default_provisioner),
            ));
        }
        if self.docker.call_timeout_ms == 0 {
            return Err(invalid("docker.call_timeout_ms", "must be positive"));
        }
        if self.apps.cpu_deadline_ms == 0 || self.apps.max_memory_mb == 0 || self.apps.max_instances == 0 {
            return Err(invalid("apps", "cpu_deadline_ms, max_memory_mb and max_instances must be positive"));
        }
        if self.router.domain.is_empty() || self.router.domain.starts_with('.') {
            return Err(invalid("router.domain", "must be a domain name such as apps.example.com"));
        }
        if let Err(message) = crate::egress::Egress::new(&self.egress.allow) {
            return Err(invalid("egress.allow", message));
        }
        if self.apps.max_units == 0 || self.apps.max_processes == 0 {
            return Err(invalid("apps", "max_units and max_processes must be positive"));
        }
        if self.apps.max_units > self.apps.max_instances {
            return Err(invalid("apps.max_units", "must not be more than apps.max_instances (one app would take every instance)"));
        }
        if self.apps.wall_deadline_ms == 0 || self.apps.body_idle_timeout_ms == 0 || self.apps.memory_budget_mb == 0 {
            return Err(invalid("apps", "wall_deadline_ms, body_idle_timeout_ms and memory_budget_mb must be positive"));
        }
        for (key, header, idle, max) in [
            ("api", self.api.header_read_timeout_ms, self.api.idle_timeout_ms, self.api.max_connections),
            ("router", self.router.header_read_timeout_ms, self.router.idle_timeout_ms, self.router.max_connections),
        ] {
            if header == 0 || idle == 0 || max == 0 {
                return Err(invalid(key, "header_read_timeout_ms, idle_timeout_ms and max_connections must be positive"));
            }
        }
        if self.database.max_connections == 0 {
            return Err(invalid("database.max_connections", "must be positive"));
        }
        if let Some(url) = &self.database.url
            && !(url.starts_with("sqlite:") || url.starts_with("postgres://") || url.starts_with("postgresql://"))
        {
            return Err(invalid("database.url", "must start with sqlite: or postgres://"));
        }
        Ok(())
    }

    /// The bounds of the API listener.
    pub fn api_limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            header_read: std::time::Duration::from_millis(self.api.header_read_timeout_ms),
            idle: std::time::Duration::from_millis(self.api.idle_timeout_ms),
            max_connections: self.api.max_connections,
        }
    }

    /// The bounds of each app traffic listener.
    pub fn router_limits(&self) -> crate::listener::Limits {
        crate::listener::Limits {
            header_read: std::time::Duration::from_millis(self.router.header_read_timeout_ms),
            idle: std::time::Duration::from_millis(self.router.idle_timeout_ms),
            max_connections: self.router.max_connections,
        }
    }

    /// The data plane's threads: `[router] workers`, or one per core.
    pub fn router_workers(&self) -> usize {
        match self.router.workers {
            0 => std::thread::available_parallelism().map(|n| n.get()).unwrap_or(1),
            n => n,
        }
    }

    /// The SQLite database file, when the database is SQLite.
    pub fn sqlite_file(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    pub fn database_url(&self) -> String {
        match &self.database.url {
            Some(url) => url.clone(),
            None => format!("sqlite://{}?mode=rwc", self.data_dir.join("torii.db").display()),
        }
    }

    /// True for the built-in provisioner and configured provisioner plugins.
    /// Router types: the names of the router plugin entries (`embedded` among them).
    pub fn router_types(&self) -> Vec<&str> {
        self.plugin.iter().filter(|p| p.kind == PluginKind::Router).map(|p| p.name.as_str()).collect()
    }

    /// The volume plans of provisioner entry `provisioner`.
    pub fn volume_plans(&self, provisioner: &str) -> impl Iterator<Item = &VolumePlan> {
        self.volume_plan.iter().filter(move |v| v.provisioner == provisioner)
    }

    pub fn provisioner_exists(&self, name: &str) -> bool {
        self.plugin.iter().any(|p| p.kind == PluginKind::Provisioner && p.name == name)
    }

    /// Whether the provisioner entry `name` runs units on Docker nodes (is
    /// granted `containers`): it takes nodes, is healed, and files deployed
    /// to it are built onto a platform image.
    pub fn uses_nodes(&self, name: &str) -> bool {
        self.plugin.iter().any(|p| p.name == name && p.capabilities.contains(&Capability::Containers))
    }

    /// Whether the provisioner entry `name` runs apps on Swarm clusters (is
    /// granted `swarm`): its pools take a cluster, and it is healed.
    pub fn uses_clusters(&self, name: &str) -> bool {
        self.plugin.iter().any(|p| p.name == name && p.capabilities.contains(&Capability::Swarm))
    }

    /// Whether the provisioner entry `name` runs containers (on nodes or on
    /// a cluster): it runs images, not components.
    pub fn runs_containers(&self, name: &str) -> bool {
        self.uses_nodes(name) || self.uses_clusters(name)
    }

    /// Whether the provisioner entry `name` runs components in the host's
    /// app runtime and no containers (as the `wasm` one does).
    pub fn runs_components(&self, name: &str) -> bool {
        self.plugin.iter().any(|p| p.name == name && p.capabilities.contains(&Capability::AppRuntime)) && !self.runs_containers(name)
    }

    /// What the apps of `pool` may reach (`[[pool_policy]] outbound`).
    pub fn pool_outbound(&self, pool: &str) -> &[String] {
        self.pool_policy.iter().find(|p| p.pool == pool).map(|p| p.outbound.as_slice()).unwrap_or(&[])
    }

    /// The provisioner of a pool: its own, or the configured default.
    pub fn pool_provisioner<'a>(&'a self, own: &'a str) -> &'a str {
        provisioner_or(own, &self.pools.default_provisioner)
    }

    /// The SQLite database file, when the database is a SQLite file.
    pub fn sqlite_path(&self) -> Option<PathBuf> {
        let url = self.database_url();
        let rest = url.strip_prefix("sqlite://").or_else(|| url.strip_prefix("sqlite:"))?;
        let path = rest.split('?').next().unwrap_or_default();
        (!path.is_empty() && path != ":memory:").then(|| PathBuf::from(path))
    }

    pub fn cache_dir(&self) -> PathBuf {
        self.plugins.cache_dir.clone().unwrap_or_else(|| self.data_dir.join("cache"))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn empty_file_gives_the_embedded_defaults() {
        let c = Config::parse("").unwrap();
        assert_eq!(c.api.listen.to_string(), "127.0.0.1:8080");
        assert_eq!(c.router.listen.to_string(), "127.0.0.1:8888");
        assert_eq!(c.auth.scheme, "native");
        assert_eq!(c.auth.token_expire_days, 7);
        assert!(!c.auth.user_registration);
        assert!(c.database_url().starts_with("sqlite://./data/torii.db"));
        assert_eq!(c.sqlite_path(), Some(PathBuf::from("./data/torii.db")));
        let builtins: Vec<(&str, PluginKind)> = c.plugin.iter().map(|p| (p.name.as_str(), p.kind)).collect();
        assert_eq!(
            builtins,
            [
                ("wasm", PluginKind::Provisioner),
                ("docker", PluginKind::Provisioner),
                ("swarm", PluginKind::Provisioner),
                ("embedded", PluginKind::Router),
                ("native", PluginKind::AuthScheme),
                ("tsuru", PluginKind::ServiceBroker),
                ("osb", PluginKind::ServiceBroker)
            ]
        );
        // The brokers reach public addresses only, within bounds.
        let tsuru = &c.plugin[5];
        assert_eq!(tsuru.outbound.as_ref().map(|o| o.allow.clone()), Some(vec!["https://*:*".to_string(), "http://*:*".to_string()]));
        assert_eq!(tsuru.timeout_ms, Some(SERVICE_BROKER_TIMEOUT_MS));
        assert_eq!((c.services.api_plugin.as_str(), c.services.broker_plugin.as_str()), ("tsuru", "osb"));
        let docker = &c.plugin[1];
        assert_eq!((docker.timeout_ms, docker.capabilities.contains(&Capability::Containers)), (Some(DOCKER_TIMEOUT_MS), true));
        let swarm = &c.plugin[2];
        assert_eq!(swarm.capabilities, [Capability::Log, Capability::Kv, Capability::Swarm].into_iter().collect());
        assert!(c.uses_clusters("swarm") && c.runs_containers("swarm") && !c.uses_nodes("swarm") && !c.runs_components("swarm"));
        assert_eq!(c.pools.default_provisioner, "wasm");
    }

    #[test]
    fn services_name_service_broker_entries() {
        let e = Config::parse("[services]\napi_plugin = \"embedded\"\n").unwrap_err().to_string();
        assert_eq!(e, "config: `services.api_plugin`: plugin \"embedded\" is not a service-broker");
        let e = Config::parse("[services]\nbroker_plugin = \"nope\"\n").unwrap_err().to_string();
        assert_eq!(e, "config: `services.broker_plugin`: no plugin named \"nope\"");
        // Pointing both at one entry leaves the other built-in out.
        let c = Config::parse("[services]\nbroker_plugin = \"tsuru\"\n").unwrap();
        assert!(!c.plugin.iter().any(|p| p.name == "osb"));
    }

    #[test]
    fn file_keys_are_read_into_the_plugin_config() {
        let dir = tempfile::TempDir::new().unwrap();
        let key = dir.path().join("sp.key");
        std::fs::write(&key, "KEY").unwrap();
        let entry = |config: &str| {
            let text = format!("[[plugin]]\nname = \"s\"\nkind = \"auth-scheme\"\nbuiltin = \"auth-saml\"\n[plugin.config]\n{config}\n");
            Config::parse(&text).unwrap().plugin.into_iter().find(|p| p.name == "s").unwrap()
        };
        let json = entry(&format!("sp_key_file = {:?}\nsp_entity_id = \"x\"", key.display().to_string())).init_config().unwrap();
        assert_eq!(serde_json::from_str::<serde_json::Value>(&json).unwrap(), serde_json::json!({"sp_key": "KEY", "sp_entity_id": "x"}));
        let missing = entry("sp_key_file = \"/nonexistent/k\"").init_config().unwrap_err().to_string();
        assert!(missing.starts_with("config.sp_key_file: cannot read /nonexistent/k"), "{missing}");
        let both = entry(&format!("sp_key_file = {:?}\nsp_key = \"inline\"", key.display().to_string())).init_config().unwrap_err().to_string();
        assert_eq!(both, "config.sp_key_file and config.sp_key are both given");
        assert_eq!(entry("sp_key_file = 3").init_config().unwrap_err().to_string(), "config.sp_key_file must be a file path");
    }

    #[test]
    fn unknown_key_is_named() {
        let e = Config::parse("[api]\nlisten = \"127.0.0.1:1\"\nlistne = 3\n").unwrap_err().to_string();
        assert!(e.contains("listne"), "{e}");
    }

    #[test]
    fn bad_value_is_named() {
        let e = Config::parse("[api]\nlisten = \"nowhere\"\n").unwrap_err().to_string();
        assert!(e.contains("listen"), "{e}");
        let e = Config::parse("[auth]\nscheme = \"saml\"\n").unwrap_err().to_string();
        assert!(e.contains("auth.scheme"), "{e}");
        let e = Config::parse("[[plugin]]\nname=\"x\"\nkind=\"router\"\n").unwrap_err().to_string();
        assert!(e.contains("plugin[0]"), "{e}");
        let e = Config::parse("[pools]\ndefault_provisioner = \"kubernetes\"\n").unwrap_err().to_string();
        assert!(e.contains("pools.default_provisioner") && e.contains("kubernetes"), "{e}");
    }

    #[test]
    fn pools_without_a_provisioner_use_the_default() {
        let c = Config::parse("").unwrap();
        assert_eq!((c.pool_provisioner(""), c.pool_provisioner("docker")), ("wasm", "docker"));
    }
}
