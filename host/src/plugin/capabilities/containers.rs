//! `containers`: Docker Engine operations for provisioner plugins. Each call
//! names a node; the host checks the node is registered in a pool the
//! calling plugin provisions, then runs the call through its own client
//! (`crate::docker`), bounded in time. Containers are made from a spec that
//! has no mounts, privileges or host network, with ports on 127.0.0.1 only.

use super::bindings::torii::plugin::containers::{Container, ContainerSpec, Engine, ExecOutput, Host, Image, Mount, Node, Placement, Usage};
use crate::config::Capability;
use crate::docker::{ContainerInfo, Engines};
use crate::plugin::PluginState;
use crate::plugin::instance::HostCtx;
use std::sync::Arc;
use std::time::Duration;

const UNAVAILABLE: &str = "docker engines are not available to this plugin";
use crate::docker::OWNER_LABEL;
/// Bound of an image build.
const BUILD_LIMIT: Duration = Duration::from_secs(600);
/// The most of a container's output `output` hands over (its last bytes).
const MAX_OUTPUT: usize = 1 << 20;

/// The provisioner serving `pool`, as the pool record names it (or the default).
async fn pool_provisioner(host: &HostCtx, pool: &str) -> Result<String, String> {
    let Some(apps) = host.apps.as_ref() else { return Err(UNAVAILABLE.into()) };
    let record = host.store.pool(pool).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no pool {pool:?}"))?;
    Ok(crate::config::provisioner_or(&record.provisioner, &apps.default_provisioner).to_string())
}

/// The node at `node` when it is registered in a pool this plugin provisions.
async fn owns_node(host: &HostCtx, node: &str) -> Result<crate::store::NodeRecord, String> {
    let record = host.store.node(node).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("no docker node {node:?}"))?;
    if pool_provisioner(host, &record.pool).await? != host.name {
        return Err(format!("docker node {node:?} is in pool {:?}, which {:?} does not provision", record.pool, host.name));
    }
    Ok(record)
}

impl PluginState {
    /// The engines, once the capability is granted.
    fn engines(&self) -> wasmtime::Result<(Arc<HostCtx>, Option<Arc<Engines>>)> {
        self.check(Capability::Containers)?;
        Ok((self.host.clone(), self.host.apps.as_ref().and_then(|a| a.docker.clone())))
    }

    /// Runs `f` on the engines once the plugin may reach `node`.
    async fn on_node<T>(&mut self, node: &str, f: impl AsyncFnOnce(&Engines) -> Result<T, crate::docker::EngineError>) -> wasmtime::Result<Result<T, String>> {
        self.on_node_record(node, async move |engines, _| f(engines).await).await
    }

    /// [`Self::on_node`], handing `f` the node's record too.
    async fn on_node_record<T>(
        &mut self,
        node: &str,
        f: impl AsyncFnOnce(&Engines, &crate::store::NodeRecord) -> Result<T, crate::docker::EngineError>,
    ) -> wasmtime::Result<Result<T, String>> {
        let (host, engines) = self.engines()?;
        let Some(engines) = engines else { return Ok(Err(UNAVAILABLE.into())) };
        let record = match owns_node(&host, node).await {
            Ok(record) => record,
            Err(e) => return Ok(Err(e)),
        };
        Ok(f(&engines, &record).await.map_err(|e| e.to_string()))
    }

    /// Runs `f` on container `id` of `node` once it is one this plugin
    /// created (carries its owner label); any other is "not found".
    async fn on_own<T>(
        &mut self,
        node: &str,
        id: &str,
        f: impl AsyncFnOnce(&Engines, &ContainerInfo) -> Result<T, crate::docker::EngineError>,
    ) -> wasmtime::Result<Result<T, String>> {
        let name = self.host.name.clone();
        self.on_node(node, async |e| {
            let c = e.inspect(node, id).await?.filter(|c| c.labels.get(OWNER_LABEL) == Some(&name));
            let c = c.ok_or_else(|| crate::docker::EngineError::Invalid(format!("docker node {node}: no container {id:?} of plugin {name:?}")))?;
            f(e, &c).await
        })
        .await
    }
}

/// `spec` with the owner label of plugin `name` (replacing any the plugin set).
fn owned(mut spec: crate::docker::Spec, name: &str) -> crate::docker::Spec {
    spec.labels.retain(|(k, _)| k != OWNER_LABEL);
    spec.labels.push((OWNER_LABEL.to_string(), name.to_string()));
    spec
}

