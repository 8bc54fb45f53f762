//! torii's `embedded` router: an app's routes become entries of the host's
//! proxy table (capability `proxy`), which the data plane on `[router]
//! listen` serves.
//!
//! Each of the app's addresses and cnames points at its routable versions.
//! Option `canary=<percent>` gives the newest version that share of the
//! traffic when several are routable; the others split the rest by their
//! weights.

use torii_plugin_sdk::export_router;
use torii_plugin_sdk::proxy::{self, Backend};
use torii_plugin_sdk::router::{Outcome, Route, Router};

struct Embedded;

impl Router for Embedded {
    fn init(_config: serde_json::Value) -> Result<Self, String> {
        Ok(Embedded)
    }

    fn ensure(&self, route: &Route) -> Outcome<Vec<String>> {
        let canary = match route.option("canary") {
            Some(v) => Some(percent(v).ok_or_else(|| format!("invalid router option canary {v:?}: it must be a percentage from 0 to 100"))?),
            None => None,
        };
        let hosts = route.hosts();
        proxy::set_app(&route.router, &route.app, &hosts, &weigh(route.backends.clone(), canary))?;
        Ok(hosts)
    }

    fn remove(&self, router: &str, app: &str) -> Outcome<()> {
        Ok(proxy::remove_app(router, app)?)
    }
}

export_router!(Embedded);

fn percent(v: &str) -> Option<u32> {
    v.trim().trim_end_matches('%').parse::<u32>().ok().filter(|p| *p <= 100)
}

/// The share each backend gets, out of 10,000: with a `canary` percentage
/// and several live versions, the newest gets that share and the others
/// split the rest by weight; otherwise the weights as they are.
fn weigh(backends: Vec<Backend>, canary: Option<u32>) -> Vec<Backend> {
    let mut live: Vec<Backend> = backends.into_iter().filter(|b| b.weight > 0).collect();
    let (Some(percent), true) = (canary, live.len() > 1) else { return live };
    let newest = live.iter().map(|b| b.version).max().unwrap_or_default();
    let others: u64 = live.iter().filter(|b| b.version != newest).map(|b| u64::from(b.weight)).sum();
    for b in &mut live {
        b.weight = if b.version == newest {
            percent * 100
        } else {
            ((100 - u64::from(percent)) * 100 * u64::from(b.weight) / others.max(1)) as u32
        };
    }
    live
}
