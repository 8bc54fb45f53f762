//! A test-only provisioner whose apps run outside torii: its config names,
//! per app, the HTTP servers on 127.0.0.1 that serve it
//! (`backends = { web = ["127.0.0.1:8001"] }`). Every routable version's
//! serving process (the first one) is served by those addresses while it is
//! started. It proves the data plane's HTTP backends without Docker; the
//! docker provisioner works the same way with its containers' published
//! ports.
//!
//! It also lets tests see what was applied and make an apply fail:
//! - `units` lists what the last successful `apply` ran (kept in kv), not
//!   what the host wants now, so a test sees what runs;
//! - `app run` with the command `fail-next-apply` makes the app's next
//!   `apply` fail (once), as a backend that breaks half-way would;
//! - `app run` with `fetch <url>` (GET, redirects followed) or
//!   `post <url> <bytes>` sends an outbound request through the SDK's
//!   `http` client and prints the status and body (the host's outbound
//!   rule under test).

use std::collections::BTreeMap;
use torii_plugin_sdk::{http, kv};
use torii_plugin_sdk::export_provisioner;
use torii_plugin_sdk::provisioner::{Applied, AppState, AppVersion, Error, Outcome, Provisioner, Route, Unit};

struct HttpBackends {
    backends: BTreeMap<String, Vec<String>>,
}

impl HttpBackends {
    fn addresses(&self, app: &str) -> Result<&[String], String> {
        self.backends.get(app).map(Vec::as_slice).ok_or_else(|| format!("no HTTP backends are configured for app {app:?}"))
    }
}

fn serving(v: &AppVersion) -> String {
    v.processes.first().map_or_else(|| "web".to_string(), |p| p.name.clone())
}

fn applied_key(app: &str) -> String {
    format!("applied/{app}")
}

fn fail_key(app: &str) -> String {
    format!("fail-next-apply/{app}")
}

impl Provisioner for HttpBackends {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let backends = match config.get("backends") {
            Some(b) => serde_json::from_value(b.clone()).map_err(|e| format!("backends: {e}"))?,
            None => BTreeMap::new(),
        };
        Ok(HttpBackends { backends })
    }

    fn can_deploy(&self, _kind: &str) -> Outcome<()> {
        Ok(())
    }

    fn prepare(&self, desired: &AppState, version: &AppVersion) -> Outcome<Vec<String>> {
        let addresses = self.addresses(&desired.name)?;
        Ok(vec![format!(" ---> version {} will be served by {}\n", version.version, addresses.join(", "))])
    }

    fn apply(&self, desired: &AppState) -> Outcome<Applied> {
        if kv::get(&fail_key(&desired.name))?.is_some() {
            kv::delete(&fail_key(&desired.name))?;
            return Err(Error::Unavailable(format!("the backends of app {:?} failed while applying (injected)", desired.name)));
        }
        let addresses = self.addresses(&desired.name)?.to_vec();
        let mut routes = Vec::new();
        let mut running = Vec::new();
        for v in desired.versions.iter().filter(|v| v.routable) {
            for p in &v.processes {
                running.push(serde_json::json!({"version": v.version, "process": p.name, "units": p.units, "status": p.status.as_str()}));
            }
            let started = v.processes.iter().any(|p| p.name == serving(v) && p.status.running() && p.units > 0);
            if started && v.weight > 0 {
                routes.push(Route { version: v.version, process: serving(v), units: addresses.len() as u32, weight: v.weight, addresses: addresses.clone() });
            }
        }
        kv::set_json(&applied_key(&desired.name), &running)?;
        let lines = routes.iter().map(|r| format!(" ---> version {} served by {}\n", r.version, r.addresses.join(", "))).collect();
        Ok(Applied { routes, lines })
    }

    fn units(&self, desired: &AppState) -> Outcome<Vec<Unit>> {
        let addresses = self.addresses(&desired.name).unwrap_or_default();
        let running: Vec<serde_json::Value> = kv::get_json(&applied_key(&desired.name))?.unwrap_or_default();
        let mut out = Vec::new();
        for p in &running {
            let (version, process) = (p["version"].as_u64().unwrap_or(0) as u32, p["process"].as_str().unwrap_or_default().to_string());
            let status = p["status"].as_str().unwrap_or_default().to_string();
            for n in 0..p["units"].as_u64().unwrap_or(0) {
                let id = format!("{}-{process}-v{version}-{n}", desired.name);
                let address = addresses.get(n as usize % addresses.len().max(1));
                out.push(Unit {
                    name: id.clone(),
                    id,
                    app: desired.name.clone(),
                    process: process.clone(),
                    version,
                    ready: status == "started",
                    status: status.clone(),
                    status_reason: String::new(),
                    address: address.map(|a| format!("http://{a}")),
                    restarts: 0,
                    node: String::new(),
                });
            }
        }
        Ok(out)
    }

    fn kill_unit(&self, _desired: &AppState, _unit: &str) -> Outcome<()> {
        Err(Error::Unsupported("this provisioner does not own its backends' processes".into()))
    }

    fn set_unit_status(&self, _desired: &AppState, _unit: &str, _status: &str) -> Outcome<()> {
        Err(Error::Unsupported("this provisioner does not own its backends' processes".into()))
    }

    fn run(&self, desired: &AppState, command: &str, _once: bool, _isolated: bool) -> Outcome<Vec<String>> {
        if command == "fail-next-apply" {
            kv::set(&fail_key(&desired.name), b"1")?;
            return Ok(vec![format!("the next apply of app {:?} fails\n", desired.name)]);
        }
        let words: Vec<&str> = command.split_whitespace().collect();
        let request = match words.as_slice() {
            ["fetch", url] => http::Request::new("GET", url),
            ["post", url, size] => http::Request::new("POST", url).body(vec![b'x'; size.parse::<usize>().map_err(|_| "post <url> <bytes>".to_string())?]),
            _ => return Err(Error::Unsupported("this provisioner runs fail-next-apply, fetch <url> and post <url> <bytes>".into())),
        };
        let r = http::fetch(request).map_err(|e| Error::Unavailable(e.to_string()))?;
        Ok(vec![format!("{} {}\n", r.status, r.text())])
    }

    fn destroy(&self, app: &str) -> Outcome<()> {
        kv::delete(&applied_key(app))?;
        Ok(())
    }
}

export_provisioner!(HttpBackends);
