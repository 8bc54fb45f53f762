//! Assembling a running torii: storage, plugins, identity and the API listener.

use crate::plugin::instance::PluginAdmin;
use anyhow::Context as _;
use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::auth::{Authenticator, ServerKey};
use crate::config::{Config, PluginEntry, PluginKind};
use crate::events::Events;
use crate::mail::Mailer;
use crate::plugin::auth_scheme::{AuthScheme, AuthWorld};
use crate::plugin::instance::{AppsHost, HostCtx, PluginPool, World};
use crate::plugin::provisioner::{Provisioner, ProvisionerWorld};
use crate::plugin::router::{RouterPlugin, RouterWorld};
use crate::routers::sync::Routing;
use crate::plugin::{Limits, PluginEngine};
use crate::store::Store;

/// Everything a request handler can reach.
pub struct Server {
    pub config: Config,
    pub store: Store,
    pub auth: Authenticator,
    pub scheme: AuthScheme,
    pub mailer: Mailer,
    pub events: Arc<Events>,
    /// Woken on every log write from this process, so followers see it at once.
    pub log_written: Arc<tokio::sync::Notify>,
    /// Clients of the Docker nodes (`/1.2/node`), shared with the docker provisioner.
    pub docker: Arc<crate::docker::Engines>,
    pub started: Instant,
    /// torii's own figures (`GET /1.2/metrics`).
    pub metrics: Arc<crate::metrics::Metrics>,
    /// Deployed app versions, loaded into the app runtime.
    pub apps: Arc<crate::runtime::catalog::Catalog>,
    /// Units of WASM apps in this process: concurrency slots and controls.
    pub units: Arc<crate::dataplane::units::Units>,
    /// The configured provisioners (the built-in `wasm` among them), by name.
    pub provisioners: BTreeMap<String, Provisioner>,
    /// Every loaded plugin, by entry name (the admin API).
    pub plugins: BTreeMap<String, Arc<dyn PluginAdmin>>,
    /// The router plugins (the built-in `embedded` among them), by the type they serve.
    pub routing: Arc<Routing>,
    /// The service-broker plugins, by entry name (`[services]` names the
    /// ones that serve `/services` and `/1.7/brokers`).
    pub brokers: BTreeMap<String, crate::plugin::service_broker::BrokerPlugin>,
    /// The IaaS drivers, by entry name (the IaaS name of machines and templates).
    pub iaases: BTreeMap<String, crate::plugin::iaas::IaasPlugin>,
    /// Apps being woken by the data plane, one wake each at a time.
    pub wakes: crate::apps::wake::Wakes,
    /// The outbound HTTP of app versions (built once per version).
    pub app_outbound: crate::outbound::AppOutbound,
    /// Unit lists as provisioners last reported them, per app: the view and
    /// unit-state generation they were made from (see `api::apps`).
    /// The egress rule every fetch of a user-given URL passes.
    pub egress: Arc<crate::egress::Egress>,
    /// App autoscale: specs as last read, samples, each process's track.
    pub autoscaler: crate::apps::autoscale::Autoscaler,
    /// Checks of the nodes that came from an IaaS (node healing).
    pub node_checks: crate::healing::NodeChecks,
    /// Interactive shells open, per app (`api::shell`).
    pub shells: crate::apps::shell::Shells,
    pub unit_lists: std::sync::Mutex<std::collections::HashMap<String, (Arc<crate::store::AppView>, u64, Arc<Vec<crate::plugin::provisioner::Unit>>)>>,
    _plugins: PluginEngine,
}

/// Bytes of the plugins built into the binary.
/// Runs `round` every `every` (the first after one period) while the server
/// lives; a round holds the server only while it runs.
pub fn rounds(server: std::sync::Weak<Server>, every: Duration, round: fn(Arc<Server>) -> crate::plugin::instance::BoxFuture<'static, ()>) {
    tokio::spawn(async move {
        let mut tick = tokio::time::interval(every);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        tick.tick().await;
        loop {
            tick.tick().await;
            let Some(server) = server.upgrade() else { return };
            round(server).await;
        }
    });
}

