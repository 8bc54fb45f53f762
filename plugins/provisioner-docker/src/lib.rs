//! The `docker` provisioner: an app's units are containers on the Docker
//! nodes of its pool (capability `containers`); the router reaches them at
//! their ports published on 127.0.0.1 (the routes `apply` answers carry
//! those addresses).
//!
//! Policy kept here:
//! - what can be deployed: an image present on the pool's nodes, pinned at
//!   deploy time under the version's own name (`torii/app-<app>:v<N>`), so a
//!   rollback runs what was deployed even after the image's name moved on;
//! - container naming and labels (app, process, version, unit, pool, config);
//! - scheduling: units spread by app and process, then by app, then by node
//!   load, never on a node that is not ready (`schedule`);
//! - env: the app's variables plus `PORT` (the image's first exposed port,
//!   else 8888); a unit whose image, command, env or plan changed is replaced,
//!   new units first;
//! - a stopped or sleeping process has its containers stopped (start brings
//!   them back) and is not routed; kill removes a unit (a new one takes its
//!   place), healing replaces dead or missing units.

mod schedule;

use schedule::{NodeLoad, pick, pick_surplus};
use std::collections::BTreeMap;
use torii_plugin_sdk::containers::{self, Container, ContainerSpec, Node, Placement};
use torii_plugin_sdk::export_provisioner;
use torii_plugin_sdk::provisioner::{
    Applied, AppState, AppVersion, Error, Outcome, Process, ProcessStatus, Provisioner, Repair, Route, ShellTarget, Unit, UnitUsage, config_hash,
};

const LABEL_APP: &str = "torii.app";
const LABEL_PROCESS: &str = "torii.process";
const LABEL_VERSION: &str = "torii.version";
const LABEL_POOL: &str = "torii.pool";
const LABEL_CONFIG: &str = "torii.config";
/// Marks every container this provisioner made.
const LABEL_MANAGED: &str = "torii.provisioner";
/// Marks an isolated run's container (not a unit) with its app.
const LABEL_RUN: &str = "torii.run";
/// Marks an isolated shell's container (besides [`LABEL_RUN`]) with its app.
const LABEL_SHELL: &str = "torii.shell";
/// How long an isolated run may take before it is cut.
const RUN_TIMEOUT_SECS: u32 = 600;
/// How long an isolated shell's container lives at most (the host closes
/// the shell before: its sessions are bounded shorter).
const SHELL_ISOLATED_SECS: u32 = 12 * 3600;

/// Status of a node being removed: its units move to the other nodes.
const NODE_REMOVING: &str = "removing";

/// The port a unit's server is told to listen on when its image exposes none.
const DEFAULT_PORT: u16 = 8888;
/// How long a new unit may take to accept connections before it counts as failed.
const START_TIMEOUT_MS: u32 = 30_000;
/// Grace of a stopping container before it is killed.
const STOP_TIMEOUT_SECS: u32 = 10;

struct Docker {
    /// The name of this plugin entry, written on its containers.
    name: String,
}

/// What a convergence did.
#[derive(Default)]
struct Report {
    /// Healing: the desired state was applied before, so a unit short of it
    /// went missing (in an apply it is a scale-up).
    healing: bool,
    lines: Vec<String>,
    repairs: Vec<Repair>,
    /// What the router serves after it.
    routes: Vec<Route>,
}

/// One of the app's containers and the node it is on.
struct Placed {
    node: usize,
    c: Container,
}

impl Placed {
    fn label(&self, key: &str) -> Option<&str> {
        self.c.labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
    }

    fn version(&self) -> u32 {
        self.label(LABEL_VERSION).and_then(|v| v.parse().ok()).unwrap_or(0)
    }

    fn process(&self) -> &str {
        self.label(LABEL_PROCESS).unwrap_or("")
    }

    fn running(&self) -> bool {
        self.c.state == "running"
    }
}

/// The app's nodes and containers as the engines report them now.
struct Cluster {
    nodes: Vec<Node>,
    /// Nodes that did not answer (their containers are unknown).
    unreachable: Vec<(usize, String)>,
    units: Vec<Placed>,
    /// Every container of this provisioner per node (for load).
    totals: Vec<usize>,
}

fn short(id: &str) -> &str {
    &id[..id.len().min(12)]
}

fn random_suffix() -> String {
    format!("{:06x}", wasip2::random::random::get_random_u64() & 0xff_ffff)
}

/// A process's command; empty: the image's own.
fn command(p: &Process) -> Vec<String> {
    if p.command.is_empty() { Vec::new() } else { shell(&p.command) }
}

/// `command` run by the image's shell.
fn shell(command: &str) -> Vec<String> {
    vec!["/bin/sh".into(), "-c".into(), command.into()]
}

/// An interactive shell: bash when the image has it, else its `sh`.
fn login_shell() -> Vec<String> {
    shell("if command -v bash >/dev/null 2>&1; then exec bash -l; else exec sh -l; fi")
}

/// `lines` with what a command printed; an error carrying them all when it
/// exited non-zero in `place`.
fn command_output(mut lines: Vec<String>, output: &str, code: i64, place: &str) -> Result<Vec<String>, String> {
    lines.extend(output.lines().map(|l| format!("{l}\n")));
    if code != 0 {
        return Err(format!("{}the command exited with code {code} in {place}", lines.concat()));
    }
    Ok(lines)
}

