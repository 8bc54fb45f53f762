//! The `swarm` provisioner: an app's processes are services of the Docker
//! Swarm cluster serving its pool (capability `swarm`); Swarm places, keeps
//! and reschedules their tasks, and torii follows them.
//!
//! Policy kept here:
//! - one service per version and process that runs (`<app>-<process>-v<N>`),
//!   replicas = units; a stopped or sleeping process keeps its service at
//!   zero replicas; a version that stops being routable loses its services;
//! - what a task runs with: the version's image (present on the cluster's
//!   nodes: images are not pulled), the app's env plus `PORT` (the image's
//!   first exposed port, else 8888) and `TSURU_PROCESSNAME`, the plan's
//!   memory and CPU as limits, `node.labels.pool==<pool>` as constraint when
//!   the cluster's nodes carry `pool` labels; the serving process's port is
//!   published in host mode on each task's node, and the router reaches
//!   `<node address>:<port>` of every running task;
//! - the app's volumes are mounted in every task (the host makes each from
//!   its plan where it is first used);
//! - a change of image, command, env, plan or volumes rolls the service start-first,
//!   every task at once, so the router moves to the new tasks in one step;
//!   an old task keeps serving for `drain_secs` (config, default 10) after
//!   Swarm stops it, long enough for the new routes to be in place, so a
//!   roll loses no request; a scale changes replicas only;
//! - a task counts as up once it runs and (serving) answers HTTP at its
//!   address; `apply` waits for that, and fails with Swarm's own reason
//!   (rejected tasks, a roll Swarm rolled back) otherwise;
//! - `app run` is a one-off task (a Swarm job) made like the serving
//!   version's units: the units themselves are reached through the manager
//!   only, so a command never runs inside them;
//! - healing is Swarm's: `reconcile` reports the tasks Swarm replaced since
//!   the last `apply` as repairs, and the host then applies again, so the
//!   routes follow.

use std::collections::BTreeMap;
use torii_plugin_sdk::export_provisioner;
use torii_plugin_sdk::kv;
use torii_plugin_sdk::provisioner::{Applied, AppState, AppVersion, Error, Outcome, Process, Provisioner, Repair, Route, Unit, config_hash as hash};
use torii_plugin_sdk::swarm::{self, Image, Mount, Node, ServiceSpec, Task};

const LABEL_APP: &str = "torii.app";
const LABEL_PROCESS: &str = "torii.process";
const LABEL_VERSION: &str = "torii.version";
const LABEL_POOL: &str = "torii.pool";
/// The hash of what a task runs with (not the replicas): a changed one rolls.
const LABEL_CONFIG: &str = "torii.config";
/// Marks a one-off command's job (`app run`) with its app.
const LABEL_RUN: &str = "torii.run";
/// How long a one-off command may run.
const RUN_TIMEOUT_MS: u64 = 600_000;

/// The port a task's server is told to listen on when its image exposes none.
const DEFAULT_PORT: u16 = 8888;
/// How long a service's tasks may take to run after a change.
const START_TIMEOUT_MS: u64 = 120_000;
/// How long a running task of the serving process may take to answer HTTP.
const LISTEN_TIMEOUT_MS: u32 = 30_000;
/// Failed or rejected tasks of one change before it is given up.
const MAX_FAILED_TASKS: usize = 3;
/// Between two looks at a service's tasks.
const POLL_MS: u64 = 250;
/// The longest service name Swarm takes.
const MAX_NAME: usize = 63;

struct Swarm {
    /// How long an old task keeps serving after Swarm stops it.
    drain_secs: u32,
}

/// The kv keys of an app: the pool its services are in (for `destroy`,
/// which is told the app's name only), and the tasks its last `apply` saw.
fn pool_key(app: &str) -> String {
    format!("pool/{app}")
}

fn tasks_key(app: &str) -> String {
    format!("tasks/{app}")
}

fn sleep_ms(ms: u64) {
    wasip2::clocks::monotonic_clock::subscribe_duration(ms * 1_000_000).block();
}