/// The log config (`/docker/logs`) of `pool`, else the default's.
async fn log_config(host: &HostCtx, pool: &str) -> Option<(String, std::collections::BTreeMap<String, String>)> {
    let settings = host.store.pool_settings(crate::docker::LOGS_SETTING).await.ok()?;
    let value = settings.get(pool).or_else(|| settings.get(""))?;
    let driver = value["Driver"].as_str().filter(|d| !d.is_empty())?.to_string();
    let opts = value["LogOpts"].as_object().map(|o| o.iter().map(|(k, v)| (k.clone(), v.as_str().unwrap_or_default().to_string())).collect()).unwrap_or_default();
    Some((driver, opts))
}

fn mounted(mounts: &[Mount]) -> Vec<super::Mounted<'_>> {
    mounts.iter().map(|m| super::Mounted { volume: &m.volume, target: &m.target, read_only: m.read_only }).collect()
}

fn spec(s: ContainerSpec) -> crate::docker::Spec {
    crate::docker::Spec {
        log: None,
        mounts: Vec::new(),
        name: s.name,
        image: s.image,
        cmd: s.cmd,
        env: s.env,
        labels: s.labels,
        port: s.port,
        memory: s.memory,
        cpu_milli: s.cpu_milli,
    }
}

fn container(c: ContainerInfo) -> Container {
    Container {
        id: c.id,
        name: c.name,
        image: c.image,
        labels: c.labels.into_iter().collect(),
        state: c.state,
        address: c.address,
        restarts: c.restarts,
        exit_code: c.exit_code,
    }
}

impl Host for PluginState {
    async fn nodes(&mut self, pool: String) -> wasmtime::Result<Result<Vec<Node>, String>> {
        let (host, _) = self.engines()?;
        let nodes = if pool.is_empty() {
            host.store.nodes().await
        } else {
            match pool_provisioner(&host, &pool).await {
                Ok(p) if p == host.name => {}
                Ok(_) => return Ok(Err(format!("pool {pool:?} is not provisioned by {:?}", host.name))),
                Err(e) => return Ok(Err(e)),
            }
            host.store.pool_nodes(&pool).await
        };
        let nodes = match nodes {
            Ok(n) => n,
            Err(e) => return Ok(Err(e.to_string())),
        };
        let mut mine = Vec::with_capacity(nodes.len());
        for n in nodes {
            // A node whose pool is gone, or served by another plugin, is not this plugin's.
            if pool_provisioner(&host, &n.pool).await.is_ok_and(|p| p == host.name) {
                mine.push(Node { address: n.address, pool: n.pool, metadata: n.metadata.into_iter().collect(), status: n.status });
            }
        }
        Ok(Ok(mine))
    }

    async fn start_all(&mut self, placements: Vec<Placement>, timeout_ms: u32) -> wasmtime::Result<Vec<Result<Container, String>>> {
        let (host, engines) = self.engines()?;
        let Some(engines) = engines else { return Ok(placements.iter().map(|_| Err(UNAVAILABLE.to_string())).collect()) };
        // Per node, once: may the plugin use it, and its pool's log config.
        let mut allowed = std::collections::HashMap::new();
        for p in &placements {
            if !allowed.contains_key(&p.node) {
                let (owned, log) = match owns_node(&host, &p.node).await {
                    Ok(record) => {
                        let log = log_config(&host, &record.pool).await;
                        (Ok(record.pool), log)
                    }
                    Err(e) => (Err(e), None),
                };
                allowed.insert(p.node.clone(), (owned, log));
            }
        }
        let mut mounts = Vec::with_capacity(placements.len());
        for p in &placements {
            mounts.push(match &allowed[&p.node].0 {
                Ok(pool) => super::resolve_mounts(&host, pool, &mounted(&p.spec.mounts)).await,
                Err(e) => Err(e.clone()),
            });
        }
        let limit = Duration::from_millis(u64::from(timeout_ms));
        let starts = placements.into_iter().zip(mounts).map(|(p, mounts)| {
            let (engines, (allowed, log), owner) = (engines.clone(), allowed[&p.node].clone(), host.name.clone());
            async move {
                allowed?;
                let mounts = mounts?;
                let spec = owned(crate::docker::Spec { log, mounts, ..spec(p.spec) }, &owner);
                engines.run(&p.node, spec, p.wait_listening, limit).await.map(container).map_err(|e| e.to_string())
            }
        });
        Ok(futures_util::future::join_all(starts).await)
    }