/// Whether `p` is the process of `v` that takes the traffic.
fn serves(v: &AppVersion, p: &Process) -> bool {
    serving(v).is_some_and(|s| s.name == p.name)
}

/// The process that takes a version's traffic: `web`, else the first.
fn serving(v: &AppVersion) -> Option<&Process> {
    v.processes.iter().find(|p| p.name == "web").or_else(|| v.processes.first())
}

impl Docker {
    fn cluster(&self, pool: &str, app: &str) -> Result<Cluster, String> {
        let nodes = containers::nodes(pool)?;
        let mut cluster = Cluster { totals: vec![0; nodes.len()], nodes: Vec::new(), unreachable: Vec::new(), units: Vec::new() };
        for (i, node) in nodes.iter().enumerate() {
            match containers::list(&node.address, &[(LABEL_MANAGED.to_string(), self.name.clone())]) {
                Ok(list) => {
                    cluster.totals[i] = list.len();
                    for c in list {
                        if c.labels.iter().any(|(k, v)| k == LABEL_APP && v == app) {
                            cluster.units.push(Placed { node: i, c });
                        }
                    }
                }
                Err(e) => cluster.unreachable.push((i, e)),
            }
        }
        cluster.nodes = nodes;
        Ok(cluster)
    }

    /// Brings the app's containers in line with `desired`: progress lines and
    /// the repairs made (dead or missing units replaced).
    fn converge(&self, desired: &AppState, healing: bool) -> Result<Report, String> {
        let mut report = Report { healing, ..Report::default() };
        let lines = &mut report.lines;
        // Routable versions run (as in the wasm provisioner): a deploy's old
        // version stops, a rollback starts it again from its image.
        let running: Vec<&AppVersion> = desired.versions.iter().filter(|v| v.routable).collect();
        let wanted: usize = running.iter().flat_map(|v| &v.processes).map(|p| p.units as usize).sum();
        let mut cluster = self.cluster(&desired.pool, &desired.name)?;
        if wanted == 0 && cluster.units.is_empty() {
            return Ok(report);
        }
        if cluster.nodes.is_empty() {
            return Err(format!("pool {:?} has no docker nodes: add one with POST /1.2/node", desired.pool));
        }
        for (i, e) in &cluster.unreachable {
            lines.push(format!(" ---> node {} does not answer, its units are left out: {e}\n", cluster.nodes[*i].address));
        }

        // Units of versions or processes that should not run.
        let keep = |u: &Placed| running.iter().any(|v| v.version == u.version() && v.processes.iter().any(|p| p.name == u.process() && p.units > 0));
        let (kept, gone): (Vec<Placed>, Vec<Placed>) = std::mem::take(&mut cluster.units).into_iter().partition(keep);
        cluster.units = kept;

        let mut addresses: BTreeMap<(u32, String), Vec<String>> = BTreeMap::new();
        for v in &running {
            for p in v.processes.iter().filter(|p| p.units > 0) {
                if !p.status.running() {
                    // A stopped or sleeping process keeps its containers, stopped.
                    let mine = cluster.units.iter().filter(|u| u.version() == v.version && u.process() == p.name && u.running());
                    for u in mine {
                        containers::stop(&cluster.nodes[u.node].address, &u.c.id, STOP_TIMEOUT_SECS)?;
                        report.lines.push(format!(" ---> Stopped unit {} [{}]\n", short(&u.c.id), p.name));
                    }
                    continue;
                }
                let served = self.converge_process(desired, v, p, &mut cluster, &mut report)?;
                addresses.insert((v.version, p.name.clone()), served);
            }
        }
        for u in &gone {
            containers::remove(&cluster.nodes[u.node].address, &u.c.id)?;
            report.lines.push(format!(" ---> Removed unit {} [{}] of version {}\n", short(&u.c.id), u.process(), u.version()));
        }

        report.routes = desired
            .versions
            .iter()
            .filter(|v| v.routable && v.weight > 0)
            .filter_map(|v| {
                let process = serving(v)?;
                let served = addresses.get(&(v.version, process.name.clone())).filter(|a| !a.is_empty())?;
                Some(Route { version: v.version, process: process.name.clone(), units: served.len() as u32, weight: v.weight, addresses: served.clone() })
            })
            .collect();
        Ok(report)
    }

