//! A read cache of app views (what `GET /apps/{app}` shows), so the hottest
//! read of the API costs no database round trip.
//!
//! Coherence: every store method that changes an app, its teams or cnames,
//! or any plan or pool, invalidates here once its change is committed. Some
//! changes are patched in instead of read again:
//! - an app's lock taken or released: a fresh view is kept with its lock as
//!   it now is;
//! - the desired state recorded (versions only) and the routes stored: the
//!   written fields are set in a fresh view, if no other change reached the
//!   cache while the write ran (else the view is dropped);
//! - a write to the proxy table: only the host lookups are forgotten (views
//!   do not show the table).
//!
//! On PostgreSQL, several torii processes share the database, so triggers
//! (migrations 0012, 0032) NOTIFY `torii_app_views_2` with the app's name
//! (or `*`) and the writing process's origin in the writing transaction, and
//! every process listens, skipping its own (applied, or patched in, when it
//! wrote); until the listener is connected, and whenever it loses its
//! connection, the cache is bypassed and emptied, because notifications may
//! have been missed. SQLite belongs to one serving process (`serve` holds a
//! lock file beside the database).
//!
//! A reader remembers the generation before it reads the database and may
//! insert only if no invalidation happened since, so a read that raced a
//! write can never put the old row back after the write's invalidation.
//!
//! Once the app list has been read whole, the cache knows every app: an
//! invalidated app stays listed as stale (a created app appears as stale),
//! and the list reads only the stale ones again.
//!
//! Only read-only answers use the cache; operations that change an app read
//! the database under the app's lock.

use super::{AppView, ProxyEntry};
use super::routers::RouterRecord;
use std::collections::{BTreeMap, HashMap};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// Entries kept at most; a full cache starts over (cheap, and rare).
const MAX_ENTRIES: usize = 100_000;
/// Payloads "<app or *> <origin>" (migration 0032).
pub(super) const CHANNEL: &str = "torii_app_views_2";

pub(super) struct ViewCache {
    inner: Mutex<Inner>,
    /// False while invalidations from other processes may be missed.
    trusted: AtomicBool,
    /// This process's name on the notifications its writes cause.
    origin: String,
}

#[derive(Default)]
struct Inner {
    views: BTreeMap<String, Slot>,
    /// `views` names every app (fresh or stale), so the list can be served
    /// from it.
    complete: bool,
    generation: u64,
    /// The dynamic routers, once read (emptied with everything else).
    routers: Option<Arc<Vec<RouterRecord>>>,
    /// What each looked-up host name points at in the proxy table (`None`:
    /// nothing); emptied by any change to any app, since a host may have moved.
    hosts: HashMap<String, Option<Arc<ProxyEntry>>>,
}

/// Host lookups kept at most.
const MAX_HOSTS: usize = 100_000;

#[derive(Clone)]
pub(super) enum Slot {
    Fresh(Arc<AppView>),
    /// The app changed (or was just created, or removed): read it again.
    Stale,
}

impl ViewCache {
    pub(super) fn new(trusted: bool) -> ViewCache {
        let origin = format!("{:016x}", rand::random::<u64>());
        ViewCache { inner: Mutex::new(Inner::default()), trusted: AtomicBool::new(trusted), origin }
    }