    async fn create(&mut self, node: String, spec: ContainerSpec) -> wasmtime::Result<Result<String, String>> {
        let host = self.host.clone();
        let wanted = spec.mounts.clone();
        let spec = self::spec(spec);
        self.on_node_record(&node, async |engines, record| {
            let mounts = super::resolve_mounts(&host, &record.pool, &mounted(&wanted)).await.map_err(crate::docker::EngineError::Invalid)?;
            let spec = owned(crate::docker::Spec { log: log_config(&host, &record.pool).await, mounts, ..spec }, &host.name);
            engines.create(&node, spec).await
        })
        .await
    }

    async fn start(&mut self, node: String, id: String) -> wasmtime::Result<Result<(), String>> {
        self.on_own(&node, &id, async |e, c| e.start(&node, &c.id).await).await
    }

    async fn stop(&mut self, node: String, id: String, timeout_secs: u32) -> wasmtime::Result<Result<(), String>> {
        self.on_own(&node, &id, async |e, c| e.stop(&node, &c.id, timeout_secs).await).await
    }

    async fn remove(&mut self, node: String, id: String) -> wasmtime::Result<Result<(), String>> {
        // A container already gone is fine, as the WIT says.
        let name = self.host.name.clone();
        self.on_node(&node, async |e| match e.inspect(&node, &id).await? {
            Some(c) if c.labels.get(OWNER_LABEL) == Some(&name) => e.remove(&node, &c.id).await,
            Some(_) => Err(crate::docker::EngineError::Invalid(format!("docker node {node}: no container {id:?} of plugin {name:?}"))),
            None => Ok(()),
        })
        .await
    }

    async fn inspect(&mut self, node: String, id: String) -> wasmtime::Result<Result<Option<Container>, String>> {
        let name = self.host.name.clone();
        Ok(self.on_node(&node, async |e| e.inspect(&node, &id).await).await?.map(|c| c.filter(|c| c.labels.get(OWNER_LABEL) == Some(&name)).map(container)))
    }

    async fn list(&mut self, node: String, labels: Vec<(String, String)>) -> wasmtime::Result<Result<Vec<Container>, String>> {
        let mut labels = labels;
        labels.retain(|(k, _)| k != OWNER_LABEL);
        labels.push((OWNER_LABEL.to_string(), self.host.name.clone()));
        Ok(self.on_node(&node, async |e| e.list(&node, &labels).await).await?.map(|l| l.into_iter().map(container).collect()))
    }

    async fn wait_listening(&mut self, node: String, id: String, timeout_ms: u32) -> wasmtime::Result<Result<Option<String>, String>> {
        self.on_own(&node, &id, async |e, c| e.wait_listening(&node, &c.id, Duration::from_millis(u64::from(timeout_ms))).await).await
    }

    async fn wait(&mut self, node: String, id: String, timeout_secs: u32) -> wasmtime::Result<Result<i64, String>> {
        self.on_own(&node, &id, async |e, c| e.wait(&node, &c.id, timeout_secs).await).await
    }

    async fn follow_logs(&mut self, node: String, id: String, app: String, unit: String) -> wasmtime::Result<Result<(), String>> {
        let (host, engines) = self.engines()?;
        // Followed already: it was this plugin's container, of an app it
        // provisions, when the follow began (a second follow is a no-op anyway).
        if engines.is_some_and(|d| d.logs.is_following(&node, &id)) {
            return Ok(Ok(()));
        }
        // The app must be one this plugin provisions, so a plugin writes only its own apps' logs.
        match host.store.app_view(&app).await {
            Ok(Some(view)) if pool_provisioner(&host, &view.app.pool).await.as_deref() == Ok(host.name.as_str()) => {}
            Ok(_) => return Ok(Err(format!("app {app:?} is not provisioned by {:?}", host.name))),
            Err(e) => return Ok(Err(e.to_string())),
        }
        self.on_own(&node, &id, async |e, c| e.follow_logs(&node, &c.id, &app, &unit).await).await
    }

    async fn exec(&mut self, node: String, id: String, cmd: Vec<String>) -> wasmtime::Result<Result<ExecOutput, String>> {
        Ok(self.on_own(&node, &id, async |e, c| e.exec(&node, &c.id, cmd).await).await?.map(|(exit_code, output)| ExecOutput { exit_code, output }))
    }

