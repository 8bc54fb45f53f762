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
use torii_plugin_sdk::proxy;
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
        let url = route.config_url("api-url", "the http(s) URL of its router API")?;
        let headers = match route.config("headers") {
            None => Vec::new(),
            Some(text) => match serde_json::from_str::<Value>(text) {
                Ok(Value::Object(map)) => map.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
                _ => return Err(Error::Invalid(format!("router {:?}: config headers must be an object of header names to values", route.router))),
            },
        };
        Ok(Endpoint { url, headers })
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
        let wanted: BTreeSet<String> = route.upstreams()?.into_iter().map(|u| format!("http://{}", u.address)).collect();
        proxy::set_app(&route.router, &route.app, &route.hosts(), &route.in_torii())?;

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

#[cfg(test)]
mod tests {
    //! The plugin's logic natively, against the SDK's test doubles: a
    //! router API that keeps backends in memory.

    use super::*;
    use std::cell::RefCell;
    use std::collections::BTreeMap;
    use std::rc::Rc;
    use torii_plugin_sdk::proxy::Backend;
    use torii_plugin_sdk::testing;

    fn route(backends: Vec<Backend>) -> Route {
        Route {
            router: "edge".into(),
            app: "web".into(),
            addresses: vec!["web.edge.test".into()],
            cnames: vec![],
            backends,
            options: vec![("team".into(), "blue".into())],
            config: vec![("api-url".into(), "http://127.0.0.1:9000/".into()), ("headers".into(), r#"{"X-Token":"t"}"#.into())],
            traffic: vec!["http://127.0.0.1:8888".into()],
        }
    }

    /// A router API in memory: backend → routes; `down` answers 503.
    fn api(down: bool) -> Rc<RefCell<BTreeMap<String, BTreeSet<String>>>> {
        let backends = Rc::new(RefCell::new(BTreeMap::<String, BTreeSet<String>>::new()));
        let state = backends.clone();
        testing::on_http(move |req| {
            let reply = |status: u16, body: Value| Ok(Response { status, headers: vec![], body: body.to_string().into_bytes() });
            if down {
                return reply(503, json!("down"));
            }
            let path = req.url.trim_start_matches("http://127.0.0.1:9000/");
            let body: Value = serde_json::from_slice(&req.body).unwrap_or(Value::Null);
            let mut b = state.borrow_mut();
            match (req.method.as_str(), path.split('/').collect::<Vec<_>>().as_slice()) {
                ("GET", ["support", _]) => reply(404, Value::Null),
                ("POST", ["backend", name]) if b.contains_key(*name) => reply(409, Value::Null),
                ("POST", ["backend", name]) => {
                    b.insert(name.to_string(), BTreeSet::new());
                    reply(200, Value::Null)
                }
                ("PUT", ["backend", name]) if b.contains_key(*name) => reply(200, Value::Null),
                ("GET", ["backend", name]) => reply(200, json!({"address": format!("{name}.router.test")})),
                ("DELETE", ["backend", name]) => reply(if b.remove(*name).is_some() { 200 } else { 404 }, Value::Null),
                ("GET", ["backend", name, "routes"]) => reply(200, json!({"addresses": b[*name]})),
                (m, ["backend", name, "routes"]) => {
                    for a in body["addresses"].as_array().unwrap() {
                        let a = a.as_str().unwrap().to_string();
                        if m == "POST" { b.get_mut(*name).unwrap().insert(a); } else { b.get_mut(*name).unwrap().remove(&a); }
                    }
                    reply(200, Value::Null)
                }
                _ => reply(404, Value::Null),
            }
        });
        backends
    }

    #[test]
    fn ensure_makes_the_backend_and_its_routes_what_the_app_runs() {
        testing::reset();
        let backends = api(false);
        let units = Backend { version: 1, addresses: vec!["127.0.0.1:32768".into()], weight: 100 };
        assert_eq!(ApiRouter.ensure(&route(vec![units])).unwrap(), vec!["web.router.test".to_string()]);
        assert_eq!(backends.borrow()["web"], ["http://127.0.0.1:32768".to_string()].into());
        let sent = testing::requests();
        assert!(sent.iter().all(|r| r.headers.contains(&("X-Token".into(), "t".into()))), "{sent:?}");
        assert_eq!(sent[0].body, br#"{"team":"blue"}"#.to_vec());
        // A version in torii's runtime: torii's traffic address, and its names in the proxy table.
        let in_torii = Backend { version: 2, addresses: vec![], weight: 100 };
        ApiRouter.ensure(&route(vec![in_torii])).unwrap();
        assert_eq!(backends.borrow()["web"], ["http://127.0.0.1:8888".to_string()].into());
        assert_eq!(testing::proxy_table()[&("edge".to_string(), "web".to_string())], (vec!["web.edge.test".to_string()], vec![2]));
        ApiRouter.remove("edge", "web").unwrap();
        assert!(backends.borrow().is_empty() && testing::proxy_table().is_empty());
    }

    #[test]
    fn a_router_api_that_does_not_answer_is_unavailable_and_a_bad_config_invalid() {
        testing::reset();
        api(true);
        assert!(matches!(ApiRouter.ensure(&route(vec![])), Err(Error::Unavailable(m)) if m.contains("503")));
        let mut bad = route(vec![]);
        bad.config.clear();
        assert!(matches!(ApiRouter.ensure(&bad), Err(Error::Invalid(m)) if m.contains("needs config api-url")));
    }
}