    /// This process's origin (hex), set on its PostgreSQL connections.
    pub(super) fn origin(&self) -> &str {
        &self.origin
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, Inner> {
        self.inner.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn trusted(&self) -> bool {
        self.trusted.load(Ordering::Acquire)
    }

    pub(super) fn get(&self, name: &str) -> Option<Arc<AppView>> {
        if !self.trusted() {
            return None;
        }
        match self.lock().views.get(name) {
            Some(Slot::Fresh(view)) => Some(view.clone()),
            _ => None,
        }
    }

    /// The generation to hand to `insert` or `install` after reading the database.
    pub(super) fn generation(&self) -> u64 {
        self.lock().generation
    }

    /// Keeps what the database said of `name` (`None`: no such app), unless
    /// something was invalidated since `read_at`.
    pub(super) fn insert(&self, read_at: u64, name: &str, view: Option<Arc<AppView>>) {
        if !self.trusted() {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != read_at {
            return;
        }
        match view {
            Some(view) => {
                if inner.views.len() >= MAX_ENTRIES {
                    inner.views.clear();
                    inner.complete = false;
                }
                inner.views.insert(name.to_string(), Slot::Fresh(view));
            }
            None => {
                inner.views.remove(name);
            }
        }
    }

    /// Every app, by name, when the cache knows them all.
    pub(super) fn all(&self) -> Option<Vec<(String, Slot)>> {
        if !self.trusted() {
            return None;
        }
        let inner = self.lock();
        inner.complete.then(|| inner.views.iter().map(|(k, v)| (k.clone(), v.clone())).collect())
    }

    /// Replaces the cache with every app, read at `read_at`.
    pub(super) fn install(&self, read_at: u64, views: &[Arc<AppView>]) {
        if !self.trusted() || views.len() >= MAX_ENTRIES {
            return;
        }
        let mut inner = self.lock();
        if inner.generation != read_at {
            return;
        }
        inner.views = views.iter().map(|v| (v.app.name.clone(), Slot::Fresh(v.clone()))).collect();
        inner.complete = true;
    }

    pub(super) fn routers(&self) -> Option<Arc<Vec<RouterRecord>>> {
        if !self.trusted() {
            return None;
        }
        self.lock().routers.clone()
    }

    pub(super) fn install_routers(&self, read_at: u64, routers: Arc<Vec<RouterRecord>>) {
        let mut inner = self.lock();
        if self.trusted() && inner.generation == read_at {
            inner.routers = Some(routers);
        }
    }

    /// What `host` points at, when known: `Some(None)` means nothing.
    pub(super) fn host(&self, host: &str) -> Option<Option<Arc<ProxyEntry>>> {
        if !self.trusted() {
            return None;
        }
        self.lock().hosts.get(host).cloned()
    }

    pub(super) fn insert_host(&self, read_at: u64, host: &str, entry: Option<Arc<ProxyEntry>>) {
        let mut inner = self.lock();
        if self.trusted() && inner.generation == read_at {
            if inner.hosts.len() >= MAX_HOSTS {
                inner.hosts.clear();
            }
            inner.hosts.insert(host.to_string(), entry);
        }
    }

    pub(super) fn invalidate(&self, name: &str) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.hosts.clear();
        if inner.complete {
            inner.views.insert(name.to_string(), Slot::Stale);
        } else {
            inner.views.remove(name);
        }
    }

    pub(super) fn clear(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.views.clear();
        inner.complete = false;
        inner.routers = None;
        inner.hosts.clear();
    }

    /// Invalidates `name` when the returned guard drops: at the end of the
    /// writing method, after its commit (or its failure, which is harmless).
    pub(super) fn stale<'a>(&'a self, name: &'a str) -> Stale<'a> {
        Stale { cache: self, scope: Scope::App(name), since: self.generation(), patch: None }
    }

    /// Empties the cache when the guard drops (plan, pool and team changes).
    pub(super) fn stale_all(&self) -> Stale<'_> {
        Stale { cache: self, scope: Scope::All, since: 0, patch: None }
    }

    /// Forgets every host lookup when the guard drops (a write to the proxy
    /// table: any host may have moved). The app views do not show the
    /// table, so they stay.
    pub(super) fn stale_hosts(&self) -> Stale<'_> {
        Stale { cache: self, scope: Scope::Hosts, since: 0, patch: None }
    }

    fn forget_hosts(&self) {
        let mut inner = self.lock();
        inner.generation += 1;
        inner.hosts.clear();
    }

    /// `app`'s lock was taken by `event` (`held`) or released by it: a
    /// fresh view of `app` is kept, showing the lock as it now is, instead of
    /// being read again (every locked operation would otherwise cost two
    /// reads of the whole view). A release only clears the lock it shows:
    /// the next holder's take may have been patched in first.
    fn patch_lock(&self, app: &str, event: &str, held: bool) {
        let mut inner = self.lock();
        inner.generation += 1;
        if let Some(Slot::Fresh(view)) = inner.views.get_mut(app) {
            let lock_event = if held {
                Some(event.to_string())
            } else if view.lock_event.as_deref() == Some(event) {
                None
            } else {
                return;
            };
            Arc::make_mut(view).lock_event = lock_event;
        }
    }