    /// Makes one process of one version run `p.units` current containers;
    /// the addresses of the ones that serve.
    fn converge_process(
        &self,
        desired: &AppState,
        v: &AppVersion,
        p: &Process,
        cluster: &mut Cluster,
        report: &mut Report,
    ) -> Result<Vec<String>, String> {
        let source = Source::of(&desired.name, v);
        let cmd = command(p);
        let mine = |u: &Placed| u.version() == v.version && u.process() == p.name;

        // Dead units go; they are replaced below.
        let mut failed: Vec<(String, String, String)> = Vec::new();
        let mut i = 0;
        while i < cluster.units.len() {
            let u = &cluster.units[i];
            if mine(u) && !u.running() {
                let node = cluster.nodes[u.node].address.clone();
                containers::remove(&node, &u.c.id)?;
                let reason = format!("unit {} was {} (exit code {})", u.c.name, u.c.state, u.c.exit_code);
                report.lines.push(format!(" ---> Unit {} [{}] was {} (exit code {}): replacing it\n", short(&u.c.id), p.name, u.c.state, u.c.exit_code));
                failed.push((u.c.name.clone(), node, reason));
                cluster.totals[u.node] = cluster.totals[u.node].saturating_sub(1);
                cluster.units.remove(i);
            } else {
                i += 1;
            }
        }

        // The spec depends on the node only through the image's port, so
        // the hash is worked out per node when first needed.
        let mut hashes = vec![String::new(); cluster.nodes.len()];
        let want = p.units as usize;
        let mut outdated: Vec<usize> = Vec::new();
        let mut current = 0;
        for i in (0..cluster.units.len()).filter(|&i| mine(&cluster.units[i])) {
            let u = &cluster.units[i];
            let hash = self.hash_for(desired, &source, &p.name, &cmd, &cluster.nodes[u.node].address, &mut hashes[u.node])?;
            // Units on a node being removed are replaced elsewhere.
            let leaving = cluster.nodes[u.node].status == NODE_REMOVING;
            if u.label(LABEL_CONFIG) == Some(hash.as_str()) && !leaving {
                current += 1;
            } else {
                outdated.push(i);
            }
        }
        // The missing units: placed one by one by load, then started at once.
        // While a node does not answer, healing replaces only units seen
        // dead: the node may be slow rather than gone, and its units may run.
        let need = want.saturating_sub(current);
        let need = if report.healing && !cluster.unreachable.is_empty() { need.min(failed.len()) } else { need };
        if need > 0 {
            let mut loads = self.loads(cluster, &p.name);
            let mut planned = Vec::with_capacity(need);
            for _ in 0..need {
                let n = pick(&loads).ok_or_else(|| format!("no docker node of pool {:?} is ready to run units", desired.pool))?;
                loads[n].same_process += 1;
                loads[n].same_app += 1;
                loads[n].total += 1;
                planned.push(n);
            }
            let mut placements = Vec::with_capacity(need);
            for &n in &planned {
                placements.push(self.placement(desired, v, p, &source, &cmd, n, cluster, &mut hashes[n])?);
            }
            report.lines.push(format!("---- Starting {need} new unit{} [{}: {want}] ----\n", if need == 1 { "" } else { "s" }, p.name));
            let mut first_error = None;
            for (started, n) in containers::start_all(&placements, START_TIMEOUT_MS).into_iter().zip(planned) {
                let c = match started {
                    Ok(c) => c,
                    Err(e) => {
                        first_error.get_or_insert(e);
                        continue;
                    }
                };
                let node = cluster.nodes[n].address.clone();
                report.lines.push(format!(" ---> Started unit {} [{}] on {node}\n", short(&c.id), p.name));
                // Units replacing dead ones, or making up for missing ones, are repairs.
                let (failing_unit, failing_node, reason) = match failed.pop() {
                    Some(f) => f,
                    None if report.healing => (String::new(), String::new(), format!("a unit of version {} [{}] was missing", v.version, p.name)),
                    None => (String::new(), String::new(), String::new()),
                };
                if !reason.is_empty() {
                    report.repairs.push(Repair { failing_unit, failing_node, created_unit: c.name.clone(), created_node: node, reason });
                }
                cluster.totals[n] += 1;
                cluster.units.push(Placed { node: n, c });
                current += 1;
            }
            if let Some(e) = first_error {
                return Err(e);
            }
        }

        // Old units go once the new ones run, then any surplus.
        let mut remove: Vec<usize> = outdated.clone();
        let mut surplus = current.saturating_sub(want);
        while surplus > 0 {
            let loads = self.loads_excluding(cluster, &p.name, &remove, v.version);
            let Some(n) = pick_surplus(&loads) else { break };
            let Some(i) = (0..cluster.units.len()).find(|&i| mine(&cluster.units[i]) && cluster.units[i].node == n && !remove.contains(&i)) else {
                break;
            };
            remove.push(i);
            surplus -= 1;
        }
        remove.sort_unstable();
        for &i in remove.iter().rev() {
            let u = cluster.units.remove(i);
            containers::remove(&cluster.nodes[u.node].address, &u.c.id)?;
            cluster.totals[u.node] = cluster.totals[u.node].saturating_sub(1);
            report.lines.push(format!(" ---> Removed unit {} [{}]\n", short(&u.c.id), p.name));
        }
        let mut served = Vec::new();
        for u in cluster.units.iter().filter(|u| mine(u) && u.running()) {
            let node = &cluster.nodes[u.node].address;
            containers::follow_logs(node, &u.c.id, &desired.name, &u.c.name)?;
            if let Some(address) = &u.c.address {
                served.push(address.clone());
            }
        }
        Ok(served)
    }

