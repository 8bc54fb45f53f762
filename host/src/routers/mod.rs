//! The router catalogue and what a router means for an app.
//!
//! A router's type names the router plugin that serves it (`embedded`, the
//! built-in `router-embedded`, writes the host proxy table the data plane
//! serves). The built-in router `embedded` serves `<app>.<[router] domain>`;
//! each dynamic router (`/1.8/routers`) serves `<app>.<its config domain>`.
//! An app answers at the address of each router it is linked to and at its
//! cnames (on its main router). [`sync::Routing`] tells the plugins.
//!
//! App router options understood: `canary` — the share of the traffic, in
//! percent, that the newest routable version receives when several versions
//! are routable (the others share the rest by their weights).

pub mod names;
pub mod resync;
pub mod sync;
pub mod tls;

use crate::pools::{self, Constraint};
use crate::server::Server;
use crate::store::{AppRouter, AppView, RouterRecord, Store, StoreResult};
use std::collections::BTreeMap;

/// The built-in router's name and type.
pub const EMBEDDED: &str = crate::config::EMBEDDED_ROUTER;

/// A router as the catalogue lists it.
#[derive(Debug, Clone, PartialEq)]
pub struct RouterDef {
    pub name: String,
    pub kind: String,
    pub config: serde_json::Map<String, serde_json::Value>,
    pub readiness_gates: Vec<String>,
    pub dynamic: bool,
    pub default: bool,
    /// Apps answer at `<app>.<domain>`.
    pub domain: String,
}

impl RouterDef {
    pub fn address(&self, app: &str) -> String {
        format!("{app}.{}", self.domain)
    }
}

/// Every router: the built-in one first, then the dynamic ones by name.
pub async fn catalogue(server: &Server) -> StoreResult<Vec<RouterDef>> {
    catalogue_of(&server.store, &server.config.router.domain).await
}

/// The catalogue with the built-in router serving `domain`.
pub async fn catalogue_of(store: &Store, domain: &str) -> StoreResult<Vec<RouterDef>> {
    let dynamic = store.dynamic_routers().await?;
    let mut out = Vec::with_capacity(dynamic.len() + 1);
    let mut config = serde_json::Map::new();
    config.insert("domain".into(), domain.into());
    out.push(RouterDef {
        name: EMBEDDED.into(),
        kind: EMBEDDED.into(),
        config,
        readiness_gates: vec![],
        dynamic: false,
        default: true,
        domain: domain.to_string(),
    });
    out.extend(dynamic.iter().map(|r| RouterDef {
        name: r.name.clone(),
        kind: r.kind.clone(),
        domain: domain_of(r).unwrap_or_default().to_string(),
        config: r.config.clone(),
        readiness_gates: r.readiness_gates.clone(),
        dynamic: true,
        default: false,
    }));
    Ok(out)
}

pub fn find<'a>(all: &'a [RouterDef], name: &str) -> Option<&'a RouterDef> {
    all.iter().find(|r| r.name == name)
}

/// The domains of every router, in lower case, for the name rule (`names`).
pub async fn domains(server: &Server) -> StoreResult<Vec<String>> {
    Ok(catalogue(server).await?.into_iter().map(|r| r.domain.to_ascii_lowercase()).filter(|d| !d.is_empty()).collect())
}

/// Why dynamic router `r` may not serve its domain: it overlaps another
/// router's, or holds an app's cname (`names::check_domain`).
pub async fn check_domain_owner(server: &Server, r: &RouterRecord) -> StoreResult<Result<(), String>> {
    let Some(domain) = domain_of(r).map(str::to_ascii_lowercase) else { return Ok(Ok(())) };
    let others: Vec<String> = catalogue(server)
        .await?
        .into_iter()
        .filter(|o| o.name != r.name)
        .map(|o| o.domain.to_ascii_lowercase())
        .filter(|d| !d.is_empty())
        .collect();
    Ok(names::check_domain(&domain, &others, &server.store.all_cnames().await?))
}

/// The type of router `name` (the plugin serving it), if there is such a router.
pub async fn kind_of(store: &Store, name: &str) -> StoreResult<Option<String>> {
    if name == EMBEDDED {
        return Ok(Some(EMBEDDED.into()));
    }
    Ok(store.dynamic_routers().await?.iter().find(|r| r.name == name).map(|r| r.kind.clone()))
}

/// The domain a dynamic router serves (its config's `domain`).
pub fn domain_of(r: &RouterRecord) -> Option<&str> {
    r.config.get("domain").and_then(|d| d.as_str())
}

