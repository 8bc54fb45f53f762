//! Telling router plugins what to serve. After any change to an app's
//! routes (its provisioner set them), cnames, routers or router options,
//! [`Routing::sync`] hands each router the app is linked to the app's route,
//! and tells routers the app left to forget it. The plugins do the rest (the
//! `embedded` one writes the proxy table the data plane serves).

use super::{RouterDef, catalogue_of, find, kind_of};
use crate::plugin::router::{Backend, Route, RouterPlugin};
use crate::store::{AppView, Store};
use std::collections::BTreeMap;

/// The router plugins, by the router type each serves.
pub struct Routing {
    store: Store,
    /// The built-in router's domain (`[router] domain`).
    domain: String,
    plugins: BTreeMap<String, RouterPlugin>,
    /// Where the data plane takes app traffic, once it listens.
    traffic: std::sync::RwLock<Vec<String>>,
}

impl Routing {
    pub fn new(store: Store, domain: String, plugins: BTreeMap<String, RouterPlugin>) -> Routing {
        Routing { store, domain, plugins, traffic: Default::default() }
    }

    /// Records where the data plane takes app traffic (`http://…`, `https://…`),
    /// handed to routers in every route.
    pub fn set_traffic(&self, addresses: Vec<String>) {
        *self.traffic.write().unwrap() = addresses;
    }

    fn plugin(&self, kind: &str) -> Result<&RouterPlugin, String> {
        self.plugins.get(kind).ok_or_else(|| format!("no router plugin serves type {kind:?}"))
    }

    /// Makes every router serve `app` as the store holds it now; an app
    /// that no longer exists is forgotten everywhere.
    pub async fn sync(&self, app: &str) -> Result<(), String> {
        self.sync_with(app, true).await
    }

    /// Syncs apps that exchanged cnames: first each without cnames, so no
    /// host is held by the other app when its new owner claims it.
    pub async fn sync_together(&self, apps: &[&str]) -> Result<(), String> {
        for app in apps {
            self.sync_with(app, false).await?;
        }
        for app in apps {
            self.sync(app).await?;
        }
        Ok(())
    }

    async fn sync_with(&self, app: &str, cnames: bool) -> Result<(), String> {
        let view = self.store.app_view(app).await.map_err(|e| e.to_string())?;
        let all = catalogue_of(&self.store, &self.domain).await.map_err(|e| e.to_string())?;
        let mut errors = Vec::new();
        let mut linked = Vec::new();
        if let Some(view) = &view {
            for (position, entry) in view.routers.iter().enumerate() {
                let Some(def) = find(&all, &entry.router) else {
                    errors.push(format!("router {:?} no longer exists", entry.router));
                    continue;
                };
                linked.push(def.name.clone());
                let done = match self.plugin(&def.kind) {
                    Ok(plugin) => {
                        let route = route(view, def, cnames && position == 0, &self.traffic.read().unwrap());
                        plugin.ensure(route).await.map(|_| ())
                    }
                    Err(e) => Err(e),
                };
                if let Err(e) = done {
                    errors.push(format!("router {:?}: {e}", def.name));
                }
            }
        }
        let held = self.store.proxy_routers_of(app).await.map_err(|e| e.to_string())?;
        for router in held.iter().filter(|r| !linked.contains(r)) {
            if let Err(e) = self.forget(router, app).await {
                errors.push(format!("router {router:?}: {e}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Tells `router` to forget `app`; the entries of a router that no
    /// longer exists (or whose plugin is gone) are dropped by the host.
    async fn forget(&self, router: &str, app: &str) -> Result<(), String> {
        let kind = kind_of(&self.store, router).await.map_err(|e| e.to_string())?;
        match kind.as_deref().and_then(|k| self.plugins.get(k)) {
            Some(plugin) => plugin.remove(router, app).await,
            None => self.store.remove_proxy_app(router, app).await.map_err(|e| e.to_string()),
        }
    }

    /// Tells every router `app` is linked to that it is gone (before the
    /// app is removed from the store).
    pub async fn remove(&self, view: &AppView) -> Result<(), String> {
        let mut errors = Vec::new();
        let mut routers: Vec<String> = view.routers.iter().map(|r| r.router.clone()).collect();
        for r in self.store.proxy_routers_of(&view.app.name).await.map_err(|e| e.to_string())? {
            if !routers.contains(&r) {
                routers.push(r);
            }
        }
        for router in routers {
            if let Err(e) = self.forget(&router, &view.app.name).await {
                errors.push(format!("router {router:?}: {e}"));
            }
        }
        if errors.is_empty() { Ok(()) } else { Err(errors.join("; ")) }
    }

    /// Syncs every app (at start, so the proxy table matches the routes and
    /// the configured domain); failures are logged, one line per app.
    pub async fn sync_all(&self) -> Result<usize, String> {
        let views = self.store.app_views().await.map_err(|e| e.to_string())?;
        for view in &views {
            if let Err(e) = self.sync(&view.app.name).await {
                tracing::warn!(app = %view.app.name, error = %e, "routers: cannot sync the app");
            }
        }
        Ok(views.len())
    }
}

/// What `def` is told of the app: its address there, its cnames when
/// `cnames` (the app's main router), its routable versions and its options.
fn route(view: &AppView, def: &RouterDef, cnames: bool, traffic: &[String]) -> Route {
    let options = super::linked(view, &def.name).map(|r| r.opts.iter().map(|(k, v)| (k.clone(), v.clone())).collect()).unwrap_or_default();
    Route {
        router: def.name.clone(),
        app: view.app.name.clone(),
        addresses: vec![def.address(&view.app.name)],
        cnames: if cnames { view.app.cnames.clone() } else { vec![] },
        backends: view
            .routes
            .iter()
            .filter(|r| r.weight > 0)
            .map(|r| Backend {
                version: u32::try_from(r.version).unwrap_or(0),
                addresses: r.addresses.clone(),
                weight: u32::try_from(r.weight).unwrap_or(u32::MAX),
            })
            .collect(),
        options,
        config: def.config.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
        traffic: traffic.to_vec(),
    }
}
