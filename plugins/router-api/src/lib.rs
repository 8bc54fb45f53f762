//! torii's `api` router: drives an external router that speaks tsuru's
//! router API (`reference/router-api.yaml`), as tsuru's `api` router type
//! does, over outbound HTTP (capability `http`).
//!
//! A dynamic router of this type names its endpoint in its config:
//! `{"api-url": "http://127.0.0.1:9000", "headers": {"Authorization": "…"}}`.
//! For each app, `ensure`:
//! - creates the backend (`POST /backend/{app}` with the app's router
//!   options as a JSON object; `409` means it exists, and `PUT` updates
//!   the options),
//! - adds and removes routes (`POST`/`DELETE /backend/{app}/routes` with
//!   `{"addresses": ["http://127.0.0.1:32768", …]}`) until they are the
//!   app's: the addresses of units that run outside torii, and torii's
//!   app-traffic address for versions that run in its WASM runtime,
//! - for those, writes torii's proxy table (capability `proxy`) so the data
//!   plane answers the app's names the external router forwards,
//! - sets and unsets cnames (`/backend/{app}/cname/{cname}`) when the router
//!   says it supports them (`GET /support/cname`),
//! - answers the app's address (`GET /backend/{app}`) and cnames.
//!
//! `remove` deletes the backend (`404` counts as done). The endpoint of each
//! router is kept in `kv`, since `remove` is given only the router's name.
//! A router that does not answer, or answers 5xx, is `unavailable` (the host
//! tries again); a 4xx refusal is `invalid`.

use serde_json::{Value, json};
use std::collections::BTreeSet;
use torii_plugin_sdk::http::{self, Request, Response};
use torii_plugin_sdk::proxy::{self, Backend};
use torii_plugin_sdk::router::{Error, Outcome, Route, Router};
use torii_plugin_sdk::{export_router, kv};

struct ApiRouter;

/// One external router: its endpoint and the headers sent with each call.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Endpoint {
    url: String,
    headers: Vec<(String, String)>,
}

impl Endpoint {
    /// From a dynamic router's config (`api-url`, optional `headers`).
    fn of(route: &Route) -> Outcome<Endpoint> {
        let url = route
            .config("api-url")
            .filter(|u| u.starts_with("http://") || u.starts_with("https://"))
            .ok_or_else(|| Error::Invalid(format!("router {:?} needs config api-url: the http(s) URL of its router API", route.router)))?;
        let headers = match route.config("headers") {
            None => Vec::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
                _ => return Err(Error::Invalid(format!("router {:?}: config headers must be an object of header names to values", route.router))),
            },
        };
        Ok(Endpoint { url: url.trim_end_matches('/').to_string(), headers })
    }

    /// Where `router`'s endpoint is kept between calls.
    fn key(router: &str) -> String {
        format!("endpoint/{router}")
    }

    fn call(&self, method: &str, path: &str, body: Option<Value>) -> Outcome<Response> {
        let mut req = Request::new(method, &format!("{}/{}", self.url, path)).header("Content-Type", "application/json");
        for (k, v) in &self.headers {
            req = req.header(k, v);
        }
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        http::send(&req).map_err(|e| Error::Unavailable(e.to_string()))
    }

    /// `call`, with any status of 300 or more that is not `ok` an error:
    /// 5xx the router's trouble (unavailable), 4xx a refusal (invalid).
    fn expect(&self, method: &str, path: &str, body: Option<Value>, ok: &[u16]) -> Outcome<Response> {
        let r = self.call(method, path, body)?;
        if r.status < 300 || ok.contains(&r.status) {
            return Ok(r);
        }
        let said = format!("{method} {}/{path}: {} {}", self.url, r.status, r.text().trim());
        Err(if r.status >= 500 { Error::Unavailable(said) } else { Error::Invalid(said) })
    }
}

/// A path segment as the router API takes it (names are DNS-safe already;
/// anything else is escaped).
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._*".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

