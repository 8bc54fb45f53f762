//! The embedded router's data plane: app traffic on `[router] listen`.
//!
//! A request is routed by its Host: `<app>.<router domain>`, or a cname of an
//! app. The app's routable versions share the traffic by weight; a WASM
//! version runs in the app runtime with a fresh instance per request. The
//! route comes from the app view cache, so a deploy, an env change or a new
//! cname takes effect on the next request, in every torii process.

pub mod logs;

use crate::runtime::{ResponseBody, plain_text as plain};
use crate::runtime::catalog::invocation;
use crate::server::Server;
use crate::store::{AppView, VersionRecord};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::Semaphore;

/// Units are concurrency slots: a version with N units runs at most N
/// requests at once; more wait up to `[apps] queue_timeout_ms`, then get 503.
#[derive(Default)]
struct Slots {
    by_version: Mutex<HashMap<(String, i64), Arc<UnitSlots>>>,
}

/// The units of one version: a permit per unit, and which unit numbers are free.
struct UnitSlots {
    units: i64,
    permits: Arc<Semaphore>,
    free: Mutex<Vec<i64>>,
}

/// A unit serving one request; its number goes back when dropped.
struct Unit {
    slots: Arc<UnitSlots>,
    number: i64,
    _permit: tokio::sync::OwnedSemaphorePermit,
}

impl Drop for Unit {
    fn drop(&mut self) {
        self.slots.free.lock().unwrap().push(self.number);
    }
}

impl Slots {
    /// The units of `app`'s `version` (replaced when the unit count changed;
    /// requests holding the old ones finish on them).
    fn of(&self, app: &str, version: i64, units: i64) -> Arc<UnitSlots> {
        let mut map = self.by_version.lock().unwrap();
        let key = (app.to_string(), version);
        match map.get(&key) {
            Some(slots) if slots.units == units => slots.clone(),
            _ => {
                let slots = Arc::new(UnitSlots {
                    units,
                    permits: Arc::new(Semaphore::new(usize::try_from(units).unwrap_or(0))),
                    free: Mutex::new((0..units).rev().collect()),
                });
                map.insert(key, slots.clone());
                slots
            }
        }
    }
}

impl UnitSlots {
    /// Waits up to `queue` for a free unit.
    async fn take(self: &Arc<Self>, queue: Duration) -> Option<Unit> {
        let permit = tokio::time::timeout(queue, self.permits.clone().acquire_owned()).await.ok()?.ok()?;
        let number = self.free.lock().unwrap().pop()?;
        Some(Unit { slots: self.clone(), number, _permit: permit })
    }
}

/// Accepts app traffic on `listener` until the returned task is aborted.
pub fn serve(server: Arc<Server>, listener: TcpListener) -> tokio::task::JoinHandle<()> {
    let slots = Arc::new(Slots::default());
    let logs = logs::LogBatcher::start(Arc::downgrade(&server));
    tokio::spawn(async move {
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(accepted) => accepted,
                Err(e) => {
                    tracing::warn!(error = %e, "router: accept failed");
                    tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                    continue;
                }
            };
            let _ = stream.set_nodelay(true);
            let (server, slots, logs) = (server.clone(), slots.clone(), logs.clone());
            tokio::spawn(async move {
                let service = service_fn(move |req| {
                    let (server, slots, logs) = (server.clone(), slots.clone(), logs.clone());
                    async move { Ok::<_, std::convert::Infallible>(route(&server, &slots, &logs, req).await) }
                });
                let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
            });
        }
    })
}