    /// Applies `edit` (what a committed write changed) to `app`'s fresh
    /// view, if nothing else reached the cache since `since`, when the write
    /// began: the view was then what the database held before the write, so
    /// the edited view is what it holds after. Otherwise the view is dropped.
    fn patch_view(&self, app: &str, since: u64, edit: Edit<'_>) {
        let mut inner = self.lock();
        if inner.generation != since {
            drop(inner);
            return self.invalidate(app);
        }
        inner.generation += 1;
        if let Some(Slot::Fresh(view)) = inner.views.get_mut(app) {
            edit(Arc::make_mut(view));
        }
    }

    fn set_trusted(&self, trusted: bool) {
        if !trusted {
            self.trusted.store(false, Ordering::Release);
            self.clear();
        } else {
            self.clear();
            self.trusted.store(true, Ordering::Release);
        }
    }

    /// Applies one notification, "<app or *> <origin>"; this process's own
    /// are skipped: each of its writes changed the cache when it committed
    /// (patched views included, which the notification would drop again).
    fn notified(&self, payload: &str) {
        let (name, origin) = payload.rsplit_once(' ').unwrap_or((payload, ""));
        if origin == self.origin {
            return;
        }
        if name == "*" { self.clear() } else { self.invalidate(name) }
    }
}

#[must_use = "the cache is invalidated when the guard drops"]
pub(super) struct Stale<'a> {
    cache: &'a ViewCache,
    scope: Scope<'a>,
    /// The generation when the write began.
    since: u64,
    /// Set once the write committed: what it changed, patched into the
    /// app's view instead of dropping it.
    patch: Option<Patch<'a>>,
}

type Edit<'a> = Box<dyn FnOnce(&mut AppView) + Send + 'a>;

enum Patch<'a> {
    /// The lock is now held by the event (`true`), or released by it.
    Lock(String, bool),
    /// The view's fields the write set.
    View(Edit<'a>),
    /// The write wrote nothing after all (rolled back): the view stands.
    Unchanged,
}

enum Scope<'a> {
    App(&'a str),
    All,
    Hosts,
}

impl<'a> Stale<'a> {
    /// The write committed and `event` now holds the app's lock.
    pub(super) fn locked(mut self, event: &str) {
        self.patch = Some(Patch::Lock(event.to_string(), true));
    }

    /// The write committed and `event` no longer holds the app's lock.
    pub(super) fn unlocked(mut self, event: &str) {
        self.patch = Some(Patch::Lock(event.to_string(), false));
    }

    /// The write was rolled back: nothing to drop or patch.
    pub(super) fn unchanged(mut self) {
        self.patch = Some(Patch::Unchanged);
    }

    /// The write committed, and `edit` makes the app's view what it wrote
    /// (applied only if no other change came between; see `patch_view`).
    pub(super) fn patched(mut self, edit: impl FnOnce(&mut AppView) + Send + 'a) {
        self.patch = Some(Patch::View(Box::new(edit)));
    }
}

impl Drop for Stale<'_> {
    fn drop(&mut self) {
        match (&self.scope, self.patch.take()) {
            (Scope::App(name), Some(Patch::Lock(event, held))) => self.cache.patch_lock(name, &event, held),
            (Scope::App(name), Some(Patch::View(edit))) => self.cache.patch_view(name, self.since, edit),
            (Scope::App(name), None) => self.cache.invalidate(name),
            (Scope::App(_), Some(Patch::Unchanged)) => {}
            (Scope::All, _) => self.cache.clear(),
            (Scope::Hosts, _) => self.cache.forget_hosts(),
        }
    }
}

