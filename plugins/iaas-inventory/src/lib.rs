//! The `inventory` IaaS: a bare-metal inventory. Machines are the hosts the
//! operator lists in the config, each a Docker engine with labels:
//!
//! ```toml
//! [plugin.config]
//! hosts = [
//!   { id = "rack1-a", address = "tcp://127.0.0.1:2375", labels = { zone = "z1" } },
//!   { id = "rack1-b", address = "unix:///var/run/docker.sock" },
//! ]
//! ```
//!
//! Creating a machine claims a free host whose labels agree with the
//! parameters that name them (a parameter no label names does not
//! constrain); destroying it releases the host. Claims are kept in kv, so
//! every instance and restart sees the same ones.

use serde::Deserialize;
use std::collections::BTreeMap;
use torii_plugin_sdk::export_iaas;
use torii_plugin_sdk::iaas::{Error, Iaas, Machine, Outcome};
use torii_plugin_sdk::kv;

/// Where a claim of host `id` is kept: the parameters it was claimed with.
fn claim_key(id: &str) -> String {
    format!("claim/{id}")
}

#[derive(Deserialize, Debug, Clone)]
#[serde(deny_unknown_fields)]
struct Host {
    id: String,
    /// `tcp://host:port`, `http(s)://host:port` or `unix:///path`.
    address: String,
    #[serde(default)]
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize, Default)]
#[serde(deny_unknown_fields)]
struct Config {
    #[serde(default)]
    hosts: Vec<Host>,
}

struct Inventory {
    hosts: Vec<Host>,
}

/// The address of a host as tsuru's machine fields: address, port, protocol.
fn parts(address: &str) -> Result<(String, u16, String), String> {
    if let Some(path) = address.strip_prefix("unix://") {
        return Ok((path.to_string(), 0, "unix".into()));
    }
    let (protocol, rest) = address.split_once("://").ok_or_else(|| format!("address {address:?} has no scheme (tcp://, http://, https:// or unix://)"))?;
    if !["tcp", "http", "https"].contains(&protocol) {
        return Err(format!("address {address:?}: scheme {protocol:?} is not tcp, http, https or unix"));
    }
    let rest = rest.trim_end_matches('/');
    let (host, port) = rest.rsplit_once(':').ok_or_else(|| format!("address {address:?} has no port"))?;
    let port = port.parse::<u16>().map_err(|_| format!("address {address:?}: bad port"))?;
    Ok((host.to_string(), port, protocol.to_string()))
}

impl Inventory {
    fn host(&self, id: &str) -> Outcome<&Host> {
        self.hosts.iter().find(|h| h.id == id).ok_or_else(|| Error::NotFound(format!("machine {id:?} is not in the inventory")))
    }

    /// The parameters host `id` is claimed with, if it is.
    fn claim(&self, id: &str) -> Outcome<Option<Vec<(String, String)>>> {
        match kv::get(&claim_key(id)).map_err(Error::Internal)? {
            None => Ok(None),
            Some(bytes) => Ok(Some(serde_json::from_slice(&bytes).map_err(|e| Error::Internal(format!("claim of {id:?}: {e}")))?)),
        }
    }

    fn machine(&self, host: &Host, params: Vec<(String, String)>) -> Outcome<Machine> {
        let (address, port, protocol) = parts(&host.address).map_err(Error::Internal)?;
        Ok(Machine { id: host.id.clone(), address, port, protocol, status: "running".into(), creation_params: params })
    }
}

/// Whether `host` agrees with every parameter its labels name.
fn matches(host: &Host, params: &[(String, String)]) -> bool {
    params.iter().all(|(k, v)| host.labels.get(k).is_none_or(|label| label == v))
}

impl Iaas for Inventory {
    fn init(config: serde_json::Value) -> Result<Self, String> {
        let config: Config = if config.is_null() { Config::default() } else { serde_json::from_value(config).map_err(|e| format!("inventory config: {e}"))? };
        let mut seen = std::collections::BTreeSet::new();
        for h in &config.hosts {
            if h.id.is_empty() || !seen.insert(h.id.clone()) {
                return Err(format!("inventory config: host ids must be given and unique ({:?})", h.id));
            }
            parts(&h.address).map_err(|e| format!("inventory config: host {:?}: {e}", h.id))?;
        }
        Ok(Inventory { hosts: config.hosts })
    }

