//! torii's `embedded` router: an app's routes become entries of the host's
//! proxy table (capability `proxy`), which the data plane on `[router]
//! listen` serves.
//!
//! Each of the app's addresses and cnames points at its routable versions.
//! Option `canary=<percent>` gives the newest version that share of the
//! traffic when several are routable; the others split the rest by their
//! weights.

mod bindings {
    wit_bindgen::generate!({
        path: "../../wit",
        world: "torii:plugin/router-plugin",
    });
}

use bindings::exports::torii::plugin::{lifecycle, router};
use bindings::torii::plugin::proxy::{self, Backend};

struct Embedded;

bindings::export!(Embedded with_types_in bindings);

impl lifecycle::Guest for Embedded {
    fn init(_config: String) -> Result<(), String> {
        Ok(())
    }

    fn health() -> Result<(), String> {
        Ok(())
    }
}

impl router::Guest for Embedded {
    fn ensure(route: router::Route) -> Result<(), String> {
        let canary = match route.options.iter().find(|(k, _)| k == "canary") {
            Some((_, v)) => Some(percent(v).ok_or_else(|| format!("invalid router option canary {v:?}: it must be a percentage from 0 to 100"))?),
            None => None,
        };
        let mut hosts = route.addresses;
        hosts.extend(route.cnames);
        proxy::set_app(&route.router, &route.app, &hosts, &weigh(route.backends, canary))
    }

    fn remove(router: String, app: String) -> Result<(), String> {
        proxy::remove_app(&router, &app)
    }
}

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
