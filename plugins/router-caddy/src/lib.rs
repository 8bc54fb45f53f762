//! torii's `caddy` router: each app becomes one route of a Caddy server,
//! set through Caddy's admin API over outbound HTTP (capability `http`).
//!
//! A dynamic router of this type names the admin endpoint and the server in
//! its config: `{"domain": "apps.example.com", "admin-url":
//! "http://127.0.0.1:2019", "server": "torii"}` (`server` defaults to
//! `torii`: the key under `apps.http.servers` of Caddy's config). For each
//! app, `ensure` puts one route with `@id` `torii-<router>-<app>`:
//! - it matches the app's names (its address on the router, and its cnames
//!   on the app's main router);
//! - it proxies (`reverse_proxy`, Host kept) to the units that run outside
//!   torii, and to torii's app-traffic address for versions that run in its
//!   WASM runtime (whose names the plugin writes to torii's proxy table, so
//!   the data plane answers them);
//! - weights: Caddy 2.6 has no weighted policy, so each upstream is listed
//!   in proportion to its version's weight (at most 100 entries) under
//!   `round_robin`; a `canary` option is not applied beyond that;
//! - with nothing routable it answers 503 saying so.
//!
//! The route replaces the app's previous one (`PATCH /id/…`), or is
//! appended to the server's routes. `remove` deletes it (`404` is done). A
//! Caddy that does not answer, or answers 5xx, is `unavailable` (the host
//! tries again); the host also syncs these apps every `[routers]
//! resync_secs`, so a Caddy that restarted with its routes lost gets them
//! back.

use serde_json::{Value, json};
use torii_plugin_sdk::http::{self, Request, Response};
use torii_plugin_sdk::proxy;
use torii_plugin_sdk::router::{Error, Outcome, Route, Router};
use torii_plugin_sdk::{export_router, kv};

struct Caddy;

/// One Caddy: its admin endpoint and the server apps are routed in.
#[derive(Clone, serde::Serialize, serde::Deserialize)]
struct Admin {
    url: String,
    server: String,
}

impl Admin {
    fn of(route: &Route) -> Outcome<Admin> {
        let url = route.config_url("admin-url", "the http(s) URL of Caddy's admin API")?;
        let server = route.config("server").unwrap_or("torii").to_string();
        if server.is_empty() || !server.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-' || b == b'_') {
            return Err(Error::Invalid(format!("router {:?}: config server must be the name of a Caddy HTTP server", route.router)));
        }
        Ok(Admin { url, server })
    }

    fn key(router: &str) -> String {
        format!("admin/{router}")
    }

    fn call(&self, method: &str, path: &str, body: Option<&Value>) -> Outcome<Response> {
        let mut req = Request::new(method, &format!("{}/{path}", self.url)).header("Content-Type", "application/json");
        if let Some(body) = body {
            req = req.body(body.to_string());
        }
        let r = http::send(&req).map_err(|e| Error::Unavailable(e.to_string()))?;
        if r.status >= 500 {
            return Err(Error::Unavailable(format!("{method} {}/{path}: {} {}", self.url, r.status, r.text().trim())));
        }
        Ok(r)
    }
}

fn route_id(router: &str, app: &str) -> String {
    format!("torii-{router}-{app}")
}

fn gcd(a: u32, b: u32) -> u32 {
    if b == 0 { a } else { gcd(b, a % b) }
}

/// Each dial address listed in proportion to its weight (at most 100 in all).
fn upstreams(weighted: &[(String, u32)]) -> Vec<Value> {
    let g = weighted.iter().map(|(_, w)| *w).filter(|w| *w > 0).fold(0, gcd).max(1);
    let total: u32 = weighted.iter().map(|(_, w)| w / g).sum::<u32>().max(1);
    let scale = if total > 100 { 100.0 / f64::from(total) } else { 1.0 };
    let mut out = Vec::new();
    for (dial, w) in weighted {
        let n = ((f64::from(w / g) * scale).round() as u32).max(1);
        out.extend((0..n).map(|_| json!({"dial": dial})));
    }
    out
}

impl Router for Caddy {
    fn init(_config: Value) -> Result<Self, String> {
        Ok(Caddy)
    }

    fn ensure(&self, route: &Route) -> Outcome<Vec<String>> {
        let admin = Admin::of(route)?;
        kv::set_json(&Admin::key(&route.router), &admin)?;
        let hosts = route.hosts();
        let weighted: Vec<(String, u32)> = route.upstreams()?.into_iter().map(|u| (u.address, u.weight)).collect();
        proxy::set_app(&route.router, &route.app, &hosts, &route.in_torii())?;
        let handle = if weighted.is_empty() {
            json!([{"handler": "static_response", "status_code": 503, "body": format!("app {} has no routable version\n", route.app)}])
        } else {
            json!([{"handler": "reverse_proxy", "upstreams": upstreams(&weighted), "load_balancing": {"selection_policy": {"policy": "round_robin"}}}])
        };
        let id = route_id(&route.router, &route.app);
        let body = json!({"@id": id, "match": [{"host": hosts}], "handle": handle, "terminal": true});
        let replaced = admin.call("PATCH", &format!("id/{id}"), Some(&body))?;
        if replaced.status >= 300 {
            let appended = admin.call("POST", &format!("config/apps/http/servers/{}/routes", admin.server), Some(&body))?;
            if appended.status >= 300 {
                return Err(Error::Invalid(format!("Caddy refused the route of app {}: {} {}", route.app, appended.status, appended.text().trim())));
            }
        }
        Ok(hosts)
    }

    fn remove(&self, router: &str, app: &str) -> Outcome<()> {
        proxy::remove_app(router, app)?;
        let Some(admin) = kv::get_json::<Admin>(&Admin::key(router))? else { return Ok(()) };
        let r = admin.call("DELETE", &format!("id/{}", route_id(router, app)), None)?;
        if r.status >= 300 && r.status != 404 {
            return Err(Error::Invalid(format!("Caddy did not remove the route of app {app}: {} {}", r.status, r.text().trim())));
        }
        Ok(())
    }
}

export_router!(Caddy);

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn upstreams_follow_the_weights() {
        let dials = |v: Vec<Value>| v.iter().map(|u| u["dial"].as_str().unwrap().to_string()).collect::<Vec<_>>();
        assert_eq!(dials(upstreams(&[("a".into(), 100)])), ["a"]);
        assert_eq!(dials(upstreams(&[("a".into(), 75), ("b".into(), 25)])), ["a", "a", "a", "b"]);
        assert_eq!(upstreams(&[("a".into(), 9999), ("b".into(), 1)]).len(), 101);
    }
}