    /// Starts a unit like `cluster.units[i]` on node `to`, then removes the
    /// old one; the progress line.
    fn move_unit(&self, desired: &AppState, cluster: &mut Cluster, i: usize, to: usize) -> Result<String, String> {
        let u = &cluster.units[i];
        let (version, process) = (u.version(), u.process().to_string());
        let v = desired.versions.iter().find(|v| v.version == version).ok_or_else(|| format!("unit {} runs version {version}, which the app no longer has", u.c.name))?;
        let p = v.processes.iter().find(|p| p.name == process).ok_or_else(|| format!("unit {} runs process {process:?}, which version {version} lacks", u.c.name))?;
        let node = cluster.nodes[to].address.clone();
        let placement = self.placement(desired, v, p, &Source::of(&desired.name, v), &command(p), to, cluster, &mut String::new())?;
        let started = containers::start_all(&[placement], START_TIMEOUT_MS).pop().ok_or("the host started nothing")??;
        let placed = Placed { node: to, c: started };
        let old = cluster.units.remove(i);
        let from = cluster.nodes[old.node].address.clone();
        containers::remove(&from, &old.c.id)?;
        cluster.totals[old.node] = cluster.totals[old.node].saturating_sub(1);
        cluster.totals[to] += 1;
        let line = format!(" ---> Moved unit {} [{process}] from {from} to {node}: now {}\n", old.c.name, placed.c.name);
        cluster.units.push(placed);
        Ok(line)
    }

    /// A container of the app's own for `cmd`, made like a unit of the
    /// version serving the app (its image, env and plan) on a ready node of
    /// its pool, not started; its node and id, and progress lines.
    fn isolated(&self, desired: &AppState, cmd: Vec<String>, shell: bool) -> Result<(String, String, Vec<String>), String> {
        let v = desired
            .versions
            .iter()
            .filter(|v| v.routable)
            .max_by_key(|v| v.version)
            .ok_or_else(|| format!("app {:?} has no deployed version to run the command with", desired.name))?;
        let node = containers::nodes(&desired.pool)?
            .into_iter()
            .find(|n| n.status == "ready")
            .ok_or_else(|| format!("pool {:?} has no ready docker node to run the command on", desired.pool))?;
        let node = node.address;
        let source = Source::of(&desired.name, v);
        let mut lines = Vec::new();
        let port = ensure_image(&node, &source, &mut lines)?.ports.first().copied().unwrap_or(DEFAULT_PORT);
        let process = serving(v).map(|p| p.name.as_str()).unwrap_or("web");
        let mut labels = vec![
            (LABEL_MANAGED.into(), self.name.clone()),
            (LABEL_RUN.into(), desired.name.clone()),
            (LABEL_POOL.into(), desired.pool.clone()),
        ];
        if shell {
            labels.push((LABEL_SHELL.into(), desired.name.clone()));
        }
        let spec = ContainerSpec {
            name: format!("{}-{}-{}", desired.name, if shell { "shell" } else { "run" }, random_suffix()),
            image: source.image().to_string(),
            cmd,
            env: self.env(desired, process, port),
            labels,
            port: None,
            memory: desired.plan_memory,
            cpu_milli: desired.plan_cpu_milli,
            mounts: mounts(desired),
        };
        let id = containers::create(&node, &spec)?;
        Ok((node, id, lines))
    }

    /// Runs `command` in an isolated container ([`Docker::isolated`]),
    /// removed once the command ends. Its output, or why it failed.
    fn run_isolated(&self, desired: &AppState, command: &str) -> Result<Vec<String>, String> {
        let (node, id, lines) = self.isolated(desired, shell(command), false)?;
        let ran = containers::start(&node, &id).and_then(|()| containers::wait(&node, &id, RUN_TIMEOUT_SECS)).and_then(|code| Ok((code, containers::output(&node, &id)?)));
        // Gone whatever happened, running or not.
        let removed = containers::remove(&node, &id);
        let (code, output) = ran?;
        removed?;
        command_output(lines, &output, code, "an isolated container")
    }

    /// Removes the app's isolated shell containers that stopped (a shell
    /// whose host went away ends when its sleep does). Best effort: a node
    /// that does not answer is swept next time. `app run` containers are
    /// left to the run that removes them once it read their output.
    fn sweep_shells(&self, desired: &AppState) {
        let labels = [(LABEL_MANAGED.to_string(), self.name.clone()), (LABEL_SHELL.to_string(), desired.name.clone())];
        for node in containers::nodes(&desired.pool).unwrap_or_default() {
            for c in containers::list(&node.address, &labels).unwrap_or_default() {
                if c.state != "running" && c.state != "created" {
                    let _ = containers::remove(&node.address, &c.id);
                }
            }
        }
    }

    /// The config hash of a unit of this version and process on `node`.
    fn hash_for(&self, desired: &AppState, source: &Source, process: &str, cmd: &[String], node: &str, cached: &mut String) -> Result<String, String> {
        if cached.is_empty() {
            let port = self.port(node, source)?;
            *cached = config_hash(self.spec_parts(desired, source.image(), process, cmd, port).iter().map(String::as_str));
        }
        Ok(cached.clone())
    }

    /// The port units of `source` listen on: the image's first exposed one.
    fn port(&self, node: &str, source: &Source) -> Result<u16, String> {
        let info = ensure_image(node, source, &mut Vec::new())?;
        Ok(info.ports.first().copied().unwrap_or(DEFAULT_PORT))
    }