fn now_ms() -> u64 {
    wasip2::clocks::monotonic_clock::now() / 1_000_000
}

/// The service of `process` of version `version`: `<app>-<process>-v<N>`
/// for a process of letters and digits (app names have no other character
/// but `-`, so the last part before `-v<N>` is the process: two apps never
/// share a name); else, or when too long, with a hash of the whole, which
/// ends in hex digits where a plain name ends in `v<N>`.
fn service_name(app: &str, process: &str, version: u32) -> String {
    let clean: String = process.chars().map(|c| if c.is_ascii_alphanumeric() { c.to_ascii_lowercase() } else { '-' }).collect();
    let name = format!("{app}-{clean}-v{version}");
    if clean == process && !clean.contains('-') && name.len() <= MAX_NAME {
        return name;
    }
    let tag = &hash([app, process, &version.to_string()])[..8];
    let keep = MAX_NAME - tag.len() - 1;
    format!("{}-{tag}", name.chars().take(keep).collect::<String>().trim_end_matches('-'))
}

/// The process that takes a version's traffic: `web`, else the first.
fn serving(v: &AppVersion) -> Option<&Process> {
    v.processes.iter().find(|p| p.name == "web").or_else(|| v.processes.first())
}

fn label<'a>(labels: &'a [(String, String)], key: &str) -> Option<&'a str> {
    labels.iter().find(|(k, _)| k == key).map(|(_, v)| v.as_str())
}

/// `arg` quoted for a POSIX shell.
fn quote(arg: &str) -> String {
    format!("'{}'", arg.replace('\'', r"'\''"))
}

/// Whether an artifact is an image name (not a component digest or a build).
fn is_image(artifact: &str) -> bool {
    let digest = artifact.len() == 64 && artifact.bytes().all(|b| b.is_ascii_hexdigit());
    !digest && !artifact.starts_with("build:")
}

fn missing_image(image: &str) -> String {
    format!("image {image:?} is not on the cluster's manager: images are not pulled, load it on every node of the cluster")
}

/// tsuru's unit status for a task in Swarm's `state`.
fn unit_status(state: &str) -> &'static str {
    match state {
        "running" => "started",
        "new" | "pending" | "assigned" | "accepted" | "preparing" | "ready" | "starting" => "starting",
        "complete" | "shutdown" => "stopped",
        _ => "error",
    }
}

/// One service the desired state runs.
struct Wanted {
    spec: ServiceSpec,
    version: u32,
    process: String,
    /// It takes the version's traffic (its tasks must answer HTTP).
    serves: bool,
}