/// A DNS name such as `apps.example.com`: dot-separated labels of letters,
/// digits and dashes, none starting or ending with a dash.
pub fn valid_domain(d: &str) -> bool {
    !d.is_empty()
        && d.len() <= 253
        && d.split('.').all(|l| {
            !l.is_empty() && l.len() <= 63 && !l.starts_with('-') && !l.ends_with('-') && l.bytes().all(|b| b.is_ascii_alphanumeric() || b == b'-')
        })
}

/// Why a dynamic router cannot be stored as given, if it cannot. `types`:
/// the configured router plugins.
pub fn check_dynamic(r: &RouterRecord, config_domain: &str, types: &[&str]) -> Result<(), String> {
    if r.name.is_empty() {
        return Err("router name is required".into());
    }
    if !crate::api::names::valid(&r.name) {
        return Err("invalid router name: it should have at most 40 characters, containing only lower case letters, numbers or dashes, starting with a letter".into());
    }
    if !types.contains(&r.kind.as_str()) {
        return Err(format!("router type {:?} is not known: the types are {}", r.kind, types.join(", ")));
    }
    match domain_of(r) {
        Some(d) if valid_domain(d) && d != config_domain => Ok(()),
        Some(d) if d == config_domain => Err(format!("domain {d:?} is already the domain of router {EMBEDDED:?}")),
        _ => Err(format!("a router of type {} needs config domain: a DNS name such as apps.example.com", r.kind)),
    }
}

/// Why app router options are wrong, if they are.
pub fn check_opts(opts: &BTreeMap<String, String>) -> Result<(), String> {
    match opts.get("canary") {
        Some(v) if canary_percent(v).is_none() => Err(format!("invalid router option canary {v:?}: it must be a percentage from 0 to 100")),
        _ => Ok(()),
    }
}

fn canary_percent(v: &str) -> Option<u32> {
    v.trim().trim_end_matches('%').parse::<u32>().ok().filter(|p| *p <= 100)
}

/// Routers allowed in `pool` by its router constraint.
pub fn allowed_in_pool<'a>(constraints: &[Constraint], pool: &str, all: &'a [RouterDef]) -> Vec<&'a RouterDef> {
    all.iter().filter(|r| pools::admits(constraints, pool, "router", &r.name)).collect()
}

/// The router an app created in `pool` gets when none is named: the only
/// router a whitelist constraint names for the pool, else the default
/// router when the pool admits it.
pub fn default_for_pool<'a>(constraints: &[Constraint], pool: &str, all: &'a [RouterDef]) -> Option<&'a RouterDef> {
    if let Some(c) = pools::governing(constraints, pool, "router")
        && !c.blacklist
        && let [only] = c.values.as_slice()
        && let Some(r) = find(all, only)
    {
        return Some(r);
    }
    all.iter().find(|r| r.default && pools::admits(constraints, pool, "router", &r.name))
}

/// True when the router serves HTTPS (the embedded router does when
/// `[router] tls_listen` is set).
pub fn supports_tls(server: &Server, r: &RouterDef) -> bool {
    r.kind == EMBEDDED && server.config.router.tls_listen.is_some()
}

/// The app's addresses on a router: `<app>.<domain>`; cnames come on top.
pub fn names_of(view: &AppView, r: &RouterDef) -> Vec<String> {
    let mut names = vec![r.address(&view.app.name)];
    names.extend(view.app.cnames.iter().cloned());
    names
}

/// The host names a router points at the app: its address there, and the
/// app's cnames when it is the app's main (first) router; sorted.
pub fn hosts_of(view: &AppView, r: &RouterDef, main: bool) -> Vec<String> {
    let mut hosts = vec![r.address(&view.app.name)];
    if main {
        hosts.extend(view.app.cnames.iter().cloned());
    }
    hosts.sort();
    hosts
}

/// The app router entry of `view` named `router`.
pub fn linked<'a>(view: &'a AppView, router: &str) -> Option<&'a AppRouter> {
    view.routers.iter().find(|r| r.router == router)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        assert!(valid_domain("apps.example.com"));
        assert!(valid_domain("localhost"));
        assert!(!valid_domain(""));
        assert!(!valid_domain(".example.com"));
        assert!(!valid_domain("a..b"));
        assert!(!valid_domain("-a.b"));
        assert!(!valid_domain("a b.c"));
    }

    #[test]
    fn canary_option() {
        let mut opts = BTreeMap::new();
        assert!(check_opts(&opts).is_ok());
        for ok in ["0", "10", "100", "25%"] {
            opts.insert("canary".to_string(), ok.to_string());
            assert!(check_opts(&opts).is_ok(), "{ok}");
        }
        for bad in ["101", "-1", "ten", ""] {
            opts.insert("canary".to_string(), bad.to_string());
            assert!(check_opts(&opts).is_err(), "{bad}");
        }
    }
}