    /// The unit's env: the app's, `PORT`, and `TSURU_PROCESSNAME` (which
    /// Procfile process a platform image's start script runs).
    fn env(&self, desired: &AppState, process: &str, port: u16) -> Vec<(String, String)> {
        let mut env: Vec<(String, String)> = desired.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        env.retain(|(k, _)| k != "PORT" && k != "TSURU_PROCESSNAME");
        env.push(("PORT".into(), port.to_string()));
        env.push(("TSURU_PROCESSNAME".into(), process.to_string()));
        env.sort();
        env
    }

    fn spec_parts(&self, desired: &AppState, image: &str, process: &str, cmd: &[String], port: u16) -> Vec<String> {
        let mut parts = vec![image.to_string(), cmd.join("\u{1}"), desired.plan_memory.to_string(), desired.plan_cpu_milli.to_string()];
        parts.extend(self.env(desired, process, port).into_iter().map(|(k, v)| format!("{k}={v}")));
        // A unit made before the app had volumes keeps its hash.
        parts.extend(desired.volumes.iter().map(|v| format!("\u{2}{}:{}:{}", v.volume, v.mount_point, v.read_only)));
        parts
    }

    /// A new unit of `p` (version `v`) for node `n`: its container spec, and
    /// whether it must answer (it serves) before it counts as started.
    #[allow(clippy::too_many_arguments)]
    fn placement(
        &self,
        desired: &AppState,
        v: &AppVersion,
        p: &Process,
        source: &Source,
        cmd: &[String],
        n: usize,
        cluster: &Cluster,
        hash: &mut String,
    ) -> Result<Placement, String> {
        let node = &cluster.nodes[n].address;
        let port = self.port(node, source)?;
        let config = self.hash_for(desired, source, &p.name, cmd, node, hash)?;
        let spec = ContainerSpec {
            name: format!("{}-{}-v{}-{}", desired.name, p.name, v.version, random_suffix()),
            image: source.image().to_string(),
            cmd: cmd.to_vec(),
            env: self.env(desired, &p.name, port),
            labels: vec![
                (LABEL_MANAGED.into(), self.name.clone()),
                (LABEL_APP.into(), desired.name.clone()),
                (LABEL_PROCESS.into(), p.name.clone()),
                (LABEL_VERSION.into(), v.version.to_string()),
                (LABEL_POOL.into(), desired.pool.clone()),
                (LABEL_CONFIG.into(), config),
            ],
            // Only the serving process is published (and reached by the router);
            // a process without traffic only has to keep running.
            port: serves(v, p).then_some(port),
            memory: desired.plan_memory,
            cpu_milli: desired.plan_cpu_milli,
            mounts: mounts(desired),
        };
        Ok(Placement { node: node.clone(), spec, wait_listening: serves(v, p) })
    }

    /// Node loads for a new unit of `process` (the cluster holds one app's units).
    fn loads(&self, cluster: &Cluster, process: &str) -> Vec<NodeLoad> {
        self.loads_excluding(cluster, process, &[], u32::MAX)
    }

    /// Node loads, leaving out the units at `skip` (about to go).
    fn loads_excluding(&self, cluster: &Cluster, process: &str, skip: &[usize], version: u32) -> Vec<NodeLoad> {
        cluster
            .nodes
            .iter()
            .enumerate()
            .map(|(n, node)| {
                let here = cluster.units.iter().enumerate().filter(|(i, u)| u.node == n && !skip.contains(i)).map(|(_, u)| u);
                let (mut same_process, mut same_app) = (0, 0);
                for u in here {
                    same_app += 1;
                    if u.process() == process && (version == u32::MAX || u.version() == version) {
                        same_process += 1;
                    }
                }
                NodeLoad {
                    address: node.address.clone(),
                    ready: node.status == "ready" && !cluster.unreachable.iter().any(|(i, _)| *i == n),
                    same_process,
                    same_app,
                    total: cluster.totals[n],
                }
            })
            .collect()
    }
}

/// The repository an app's versions' images are pinned in.
fn pinned_repository(app: &str) -> String {
    format!("torii/app-{app}")
}

