//! Waking a sleeping app on its first request. The data plane asks; the
//! host converges (the app's sleeping processes are started through
//! [`super::converge`], under the app's lock, as an `app.wake` event), and
//! the provisioner decides what starting means (the wasm one loads code
//! on demand, the docker one starts the containers). One wake runs per app
//! at a time; requests arriving meanwhile wait for it.

use super::{Quiet, change, converge};
use crate::events::{Allowed, EventError, EventSpec, Owner, Target};
use crate::rbac::{Context, ContextType};
use crate::server::Server;
use crate::store::{ProcessStatus, VersionRecord};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The event kind of a wake.
pub const WAKE: &str = "app.wake";

/// One gate per app being woken.
#[derive(Default)]
pub struct Wakes {
    gates: Mutex<HashMap<String, Arc<tokio::sync::Mutex<()>>>>,
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
}

/// Wakes `app` if it sleeps; returns once it is awake (or was already).
/// An operation holding the app's lock is waited for.
pub async fn wake(server: &Arc<Server>, app: &str) -> Result<(), String> {
    let gate = server.wakes.gate(app);
    let result = {
        let _turn = gate.lock().await;
        wake_now(server, app).await
    };
    server.wakes.forget(app, &gate);
    result
}

async fn wake_now(server: &Arc<Server>, app: &str) -> Result<(), String> {
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
        match server.events.start(spec).await {
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
            Err(EventError::Locked(_)) => tokio::time::sleep(Duration::from_millis(50)).await,
            Err(e) => return Err(e.to_string()),
        }
    }
}
