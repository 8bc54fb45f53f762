//! Waking a sleeping app on its first request. The data plane asks; the
//! host converges (the app's sleeping processes are started through
//! [`super::converge`], under the app's lock, as an `app.wake` event), and
//! the provisioner decides what starting means (the wasm one loads code
//! on demand, the docker one starts the containers).
//!
//! Two ways, by what the provisioner routes:
//! - a sleeping process it does not route (docker: its containers are
//!   stopped) is woken before the request goes on ([`wake`]): one wake per
//!   app at a time, requests arriving meanwhile wait for it;
//! - a sleeping process it still routes (wasm: the code loads on demand) is
//!   served at once, and its wake recorded beside the request ([`beside`]):
//!   one background wake per app, holding a claim on the app (see
//!   `events::claims`) from before the request is answered until the wake
//!   ends, so this process's reads of the app and operations on it wait for
//!   it: a client that got its answer sees the app started, never a 409.

use super::{Quiet, change, converge};
use crate::events::claims::Claim;
use crate::events::{Allowed, EventError, EventSpec, Owner, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{ProcessStatus, VersionRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

/// The event kind of a wake.
pub const WAKE: &str = "app.wake";

/// How long after a background wake failed no other is tried for the app
/// (its requests are served meanwhile; each would record a failed wake).
const RETRY_AFTER: Duration = Duration::from_secs(5);

/// How often, at least, a wake looks again at an app another operation holds.
const LOCKED_RETRY: Duration = Duration::from_millis(50);

/// The apps being woken.
pub struct Wakes {
    /// One gate per app being woken before its request goes on.
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
    /// Apps with a background wake: running (`None`), or failed at.
    background: Mutex<HashMap<String, Option<Instant>>>,
    /// Where background wakes run: the process's main runtime, not the data
    /// plane worker that served the request.
    runtime: tokio::runtime::Handle,
}

impl Default for Wakes {
    /// Wakes run on the runtime this is made on.
    fn default() -> Wakes {
        Wakes { gates: Default::default(), background: Default::default(), runtime: tokio::runtime::Handle::current() }
    }
}

/// Whether a routable one of `versions` has a sleeping process.
pub fn asleep(versions: &[VersionRecord]) -> bool {
    versions.iter().filter(|v| v.routable).any(|v| v.processes.iter().any(|p| p.status == ProcessStatus::Asleep))
}

impl Wakes {
    fn gate(&self, app: &str) -> Arc<tokio::sync::Mutex<()>> {
        self.gates.lock().unwrap().entry(app.to_string()).or_default().clone()
    }

    fn forget(&self, app: &str, gate: &Arc<tokio::sync::Mutex<()>>) {
        let mut gates = self.gates.lock().unwrap();
        // Only this holder and the map hold it: nobody waits behind.
        if Arc::strong_count(gate) <= 2 {
            gates.remove(app);
        }
    }

    /// Takes the app's background turn: none runs, and none failed lately.
    fn begin_background(&self, app: &str) -> bool {
        let mut background = self.background.lock().unwrap();
        match background.get(app) {
            Some(None) => false,
            Some(Some(failed)) if failed.elapsed() < RETRY_AFTER => false,
            _ => {
                background.insert(app.to_string(), None);
                true
            }
        }
    }

    fn end_background(&self, app: &str, failed: bool) {
        let mut background = self.background.lock().unwrap();
        if failed {
            background.insert(app.to_string(), Some(Instant::now()));
        } else {
            background.remove(app);
        }
        // Failures of apps gone, or long past, are not kept.
        if background.len() > 64 {
            background.retain(|_, failed| failed.is_none_or(|at| at.elapsed() < RETRY_AFTER));
        }
    }
}

/// Records the wake of `app`, whose sleeping process the data plane is
/// serving at once: the `app.wake` converge runs in the background unless
/// one already runs for the app (or failed in the last [`RETRY_AFTER`]).
/// The app is claimed before this returns, so reads and operations that
/// come after the request's answer wait for the wake.
pub fn beside(server: &Arc<Server>, app: &str) {
    if !server.wakes.begin_background(app) {
        return;
    }
    let Some(claim) = server.events.claims.claim(&Target::new("app", app)) else {
        // Only a background wake claims an app, and it gives its turn back
        // after its claim: not expected, but then that wake is the one.
        server.wakes.end_background(app, false);
        return;
    };
    let (task, app) = (server.clone(), app.to_string());
    server.wakes.runtime.spawn(async move {
        let server = task;
        let deadline = Instant::now() + Duration::from_millis(server.config.apps.wake_timeout_ms);
        let result = wake_now(&server, &app, Some(claim), Some(deadline)).await;
        if let Err(e) = &result {
            tracing::warn!(app = %app, error = %e, "the wake of an app served while asleep failed");
        }
        server.wakes.end_background(&app, result.is_err());
    });
}

/// Wakes `app` if it sleeps; returns once it is awake (or was already).
/// An operation holding the app's lock is waited for.
pub async fn wake(server: &Arc<Server>, app: &str) -> Result<(), String> {
    let gate = server.wakes.gate(app);
    let result = {
        let _turn = gate.lock().await;
        // The request waiting bounds it.
        wake_now(server, app, None, None).await
    };
    server.wakes.forget(app, &gate);
    result
}

/// Wakes `app` if it sleeps, under `claim` if there is one: the claim goes
/// as soon as another operation is found holding the app (that operation
/// decides what the app does; nobody waits for it through the claim). An
/// app still held at `deadline` is left as it is.
async fn wake_now(server: &Arc<Server>, app: &str, mut claim: Option<Claim>, deadline: Option<Instant>) -> Result<(), String> {
    loop {
        // The cached view (kept fresh across lock changes) tells whether
        // there is anything to do; converge reads the app again under its lock.
        let view = server.store.app_view(app).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("App {app} not found."))?;
        if !asleep(&view.versions) {
            return Ok(());
        }
        let spec = EventSpec {
            target: Target::new("app", app),
            kind: WAKE.into(),
            internal: true,
            owner: Owner::Internal,
            source_ip: String::new(),
            allowed: Allowed::new("app.read.events", vec![Context::new(ContextType::App, app)]),
            allowed_cancel: None,
            cancelable: false,
            start_custom: serde_json::json!({"app": app}),
            lock: true,
        };
        // Made before the attempt, so a release right after it is not missed.
        let released = server.events.released.notified();
        let started = match &claim {
            Some(claim) => server.events.start_claimed(spec, claim).await,
            None => server.events.start(spec).await,
        };
        match started {
            Ok(event) => {
                let result = converge(server, app, &Quiet, |d| {
                    change::set_status(d, "", "", ProcessStatus::Started, Some(ProcessStatus::Asleep));
                    Ok(())
                })
                .await
                .map(|_| ())
                .map_err(|e| e.message);
                return event.done(result).await;
            }
            // An operation holds the app: it may wake it, or not; look again.
            Err(EventError::Locked(holder)) => {
                claim = None;
                if deadline.is_some_and(|d| Instant::now() + LOCKED_RETRY > d) {
                    return Err(format!("event locked: {holder}"));
                }
                // At once when this process releases a lock, else after a while.
                let _ = tokio::time::timeout(LOCKED_RETRY, released).await;
            }
            Err(e) => return Err(e.to_string()),
        }
    }
}
