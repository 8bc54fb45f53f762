//! The `wasm` provisioner: apps are wasi:http components run by the host's
//! app runtime (capability `app-runtime`), a fresh instance per request.
//!
//! Policy kept here:
//! - what can be deployed (a component, uploaded or fetched; no images);
//! - which process of a version takes the traffic (`web`, else the first
//!   one the Procfile names) and with how many units (concurrency slots);
//! - a stopped serving process is not routed; a sleeping one stays routed
//!   and holds no loaded code (scale to zero): the host serves its first
//!   request at once, the runtime loading the code again, and records the
//!   wake beside it (no container to start, so nothing to wait for);
//! - an app none of whose serving processes runs holds no loaded code;
//! - the units app info lists, with their status and restarts.

use torii_plugin_sdk::app_runtime;
use torii_plugin_sdk::export_provisioner;
use torii_plugin_sdk::provisioner::{Applied, AppState, AppVersion, Error, Outcome, ProcessStatus, Provisioner, Route, ShellTarget, Unit};

struct Wasm {
    /// The process that takes the traffic when a version has it.
    serving_process: String,
}

/// The process of `v` that gets the traffic.
fn serving<'a>(v: &'a AppVersion, preferred: &str) -> Option<&'a torii_plugin_sdk::provisioner::Process> {
    v.processes.iter().find(|p| p.name == preferred).or_else(|| v.processes.first())
}

fn unit_id(app: &str, process: &str, version: u32, n: u32) -> String {
    format!("{app}-{process}-v{version}-{n}")
}

impl Wasm {
    fn all_units(&self, app: &AppState) -> Vec<Unit> {
        let stats = app_runtime::units_seen(&app.name);
        let mut out = Vec::new();
        for v in app.versions.iter().filter(|v| v.routable) {
            for p in &v.processes {
                for n in 0..p.units {
                    let id = unit_id(&app.name, &p.name, v.version, n);
                    let seen = stats.iter().find(|s| s.name == id);
                    // A status set on a unit shows while its process runs.
                    let status = match seen.and_then(|s| s.status.clone()) {
                        Some(set) if p.status.running() => set,
                        _ => p.status.as_str().to_string(),
                    };
                    out.push(Unit {
                        name: id.clone(),
                        id,
                        app: app.name.clone(),
                        process: p.name.clone(),
                        version: v.version,
                        ready: status == "started",
                        status,
                        status_reason: String::new(),
                        address: None,
                        node: String::new(),
                        restarts: seen.map(|s| s.restarts).unwrap_or(0),
                    });
                }
            }
        }
        out
    }
}

impl Provisioner for Wasm {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let serving_process = match config.get("serving_process") {
            None => "web".to_string(),
            Some(serde_json::Value::String(p)) if !p.is_empty() => p.clone(),
            Some(other) => return Err(format!("serving_process must be a process name, not {other}")),
        };
        Ok(Wasm { serving_process })
    }

    fn can_deploy(&self, kind: &str) -> Outcome<()> {
        match kind {
            "file" | "archive-url" => Ok(()),
            "image" | "dockerfile" => {
                let what = if kind == "image" { "an image" } else { "a Dockerfile" };
                Err(Error::Unsupported(format!(r#"the wasm provisioner cannot deploy {what}: deploy a wasi:http component with "file" or "archive-url""#)))
            }
            other => Err(Error::Unsupported(format!("the wasm provisioner cannot deploy from {other:?}"))),
        }
    }

    fn prepare(&self, _desired: &AppState, version: &AppVersion) -> Outcome<Vec<String>> {
        let prepared = app_runtime::prepare(&version.artifact)?;
        let how = if prepared.cached { "already compiled" } else { "compiled" };
        Ok(vec![format!(" ---> a wasi:http component, {how}, ready in {} ms\n", prepared.millis)])
    }

    fn apply(&self, desired: &AppState) -> Outcome<Applied> {
        let mut lines = Vec::new();
        let mut routes = Vec::new();
        let mut running = false;
        for v in desired.versions.iter().filter(|v| v.routable && v.weight > 0) {
            let Some(p) = serving(v, &self.serving_process) else { continue };
            let asleep = p.status == ProcessStatus::Asleep;
            if !p.status.running() && !asleep {
                lines.push(format!(" ---> version {} process {} is {}: not served\n", v.version, p.name, p.status.as_str()));
                continue;
            }
            running |= !asleep;
            routes.push(Route { version: v.version, process: p.name.clone(), units: p.units, weight: v.weight, addresses: vec![] });
            let how = if asleep { ", asleep: its code loads at its next request" } else { "" };
            lines.push(format!(" ---> version {} serves process {} with {} unit(s){how}\n", v.version, p.name, p.units));
        }
        if !running {
            // Nothing runs: the app holds no code in memory.
            app_runtime::unload(&desired.name);
            let what = if routes.is_empty() { "serves nothing now" } else { "sleeps" };
            lines.push(format!(" ---> app {:?} {what}: no code held in memory\n", desired.name));
        }
        Ok(Applied { routes, lines })
    }

    fn units(&self, desired: &AppState) -> Outcome<Vec<Unit>> {
        Ok(self.all_units(desired))
    }

    fn kill_unit(&self, desired: &AppState, unit: &str) -> Outcome<()> {
        if !self.all_units(desired).iter().any(|u| u.id == unit) {
            return Err(Error::NotFound(format!("unit {unit:?} not found")));
        }
        app_runtime::kill_unit(&desired.name, unit);
        Ok(())
    }

    fn set_unit_status(&self, desired: &AppState, unit: &str, status: &str) -> Outcome<()> {
        let units = self.all_units(desired);
        let Some(found) = units.iter().find(|u| u.id.starts_with(unit)) else {
            return Err(Error::NotFound(format!("unit {unit:?} not found")));
        };
        app_runtime::set_unit_status(&desired.name, &found.id, status);
        Ok(())
    }

    fn run(&self, _desired: &AppState, _command: &str, _once: bool, _isolated: bool) -> Outcome<Vec<String>> {
        Err(Error::Unsupported("the wasm provisioner does not run commands: a WASM app has no shell or processes to run them in; deploy a component that does the work on a request instead".into()))
    }

    fn open_shell(&self, _desired: &AppState, _unit: &str, _isolated: bool) -> Outcome<ShellTarget> {
        Err(Error::Unsupported("a WASM app has no shell: its units are component instances made per request, not containers; use `tsuru app log` to see what it does".into()))
    }

    fn destroy(&self, app: &str) -> Outcome<()> {
        app_runtime::unload(app);
        Ok(())
    }
}

export_provisioner!(Wasm);