/// A JSON list of strings under `field` of `r`'s body.
fn list(r: &Response, field: &str) -> BTreeSet<String> {
    serde_json::from_slice::<Value>(&r.body)
        .ok()
        .and_then(|v| v.get(field).cloned())
        .and_then(|v| serde_json::from_value::<Vec<String>>(v).ok())
        .unwrap_or_default()
        .into_iter()
        .collect()
}

impl Router for ApiRouter {
    fn init(_config: Value) -> Result<Self, String> {
        Ok(ApiRouter)
    }

    fn ensure(&self, route: &Route) -> Outcome<Vec<String>> {
        let endpoint = Endpoint::of(route)?;
        kv::set_json(&Endpoint::key(&route.router), &endpoint)?;
        let app = segment(&route.app);
        let opts: serde_json::Map<String, Value> = route.options.iter().map(|(k, v)| (k.clone(), json!(v))).collect();
        let created = endpoint.expect("POST", &format!("backend/{app}"), Some(Value::Object(opts.clone())), &[409])?;
        if created.status == 409 {
            endpoint.expect("PUT", &format!("backend/{app}"), Some(Value::Object(opts)), &[])?;
        }

        // Units outside torii are reached at their addresses; versions in
        // its WASM runtime through torii's data plane, which answers the
        // app's names from the proxy table.
        let live: Vec<&Backend> = route.backends.iter().filter(|b| b.weight > 0).collect();
        let mut wanted: BTreeSet<String> = live.iter().flat_map(|b| b.addresses.iter().map(|a| format!("http://{a}"))).collect();
        let in_torii: Vec<Backend> = live.iter().filter(|b| b.addresses.is_empty()).map(|b| (*b).clone()).collect();
        if !in_torii.is_empty() {
            let traffic = route.traffic.iter().find(|t| t.starts_with("http://")).ok_or_else(|| Error::Unavailable("torii does not take app traffic yet".into()))?;
            wanted.insert(traffic.clone());
        }
        proxy::set_app(&route.router, &route.app, &route.hosts(), &in_torii)?;

        let current = list(&endpoint.expect("GET", &format!("backend/{app}/routes"), None, &[])?, "addresses");
        let add: Vec<&String> = wanted.difference(&current).collect();
        if !add.is_empty() {
            endpoint.expect("POST", &format!("backend/{app}/routes"), Some(json!({"addresses": add})), &[])?;
        }
        let gone: Vec<&String> = current.difference(&wanted).collect();
        if !gone.is_empty() {
            endpoint.expect("DELETE", &format!("backend/{app}/routes"), Some(json!({"addresses": gone})), &[])?;
        }

        let mut served = Vec::new();
        let address: Option<String> = serde_json::from_slice::<Value>(&endpoint.expect("GET", &format!("backend/{app}"), None, &[])?.body)
            .ok()
            .and_then(|v| v.get("address").and_then(Value::as_str).map(str::to_string))
            .filter(|a| !a.is_empty());
        served.extend(address);
        if endpoint.call("GET", "support/cname", None)?.status == 200 {
            let current = list(&endpoint.expect("GET", &format!("backend/{app}/cname"), None, &[])?, "cnames");
            let wanted: BTreeSet<String> = route.cnames.iter().cloned().collect();
            for c in wanted.difference(&current) {
                endpoint.expect("POST", &format!("backend/{app}/cname/{}", segment(c)), None, &[409])?;
            }
            for c in current.difference(&wanted) {
                endpoint.expect("DELETE", &format!("backend/{app}/cname/{}", segment(c)), None, &[404])?;
            }
            served.extend(wanted);
        }
        Ok(served)
    }

    fn remove(&self, router: &str, app: &str) -> Outcome<()> {
        proxy::remove_app(router, app)?;
        // A router never told of an app holds nothing of it.
        let Some(endpoint) = kv::get_json::<Endpoint>(&Endpoint::key(router))? else { return Ok(()) };
        endpoint.expect("DELETE", &format!("backend/{}", segment(app)), None, &[404])?;
        Ok(())
    }
}

export_router!(ApiRouter);