    async fn output(&mut self, node: String, id: String) -> wasmtime::Result<Result<String, String>> {
        self.on_own(&node, &id, async |e, c| e.output(&node, &c.id, MAX_OUTPUT).await).await
    }

    async fn image_info(&mut self, node: String, image: String) -> wasmtime::Result<Result<Option<Image>, String>> {
        Ok(self.on_node(&node, async |e| e.image(&node, &image).await).await?.map(|i| {
            i.map(|i| Image { id: i.id, ports: i.ports, cmd: i.cmd, entrypoint: i.entrypoint, working_dir: i.working_dir })
        }))
    }

    async fn build(
        &mut self,
        node: String,
        context: String,
        dockerfile: String,
        tag: String,
        args: Vec<(String, String)>,
    ) -> wasmtime::Result<Result<Vec<String>, String>> {
        let Some(catalog) = self.host.apps.as_ref().map(|a| a.catalog.clone()) else { return Ok(Err(UNAVAILABLE.into())) };
        self.on_node(&node, async |e| {
            let bytes = catalog.blobs.get(&context).await.map_err(|err| crate::docker::EngineError::Invalid(format!("build context {context:?}: {err}")))?;
            e.build(&node, bytes, &dockerfile, &tag, &args, BUILD_LIMIT).await
        })
        .await
    }

    async fn import_image(&mut self, node: String, rootfs: String, tag: String) -> wasmtime::Result<Result<(), String>> {
        let Some(catalog) = self.host.apps.as_ref().map(|a| a.catalog.clone()) else { return Ok(Err(UNAVAILABLE.into())) };
        self.on_node(&node, async |e| {
            let bytes = catalog.blobs.get(&rootfs).await.map_err(|err| crate::docker::EngineError::Invalid(format!("root filesystem {rootfs:?}: {err}")))?;
            e.import(&node, bytes, &tag).await
        })
        .await
    }

    async fn tag(&mut self, node: String, image: String, tag: String) -> wasmtime::Result<Result<(), String>> {
        self.on_node(&node, async |e| e.tag(&node, &image, &tag).await).await
    }

    async fn image_names(&mut self, node: String, repository: String) -> wasmtime::Result<Result<Vec<String>, String>> {
        self.on_node(&node, async |e| e.image_names(&node, &repository).await).await
    }

    async fn remove_image(&mut self, node: String, image: String) -> wasmtime::Result<Result<(), String>> {
        self.on_node(&node, async |e| e.remove_image(&node, &image).await).await
    }

    async fn info(&mut self, node: String) -> wasmtime::Result<Result<Engine, String>> {
        Ok(self.on_node(&node, async |e| e.info(&node).await).await?.map(|i| Engine {
            name: i.name,
            version: i.version,
            containers: i.containers,
            images: i.images,
            cpus: i.cpus,
            memory: i.memory,
        }))
    }

    async fn stats(&mut self, node: String, ids: Vec<String>) -> wasmtime::Result<Vec<Result<Usage, String>>> {
        let name = self.host.name.clone();
        let (host, engines) = self.engines()?;
        let refuse = |why: String| ids.iter().map(|_| Err(why.clone())).collect();
        let Some(engines) = engines else { return Ok(refuse(UNAVAILABLE.into())) };
        if let Err(e) = owns_node(&host, &node).await {
            return Ok(refuse(e));
        }
        let one = async |id: &String| -> Result<Usage, String> {
            let own = engines.inspect(&node, id).await.map_err(|e| e.to_string())?.filter(|c| c.labels.get(OWNER_LABEL) == Some(&name));
            own.ok_or_else(|| format!("docker node {node}: no container {id:?} of plugin {name:?}"))?;
            let u = engines.stats(&node, id).await.map_err(|e| e.to_string())?;
            Ok(Usage { cpu_milli: u.cpu_milli, memory: u.memory })
        };
        Ok(futures_util::future::join_all(ids.iter().map(one)).await)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_owner_label_is_the_hosts_to_set() {
        let forged = crate::docker::Spec { labels: vec![(OWNER_LABEL.into(), "other".into()), ("app".into(), "a".into())], ..Default::default() };
        let spec = owned(forged, "docker");
        assert_eq!(spec.labels, [("app".to_string(), "a".to_string()), (OWNER_LABEL.to_string(), "docker".to_string())]);
    }
}
