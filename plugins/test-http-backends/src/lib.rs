//! A test-only provisioner whose apps run outside torii: its config names,
//! per app, the HTTP servers on 127.0.0.1 that serve it
//! (`backends = { web = ["127.0.0.1:8001"] }`). Every routable version is
//! served by those addresses, one unit each. It proves the data plane's
//! HTTP backends without Docker; the docker provisioner works the same way
//! with its containers' published ports.

use std::collections::BTreeMap;
use torii_provisioner_sdk::app_runtime::{self, Route};
use torii_provisioner_sdk::export_provisioner;
use torii_provisioner_sdk::provisioner::{AppState, AppVersion, Provisioner, Unit};

struct HttpBackends {
    backends: BTreeMap<String, Vec<String>>,
}

impl HttpBackends {
    fn addresses(&self, app: &str) -> Result<&[String], String> {
        self.backends.get(app).map(Vec::as_slice).ok_or_else(|| format!("no HTTP backends are configured for app {app:?}"))
    }
}

fn process(v: &AppVersion) -> String {
    v.processes.first().map_or_else(|| "web".to_string(), |p| p.name.clone())
}

impl Provisioner for HttpBackends {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let backends = match config.get("backends") {
            Some(b) => serde_json::from_value(b.clone()).map_err(|e| format!("backends: {e}"))?,
            None => BTreeMap::new(),
        };
        Ok(HttpBackends { backends })
    }

    fn can_deploy(&self, _kind: &str) -> Result<(), String> {
        Ok(())
    }

    fn prepare(&self, desired: &AppState, version: &AppVersion) -> Result<Vec<String>, String> {
        let addresses = self.addresses(&desired.name)?;
        Ok(vec![format!(" ---> version {} will be served by {}\n", version.version, addresses.join(", "))])
    }

    fn apply(&self, desired: &AppState) -> Result<Vec<String>, String> {
        let addresses = self.addresses(&desired.name)?.to_vec();
        let serving = desired.status != "stopped";
        let routes: Vec<Route> = desired
            .versions
            .iter()
            .filter(|v| serving && v.routable && v.weight > 0)
            .map(|v| Route { version: v.version, process: process(v), units: addresses.len() as u32, weight: v.weight, addresses: addresses.clone() })
            .collect();
        app_runtime::set_routes(&desired.name, &routes)?;
        Ok(routes.iter().map(|r| format!(" ---> version {} served by {}\n", r.version, r.addresses.join(", "))).collect())
    }

    fn units(&self, desired: &AppState) -> Result<Vec<Unit>, String> {
        let addresses = self.addresses(&desired.name).unwrap_or_default();
        let mut out = Vec::new();
        for v in desired.versions.iter().filter(|v| v.routable) {
            for (n, address) in addresses.iter().enumerate() {
                let id = format!("{}-{}-v{}-{n}", desired.name, process(v), v.version);
                out.push(Unit {
                    name: id.clone(),
                    id,
                    app: desired.name.clone(),
                    process: process(v),
                    version: v.version,
                    status: "started".into(),
                    status_reason: String::new(),
                    address: Some(format!("http://{address}")),
                    ready: true,
                    restarts: 0,
                    node: String::new(),
                });
            }
        }
        Ok(out)
    }

    fn kill_unit(&self, _desired: &AppState, _unit: &str) -> Result<(), String> {
        Err("this provisioner does not own its backends' processes".into())
    }

    fn set_unit_status(&self, _desired: &AppState, _unit: &str, _status: &str) -> Result<(), String> {
        Err("this provisioner does not own its backends' processes".into())
    }

    fn run(&self, _desired: &AppState, _command: &str, _once: bool, _isolated: bool) -> Result<Vec<String>, String> {
        Err("this provisioner does not run commands".into())
    }

    fn destroy(&self, app: &str) -> Result<(), String> {
        app_runtime::set_routes(app, &[])
    }
}

export_provisioner!(HttpBackends);