pub fn builtin_plugin(name: &str) -> Option<&'static [u8]> {
    match name {
        "auth-native" => Some(include_bytes!(env!("TORII_GUEST_AUTH_NATIVE"))),
        "auth-saml" => Some(include_bytes!(env!("TORII_GUEST_AUTH_SAML"))),
        "provisioner-wasm" => Some(include_bytes!(env!("TORII_GUEST_PROVISIONER_WASM"))),
        "provisioner-docker" => Some(include_bytes!(env!("TORII_GUEST_PROVISIONER_DOCKER"))),
        "provisioner-swarm" => Some(include_bytes!(env!("TORII_GUEST_PROVISIONER_SWARM"))),
        "router-embedded" => Some(include_bytes!(env!("TORII_GUEST_ROUTER_EMBEDDED"))),
        "router-api" => Some(include_bytes!(env!("TORII_GUEST_ROUTER_API"))),
        "router-caddy" => Some(include_bytes!(env!("TORII_GUEST_ROUTER_CADDY"))),
        "service-tsuru" => Some(include_bytes!(env!("TORII_GUEST_SERVICE_TSURU"))),
        "service-osb" => Some(include_bytes!(env!("TORII_GUEST_SERVICE_OSB"))),
        "iaas-inventory" => Some(include_bytes!(env!("TORII_GUEST_IAAS_INVENTORY"))),
        "iaas-ec2" => Some(include_bytes!(env!("TORII_GUEST_IAAS_EC2"))),
        _ => None,
    }
}

/// A plugin entry, loaded (built in, or read from its path), linked and
/// initialised with its config, its grants and `apps` when it may reach the
/// app runtime.
async fn plugin_pool<W: World>(
    engine: &PluginEngine,
    config: &Config,
    entry: &PluginEntry,
    store: &Store,
    apps: Option<AppsHost>,
) -> anyhow::Result<Arc<PluginPool<W>>> {
    let (bytes, source): (Vec<u8>, String) = match (&entry.builtin, &entry.path) {
        (Some(b), _) => (builtin_plugin(b).with_context(|| format!("no built-in plugin {b:?}"))?.to_vec(), format!("builtin:{b}")),
        (None, Some(path)) => (
            std::fs::read(path).with_context(|| format!("plugin {:?}: cannot read {}", entry.name, path.display()))?,
            path.display().to_string(),
        ),
        (None, None) => unreachable!("config validation"),
    };
    let component = engine.component(&bytes).with_context(|| format!("plugin {:?} is not a valid component", entry.name))?;
    let outbound = match (&entry.outbound, entry.capabilities.contains(&crate::config::Capability::Http)) {
        (Some(o), true) => Some(Arc::new(
            crate::outbound::Outbound::new(format!("plugin {:?}", entry.name), o).map_err(|e| anyhow::anyhow!("plugin {:?}: outbound: {e}", entry.name))?,
        )),
        _ => None,
    };
    let host = HostCtx { name: entry.name.clone(), grants: entry.capabilities.clone(), store: store.clone(), apps, outbound };
    let config_json = entry.init_config().with_context(|| format!("plugin {:?}", entry.name))?;
    let digest = crate::blobs::Blobs::digest(&bytes);
    Ok(Arc::new(PluginPool::<W>::new(engine, &component, host, config_json, limits(config, entry), source, digest).await?))
}

fn limits(config: &Config, entry: &PluginEntry) -> Limits {
    Limits {
        timeout: Duration::from_millis(entry.timeout_ms.unwrap_or(config.plugins.timeout_ms)),
        memory_bytes: (entry.memory_mb.unwrap_or(config.plugins.memory_mb) as usize) << 20,
    }
}

