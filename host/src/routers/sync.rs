//! Telling router plugins what to serve. After any change to an app's
//! routes (its provisioner set them), cnames, routers or router options,
//! [`Routing::sync`] hands each router the app is linked to the app's route,
//! and tells routers the app left to forget it. The plugins do the rest (the
//! `embedded` one writes the proxy table the data plane serves).

use super::{RouterDef, catalogue_of, find, kind_of};
use crate::plugin::router::{Backend, Route, RouteFailure, RouterPlugin};
use crate::store::{AppView, RouterApp, Store};
use std::collections::BTreeMap;

/// Why an app's routers did not all do as told: `refused` when one of them
/// refused what it was given (the change cannot be served as it is).
#[derive(Debug, Clone, Default, PartialEq, Eq, thiserror::Error)]
#[error("{message}")]
pub struct SyncError {
    pub refused: bool,
    pub message: String,
}

impl SyncError {
    fn add(&mut self, router: &str, f: &RouteFailure) {
        self.refused |= f.refused;
        if !self.message.is_empty() {
            self.message.push_str("; ");
        }
        self.message.push_str(&format!("router {router:?}: {}", f.message));
    }
}

/// Syncs of one app run one at a time (apps share [`STRIPES`] locks).
const STRIPES: usize = 64;

fn stripe(app: &str) -> usize {
    app.bytes().fold(0usize, |h, b| h.wrapping_mul(31).wrapping_add(usize::from(b))) % STRIPES
}

/// The router plugins, by the router type each serves.
pub struct Routing {
    store: Store,
    /// The built-in router's domain (`[router] domain`).
    domain: String,
    plugins: BTreeMap<String, RouterPlugin>,
    /// Where the data plane takes app traffic, once it listens.
    traffic: std::sync::RwLock<Vec<String>>,
    serial: [tokio::sync::Mutex<()>; STRIPES],
}

impl Routing {
    pub fn new(store: Store, domain: String, plugins: BTreeMap<String, RouterPlugin>) -> Routing {
        Routing { store, domain, plugins, traffic: Default::default(), serial: std::array::from_fn(|_| tokio::sync::Mutex::new(())) }
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
    /// that no longer exists is forgotten everywhere. What each router did
    /// is recorded (`router_apps`): a failure shows as the app router's
    /// status and is retried by the resync loop.
    pub async fn sync(&self, app: &str) -> Result<(), SyncError> {
        self.sync_with(app, true).await
    }

    /// Syncs apps that exchanged cnames: first each without cnames, so no
    /// host is held by the other app when its new owner claims it.
    pub async fn sync_together(&self, apps: &[&str]) -> Result<(), SyncError> {
        for app in apps {
            self.sync_with(app, false).await?;
        }
        for app in apps {
            self.sync(app).await?;
        }
        Ok(())
    }

    async fn sync_with(&self, app: &str, cnames: bool) -> Result<(), SyncError> {
        // One sync of an app at a time, each reading the app as it is then:
        // the last one to run tells the routers the latest state.
        let _one = self.serial[stripe(app)].lock().await;
        let store_error = |e: crate::store::StoreError| SyncError { refused: false, message: e.to_string() };
        let view = self.store.app_view(app).await.map_err(store_error)?;
        let all = catalogue_of(&self.store, &self.domain).await.map_err(store_error)?;
        let told = self.store.router_apps_of(app).await.map_err(store_error)?;
        let mut report = SyncError::default();
        let mut linked = Vec::new();
        if let Some(view) = &view {
            for (position, entry) in view.routers.iter().enumerate() {
                let Some(def) = find(&all, &entry.router) else {
                    report.add(&entry.router, &RouteFailure::failed("the router no longer exists"));
                    continue;
                };
                linked.push(def.name.clone());
                let done = match self.plugin(&def.kind) {
                    Ok(plugin) => {
                        let route = route(view, def, cnames && position == 0, &self.traffic.read().unwrap());
                        plugin.ensure(route).await
                    }
                    Err(e) => Err(RouteFailure::failed(e)),
                };
                let previous = told.iter().find(|t| t.router == def.name);
                let (error, names) = match done {
                    Ok(names) => (String::new(), names),
                    Err(f) => {
                        report.add(&def.name, &f);
                        // What it served before still stands, as far as torii knows.
                        (f.message, previous.map(|p| p.names.clone()).unwrap_or_default())
                    }
                };
                let row = RouterApp { router: def.name.clone(), kind: def.kind.clone(), app: app.to_string(), error, names };
                if previous != Some(&row) {
                    self.store.set_router_app(&row).await.map_err(store_error)?;
                }
            }
        }
        // Routers the app left (or all of them, for an app that is gone).
        let mut held: Vec<(String, Option<String>)> = told.iter().map(|t| (t.router.clone(), Some(t.kind.clone()))).collect();
        for router in self.store.proxy_routers_of(app).await.map_err(store_error)? {
            if !held.iter().any(|(r, _)| *r == router) {
                held.push((router, None));
            }
        }
        for (router, kind) in held.into_iter().filter(|(r, _)| !linked.contains(r)) {
            let kind = match kind {
                Some(k) => Some(k),
                None => kind_of(&self.store, &router).await.map_err(store_error)?,
            };
            match self.forget(&router, kind.as_deref(), app).await {
                Ok(()) => self.store.forget_router_app(&router, app).await.map_err(store_error)?,
                Err(f) => {
                    report.add(&router, &f);
                    let error = format!("the app could not be removed from the router: {}", f.message);
                    let names = told.iter().find(|t| t.router == router).map(|t| t.names.clone()).unwrap_or_default();
                    let row = RouterApp { router: router.clone(), kind: kind.unwrap_or_default(), app: app.to_string(), error, names };
                    self.store.set_router_app(&row).await.map_err(store_error)?;
                }
            }
        }
        if report.message.is_empty() { Ok(()) } else { Err(report) }
    }

    /// Tells `router` (of type `kind`) to forget `app`; the entries of a
    /// router whose plugin is gone are dropped by the host.
    async fn forget(&self, router: &str, kind: Option<&str>, app: &str) -> Result<(), RouteFailure> {
        match kind.and_then(|k| self.plugins.get(k)) {
            Some(plugin) => plugin.remove(router, app).await,
            None => self.store.remove_proxy_app(router, app).await.map_err(|e| RouteFailure::failed(e.to_string())),
        }
    }

    /// Tells every router that serves `app` that it is gone (after the app
    /// left the store); a router that fails keeps its record, and the
    /// resync loop tells it again.
    pub async fn remove(&self, app: &str) -> Result<(), SyncError> {
        self.sync(app).await
    }

    /// Syncs again the apps some router failed for, and the apps of
    /// routers that keep their own state (any type but the `embedded` one,
    /// whose table is torii's): such a router may have lost what it was
    /// told (a Caddy restarted) without failing (`[routers] resync_secs`).
    pub async fn resync(&self) {
        let listed = async {
            let mut apps = self.store.apps_with_router_errors().await?;
            apps.extend(self.store.apps_on_routers_not_of(super::EMBEDDED).await?);
            apps.sort();
            apps.dedup();
            Ok::<_, crate::store::StoreError>(apps)
        };
        let apps = match listed.await {
            Ok(apps) => apps,
            Err(e) => return tracing::warn!(error = %e, "routers: cannot list the apps to resync"),
        };
        for app in apps {
            match self.sync(&app).await {
                Ok(()) => tracing::info!(app, "routers: the app's routers serve it again"),
                Err(e) => tracing::debug!(app, error = %e, "routers: still failing"),
            }
        }
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