async fn route(server: &Server, slots: &Slots, logs: &logs::LogBatcher, req: hyper::Request<Incoming>) -> hyper::Response<ResponseBody> {
    let Some(host) = request_host(&req) else {
        return plain(400, "the request names no host");
    };
    let app = match host.strip_suffix(&server.config.router.domain).and_then(|h| h.strip_suffix('.')) {
        Some(app) if !app.contains('.') => app.to_string(),
        _ => match server.store.cname_owner(&host).await {
            Ok(Some(app)) => app,
            Ok(None) => return plain(404, &format!("no app answers at {host}")),
            Err(e) => return plain(500, &format!("torii could not look up {host}: {e}")),
        },
    };
    let view = match server.store.app_view(&app).await {
        Ok(Some(view)) => view,
        Ok(None) => return plain(404, &format!("no app answers at {host}")),
        Err(e) => return plain(500, &format!("torii could not look up app {app}: {e}")),
    };
    match view.app.status.as_str() {
        "stopped" => return plain(503, &format!("app {app} is stopped: start it with `tsuru app start -a {app}`")),
        "asleep" => {
            // The first request wakes the app.
            if let Err(e) = server.store.set_app_status(&app, "started").await {
                return plain(500, &format!("torii could not wake app {app}: {e}"));
            }
        }
        _ => {}
    }
    let Some(version) = pick(&view, rand::random::<f64>()) else {
        return plain(503, &format!("app {app} has no deployed version yet: deploy one with `tsuru app deploy`"));
    };
    if version.units <= 0 {
        return plain(503, &format!("app {app} has no units: add some with `tsuru unit add 1 -a {app}`"));
    }
    let queue = Duration::from_millis(server.config.apps.queue_timeout_ms);
    let unit = match slots.of(&app, version.version, version.units).take(queue).await {
        Some(unit) => unit,
        None => {
            return plain(503, &format!(
                "app {app} is busy: its {} unit(s) are all serving; add units with `tsuru unit add -a {app}`",
                version.units
            ));
        }
    };
    let code = match server.apps.code(&version.digest).await {
        Ok(code) => code,
        Err(e) => return plain(500, &format!("app {app} version {} cannot run: {e}", version.version)),
    };
    let mut invocation = invocation(&view);
    invocation.output = Some(log_sink(logs.clone(), &app, unit_name(&app, version, unit.number)));
    server.apps.runtime.handle(&code, invocation, req).await
}

/// A unit's name, as app info lists it.
pub fn unit_name(app: &str, version: &VersionRecord, number: i64) -> String {
    let process = version.processes.first().map(String::as_str).unwrap_or("web");
    format!("{app}-{process}-v{}-{number}", version.version)
}

/// Sends what an instance printed to the app's log, one entry per line,
/// source `app`, under the unit's name (written in batches).
fn log_sink(logs: logs::LogBatcher, app: &str, unit: String) -> crate::runtime::OutputSink {
    let app = app.to_string();
    Arc::new(move |stdout: Bytes, stderr: Bytes| {
        let now = crate::store::now_millis();
        for bytes in [stdout, stderr] {
            for line in String::from_utf8_lossy(&bytes).lines().filter(|l| !l.is_empty()) {
                logs.push((app.clone(), now, line.to_string(), unit.clone()));
            }
        }
    })
}

/// The host a request is for, lower case, without port.
fn request_host<B>(req: &hyper::Request<B>) -> Option<String> {
    let raw = req.headers().get(hyper::header::HOST).and_then(|h| h.to_str().ok()).or_else(|| req.uri().host())?;
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The routable version a request goes to, `roll` in [0, 1) choosing among
/// them by weight.
fn pick(view: &AppView, roll: f64) -> Option<&VersionRecord> {
    let routable: Vec<&VersionRecord> = view.versions.iter().filter(|v| v.routable && v.weight > 0).collect();
    let total: i64 = routable.iter().map(|v| v.weight).sum();
    let mut point = roll * total as f64;
    for v in &routable {
        point -= v.weight as f64;
        if point < 0.0 {
            return Some(v);
        }
    }
    routable.last().copied()
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::store::AppRecord;

    fn version(n: i64, weight: i64, routable: bool) -> VersionRecord {
        VersionRecord {
            app: "a".into(),
            version: n,
            digest: String::new(),
            processes: vec![],
            routable,
            weight,
            deploy_event: String::new(),
            disabled_reason: String::new(),
            created_at: 0,
            units: 1,
        }
    }

    #[test]
    fn weights_split_the_traffic() {
        let view = AppView {
            app: AppRecord::default(),
            plan: None,
            provisioner: None,
            lock_event: None,
            versions: vec![version(1, 90, true), version(2, 10, true), version(3, 100, false)],
            env: vec![],
        };
        assert_eq!(pick(&view, 0.0).unwrap().version, 1);
        assert_eq!(pick(&view, 0.899).unwrap().version, 1);
        assert_eq!(pick(&view, 0.9).unwrap().version, 2);
        assert_eq!(pick(&view, 0.999).unwrap().version, 2);
        let none = AppView { versions: vec![version(3, 100, false)], ..view };
        assert!(pick(&none, 0.5).is_none());
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        let req = hyper::Request::get("/").header("host", "Web.Torii.Localhost:8888").body(()).unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("web.torii.localhost"));
    }
}