impl Server {
    pub async fn build(config: Config) -> anyhow::Result<Arc<Server>> {
        crate::blobs::private_dir(&config.data_dir)
            .with_context(|| format!("cannot create data_dir {} (mode 0700)", config.data_dir.display()))?;
        if let Some(file) = config.sqlite_file() {
            crate::blobs::private_file(&file).with_context(|| format!("cannot make the database {} private (mode 0600)", file.display()))?;
        }
        let store = Store::connect(&config.database_url(), config.database.max_connections)
            .await
            .context("cannot open the database")?;
        store.seed_plans(&crate::api::plans::default_plans()).await.context("cannot seed the default plans")?;
        let key = ServerKey::load_or_create(&config.data_dir.join("secret.key")).context("cannot read the server key")?;
        let previous = ServerKey::load_existing(&config.data_dir.join("secret.key.previous")).context("cannot read secret.key.previous")?;
        let store = store.with_sealer(crate::store::sealed::Sealer::new(&key.at_rest_key(), previous.as_ref().map(|k| k.at_rest_key()).as_ref()));
        let resealed = store.reseal_at_rest().await.context("cannot seal the secrets stored in plain text or under secret.key.previous")?;
        if resealed > 0 {
            tracing::info!(resealed, "secrets sealed with the current server key");
        }

        let max_memory = config
            .plugin
            .iter()
            .map(|p| limits(&config, p).memory_bytes)
            .max()
            .unwrap_or((config.plugins.memory_mb as usize) << 20);
        let engine = PluginEngine::new(max_memory, &config.cache_dir()).context("cannot start the plugin engine")?;

        let entry = config
            .plugin
            .iter()
            .find(|p| p.name == config.auth.scheme && p.kind == PluginKind::AuthScheme)
            .expect("config validation guarantees the auth scheme entry");
        let pool = plugin_pool::<AuthWorld>(&engine, &config, entry, &store, None).await?;
        let mut plugins: BTreeMap<String, Arc<dyn PluginAdmin>> = BTreeMap::new();
        plugins.insert(entry.name.clone(), pool.clone());

        let instance = serde_json::json!({
            "Name": hostname(),
            "Port": config.api.listen.port().to_string(),
            "TLSPort": "",
            "Addresses": [config.api.listen.ip().to_string()],
            "LastUpdate": crate::api::time_json(crate::store::now_millis()),
        });
        let delivery = crate::webhooks::Delivery {
            timeout: Duration::from_millis(config.webhooks.timeout_ms),
            attempts: config.webhooks.attempts,
            backoff: Duration::from_millis(config.webhooks.backoff_ms),
            history: i64::from(config.webhooks.history),
        };
        let egress = Arc::new(crate::egress::Egress::new(&config.egress.allow).map_err(|e| anyhow::anyhow!("egress.allow: {e}"))?);
        let metrics = Arc::new(crate::metrics::Metrics::default());
        let webhooks = crate::webhooks::start(store.clone(), delivery, egress.clone(), metrics.clone());
        let events = Events::new(store.clone(), Duration::from_secs(config.events.lock_expire_secs), instance, Some(webhooks));
        let runtime = crate::runtime::AppRuntime::new(
            crate::runtime::RuntimeLimits {
                max_memory_bytes: (config.apps.max_memory_mb as usize) << 20,
                instances: config.apps.max_instances,
                cpu_deadline: Duration::from_millis(config.apps.cpu_deadline_ms),
                wall_deadline: Duration::from_millis(config.apps.wall_deadline_ms),
                body_idle: Duration::from_millis(config.apps.body_idle_timeout_ms),
                memory_budget_bytes: usize::try_from(config.apps.memory_budget_mb << 20).unwrap_or(usize::MAX),
                cpu_lanes: match config.apps.cpu_lanes {
                    0 => (config.router_workers() / 2).max(1),
                    n => n,
                },
            },
            &config.cache_dir(),
        )
        .context("cannot start the app runtime")?;
        let blobs = crate::blobs::Blobs::new(&config.data_dir.join("blobs")).context("cannot create the blob store")?;
        let apps = Arc::new(crate::runtime::catalog::Catalog::new(runtime, blobs));
        let units = Arc::new(crate::dataplane::units::Units::default());

        let mut router_plugins = BTreeMap::new();
        for entry in config.plugin.iter().filter(|p| p.kind == PluginKind::Router) {
            let pool = plugin_pool::<RouterWorld>(&engine, &config, entry, &store, None).await?;
            plugins.insert(entry.name.clone(), pool.clone());
            router_plugins.insert(entry.name.clone(), RouterPlugin::new(pool));
        }
        let routing = Arc::new(Routing::new(store.clone(), config.router.domain.clone(), router_plugins));
        let apps_synced = routing.sync_all().await.map_err(|e| anyhow::anyhow!("cannot set up the routes: {e}"))?;
        tracing::debug!(apps = apps_synced, "routes handed to the routers");

        let log_written = Arc::new(tokio::sync::Notify::new());
        let followers = crate::docker::logs::Followers::new(store.clone(), i64::from(config.logs.max_lines_per_app), log_written.clone());
        let docker = Arc::new(crate::docker::Engines::new(Duration::from_millis(config.docker.call_timeout_ms), followers));
        let mut provisioners = BTreeMap::new();
        for entry in config.plugin.iter().filter(|p| p.kind == PluginKind::Provisioner) {
            let runtime = AppsHost {
                catalog: apps.clone(),
                units: units.clone(),
                default_provisioner: config.pools.default_provisioner.clone(),
                docker: [crate::config::Capability::Containers, crate::config::Capability::Swarm]
                    .iter()
                    .any(|c| entry.capabilities.contains(c))
                    .then(|| docker.clone()),
                volume_plans: config.volume_plans(&entry.name).cloned().collect(),
            };
            let pool = plugin_pool::<ProvisionerWorld>(&engine, &config, entry, &store, Some(runtime)).await?;
            plugins.insert(entry.name.clone(), pool.clone());
            provisioners.insert(entry.name.clone(), Provisioner::new(pool));
        }
        let mut brokers = BTreeMap::new();
        for entry in config.plugin.iter().filter(|p| p.kind == PluginKind::ServiceBroker) {
            let pool = plugin_pool::<crate::plugin::service_broker::BrokerWorld>(&engine, &config, entry, &store, None).await?;
            plugins.insert(entry.name.clone(), pool.clone());
            brokers.insert(entry.name.clone(), crate::plugin::service_broker::BrokerPlugin::new(pool));
        }
        let mut iaases = BTreeMap::new();
        for entry in config.plugin.iter().filter(|p| p.kind == PluginKind::Iaas) {
            let pool = plugin_pool::<crate::plugin::iaas::IaasWorld>(&engine, &config, entry, &store, None).await?;
            plugins.insert(entry.name.clone(), pool.clone());
            iaases.insert(entry.name.clone(), crate::plugin::iaas::IaasPlugin::new(pool));
        }
        Ok(Arc::new(Server {
            apps,
            brokers,
            iaases,
            units,
            provisioners,
            plugins,
            routing,
            wakes: Default::default(),
            app_outbound: Default::default(),
            autoscaler: Default::default(),
            node_checks: Default::default(),
            shells: Default::default(),
            unit_lists: Default::default(),
            egress,
            events,
            log_written,
            docker,
            auth: Authenticator::new(store.clone(), key),
            scheme: AuthScheme::new(pool),
            mailer: Mailer::new(config.smtp.clone()),
            store,
            config,
            started: Instant::now(),
            metrics,
            _plugins: engine,
        }))
    }
}