impl Swarm {
    /// What `p` of `v` runs as, its image looked up once per image in `images`.
    fn wanted(&self, desired: &AppState, v: &AppVersion, p: &Process, constraints: &[String], images: &mut BTreeMap<String, Image>) -> Outcome<Wanted> {
        if !is_image(&v.artifact) {
            return Err(Error::Unsupported(format!("version {} was not deployed from an image: the swarm provisioner runs images (tsuru app deploy -i)", v.version)));
        }
        if !images.contains_key(&v.artifact) {
            let info = swarm::image_info(&desired.pool, &v.artifact)?.ok_or_else(|| Error::Invalid(missing_image(&v.artifact)))?;
            images.insert(v.artifact.clone(), info);
        }
        let image = &images[&v.artifact];
        let port = image.ports.first().copied().unwrap_or(DEFAULT_PORT);
        let serves = serving(v).is_some_and(|s| s.name == p.name);
        let mut env: Vec<(String, String)> = desired.env.iter().map(|e| (e.name.clone(), e.value.clone())).collect();
        env.retain(|(k, _)| k != "PORT" && k != "TSURU_PROCESSNAME");
        env.push(("PORT".into(), port.to_string()));
        env.push(("TSURU_PROCESSNAME".into(), p.name.clone()));
        env.sort();
        let cmd = self.command(p, image);
        let stop_grace_secs = self.drain_secs + 10;
        let published = serves.then_some(port);
        let mut parts = vec![v.artifact.clone(), cmd.join("\u{1}"), desired.plan_memory.to_string(), desired.plan_cpu_milli.to_string()];
        parts.push(published.map(|p| p.to_string()).unwrap_or_default());
        parts.push(stop_grace_secs.to_string());
        parts.extend(constraints.iter().cloned());
        parts.extend(env.iter().map(|(k, v)| format!("{k}={v}")));
        parts.extend(desired.volumes.iter().map(|v| format!("\u{2}{}:{}:{}", v.volume, v.mount_point, v.read_only)));
        let config = hash(parts.iter().map(String::as_str));
        let replicas = if p.status.running() { p.units } else { 0 };
        let spec = ServiceSpec {
            name: service_name(&desired.name, &p.name, v.version),
            image: v.artifact.clone(),
            cmd,
            env,
            labels: vec![
                (LABEL_APP.into(), desired.name.clone()),
                (LABEL_PROCESS.into(), p.name.clone()),
                (LABEL_VERSION.into(), v.version.to_string()),
                (LABEL_POOL.into(), desired.pool.clone()),
                (LABEL_CONFIG.into(), config),
            ],
            replicas,
            port: published,
            memory: desired.plan_memory,
            cpu_milli: desired.plan_cpu_milli,
            constraints: constraints.to_vec(),
            stop_grace_secs,
            force_update: 0,
            job: false,
            mounts: desired.volumes.iter().map(|v| Mount { volume: v.volume.clone(), target: v.mount_point.clone(), read_only: v.read_only }).collect(),
        };
        Ok(Wanted { spec, version: v.version, process: p.name.clone(), serves })
    }

    /// What a task of `p` runs: its Procfile command, else the image's own,
    /// under a shell that holds the stop signal back `drain_secs` (the task
    /// keeps serving while the router moves away from it).
    fn command(&self, p: &Process, image: &Image) -> Vec<String> {
        if self.drain_secs == 0 {
            return if p.command.is_empty() { Vec::new() } else { vec!["/bin/sh".into(), "-c".into(), p.command.clone()] };
        }
        let inner = if p.command.is_empty() {
            image.entrypoint.iter().chain(&image.cmd).map(|a| quote(a)).collect::<Vec<_>>().join(" ")
        } else {
            p.command.clone()
        };
        // The shell's own stderr goes once the drain ends, so the app log
        // does not get its "Terminated" (the child keeps its stderr).
        let script = format!("trap 'sleep {}; exec 2>/dev/null; kill -TERM $child' TERM\n{inner} &\nchild=$!\nwait $child\nwait $child", self.drain_secs);
        vec!["/bin/sh".into(), "-c".into(), script]
    }

    /// Waits until `w`'s service runs its replicas on its current spec (and,
    /// serving, each answers HTTP); those tasks.
    fn wait_up(&self, pool: &str, w: &Wanted) -> Outcome<Vec<Task>> {
        let name = &w.spec.name;
        let config = label(&w.spec.labels, LABEL_CONFIG).unwrap_or("");
        let deadline = now_ms() + START_TIMEOUT_MS;
        loop {
            let service = swarm::get_service(pool, name)?.ok_or_else(|| Error::Internal(format!("service {name} is gone")))?;
            if service.update_state.starts_with("rollback") || service.update_state == "paused" {
                return Err(Error::Invalid(format!("service {name}: the roll failed and Swarm {} it: {}", service.update_state.replace('_', " "), service.update_message)));
            }
            let tasks = swarm::tasks(pool, name)?;
            let current: Vec<&Task> = tasks.iter().filter(|t| label(&t.labels, LABEL_CONFIG) == Some(config)).collect();
            let failed: Vec<&&Task> = current.iter().filter(|t| matches!(t.state.as_str(), "failed" | "rejected")).collect();
            if failed.len() >= MAX_FAILED_TASKS {
                let t = failed.last().unwrap();
                return Err(Error::Invalid(format!("service {name}: {} tasks failed; the last one was {}: {}", failed.len(), t.state, t.message)));
            }
            let up: Vec<Task> = current
                .iter()
                .filter(|t| t.desired_state == "running" && t.state == "running" && (!w.serves || t.address.is_some()))
                .map(|t| (*t).clone())
                .collect();
            let wanted = current.iter().filter(|t| t.desired_state == "running").count();
            if up.len() == w.spec.replicas as usize && wanted == up.len() {
                return Ok(up);
            }
            if now_ms() > deadline {
                let why = failed.last().map(|t| format!(" (a task {}: {})", t.state, t.message)).unwrap_or_default();
                return Err(Error::Unavailable(format!("service {name}: {} of {} tasks running after {} s{why}", up.len(), w.spec.replicas, START_TIMEOUT_MS / 1000)));
            }
            sleep_ms(POLL_MS);
        }
    }