    fn create_machine(&self, params: &[(String, String)]) -> Outcome<Machine> {
        let mut candidates = 0;
        for host in self.hosts.iter().filter(|h| matches(h, params)) {
            candidates += 1;
            if self.claim(&host.id)?.is_some() {
                continue;
            }
            let bytes = serde_json::to_vec(params).expect("params serialise");
            // Claimed only if nobody claimed it meanwhile (another instance).
            if !kv::set_if_absent(&claim_key(&host.id), &bytes).map_err(Error::Internal)? {
                continue;
            }
            return self.machine(host, params.to_vec());
        }
        Err(if candidates == 0 {
            Error::Invalid("no host of the inventory matches the parameters".into())
        } else {
            Error::Unavailable(format!("all {candidates} host(s) of the inventory that match the parameters are in use"))
        })
    }

    fn describe_machine(&self, id: &str) -> Outcome<Machine> {
        let host = self.host(id)?;
        let params = self.claim(id)?.ok_or_else(|| Error::NotFound(format!("machine {id:?} is not in use")))?;
        self.machine(host, params)
    }

    fn destroy_machine(&self, id: &str) -> Outcome<()> {
        self.host(id)?;
        kv::delete(&claim_key(id)).map_err(Error::Internal)
    }

    fn list_machines(&self) -> Outcome<Vec<Machine>> {
        let mut out = Vec::new();
        for host in &self.hosts {
            if let Some(params) = self.claim(&host.id)? {
                out.push(self.machine(host, params)?);
            }
        }
        Ok(out)
    }
}

export_iaas!(Inventory);

#[cfg(test)]
mod tests {
    use super::*;

    fn inventory() -> Inventory {
        torii_plugin_sdk::testing::reset();
        Inventory::init(serde_json::json!({"hosts": [
            {"id": "a", "address": "unix:///run/a.sock", "labels": {"zone": "z1"}},
            {"id": "b", "address": "tcp://127.0.0.1:2375", "labels": {"zone": "z2"}},
        ]}))
        .unwrap()
    }

    fn p(pairs: &[(&str, &str)]) -> Vec<(String, String)> {
        pairs.iter().map(|(k, v)| (k.to_string(), v.to_string())).collect()
    }

    #[test]
    fn hosts_are_claimed_by_their_labels_and_released() {
        let inv = inventory();
        let m = inv.create_machine(&p(&[("zone", "z2"), ("size", "big")])).unwrap();
        assert_eq!((m.id.as_str(), m.address.as_str(), m.port, m.protocol.as_str()), ("b", "127.0.0.1", 2375, "tcp"));
        assert_eq!(m.param("size"), Some("big"));
        assert!(matches!(inv.create_machine(&p(&[("zone", "z2")])), Err(Error::Unavailable(_))));
        assert!(matches!(inv.create_machine(&p(&[("zone", "z9")])), Err(Error::Invalid(_))));
        let a = inv.create_machine(&[]).unwrap();
        assert_eq!((a.id.as_str(), a.address.as_str(), a.protocol.as_str()), ("a", "/run/a.sock", "unix"));
        assert_eq!(inv.list_machines().unwrap().len(), 2);
        inv.destroy_machine("b").unwrap();
        assert!(matches!(inv.describe_machine("b"), Err(Error::NotFound(_))));
        assert_eq!(inv.create_machine(&p(&[("zone", "z2")])).unwrap().id, "b");
        assert!(matches!(inv.destroy_machine("nope"), Err(Error::NotFound(_))));
    }

    #[test]
    fn bad_configs_are_refused() {
        assert!(Inventory::init(serde_json::json!({"hosts": [{"id": "a", "address": "127.0.0.1:2375"}]})).is_err());
        assert!(Inventory::init(serde_json::json!({"hosts": [{"id": "a", "address": "unix:///x"}, {"id": "a", "address": "unix:///y"}]})).is_err());
        assert!(Inventory::init(serde_json::json!({"hosts": [], "extra": 1})).is_err());
    }
}