fn hostname() -> String {
    std::fs::read_to_string("/proc/sys/kernel/hostname")
        .map(|h| h.trim().to_string())
        .unwrap_or_else(|_| "torii".into())
}

/// Serves the API on `listener` within `admission`'s bounds until `shutdown`;
/// then stops accepting, lets each connection finish its request in flight
/// and closes it.
async fn serve_api(listener: TcpListener, app: axum::Router, admission: crate::listener::Admission, mut shutdown: oneshot::Receiver<()>) {
    use tower_service::Service;
    let (closing_tx, closing) = tokio::sync::watch::channel(());
    let mut connections = tokio::task::JoinSet::new();
    loop {
        let (stream, peer) = tokio::select! {
            accepted = listener.accept() => match accepted {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "api: accept failed");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            },
            _ = &mut shutdown => break,
        };
        // Past [api] max_connections a connection is closed at once.
        let Some(slot) = admission.slot() else { continue };
        // Streams (deploy output, x-json-streams) are many small writes: no Nagle delays.
        let _ = stream.set_nodelay(true);
        let io = hyper_util::rt::TokioIo::new(admission.watch(stream, slot));
        let app = app.clone();
        let service = hyper::service::service_fn(move |mut req: hyper::Request<hyper::body::Incoming>| {
            req.extensions_mut().insert(axum::extract::ConnectInfo(peer));
            app.clone().call(req)
        });
        // Upgrades: the websockets of `GET /apps/{app}/shell` and `GET /logs`.
        let connection = admission.http1().serve_connection(io, service).with_upgrades();
        let mut closing = closing.clone();
        connections.spawn(async move {
            tokio::pin!(connection);
            tokio::select! {
                _ = connection.as_mut() => {}
                _ = closing.changed() => {
                    connection.as_mut().graceful_shutdown();
                    let _ = connection.await;
                }
            }
        });
        while connections.try_join_next().is_some() {}
    }
    drop(closing_tx);
    while connections.join_next().await.is_some() {}
}