/// Where a version's image comes from, and the name its units run.
enum Source<'a> {
    /// An image deployed by name (the version's artifact), run under the
    /// name the deploy pinned it as: `torii/app-<app>:v<N>`, the version's
    /// image name in the API.
    Image { name: &'a str, pinned: String },
    /// A build context in the blob store (`build:<digest>`), built as
    /// `torii-build:<digest>` (its name is its content already).
    Build { context: &'a str, image: String },
}

impl<'a> Source<'a> {
    fn of(app: &str, v: &'a AppVersion) -> Source<'a> {
        match v.artifact.strip_prefix("build:") {
            Some(digest) => Source::Build { context: digest, image: format!("torii-build:{}", &digest[..digest.len().min(24)]) },
            None => Source::Image { name: &v.artifact, pinned: format!("{}:v{}", pinned_repository(app), v.version) },
        }
    }

    /// The image the version's units run.
    fn image(&self) -> &str {
        match self {
            Source::Image { pinned, .. } => pinned,
            Source::Build { image, .. } => image,
        }
    }
}

/// The image of `source` on `node`. A node without it gets it: a build is
/// built there (its output goes to `lines`); an image deployed by name is
/// pinned there from that name (a node added after the deploy, or a version
/// deployed before pins existed).
fn ensure_image(node: &str, source: &Source, lines: &mut Vec<String>) -> Result<containers::Image, String> {
    if let Some(info) = containers::image_info(node, source.image())? {
        return Ok(info);
    }
    match source {
        Source::Image { name, pinned } => pin(node, name, pinned, lines),
        Source::Build { context, image } => {
            lines.push(format!(" ---> building {image} on {node}\n"));
            let output = containers::build(node, context, "Dockerfile", image, &[])?;
            lines.extend(output.into_iter().map(|l| format!("     {l}\n")));
            containers::image_info(node, image)?.ok_or_else(|| format!("the build of {image} on {node} made no image"))
        }
    }
}

/// Names what `name` is now on `node` `pinned` (moving `pinned` if it named
/// another image).
fn pin(node: &str, name: &str, pinned: &str, lines: &mut Vec<String>) -> Result<containers::Image, String> {
    if containers::image_info(node, name)?.is_none() {
        return Err(missing_image(name, node));
    }
    containers::tag(node, name, pinned)?;
    lines.push(format!(" ---> image {name} pinned as {pinned} on {node}\n"));
    containers::image_info(node, pinned)?.ok_or_else(|| format!("tagging {name} as {pinned} on {node} made no image"))
}

fn missing_image(image: &str, node: &str) -> String {
    format!("image {image:?} is not on docker node {node}: images are not pulled, build or load it on every node of the pool")
}

fn unit_status(process: Option<ProcessStatus>, state: &str) -> &'static str {
    match state {
        "running" => "started",
        "created" => "created",
        "restarting" => "starting",
        "exited" | "dead" if process.is_some_and(|p| !p.running()) => process.map_or("stopped", ProcessStatus::as_str),
        _ => "error",
    }
}

/// The app's volumes, where its units mount them.
fn mounts(desired: &AppState) -> Vec<containers::Mount> {
    desired.volumes.iter().map(|v| containers::Mount { volume: v.volume.clone(), target: v.mount_point.clone(), read_only: v.read_only }).collect()
}

/// The status `desired` gives the process a unit runs.
fn process_status(desired: &AppState, version: u32, process: &str) -> Option<ProcessStatus> {
    let v = desired.versions.iter().find(|v| v.version == version)?;
    v.processes.iter().find(|p| p.name == process).map(|p| p.status)
}

impl Provisioner for Docker {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let name = config.get("name").and_then(|n| n.as_str()).unwrap_or("docker").to_string();
        Ok(Docker { name })
    }

    fn can_deploy(&self, kind: &str) -> Outcome<()> {
        match kind {
            "image" | "dockerfile" | "file" | "archive-url" => Ok(()),
            other => Err(Error::Unsupported(format!("the docker provisioner cannot deploy from {other:?}"))),
        }
    }

    fn prepare(&self, desired: &AppState, version: &AppVersion) -> Outcome<Vec<String>> {
        let source = Source::of(&desired.name, version);
        // A new version pins its image now, whatever the pinned name held
        // (a deploy that failed after pinning leaves its number free); a
        // version the app has (a rollback) keeps what its deploy pinned.
        let known = desired.versions.iter().any(|v| v.version == version.version);
        // Every ready node of the pool may get units: each must have the image.
        let nodes: Vec<Node> = containers::nodes(&desired.pool)?.into_iter().filter(|n| n.status == "ready").collect();
        if nodes.is_empty() {
            return Err(Error::Unavailable(format!("pool {:?} has no ready docker node: add one with POST /1.2/node", desired.pool)));
        }
        let mut lines = Vec::new();
        for node in &nodes {
            let info = match &source {
                Source::Image { name, pinned } if !known => pin(&node.address, name, pinned, &mut lines)?,
                _ => ensure_image(&node.address, &source, &mut lines)?,
            };
            let port = info.ports.first().copied().unwrap_or(DEFAULT_PORT);
            lines.push(format!(" ---> image {} ({}) on {}, serving on port {port}\n", source.image(), short(info.id.trim_start_matches("sha256:")), node.address));
        }
        Ok(lines)
    }

    fn apply(&self, desired: &AppState) -> Outcome<Applied> {
        let report = self.converge(desired, false)?;
        Ok(Applied { routes: report.routes, lines: report.lines })
    }

    fn reconcile(&self, desired: &AppState) -> Outcome<Vec<Repair>> {
        let repairs = self.converge(desired, true)?.repairs;
        self.sweep_shells(desired);
        Ok(repairs)
    }

    fn units(&self, desired: &AppState) -> Outcome<Vec<Unit>> {
        let cluster = self.cluster(&desired.pool, &desired.name)?;
        let mut units: Vec<Unit> = cluster
            .units
            .iter()
            .map(|u| Unit {
                id: u.c.id.clone(),
                name: u.c.name.clone(),
                app: desired.name.clone(),
                process: u.process().to_string(),
                version: u.version(),
                status: unit_status(process_status(desired, u.version(), u.process()), &u.c.state).to_string(),
                status_reason: if u.running() { String::new() } else { format!("container is {} (exit code {})", u.c.state, u.c.exit_code) },
                address: u.c.address.as_ref().map(|a| format!("http://{a}")),
                node: cluster.nodes[u.node].address.clone(),
                ready: u.running(),
                restarts: u.c.restarts,
            })
            .collect();
        units.sort_by(|a, b| (a.version, &a.process, &a.name).cmp(&(b.version, &b.process, &b.name)));
        Ok(units)
    }

    /// The unit goes; the host's apply after it starts one in its place.
    fn kill_unit(&self, desired: &AppState, unit: &str) -> Outcome<()> {
        let cluster = self.cluster(&desired.pool, &desired.name)?;
        let u = cluster
            .units
            .iter()
            .find(|u| u.c.name == unit || (unit.len() >= 4 && u.c.id.starts_with(unit)))
            .ok_or_else(|| Error::NotFound(format!("unit {unit:?} not found")))?;
        containers::remove(&cluster.nodes[u.node].address, &u.c.id)?;
        Ok(())
    }

    fn set_unit_status(&self, _desired: &AppState, _unit: &str, _status: &str) -> Outcome<()> {
        Err(Error::Unsupported("the docker provisioner reads unit statuses from the docker engines; they cannot be set".into()))
    }

    fn run(&self, desired: &AppState, command: &str, once: bool, isolated: bool) -> Outcome<Vec<String>> {
        if isolated {
            return Ok(self.run_isolated(desired, command)?);
        }
        let cluster = self.cluster(&desired.pool, &desired.name)?;
        let mut running: Vec<&Placed> = cluster.units.iter().filter(|u| u.running()).collect();
        if running.is_empty() {
            return Err(Error::Invalid(format!("app {:?} has no running units to run the command in", desired.name)));
        }
        if once {
            running.truncate(1);
        }
        let mut lines = Vec::new();
        for u in running {
            let out = containers::exec(&cluster.nodes[u.node].address, &u.c.id, &shell(command))?;
            lines = command_output(lines, &out.output, out.exit_code, &format!("unit {}", u.c.name))?;
        }
        Ok(lines)
    }

    /// A shell runs in a running unit (the one named, else the first), or in
    /// an isolated container that sleeps until the host closes the shell
    /// (at most [`SHELL_ISOLATED_SECS`]).
    fn open_shell(&self, desired: &AppState, unit: &str, isolated: bool) -> Outcome<ShellTarget> {
        if isolated {
            let (node, id, _) = self.isolated(desired, shell(&format!("exec sleep {SHELL_ISOLATED_SECS}")), true)?;
            if let Err(e) = containers::start(&node, &id) {
                let _ = containers::remove(&node, &id);
                return Err(e.into());
            }
            return Ok(ShellTarget { node, container: id, unit: String::new(), isolated: true, command: login_shell() });
        }
        let cluster = self.cluster(&desired.pool, &desired.name)?;
        let u = if unit.is_empty() {
            cluster.units.iter().filter(|u| u.running()).min_by(|a, b| a.c.name.cmp(&b.c.name))
        } else {
            let u = cluster.units.iter().find(|u| u.c.name == unit || (unit.len() >= 4 && u.c.id.starts_with(unit)));
            let u = u.ok_or_else(|| Error::NotFound(format!("unit {unit:?} not found")))?;
            if !u.running() {
                return Err(Error::Invalid(format!("unit {} is not running (container is {})", u.c.name, u.c.state)));
            }
            Some(u)
        };
        let u = u.ok_or_else(|| Error::Invalid(format!("app {:?} has no running units to open a shell in", desired.name)))?;
        Ok(ShellTarget { node: cluster.nodes[u.node].address.clone(), container: u.c.id.clone(), unit: u.c.name.clone(), isolated: false, command: login_shell() })
    }

    /// Each running unit's CPU and memory, sampled on every node at once.
    fn usage(&self, desired: &AppState) -> Outcome<Vec<UnitUsage>> {
        let cluster = self.cluster(&desired.pool, &desired.name)?;
        let mut usage = Vec::new();
        for (i, node) in cluster.nodes.iter().enumerate() {
            let running: Vec<&Placed> = cluster.units.iter().filter(|u| u.node == i && u.running()).collect();
            if running.is_empty() {
                continue;
            }
            let ids: Vec<String> = running.iter().map(|u| u.c.id.clone()).collect();
            for (u, sample) in running.iter().zip(containers::stats(&node.address, &ids)) {
                // A unit that went away since the listing is no longer running.
                let Ok(sample) = sample else { continue };
                usage.push(UnitUsage {
                    unit: u.c.name.clone(),
                    process: u.process().to_string(),
                    version: u.version(),
                    cpu_milli: sample.cpu_milli,
                    memory: sample.memory,
                });
            }
        }
        Ok(usage)
    }

    /// An isolated shell's container goes; a unit stays as it is.
    fn close_shell(&self, desired: &AppState, target: &ShellTarget) -> Outcome<()> {
        if !target.isolated {
            return Ok(());
        }
        let Some(c) = containers::inspect(&target.node, &target.container)? else { return Ok(()) };
        if !c.labels.iter().any(|(k, v)| k == LABEL_SHELL && *v == desired.name) {
            return Err(Error::Invalid(format!("container {} is not an isolated container of app {:?}", short(&c.id), desired.name)));
        }
        containers::remove(&target.node, &target.container)?;
        Ok(())
    }

    /// The platform's image, `torii/platform/<name>:v<version>` (the name the
    /// API shows), built on
    /// every ready node of the pool (platform builds stack on it by cache).
    fn build_platform(&self, pool: &str, name: &str, version: u32, context: &str, args: &[(String, String)]) -> Outcome<Vec<String>> {
        let tag = format!("torii/platform/{name}:v{version}");
        let nodes: Vec<Node> = containers::nodes(pool)?.into_iter().filter(|n| n.status == "ready").collect();
        let mut lines = Vec::new();
        for node in nodes {
            // A node that does not answer builds it at its first deploy instead.
            if let Err(e) = containers::info(&node.address) {
                lines.push(format!(" ---> node {} skipped (it builds the platform at its first deploy): {e}\n", node.address));
                continue;
            }
            lines.push(format!(" ---> building platform {name} as {tag} on {}\n", node.address));
            let output = containers::build(&node.address, context, "Dockerfile", &tag, args)
                .map_err(|e| Error::Invalid(format!("platform {name} does not build on node {}: {e}", node.address)))?;
            lines.extend(output.into_iter().map(|l| format!("     {l}\n")));
        }
        Ok(lines)
    }

    /// Moves the units; the host's apply after it gives the router their new addresses.
    fn move_units(&self, desired: &AppState, units: &[String], to: &str) -> Outcome<Vec<String>> {
        let mut cluster = self.cluster(&desired.pool, &desired.name)?;
        let target = cluster.nodes.iter().position(|n| n.address == to).ok_or_else(|| format!("{to:?} is not a node of pool {:?}", desired.pool))?;
        if cluster.nodes[target].status != "ready" || cluster.unreachable.iter().any(|(i, _)| *i == target) {
            return Err(Error::Unavailable(format!("node {to} does not take units now (status {})", cluster.nodes[target].status)));
        }
        let mut lines = Vec::new();
        for wanted in units {
            let found = cluster.units.iter().position(|u| u.c.name == *wanted || (wanted.len() >= 4 && u.c.id.starts_with(wanted.as_str())));
            let i = found.ok_or_else(|| Error::NotFound(format!("unit {wanted:?} not found")))?;
            if cluster.units[i].node == target {
                lines.push(format!(" ---> Unit {} is on {to} already\n", cluster.units[i].c.name));
                continue;
            }
            lines.push(self.move_unit(desired, &mut cluster, i, target)?);
        }
        Ok(lines)
    }

    /// Spreads the units; the host's apply after it gives the router their new addresses.
    fn rebalance(&self, desired: &AppState, dry: bool) -> Outcome<Vec<String>> {
        let mut cluster = self.cluster(&desired.pool, &desired.name)?;
        let ready: Vec<usize> = (0..cluster.nodes.len())
            .filter(|&n| cluster.nodes[n].status == "ready" && !cluster.unreachable.iter().any(|(i, _)| *i == n))
            .collect();
        if ready.is_empty() {
            return Err(Error::Unavailable(format!("pool {:?} has no ready docker node", desired.pool)));
        }
        let mut lines = Vec::new();
        for v in desired.versions.iter().filter(|v| v.routable) {
            for p in v.processes.iter().filter(|p| p.units > 0) {
                let mine = |u: &Placed| u.version() == v.version && u.process() == p.name;
                loop {
                    let count = |n: usize| cluster.units.iter().filter(|u| mine(u) && u.node == n).count();
                    let most = *ready.iter().max_by_key(|&&n| (count(n), std::cmp::Reverse(n))).expect("ready nodes");
                    let least = *ready.iter().min_by_key(|&&n| (count(n), n)).expect("ready nodes");
                    if count(most) <= count(least) + 1 {
                        break;
                    }
                    let i = cluster.units.iter().position(|u| mine(u) && u.node == most).expect("the node has units");
                    if dry {
                        let u = &cluster.units[i];
                        lines.push(format!(" ---> Would move unit {} [{}] from {} to {}\n", u.c.name, p.name, cluster.nodes[most].address, cluster.nodes[least].address));
                        cluster.units[i].node = least;
                    } else {
                        lines.push(self.move_unit(desired, &mut cluster, i, least)?);
                    }
                }
            }
        }
        Ok(lines)
    }

    fn destroy(&self, app: &str) -> Outcome<()> {
        for node in containers::nodes("")? {
            // Its units, then its isolated containers (runs, shells).
            for label in [LABEL_APP, LABEL_RUN] {
                let labels = [(LABEL_MANAGED.to_string(), self.name.clone()), (label.to_string(), app.to_string())];
                for c in containers::list(&node.address, &labels)? {
                    containers::remove(&node.address, &c.id)?;
                }
            }
            // The versions' pinned images (builds are shared by content: they stay).
            for name in containers::image_names(&node.address, &pinned_repository(app))? {
                containers::remove_image(&node.address, &name)?;
            }
        }
        Ok(())
    }
}

export_provisioner!(Docker);
