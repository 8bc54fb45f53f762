//! `/provisioner` and `/provisioner/clusters` (API-NOTES §2.20): the
//! engines provisioners run apps on (a Swarm's managers, …) and the pools
//! each serves. Global permissions (`cluster.*`); lists hide the client key
//! and the custom data's `token` and `password` from callers without
//! `cluster.admin`. Changes are `cluster.*` events on the cluster, their
//! data without secrets.

use super::events::record_allowed;
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::auth::Identity;
use crate::error::{ApiError, ApiResult};
use crate::events::{Allowed, Target};
use crate::server::Server;
use crate::store::{ClusterRecord, ClusterSecrets, StoreError};
use axum::body::Bytes;
use axum::extract::{Path, State};
use axum::http::{HeaderMap, Method, StatusCode, header};
use axum::response::{IntoResponse, Response};
use base64::Engine;
use base64::engine::general_purpose::STANDARD;
use serde::{Deserialize, Serialize};
use serde_json::{Value, json};
use std::collections::BTreeMap;
use std::sync::Arc;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.7", Method::GET, "/provisioner", provisioners)
        .add("1.3", Method::GET, "/provisioner/clusters", list)
        .add("1.3", Method::POST, "/provisioner/clusters", create)
        .add("1.8", Method::GET, "/provisioner/clusters/{name}", info)
        .add("1.4", Method::POST, "/provisioner/clusters/{name}", update)
        .add("1.3", Method::DELETE, "/provisioner/clusters/{name}", remove)
}

/// Most addresses, pools and custom data entries a cluster holds.
const MAX_ITEMS: usize = 64;
/// The longest address, pool name, custom data key or value, proxy URL.
const MAX_TEXT: usize = 4096;
/// The largest certificate or key (decoded).
const MAX_PEM: usize = 64 << 10;
/// Custom data only `cluster.admin` reads (tsuru's `CleanUpSensitive`).
const SENSITIVE: [&str; 2] = ["token", "password"];

/// A cluster as tsuru encodes it.
#[derive(Serialize)]
struct ClusterJson {
    name: String,
    addresses: Vec<String>,
    provisioner: String,
    cacert: String,
    clientcert: String,
    clientkey: Option<String>,
    pools: Vec<String>,
    custom_data: BTreeMap<String, String>,
    local: bool,
    default: bool,
    #[serde(rename = "kubeConfig", skip_serializing_if = "Option::is_none")]
    kube_config: Option<Value>,
    #[serde(rename = "httpProxy", skip_serializing_if = "String::is_empty")]
    http_proxy: String,
}

impl ClusterJson {
    /// `c` whole, or without its secrets.
    fn of(c: ClusterRecord, with_secrets: bool) -> ClusterJson {
        let ClusterSecrets { clientkey, mut custom_data, kube_config } = c.secrets;
        if !with_secrets {
            custom_data.retain(|k, _| !SENSITIVE.contains(&k.as_str()));
        }
        ClusterJson {
            name: c.name,
            addresses: c.addresses,
            provisioner: c.provisioner,
            cacert: c.cacert,
            clientcert: c.clientcert,
            clientkey: with_secrets.then_some(clientkey),
            pools: c.pools,
            custom_data,
            local: c.local,
            default: c.default,
            kube_config,
            http_proxy: c.http_proxy,
        }
    }
}

/// `GET /1.7/provisioner`: the provisioners torii runs, and what their
/// clusters take.
async fn provisioners(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("cluster.read", &[])?;
    let list: Vec<Value> = server
        .provisioners
        .keys()
        .map(|name| {
            let help = if server.config.uses_clusters(name) {
                "Runs the apps of the cluster's pools as services of its Docker Swarm (addresses: its managers, unix:///path/docker.sock or tcp://host:port)."
            } else if server.config.uses_nodes(name) {
                "Runs the apps of the cluster's pools as containers on its Docker engine (addresses: unix:///path/docker.sock or tcp://host:port)."
            } else {
                "Runs apps in torii's own WebAssembly runtime: its clusters name the pools it serves and take no engine."
            };
            json!({"name": name, "cluster_help": {"provisioner_help": help, "custom_data_help": {}}})
        })
        .collect();
    Ok(json(StatusCode::OK, &list))
}