/// How long a stopping server waits for open requests.
pub const SHUTDOWN_GRACE: Duration = Duration::from_secs(5);

/// A server accepting requests; dropping the handle does not stop it, `stop` does.
pub struct Running {
    pub addr: SocketAddr,
    /// Where app traffic arrives (`[router] listen`).
    pub router_addr: SocketAddr,
    /// Where HTTPS app traffic arrives (`[router] tls_listen`), if anywhere.
    pub tls_addr: Option<SocketAddr>,
    pub server: Arc<Server>,
    shutdown: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
    router: crate::dataplane::DataPlane,
}

impl Running {
    /// Stops accepting, cuts app requests and writes the app output still
    /// waiting for the app log, lets in-flight API requests finish for up to
    /// [`SHUTDOWN_GRACE`] (long-lived streams such as log follows are cut
    /// then), and closes the database.
    pub async fn stop(mut self) {
        self.router.stop(&self.server).await;
        if let Some(tx) = self.shutdown.take() {
            let _ = tx.send(());
        }
        if tokio::time::timeout(SHUTDOWN_GRACE, &mut self.task).await.is_err() {
            tracing::warn!("connections still open after {SHUTDOWN_GRACE:?}; closing them");
            self.task.abort();
        }
        self.server.store.close().await;
    }
}

/// Binds `[api] listen` (or `listener`) and serves the API in the background.
pub async fn start(server: Arc<Server>, listener: Option<TcpListener>) -> anyhow::Result<Running> {
    let listener = match listener {
        Some(l) => l,
        None => TcpListener::bind(server.config.api.listen)
            .await
            .with_context(|| format!("cannot listen on {}", server.config.api.listen))?,
    };
    let addr = listener.local_addr()?;
    let router_listener = TcpListener::bind(server.config.router.listen)
        .await
        .with_context(|| format!("cannot listen for app traffic on {} ([router] listen)", server.config.router.listen))?;
    let router_addr = router_listener.local_addr()?;
    let (tls_listener, tls_addr) = match server.config.router.tls_listen {
        None => (None, None),
        Some(at) => {
            let l = TcpListener::bind(at).await.with_context(|| format!("cannot listen for HTTPS app traffic on {at} ([router] tls_listen)"))?;
            let addr = l.local_addr()?;
            (Some(l), Some(addr))
        }
    };
    let mut traffic = vec![format!("http://{router_addr}")];
    traffic.extend(tls_addr.map(|a| format!("https://{a}")));
    server.routing.set_traffic(traffic);
    let router = crate::dataplane::serve(server.clone(), router_listener, tls_listener);
    if server.config.routers.resync_secs > 0 {
        crate::routers::resync::start(Arc::downgrade(&server), Duration::from_secs(server.config.routers.resync_secs));
    }
    crate::services::operations::start(Arc::downgrade(&server), Duration::from_millis(server.config.services.poll_interval_ms));
    if server.config.autoscale.interval_secs > 0 {
        let cfg = &server.config.autoscale;
        crate::apps::autoscale::start(Arc::downgrade(&server), Duration::from_secs(cfg.interval_secs), Duration::from_millis(cfg.sample_ms.max(10)));
    }
    if server.config.node_autoscale.enabled && server.config.node_autoscale.run_interval_secs > 0 {
        crate::iaas::autoscale::start(Arc::downgrade(&server), Duration::from_secs(server.config.node_autoscale.run_interval_secs));
    }
    if server.config.healing.interval_secs > 0 {
        let follow = server.config.healing.follow_interval_secs;
        crate::healing::start(Arc::downgrade(&server), Duration::from_secs(server.config.healing.interval_secs), (follow > 0).then(|| Duration::from_secs(follow)));
    }
    let app = crate::api::router(server.clone());
    let (tx, rx) = oneshot::channel::<()>();
    let admission = crate::listener::Admission::new(server.config.api_limits());
    let task = tokio::spawn(serve_api(listener, app, admission, rx));
    Ok(Running { addr, router_addr, tls_addr, server, shutdown: Some(tx), task, router })
}
