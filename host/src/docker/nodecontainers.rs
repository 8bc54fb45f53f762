//! Node containers: one container of each configured kind on every Docker
//! node (a log shipper, a monitoring agent). The config is tsuru's
//! (`{"Name","PinnedImage","Disabled","Config":{"Image","Env","Cmd",...},"HostConfig"}`)
//! per pool, `""` being the base every pool extends. torii applies the image,
//! env, command and labels; like units, node containers get no mounts, no
//! privileges and no host network, whatever `HostConfig` asks.

use super::{Engines, Spec};
use crate::store::{NodeRecord, Store};
use serde_json::Value;
use std::collections::BTreeMap;

const LABEL: &str = "torii.nodecontainer";
const LABEL_CONFIG: &str = "torii.nodecontainer.config";

/// What runs on a node: the pool's config laid over the base one.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Effective {
    pub image: String,
    pub env: Vec<String>,
    pub cmd: Vec<String>,
    pub disabled: bool,
}

fn strings(v: &Value) -> Vec<String> {
    v.as_array().map(|a| a.iter().filter_map(|s| s.as_str().map(str::to_string)).collect()).unwrap_or_default()
}

/// `configs` (pool → config) as they apply on a node of `pool`; `None` when
/// neither the base nor the pool has one.
pub fn effective(configs: &BTreeMap<String, Value>, pool: &str) -> Option<Effective> {
    let layers: Vec<&Value> = [configs.get(""), configs.get(pool).filter(|_| !pool.is_empty())].into_iter().flatten().collect();
    if layers.is_empty() {
        return None;
    }
    let mut out = Effective { image: String::new(), env: Vec::new(), cmd: Vec::new(), disabled: false };
    for c in layers {
        let pinned = c["PinnedImage"].as_str().unwrap_or_default();
        let image = c["Config"]["Image"].as_str().unwrap_or_default();
        if !pinned.is_empty() {
            out.image = pinned.to_string();
        } else if !image.is_empty() {
            out.image = image.to_string();
        }
        out.env.extend(strings(&c["Config"]["Env"]));
        let cmd = strings(&c["Config"]["Cmd"]);
        if !cmd.is_empty() {
            out.cmd = cmd;
        }
        if let Some(d) = c["Disabled"].as_bool() {
            out.disabled = d;
        }
    }
    Some(out)
}

fn config_hash(e: &Effective) -> String {
    use sha2::{Digest, Sha256};
    let text = serde_json::json!([e.image, e.env, e.cmd]).to_string();
    hex::encode(&Sha256::digest(text.as_bytes())[..8])
}

/// Brings node container `name` in line with its configs on `node`:
/// started when configured and enabled (again when its config changed, or
/// with `recreate`), removed otherwise. The progress line, if anything changed.
pub async fn ensure_on(engines: &Engines, name: &str, configs: &BTreeMap<String, Value>, node: &NodeRecord, recreate: bool) -> Result<Option<String>, String> {
    let labels = [(LABEL.to_string(), name.to_string())];
    let existing = engines.list(&node.address, &labels).await.map_err(|e| e.to_string())?;
    let wanted = effective(configs, &node.pool).filter(|e| !e.disabled && !e.image.is_empty());
    let Some(wanted) = wanted else {
        for c in &existing {
            engines.remove(&node.address, &c.id).await.map_err(|e| e.to_string())?;
        }
        return Ok((!existing.is_empty()).then(|| format!(" ---> removed node container {name} from {}\n", node.address)));
    };
    let hash = config_hash(&wanted);
    let current = existing.iter().find(|c| c.state == "running" && c.labels.get(LABEL_CONFIG) == Some(&hash));
    if current.is_some() && !recreate && existing.len() == 1 {
        return Ok(None);
    }
    for c in &existing {
        engines.remove(&node.address, &c.id).await.map_err(|e| e.to_string())?;
    }
    let env = wanted.env.iter().map(|kv| kv.split_once('=').map(|(k, v)| (k.to_string(), v.to_string())).unwrap_or_else(|| (kv.clone(), String::new()))).collect();
    let spec = Spec {
        name: format!("torii-nc-{name}"),
        image: wanted.image.clone(),
        cmd: wanted.cmd.clone(),
        env,
        labels: vec![(LABEL.into(), name.into()), (LABEL_CONFIG.into(), hash)],
        port: None,
        memory: 0,
        cpu_milli: 0,
        log: None,
        mounts: Vec::new(),
    };
    engines.run(&node.address, spec, false, engines.timeout).await.map_err(|e| format!("node container {name} on {}: {e}", node.address))?;
    Ok(Some(format!(" ---> node container {name} ({}) running on {}\n", wanted.image, node.address)))
}

/// Every node container on every node where it applies (`only`: one of
/// them; `on`: one node); progress lines.
pub async fn ensure_all(engines: &Engines, store: &Store, only: Option<&str>, on: Option<&NodeRecord>, recreate: bool) -> Result<Vec<String>, String> {
    let mut by_name: BTreeMap<String, BTreeMap<String, Value>> = BTreeMap::new();
    for (name, pool, config) in store.node_containers().await.map_err(|e| e.to_string())? {
        by_name.entry(name).or_default().insert(pool, config);
    }
    if let Some(name) = only {
        by_name.entry(name.to_string()).or_default();
        by_name.retain(|n, _| n == name);
    }
    let nodes = match on {
        Some(n) => vec![n.clone()],
        None => store.nodes().await.map_err(|e| e.to_string())?,
    };
    let mut lines = Vec::new();
    for (name, configs) in &by_name {
        for node in &nodes {
            if let Some(line) = ensure_on(engines, name, configs, node, recreate).await? {
                lines.push(line);
            }
        }
    }
    Ok(lines)
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    #[test]
    fn pool_configs_extend_the_base() {
        let configs = BTreeMap::from([
            ("".to_string(), json!({"Name": "agent", "Config": {"Image": "agent:1", "Env": ["A=1"], "Cmd": ["run"]}})),
            ("p1".to_string(), json!({"Name": "agent", "Config": {"Env": ["B=2"]}, "Disabled": null})),
            ("p2".to_string(), json!({"Name": "agent", "PinnedImage": "agent@sha256:x", "Disabled": true})),
        ]);
        let e = |pool| effective(&configs, pool).unwrap();
        assert_eq!(e("p1"), Effective { image: "agent:1".into(), env: vec!["A=1".into(), "B=2".into()], cmd: vec!["run".into()], disabled: false });
        assert_eq!((e("p2").image.as_str(), e("p2").disabled), ("agent@sha256:x", true));
        assert_eq!(e("other"), Effective { image: "agent:1".into(), env: vec!["A=1".into()], cmd: vec!["run".into()], disabled: false });
        let only_p1 = BTreeMap::from([("p1".to_string(), json!({"Config": {"Image": "x"}}))]);
        assert!(effective(&only_p1, "p2").is_none());
        assert_ne!(config_hash(&e("p1")), config_hash(&e("other")));
    }
}