/// `GET /1.3/provisioner/clusters`: every cluster, secrets only for
/// `cluster.admin`; 204 without any.
async fn list(State(server): AppState, Caller(caller): Caller) -> ApiResult<Response> {
    caller.require("cluster.read", &[])?;
    let clusters = server.store.clusters().await?;
    if clusters.is_empty() {
        return Ok(empty(StatusCode::NO_CONTENT));
    }
    let admin = caller.allows("cluster.admin", &[]);
    let out: Vec<ClusterJson> = clusters.into_iter().map(|c| ClusterJson::of(c, admin)).collect();
    Ok(json(StatusCode::OK, &out))
}

/// `GET /1.8/provisioner/clusters/{name}`: the cluster, secrets included.
async fn info(State(server): AppState, Caller(caller): Caller, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("cluster.read", &[])?;
    let cluster = server.store.cluster(&name).await?.ok_or_else(|| ApiError::not_found("cluster not found"))?;
    Ok(json(StatusCode::OK, &ClusterJson::of(cluster, true)))
}

/// What a create or update sends (tsuru's `provTypes.Cluster`): byte fields
/// in base64; `null` is as good as absent.
#[derive(Deserialize, Default)]
#[serde(default)]
struct ClusterInput {
    name: Option<String>,
    addresses: Option<Vec<String>>,
    provisioner: Option<String>,
    cacert: Option<String>,
    clientcert: Option<String>,
    clientkey: Option<String>,
    pools: Option<Vec<String>>,
    custom_data: Option<BTreeMap<String, String>>,
    local: Option<bool>,
    default: Option<bool>,
    #[serde(rename = "kubeConfig")]
    kube_config: Option<Value>,
    #[serde(rename = "httpProxy")]
    http_proxy: Option<String>,
}

/// The fields of [`ClusterInput`], as encoded.
const FIELDS: [&str; 12] =
    ["name", "addresses", "provisioner", "cacert", "clientcert", "clientkey", "pools", "custom_data", "local", "default", "kubeConfig", "httpProxy"];

/// The body of a create or update: JSON only (tsuru refuses a form, and any
/// media type parameter, with a 500); keys matched without regard to case,
/// as Go's decoder does.
fn cluster_input(headers: &HeaderMap, body: &[u8]) -> ApiResult<ClusterInput> {
    let content_type = headers.get(header::CONTENT_TYPE).map(|v| String::from_utf8_lossy(v.as_bytes()).into_owned()).unwrap_or_default();
    if !content_type.is_empty() && content_type != "application/json" {
        return Err(ApiError::internal(format!("Invalid Content-Type {content_type:?}")));
    }
    let invalid = |e: String| ApiError::bad_request(format!("unable to parse as json: {:?} - {e}", String::from_utf8_lossy(body)));
    if body.is_empty() {
        return Ok(ClusterInput::default());
    }
    let Value::Object(given) = serde_json::from_slice::<Value>(body).map_err(|e| invalid(e.to_string()))? else {
        return Err(invalid("expected a JSON object".into()));
    };
    let mut fields = serde_json::Map::new();
    for (key, value) in given {
        // An exact match wins over one differing in case.
        let Some(field) = FIELDS.iter().find(|f| **f == key).or_else(|| FIELDS.iter().find(|f| f.eq_ignore_ascii_case(&key))) else { continue };
        if key == *field || !fields.contains_key(*field) {
            fields.insert(field.to_string(), value);
        }
    }
    serde_json::from_value(Value::Object(fields)).map_err(|e| invalid(e.to_string()))
}

/// A PEM given in base64, checked and bounded; empty stays empty.
fn pem(field: &str, given: Option<String>) -> ApiResult<String> {
    let given = given.unwrap_or_default();
    if given.is_empty() {
        return Ok(given);
    }
    let bytes = STANDARD.decode(given.trim()).map_err(|e| ApiError::bad_request(format!("{field}: not base64: {e}")))?;
    if bytes.len() > MAX_PEM {
        return Err(ApiError::bad_request(format!("{field} is larger than {} KiB", MAX_PEM >> 10)));
    }
    Ok(STANDARD.encode(bytes))
}