/// Listens for invalidations from every process sharing a PostgreSQL
/// database, for as long as the returned guard lives.
pub(super) fn listen(url: String, cache: Arc<ViewCache>) -> ListenerGuard {
    let task = tokio::spawn(async move {
        loop {
            match sqlx::postgres::PgListener::connect(&url).await {
                Ok(mut listener) => {
                    if let Err(e) = listener.listen(CHANNEL).await {
                        tracing::warn!(error = %e, "app view cache: LISTEN failed; cache bypassed");
                    } else {
                        cache.set_trusted(true);
                        loop {
                            match listener.try_recv().await {
                                Ok(Some(n)) => cache.notified(n.payload()),
                                // The connection dropped: whatever was sent meanwhile is lost.
                                Ok(None) => {
                                    cache.set_trusted(false);
                                    break;
                                }
                                Err(e) => {
                                    tracing::warn!(error = %e, "app view cache: listener failed; cache bypassed");
                                    break;
                                }
                            }
                        }
                    }
                }
                Err(e) => tracing::warn!(error = %e, "app view cache: cannot listen; cache bypassed"),
            }
            cache.set_trusted(false);
            tokio::time::sleep(Duration::from_secs(1)).await;
        }
    });
    ListenerGuard(task)
}

pub(super) struct ListenerGuard(tokio::task::JoinHandle<()>);

impl ListenerGuard {
    pub(super) fn stop(&self) {
        self.0.abort();
    }
}