    /// Waits for job `name`'s task to end: the task, and whether it completed.
    fn wait_job(&self, pool: &str, name: &str) -> Outcome<(Task, bool)> {
        let deadline = now_ms() + RUN_TIMEOUT_MS;
        loop {
            let tasks = swarm::tasks(pool, name)?;
            if let Some(t) = tasks.iter().find(|t| matches!(t.state.as_str(), "complete" | "failed" | "rejected")) {
                return Ok((t.clone(), t.state == "complete"));
            }
            if now_ms() > deadline {
                return Err(Error::Unavailable(format!("the command did not end within {} s", RUN_TIMEOUT_MS / 1000)));
            }
            sleep_ms(POLL_MS);
        }
    }

    /// Brings the app's services in line with `desired`: the routes and lines.
    fn converge(&self, desired: &AppState) -> Outcome<Applied> {
        let pool = &desired.pool;
        kv::set(&pool_key(&desired.name), pool.as_bytes())?;
        let nodes = swarm::nodes(pool)?;
        let constraints = pool_constraints(&nodes, pool);
        let existing = swarm::services(pool, &[(LABEL_APP.into(), desired.name.clone())])?;
        let mut lines = Vec::new();
        let mut images = BTreeMap::new();
        let mut wanted = Vec::new();
        for v in desired.versions.iter().filter(|v| v.routable) {
            for p in v.processes.iter().filter(|p| p.units > 0) {
                wanted.push(self.wanted(desired, v, p, &constraints, &mut images)?);
            }
        }
        for w in &wanted {
            let name = &w.spec.name;
            match existing.iter().find(|s| &s.spec.name == name) {
                None => {
                    swarm::create_service(pool, &w.spec)?;
                    lines.push(format!(" ---> Created service {name} [{}: {}]\n", w.process, w.spec.replicas));
                }
                Some(s) if label(&s.spec.labels, LABEL_CONFIG) != label(&w.spec.labels, LABEL_CONFIG) => {
                    swarm::update_service(pool, &w.spec, 0)?;
                    lines.push(format!(" ---> Rolling service {name} onto its new spec [{}: {}]\n", w.process, w.spec.replicas));
                }
                Some(s) if s.spec.replicas != w.spec.replicas => {
                    swarm::update_service(pool, &w.spec, 1)?;
                    lines.push(format!(" ---> Scaled service {name} [{}: {} -> {}]\n", w.process, s.spec.replicas, w.spec.replicas));
                }
                Some(_) => {}
            }
        }
        let hostname = |id: &str| nodes.iter().find(|n| n.id == id).map(|n| n.hostname.clone()).unwrap_or_default();
        let mut seen: BTreeMap<String, BTreeMap<String, String>> = BTreeMap::new();
        let mut addresses: BTreeMap<u32, Vec<String>> = BTreeMap::new();
        for w in &wanted {
            let up = self.wait_up(pool, w)?;
            if w.serves {
                for t in &up {
                    let address = t.address.clone().unwrap_or_default();
                    if !swarm::wait_listening(pool, &address, LISTEN_TIMEOUT_MS)? {
                        return Err(Error::Unavailable(format!("unit {} [{}] does not answer HTTP at {address} after {} s", t.id, w.process, LISTEN_TIMEOUT_MS / 1000)));
                    }
                    addresses.entry(w.version).or_default().push(address);
                }
            }
            if !up.is_empty() {
                swarm::follow_logs(pool, &w.spec.name, &desired.name)?;
                lines.push(format!(" ---> {} [{}]: {} unit{} running\n", w.spec.name, w.process, up.len(), if up.len() == 1 { "" } else { "s" }));
            }
            seen.insert(w.spec.name.clone(), up.into_iter().map(|t| (t.id, hostname(&t.node_id))).collect());
        }
        // What no longer runs goes once the rest is up (its tasks drain).
        for s in existing.iter().filter(|s| !wanted.iter().any(|w| w.spec.name == s.spec.name)) {
            swarm::remove_service(pool, &s.spec.name)?;
            lines.push(format!(" ---> Removed service {}\n", s.spec.name));
        }
        kv::set_json(&tasks_key(&desired.name), &seen)?;
        let routes = desired
            .versions
            .iter()
            .filter(|v| v.routable && v.weight > 0)
            .filter_map(|v| {
                let process = serving(v)?;
                let served = addresses.remove(&v.version).filter(|a| !a.is_empty())?;
                Some(Route { version: v.version, process: process.name.clone(), units: served.len() as u32, weight: v.weight, addresses: served })
            })
            .collect();
        Ok(Applied { routes, lines })
    }