/// Where a cluster's engine may answer: a unix socket or a TCP/HTTP(S)
/// endpoint (the provisioner reaches only the addresses of its clusters).
fn check_address(address: &str) -> ApiResult<()> {
    let refused = |why: &str| Err(ApiError::bad_request(format!("invalid address {address:?}: {why}")));
    let Ok(url) = url::Url::parse(address) else { return refused("not a URL") };
    match url.scheme() {
        "unix" if url.path().len() > 1 => Ok(()),
        "tcp" | "http" | "https" if url.host_str().is_some_and(|h| !h.is_empty()) => Ok(()),
        "unix" | "tcp" | "http" | "https" => refused("it names no socket or host"),
        _ => refused("use unix://, tcp://, http:// or https://"),
    }
}

/// The cluster `input` describes, checked as tsuru checks it (name, then
/// provisioner, then pools or default), and bounded. On an update, the
/// `existing` cluster's name and creation time stay.
fn checked(server: &Server, input: ClusterInput, existing: Option<&ClusterRecord>) -> ApiResult<ClusterRecord> {
    let name = match existing {
        Some(c) => c.name.clone(),
        None => input.name.unwrap_or_default().trim().to_string(),
    };
    if name.is_empty() {
        return Err(ApiError::bad_request("cluster name is mandatory"));
    }
    if existing.is_none() && !super::names::valid(&name) {
        return Err(ApiError::bad_request(
            "Invalid cluster name, cluster name should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter.",
        ));
    }
    let provisioner = input.provisioner.unwrap_or_default();
    if provisioner.is_empty() {
        return Err(ApiError::bad_request("provisioner name is mandatory"));
    }
    let (pools, default) = (input.pools.unwrap_or_default(), input.default.unwrap_or(false));
    if !pools.is_empty() && default {
        return Err(ApiError::bad_request("cannot have both pools and default set"));
    }
    if pools.is_empty() && !default {
        return Err(ApiError::bad_request("either default or a list of pools must be set"));
    }
    if !server.provisioners.contains_key(&provisioner) {
        return Err(ApiError::bad_request(format!("provisioner error: unknown provisioner: {provisioner:?}")));
    }
    let (addresses, custom_data, http_proxy) = (input.addresses.unwrap_or_default(), input.custom_data.unwrap_or_default(), input.http_proxy.unwrap_or_default());
    for (what, count) in [("addresses", addresses.len()), ("pools", pools.len()), ("custom_data entries", custom_data.len())] {
        if count > MAX_ITEMS {
            return Err(ApiError::bad_request(format!("a cluster takes at most {MAX_ITEMS} {what}")));
        }
    }
    let texts = addresses.iter().chain(&pools).chain(custom_data.keys()).chain(custom_data.values()).chain(std::iter::once(&http_proxy));
    if texts.into_iter().any(|t| t.len() > MAX_TEXT) {
        return Err(ApiError::bad_request(format!("a cluster's addresses, pools, custom data and proxy are at most {MAX_TEXT} bytes each")));
    }
    for address in &addresses {
        check_address(address)?;
        // A provisioner of Swarm clusters reaches what its client takes.
        if server.config.uses_clusters(&provisioner) {
            crate::docker::swarm::check_cluster_address(address).map_err(|e| ApiError::bad_request(e.to_string()))?;
        }
    }
    if !http_proxy.is_empty() && url::Url::parse(&http_proxy).is_err() {
        return Err(ApiError::bad_request(format!("invalid httpProxy {http_proxy:?}")));
    }
    let kube_config = input.kube_config.filter(|k| !k.is_null());
    if kube_config.as_ref().is_some_and(|k| !k.is_object() || k.to_string().len() > MAX_PEM) {
        return Err(ApiError::bad_request(format!("kubeConfig must be an object of at most {} KiB", MAX_PEM >> 10)));
    }
    Ok(ClusterRecord {
        name,
        provisioner,
        addresses,
        pools,
        default,
        local: input.local.unwrap_or(false),
        cacert: pem("cacert", input.cacert)?,
        clientcert: pem("clientcert", input.clientcert)?,
        http_proxy,
        secrets: ClusterSecrets { clientkey: pem("clientkey", input.clientkey)?, custom_data, kube_config },
        created_at: existing.map_or(0, |c| c.created_at),
    })
}