impl Drop for ListenerGuard {
    fn drop(&mut self) {
        self.0.abort();
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AppRecord;

    fn view(name: &str) -> Arc<AppView> {
        Arc::new(AppView {
            app: AppRecord { name: name.into(), ..Default::default() },
            plan: None,
            provisioner: None,
            lock_event: None,
            versions: vec![],
            env: vec![],
            routers: vec![],
            certificates: vec![],
            routes: vec![],
            binds: vec![],
            volume_binds: vec![],
            from_binds: Default::default(),
        })
    }

    #[test]
    fn a_read_that_raced_an_invalidation_is_not_kept() {
        let cache = ViewCache::new(true);
        let read_at = cache.generation();
        cache.invalidate("a");
        cache.insert(read_at, "a", Some(view("a")));
        assert!(cache.get("a").is_none());
        let read_at = cache.generation();
        cache.insert(read_at, "a", Some(view("a")));
        assert!(cache.get("a").is_some());
        cache.notified("* 0123456789abcdef");
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn notifications_of_other_processes_apply_and_its_own_are_skipped() {
        let cache = ViewCache::new(true);
        let own = cache.origin().to_string();
        let fresh = |name: &str| {
            let read_at = cache.generation();
            cache.insert(read_at, name, Some(view(name)));
            assert!(cache.get(name).is_some());
        };
        fresh("a");
        fresh("b");
        // Its own change to `a` (a patched lock, say) stays as patched.
        cache.notified(&format!("a {own}"));
        cache.notified(&format!("* {own}"));
        assert!(cache.get("a").is_some() && cache.get("b").is_some());
        // Another process's, or a writer with no origin (psql), applies.
        cache.notified("a 00000000000000ff");
        assert!(cache.get("a").is_none() && cache.get("b").is_some());
        cache.notified("b ");
        assert!(cache.get("b").is_none());
        fresh("a");
        cache.notified("* 00000000000000ff");
        assert!(cache.get("a").is_none());
    }

    #[test]
    fn proxy_hosts_and_routers_go_with_any_change() {
        let entry = |app: &str| Some(Arc::new(ProxyEntry { app: app.into(), backends: vec![] }));
        let cache = ViewCache::new(true);
        let read_at = cache.generation();
        cache.insert_host(read_at, "www.a.com", entry("a"));
        cache.insert_host(read_at, "www.none.com", None);
        cache.install_routers(read_at, Arc::new(vec![]));
        assert_eq!(cache.host("www.a.com"), Some(entry("a")));
        assert_eq!(cache.host("www.none.com"), Some(None));
        // Any app may have taken the host.
        cache.invalidate("b");
        assert_eq!(cache.host("www.none.com"), None);
        assert!(cache.routers().is_some());
        let read_at = cache.generation();
        cache.invalidate("b");
        cache.insert_host(read_at, "www.a.com", entry("a"));
        assert_eq!(cache.host("www.a.com"), None, "a raced read is not kept");
        cache.clear();
        assert!(cache.routers().is_none());
    }

    #[test]
    fn a_proxy_write_forgets_the_hosts_and_keeps_the_views() {
        let cache = ViewCache::new(true);
        let read_at = cache.generation();
        cache.insert(read_at, "a", Some(view("a")));
        cache.insert_host(read_at, "a.apps.test", Some(Arc::new(ProxyEntry { app: "a".into(), backends: vec![] })));
        let before_write = cache.generation();
        drop(cache.stale_hosts());
        assert_eq!(cache.host("a.apps.test"), None);
        assert!(cache.get("a").is_some());
        cache.insert_host(before_write, "a.apps.test", None);
        assert_eq!(cache.host("a.apps.test"), None, "a raced read is not kept");
    }

    #[test]
    fn a_lock_taken_or_released_is_patched_into_a_fresh_view() {
        let cache = ViewCache::new(true);
        let lock = |cache: &ViewCache| cache.get("a").map(|v| v.lock_event.clone());
        let read_at = cache.generation();
        cache.insert(read_at, "a", Some(view("a")));
        let before_lock = cache.generation();
        cache.stale("a").locked("e1");
        assert_eq!(lock(&cache), Some(Some("e1".into())));
        // A read from before the lock cannot put the unlocked view back.
        cache.insert(before_lock, "a", Some(view("a")));
        assert_eq!(lock(&cache), Some(Some("e1".into())));
        // The next holder's take patched in before the previous release:
        // that release leaves the new holder shown.
        cache.stale("a").locked("e2");
        cache.stale("a").unlocked("e1");
        assert_eq!(lock(&cache), Some(Some("e2".into())));
        cache.stale("a").unlocked("e2");
        assert_eq!(lock(&cache), Some(None));
        // A write that failed (its guard dropped unpatched) drops the view,
        // and a patch does not bring back a view that is not cached.
        drop(cache.stale("a"));
        assert_eq!(lock(&cache), None);
        cache.stale("a").locked("e3");
        assert_eq!(lock(&cache), None);
    }

    #[test]
    fn a_write_patches_a_fresh_view_only_when_nothing_came_between() {
        let cache = ViewCache::new(true);
        let units = |cache: &ViewCache| cache.get("a").map(|v| v.routes.iter().map(|r| r.units).collect::<Vec<_>>());
        let route = |units| super::super::RouteRecord { version: 1, process: "web".into(), units, weight: 100, addresses: vec![] };
        let read_at = cache.generation();
        cache.insert(read_at, "a", Some(view("a")));
        let write = cache.stale("a");
        write.patched(move |v| v.routes = vec![route(2)]);
        assert_eq!(units(&cache), Some(vec![2]));
        // Another change reached the cache while the write ran: the view may
        // hold it or not, so it is read again.
        let write = cache.stale("a");
        cache.invalidate("b");
        write.patched(move |v| v.routes = vec![route(3)]);
        assert_eq!(units(&cache), None);
        // A rolled-back write leaves the view as it is.
        let read_at = cache.generation();
        cache.insert(read_at, "a", Some(view("a")));
        cache.stale("a").unchanged();
        assert_eq!(units(&cache), Some(vec![]));
        cache.invalidate("a");
        // No view to patch: nothing is made up.
        cache.stale("a").patched(move |v| v.routes = vec![route(4)]);
        assert_eq!(units(&cache), None);
    }

    #[test]
    fn a_complete_cache_lists_new_and_changed_apps_as_stale() {
        let cache = ViewCache::new(true);
        assert!(cache.all().is_none());
        let read_at = cache.generation();
        cache.install(read_at, &[view("a"), view("b")]);
        cache.invalidate("c");
        cache.invalidate("a");
        let all = cache.all().unwrap();
        let names: Vec<_> = all.iter().map(|(n, s)| (n.as_str(), matches!(s, Slot::Fresh(_)))).collect();
        assert_eq!(names, [("a", false), ("b", true), ("c", false)]);
        // A removed app read again is gone.
        let read_at = cache.generation();
        cache.insert(read_at, "c", None);
        assert_eq!(cache.all().unwrap().len(), 2);
        cache.clear();
        assert!(cache.all().is_none());
    }

    #[test]
    fn an_untrusted_cache_answers_nothing() {
        let cache = ViewCache::new(false);
        let read_at = cache.generation();
        cache.insert(read_at, "a", Some(view("a")));
        assert!(cache.get("a").is_none());
        cache.install(read_at, &[view("b")]);
        assert!(cache.all().is_none());
    }
}