    /// The app's running tasks per service, with the service's labels.
    fn running(&self, desired: &AppState) -> Outcome<Vec<(swarm::Service, Vec<Task>)>> {
        let services = swarm::services(&desired.pool, &[(LABEL_APP.into(), desired.name.clone())])?;
        let mut out = Vec::with_capacity(services.len());
        for s in services {
            let tasks: Vec<Task> = swarm::tasks(&desired.pool, &s.spec.name)?.into_iter().filter(|t| t.desired_state == "running").collect();
            out.push((s, tasks));
        }
        Ok(out)
    }
}

/// `node.labels.pool==<pool>` when the cluster's nodes are labelled by pool.
fn pool_constraints(nodes: &[Node], pool: &str) -> Vec<String> {
    if nodes.iter().any(|n| label(&n.labels, "pool").is_some()) { vec![format!("node.labels.pool=={pool}")] } else { Vec::new() }
}

impl Provisioner for Swarm {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let drain_secs = match config.get("drain_secs") {
            None => 10,
            Some(v) => v.as_u64().filter(|s| *s <= 300).ok_or("drain_secs: a number of seconds, at most 300")? as u32,
        };
        Ok(Swarm { drain_secs })
    }

    fn can_deploy(&self, kind: &str) -> Outcome<()> {
        match kind {
            "image" => Ok(()),
            other => Err(Error::Unsupported(format!(
                "the swarm provisioner cannot deploy from {other:?}: it runs images present on the cluster's nodes (tsuru app deploy -i)"
            ))),
        }
    }

    fn prepare(&self, desired: &AppState, version: &AppVersion) -> Outcome<Vec<String>> {
        if !is_image(&version.artifact) {
            return Err(Error::Unsupported(format!(
                "version {} was not deployed from an image: the swarm provisioner runs images (tsuru app deploy -i)",
                version.version
            )));
        }
        let info = swarm::image_info(&desired.pool, &version.artifact)?.ok_or_else(|| Error::Invalid(missing_image(&version.artifact)))?;
        let port = info.ports.first().copied().unwrap_or(DEFAULT_PORT);
        let id = info.id.trim_start_matches("sha256:");
        Ok(vec![format!(" ---> image {} ({}) on the cluster, serving on port {port}\n", version.artifact, &id[..id.len().min(12)])])
    }

    fn apply(&self, desired: &AppState) -> Outcome<Applied> {
        self.converge(desired)
    }

    fn units(&self, desired: &AppState) -> Outcome<Vec<Unit>> {
        let nodes = swarm::nodes(&desired.pool)?;
        let mut units = Vec::new();
        for (s, tasks) in self.running(desired)? {
            let process = label(&s.spec.labels, LABEL_PROCESS).unwrap_or("").to_string();
            let version = label(&s.spec.labels, LABEL_VERSION).and_then(|v| v.parse().ok()).unwrap_or(0);
            for t in tasks {
                let node = nodes.iter().find(|n| n.id == t.node_id).map(|n| n.hostname.clone()).unwrap_or_default();
                let status = unit_status(&t.state);
                units.push(Unit {
                    name: t.id.clone(),
                    app: desired.name.clone(),
                    process: process.clone(),
                    version,
                    status: status.to_string(),
                    status_reason: if status == "started" { String::new() } else { t.message.clone() },
                    address: t.address.as_ref().map(|a| format!("http://{a}")),
                    node,
                    ready: t.state == "running",
                    restarts: 0,
                    id: t.id,
                });
            }
        }
        units.sort_by(|a, b| (a.version, &a.process, &a.name).cmp(&(b.version, &b.process, &b.name)));
        Ok(units)
    }

    fn kill_unit(&self, _desired: &AppState, _unit: &str) -> Outcome<()> {
        Err(Error::Unsupported("the swarm provisioner does not kill single tasks yet: Swarm replaces tasks that die; restart the app instead".into()))
    }

    fn set_unit_status(&self, _desired: &AppState, _unit: &str, _status: &str) -> Outcome<()> {
        Err(Error::Unsupported("the swarm provisioner reads unit statuses from Swarm; they cannot be set".into()))
    }

    /// A one-off task (a Swarm job) made like the serving version's units
    /// (image, env, plan, volumes) runs the command; its output, or why it
    /// failed with it. Swarm's units are reached through the manager only,
    /// so the command never runs inside them (`once` and `isolated` change
    /// nothing: it runs once, on its own), as `heroku run` does.
    fn run(&self, desired: &AppState, command: &str, _once: bool, _isolated: bool) -> Outcome<Vec<String>> {
        let v = desired
            .versions
            .iter()
            .filter(|v| v.routable)
            .max_by_key(|v| v.version)
            .ok_or_else(|| Error::Invalid("the app has no deployed version to run the command with".into()))?;
        let p = serving(v).ok_or_else(|| Error::Invalid(format!("version {} has no process", v.version)))?;
        let nodes = swarm::nodes(&desired.pool)?;
        let mut w = self.wanted(desired, v, p, &pool_constraints(&nodes, &desired.pool), &mut BTreeMap::new())?;
        let suffix = wasip2::random::random::get_random_u64() & 0xff_ffff;
        w.spec.name = format!("{}-run-{suffix:06x}", desired.name);
        w.spec.cmd = vec!["/bin/sh".into(), "-c".into(), command.to_string()];
        w.spec.replicas = 1;
        w.spec.port = None;
        w.spec.job = true;
        // Not one of the app's services (a converge would take it away): a run of it.
        w.spec.labels.retain(|(k, _)| k != LABEL_APP && k != LABEL_CONFIG);
        w.spec.labels.push((LABEL_RUN.into(), desired.name.clone()));
        let pool = &desired.pool;
        swarm::create_service(pool, &w.spec)?;
        // Its output is read before the job goes (its logs go with it).
        let ran = self.wait_job(pool, &w.spec.name).and_then(|(task, done)| Ok((swarm::task_output(pool, &task.id)?, task, done)));
        let removed = swarm::remove_service(pool, &w.spec.name);
        let (output, task, done) = ran?;
        removed?;
        let mut lines = vec![format!(" ---> running in a one-off task of version {} on the swarm\n", v.version)];
        lines.extend(output.lines().map(|l| format!("{l}\n")));
        if done {
            Ok(lines)
        } else {
            lines.push(format!("the command failed in a one-off task: {}\n", task.message));
            Err(Error::Invalid(lines.concat()))
        }
    }

    fn destroy(&self, app: &str) -> Outcome<()> {
        let Some(pool) = kv::get(&pool_key(app))? else { return Ok(()) };
        let pool = String::from_utf8_lossy(&pool).into_owned();
        for label in [LABEL_APP, LABEL_RUN] {
            for s in swarm::services(&pool, &[(label.into(), app.to_string())])? {
                swarm::remove_service(&pool, &s.spec.name)?;
            }
        }
        kv::delete(&tasks_key(app))?;
        kv::delete(&pool_key(app))?;
        Ok(())
    }

    /// Swarm replaces the tasks that die (or leave with their node); the
    /// tasks running now that the last `apply` did not see are repairs,
    /// each paired with one it saw that no longer runs.
    fn reconcile(&self, desired: &AppState) -> Outcome<Vec<Repair>> {
        let seen: BTreeMap<String, BTreeMap<String, String>> = kv::get_json(&tasks_key(&desired.name))?.unwrap_or_default();
        let nodes = swarm::nodes(&desired.pool)?;
        let hostname = |id: &str| nodes.iter().find(|n| n.id == id).map(|n| n.hostname.clone()).unwrap_or_default();
        let mut repairs = Vec::new();
        for (s, tasks) in self.running(desired)? {
            let config = label(&s.spec.labels, LABEL_CONFIG);
            let empty = BTreeMap::new();
            let before = seen.get(&s.spec.name).unwrap_or(&empty);
            let now: Vec<&Task> = tasks.iter().filter(|t| t.state == "running" && label(&t.labels, LABEL_CONFIG) == config).collect();
            let mut gone = before.iter().filter(|(id, _)| !now.iter().any(|t| &t.id == *id));
            for t in now.iter().filter(|t| !before.contains_key(&t.id)) {
                let (failing_unit, failing_node, reason) = match gone.next() {
                    Some((id, node)) => (id.clone(), node.clone(), format!("Swarm replaced task {id} of service {} (on {node})", s.spec.name)),
                    None => (String::new(), String::new(), format!("Swarm started task {} of service {}", t.id, s.spec.name)),
                };
                repairs.push(Repair { failing_unit, failing_node, created_unit: t.id.clone(), created_node: hostname(&t.node_id), reason });
            }
        }
        Ok(repairs)
    }
}