/// Whether every pool a cluster names exists.
async fn pools_exist(server: &Server, pools: &[String]) -> ApiResult<bool> {
    for pool in pools {
        if server.store.pool(pool).await?.is_none() {
            return Ok(false);
        }
    }
    Ok(true)
}

async fn cluster_event(server: &Arc<Server>, caller: &Identity, ip: &ClientIp, kind: &str, c: &ClusterRecord) -> ApiResult<crate::events::RunningEvent> {
    // What the event keeps: never the key, the custom data or the kubeconfig.
    let data = json!({"name": c.name, "provisioner": c.provisioner, "addresses": c.addresses, "pools": c.pools, "default": c.default});
    record_allowed(server, Some(caller), ip, kind, Target::new("cluster", c.name.clone()), data, Allowed::new("cluster.read.events", vec![])).await
}

/// An answer of 200: empty, or an (empty) stream when the client asked for one.
fn done(headers: &HeaderMap) -> Response {
    let stream = headers.get(header::ACCEPT).and_then(|v| v.to_str().ok()).is_some_and(|a| a.starts_with("application/x-json-stream"));
    if stream { ([(header::CONTENT_TYPE, "application/x-json-stream")], "").into_response() } else { empty(StatusCode::OK) }
}

/// `POST /1.3/provisioner/clusters`.
async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    caller.require("cluster.create", &[])?;
    let input = cluster_input(&headers, &body)?;
    let name = input.name.clone().unwrap_or_default().trim().to_string();
    if !name.is_empty() && server.store.cluster(&name).await?.is_some() {
        return Err(ApiError::conflict("cluster already exists"));
    }
    if !pools_exist(&server, input.pools.as_deref().unwrap_or_default()).await? {
        return Err(ApiError::not_found("Pool does not exist."));
    }
    let cluster = checked(&server, input, None)?;
    let event = cluster_event(&server, &caller, &ip, "cluster.create", &cluster).await?;
    let result = server.store.add_cluster(&cluster).await.map_err(|e| match e {
        StoreError::Conflict(m) => ApiError::conflict(m),
        other => other.into(),
    });
    event.done(result.map(|()| done(&headers))).await
}

/// `POST /1.4/provisioner/clusters/{name}`: the cluster as given, whole.
async fn update(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, headers: HeaderMap, body: Bytes) -> ApiResult<Response> {
    caller.require("cluster.update", &[])?;
    let input = cluster_input(&headers, &body)?;
    let existing = server.store.cluster(&name).await?.ok_or_else(|| ApiError::not_found("cluster not found"))?;
    if !pools_exist(&server, input.pools.as_deref().unwrap_or_default()).await? {
        return Err(ApiError::bad_request("Pool does not exist."));
    }
    let cluster = checked(&server, input, Some(&existing))?;
    let event = cluster_event(&server, &caller, &ip, "cluster.update", &cluster).await?;
    let result = async {
        if !server.store.update_cluster(&cluster).await? {
            return Err(ApiError::not_found("cluster not found"));
        }
        Ok(done(&headers))
    };
    event.done(result.await).await
}

/// `DELETE /1.3/provisioner/clusters/{name}`.
async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>, headers: HeaderMap) -> ApiResult<Response> {
    caller.require("cluster.delete", &[])?;
    let cluster = server.store.cluster(&name).await?.ok_or_else(|| ApiError::not_found("cluster not found"))?;
    let event = cluster_event(&server, &caller, &ip, "cluster.delete", &cluster).await?;
    let result = async {
        if !server.store.remove_cluster(&name).await? {
            return Err(ApiError::not_found("cluster not found"));
        }
        Ok(done(&headers))
    };
    event.done(result.await).await
}