export_provisioner!(Swarm);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn service_names_are_what_swarm_takes() {
        assert_eq!(service_name("shop", "web", 3), "shop-web-v3");
        let odd = service_name("shop", "Worker_1", 2);
        assert!(odd.starts_with("shop-worker-1-v2-") && odd.len() <= MAX_NAME, "{odd}");
        let long = service_name(&"a".repeat(40), &"p".repeat(40), 12);
        assert!(long.len() <= MAX_NAME && long.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-'), "{long}");
        assert_ne!(service_name("a", "x_y", 1), service_name("a", "x-y", 1));
        // App "a" with process "b-c" and app "a-b" with process "c" do not meet.
        assert_ne!(service_name("a", "b-c", 1), service_name("a-b", "c", 1));
        assert_eq!(service_name("a-b", "c", 1), "a-b-c-v1");
    }

    #[test]
    fn only_images_run() {
        assert!(is_image("torii/busybox:latest"));
        assert!(!is_image(&"a".repeat(64)));
        assert!(!is_image("build:abc"));
    }

    #[test]
    fn the_drain_shell_holds_the_stop_signal_back() {
        let s = Swarm { drain_secs: 7 };
        let image = Image { id: String::new(), ports: vec![], cmd: vec!["httpd".into(), "-f".into()], entrypoint: vec![], working_dir: String::new() };
        let p = Process { name: "web".into(), command: String::new(), units: 1, status: torii_plugin_sdk::provisioner::ProcessStatus::Started };
        let cmd = s.command(&p, &image);
        assert_eq!(cmd[..2], ["/bin/sh", "-c"]);
        assert!(cmd[2].starts_with("trap 'sleep 7; exec 2>/dev/null; kill -TERM $child' TERM\n'httpd' '-f' &\n"), "{}", cmd[2]);
        assert_eq!(Swarm { drain_secs: 0 }.command(&p, &image), Vec::<String>::new());
        assert_eq!(quote("it's"), r"'it'\''s'");
    }
}
