//! The embedded router's data plane: app traffic on `[router] listen`.
//!
//! A request is routed by its Host through the proxy table the router
//! plugins write (`<app>.<router domain>`, an app's cnames). The app's
//! routable versions share the traffic by weight; a WASM version runs in the
//! app runtime with a fresh instance per request, a version with HTTP
//! backends (127.0.0.1 addresses) is proxied to one of them. Entries and app
//! views come from the view cache, so a deploy, an env change or a new cname
//! takes effect on the next request, in every torii process. Connections are
//! served on the data plane's own threads (`workers`), one thread each, first
//! on the byte-level path (`h1`), which proxies plain requests for apps with
//! HTTP backends and hands anything else to hyper and [`answer`].

mod forward;
mod h1;
mod idle;
pub mod logs;
mod tls;
pub mod units;
mod workers;

use crate::runtime::{ResponseBody, plain_text as plain};
use crate::runtime::catalog::invocation;
use crate::server::Server;
use crate::store::{AppView, ProcessStatus, ProxyBackend, ProxyEntry};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;
use tokio::sync::watch;

/// What every connection of the data plane shares.
#[derive(Clone)]
struct Plane {
    server: Arc<Server>,
    logs: logs::LogBatcher,
    /// Closed when the data plane stops: its connections end.
    stopped: watch::Receiver<()>,
}

/// A running data plane; [`DataPlane::stop`] ends it.
pub struct DataPlane {
    accepting: tokio::task::JoinHandle<()>,
    logs: logs::LogBatcher,
}

impl DataPlane {
    /// Stops accepting and ends every connection (requests still running
    /// are cut), then writes the app output still waiting for the app log.
    pub async fn stop(self, server: &Arc<Server>) {
        self.accepting.abort();
        let _ = self.accepting.await;
        self.logs.drain(server).await;
    }
}

/// Accepts app traffic on `listener` (HTTP) and `tls_listener` (HTTPS, the
/// certificate chosen by SNI), serving each connection on one of the
/// process's data-plane workers, until stopped.
pub fn serve(server: Arc<Server>, listener: TcpListener, tls_listener: Option<TcpListener>) -> DataPlane {
    let workers = workers::Workers::get(server.config.router_workers());
    let logs = logs::LogBatcher::start(Arc::downgrade(&server));
    let (stop, stopped) = watch::channel(());
    let plane = Plane { server, logs: logs.clone(), stopped };
    let accepting = tokio::spawn(async move {
        let _stop = stop;
        let certs = Arc::new(tls::Certificates::default());
        let plain = accept_loop(listener, workers, plane.clone(), None);
        match tls_listener {
            Some(l) => {
                tokio::join!(plain, accept_loop(l, workers, plane, Some(certs)));
            }
            None => plain.await,
        }
    });
    DataPlane { accepting, logs }
}

async fn accept_loop(listener: TcpListener, workers: &workers::Workers, plane: Plane, tls: Option<Arc<tls::Certificates>>) {
    let admission = crate::listener::Admission::new(plane.server.config.router_limits());
    loop {
        let (stream, peer) = match listener.accept().await {
            Ok(accepted) => accepted,
            Err(e) => {
                tracing::warn!(error = %e, "router: accept failed");
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        // Past [router] max_connections a connection is closed at once.
        let Some(slot) = admission.slot() else { continue };
        let _ = stream.set_nodelay(true);
        // Handed over unregistered; the worker registers it with its own reactor.
        let stream = match stream.into_std() {
            Ok(stream) => stream,
            Err(e) => {
                tracing::warn!(error = %e, "router: cannot hand a connection over");
                continue;
            }
        };
        let (plane, tls, admission) = (plane.clone(), tls.clone(), admission.clone());
        workers.spawn(async move {
            let Ok(stream) = tokio::net::TcpStream::from_std(stream) else { return };
            let stream = admission.watch(stream, slot);
            let mut stopped = plane.stopped.clone();
            let connection = async {
                match tls {
                    None => h1::serve(plane, &admission, stream, forward::Origin { peer, https: false }).await,
                    Some(certs) => {
                        if let Some(stream) = tls::handshake(&plane.server, &certs, stream).await {
                            h1::serve(plane, &admission, stream, forward::Origin { peer, https: true }).await;
                        }
                    }
                }
            };
            tokio::select! {
                _ = connection => {}
                _ = stopped.changed() => {}
            }
        });
    }
}

/// Serves a connection with hyper: every request goes through [`answer`].
async fn serve_hyper<S>(plane: Plane, admission: &crate::listener::Admission, stream: S, origin: forward::Origin)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let plane = plane.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&plane, origin, req).await) }
    });
    let _ = admission.http1().serve_connection(TokioIo::new(stream), service).await;
}

/// Which app a host name is for, and what it points at: the proxy table's
/// entry (written by the router plugins) for the name, else for the
/// wildcard one level up (`*.example.com`), and the app's view.
pub(crate) async fn resolve(server: &Server, host: &str) -> Result<Option<(Arc<AppView>, Arc<ProxyEntry>)>, String> {
    let lookup = |name: String| async move { server.store.proxy_host(&name).await.map_err(|e| format!("torii could not look up {name}: {e}")) };
    let entry = match lookup(host.to_string()).await? {
        Some(entry) => entry,
        None => match host.split_once('.') {
            Some((_, parent)) if parent.contains('.') => match lookup(format!("*.{parent}")).await? {
                Some(entry) => entry,
                None => return Ok(None),
            },
            _ => return Ok(None),
        },
    };
    match server.store.app_view(&entry.app).await {
        Ok(Some(view)) => Ok(Some((view, entry))),
        Ok(None) => Ok(None),
        Err(e) => Err(format!("torii could not look up app {}: {e}", entry.app)),
    }
}

/// Serves one request, counting it for its app (status and latency to the
/// response's headers) once the app is known.
async fn route(plane: &Plane, origin: forward::Origin, req: hyper::Request<Incoming>) -> hyper::Response<ResponseBody> {
    let started = std::time::Instant::now();
    let mut traffic = None;
    let response = answer(plane, origin, req, &mut traffic).await;
    if let Some(traffic) = traffic {
        traffic.answered(response.status().as_u16(), started.elapsed());
    }
    response
}

async fn answer(
    plane: &Plane,
    origin: forward::Origin,
    req: hyper::Request<Incoming>,
    traffic: &mut Option<Arc<crate::metrics::AppTraffic>>,
) -> hyper::Response<ResponseBody> {
    let server = &plane.server;
    let Some(host) = request_host(&req) else {
        return plain(400, "the request names no host");
    };
    let found = match resolve(server, &host).await {
        Ok(Some(found)) => found,
        Ok(None) => return plain(404, &format!("no app answers at {host}")),
        Err(e) => return plain(500, &e),
    };
    *traffic = Some(server.metrics.app(&found.0.app.name));
    let Chosen { view, entry, index } = match choose(server, &host, found).await {
        Ok(chosen) => chosen,
        Err((status, why)) => return plain(status, &why),
    };
    let app = view.app.name.as_str();
    let backend = &entry.backends[index];
    if !backend.addresses.is_empty() {
        return forward::forward(app, backend, origin, req).await;
    }
    let Some(route) = view.routes.iter().find(|r| r.version == backend.version) else {
        return plain(503, &format!("app {app} serves version {} which its provisioner no longer runs: rebuild its routes", backend.version));
    };
    let Some(version) = view.versions.iter().find(|v| v.version == route.version) else {
        return plain(503, &format!("app {app} serves version {} which no longer exists: rebuild its routes", route.version));
    };
    if route.units <= 0 {
        return plain(503, &format!("app {app} has no units: add some with `tsuru unit add 1 -a {app}`"));
    }
    let queue = Duration::from_millis(server.config.apps.queue_timeout_ms);
    let unit = match server.units.slots(app, &route.process, route.version, route.units).take(queue).await {
        Some(unit) => unit,
        None => {
            return plain(503, &format!(
                "app {app} is busy: its {} unit(s) are all serving; add units with `tsuru unit add -a {app}`",
                route.units
            ));
        }
    };
    let code = match server.apps.code(&version.digest).await {
        Ok(code) => code,
        Err(e) => return plain(500, &format!("app {app} version {} cannot run: {e}", version.version)),
    };
    // Registered before the request runs, so a kill during it is seen.
    let (control, name) = (unit.control_arc(), unit.name().clone());
    let killed = control.killed();
    let mut invocation = invocation(&view);
    invocation.output = Some(log_sink(plane.logs.clone(), &unit));
    invocation.app = Some(unit.app().clone());
    invocation.outbound = server.app_outbound.of(app, &view.app.pool, version, view.bound_origins(), server.config.pool_outbound(&view.app.pool));
    // The unit stays taken until the instance ends, even when the instance
    // goes on streaming after its answer.
    invocation.hold = Some(Arc::new(unit));
    let response = tokio::select! {
        response = server.apps.runtime.handle(&code, invocation, req) => response,
        _ = killed => plain(503, &format!("unit {name} was killed while serving this request")),
    };
    // The answer is written once the requests already waiting on this
    // thread have run too, so its writes go out back to back: a client
    // waiting for several answers is woken once for all of them, not once
    // each (a wake-up cost more CPU than the rest of the write: 15-20 %
    // more requests/s at 32 connections). It waits a turn of the thread at
    // most, past the other requests ready in it.
    tokio::task::yield_now().await;
    response
}

/// Where a request goes: its app's view, the router entry it was routed by,
/// and the entry's backend chosen (its index).
pub(crate) struct Chosen {
    pub view: Arc<AppView>,
    pub entry: Arc<ProxyEntry>,
    pub index: usize,
}

/// Chooses the backend of `found` (what `host` resolved to) a request goes
/// to, by weight. A sleeping app none of whose routed processes can serve is
/// woken first, and an app between two steps of a change is looked at
/// again, until the wake timeout; a sleeping process its provisioner still
/// routes is served at once, its wake recorded beside the request (claimed
/// before the answer). `Err` is the status and text to answer with.
pub(crate) async fn choose(server: &Arc<Server>, host: &str, found: (Arc<AppView>, Arc<ProxyEntry>)) -> Result<Chosen, (u16, String)> {
    let (mut view, mut entry) = found;
    let settle_by = tokio::time::Instant::now() + Duration::from_millis(server.config.apps.wake_timeout_ms);
    let (mut wakes_left, mut looked_again) = (MAX_WAKES, false);
    let index = loop {
        let picked = pick(&entry.backends, rand::random::<f64>());
        if let Some(i) = picked
            && runs(&view, &entry.backends[i])
        {
            break i;
        }
        let app = view.app.name.as_str();
        let state = serving_state(&view);
        if matches!(state, Serving::Asleep) && wakes_left > 0 {
            wakes_left -= 1;
            match tokio::time::timeout_at(settle_by, crate::apps::wake::wake(server, app)).await {
                Ok(Ok(())) => {}
                Ok(Err(e)) => return Err((503, format!("app {app} could not be woken: {e}"))),
                Err(_) => {
                    let waited = server.config.apps.wake_timeout_ms;
                    return Err((503, format!("app {app} is still waking up after {waited} ms: try again shortly")));
                }
            }
        } else if mid_change(picked, &state) && (view.lock_event.is_some() || !looked_again) && tokio::time::Instant::now() + SETTLE < settle_by {
            // An operation holds the app: its next step is waited for. Else
            // the entry and the view may have been read on either side of a
            // change's last step: one fresh look.
            if view.lock_event.is_some() {
                tokio::time::sleep(SETTLE).await;
            } else {
                looked_again = true;
            }
        } else {
            return Err(match (picked, state) {
                (Some(i), _) => (503, format!(
                    "app {app} serves version {} which its provisioner no longer runs: rebuild its routes",
                    entry.backends[i].version
                )),
                (None, Serving::Stopped) => (503, format!("app {app} is stopped: start it with `tsuru app start -a {app}`")),
                (None, Serving::Asleep | Serving::Running) => {
                    (503, format!("app {app} serves no version: deploy one with `tsuru app deploy`, or add units"))
                }
                (None, Serving::Undeployed) => (503, format!("app {app} has no deployed version yet: deploy one with `tsuru app deploy`")),
            });
        }
        (view, entry) = match resolve(server, host).await {
            Ok(Some(found)) => found,
            Ok(None) => return Err((404, format!("no app answers at {host}"))),
            Err(e) => return Err((500, e)),
        };
    };
    if routed_asleep(&view, entry.backends[index].version) {
        crate::apps::wake::beside(server, &view.app.name);
    }
    Ok(Chosen { view, entry, index })
}

/// Wakes one request may ask for: an app put to sleep again while the
/// request waited is woken again, a few times at most.
const MAX_WAKES: u32 = 3;

/// How long a request waits before it looks again at an app between two
/// steps of a change.
const SETTLE: Duration = Duration::from_millis(10);

/// Whether the request can go to `backend`: one with addresses is proxied,
/// one without runs in the app runtime under the app's route for its version.
fn runs(view: &AppView, backend: &ProxyBackend) -> bool {
    !backend.addresses.is_empty() || view.routes.iter().any(|r| r.version == backend.version)
}

/// Whether `version`'s routed process sleeps: its provisioner serves it on
/// demand (the wasm one loads the code at the first request).
fn routed_asleep(view: &AppView, version: i64) -> bool {
    let Some(v) = view.versions.iter().find(|v| v.version == version) else { return false };
    view.routes
        .iter()
        .filter(|r| r.version == version)
        .any(|r| v.processes.iter().any(|p| p.name == r.process && p.status == ProcessStatus::Asleep))
}

/// Whether what the request found may be a change caught between its steps
/// (every change writes the routes, then the router entry): the entry names
/// a version the routes do not hold, or names nothing while processes run.
/// Stopped and undeployed apps answer at once.
fn mid_change(picked: Option<usize>, state: &Serving) -> bool {
    picked.is_some() || matches!(state, Serving::Running)
}

/// Why an app's router entry has nothing to route to.
enum Serving {
    /// No routable version.
    Undeployed,
    /// A routable version has a sleeping process its provisioner does not
    /// route: a request wakes it, then goes on.
    Asleep,
    /// Its routable versions' processes are stopped.
    Stopped,
    /// Processes run, but none serves (no units of the serving process).
    Running,
}

fn serving_state(view: &AppView) -> Serving {
    let processes = || view.versions.iter().filter(|v| v.routable).flat_map(|v| &v.processes);
    if !view.versions.iter().any(|v| v.routable) {
        Serving::Undeployed
    } else if processes().any(|p| p.status == ProcessStatus::Asleep) {
        Serving::Asleep
    } else if processes().all(|p| p.status == ProcessStatus::Stopped) {
        Serving::Stopped
    } else {
        Serving::Running
    }
}

/// Sends what an instance printed to the app's log, one entry per line,
/// source `app`, under the unit's name (written in batches).
fn log_sink(logs: logs::LogBatcher, unit: &units::Unit) -> crate::runtime::OutputSink {
    let (app, unit) = (unit.app().clone(), unit.name().clone());
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
    host_name(raw)
}

/// The host name of a `Host` value, lower case, without port.
fn host_name(raw: &str) -> Option<String> {
    let host = match raw.rsplit_once(':') {
        Some((h, port)) if port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => raw,
    };
    (!host.is_empty()).then(|| host.to_ascii_lowercase())
}

/// The backend a request goes to (its index), `roll` in [0, 1) choosing
/// among them by weight (the router plugin already applied any canary share).
fn pick(backends: &[ProxyBackend], roll: f64) -> Option<usize> {
    let total: u64 = backends.iter().map(|b| u64::from(b.weight)).sum();
    if total == 0 {
        return None;
    }
    let mut point = (roll * total as f64) as u64;
    for (i, b) in backends.iter().enumerate() {
        let w = u64::from(b.weight);
        if point < w {
            return Some(i);
        }
        point -= w;
    }
    backends.iter().rposition(|b| b.weight > 0)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn backend(version: i64, weight: u32) -> ProxyBackend {
        ProxyBackend { version, addresses: vec![], weight }
    }

    #[test]
    fn weights_split_the_traffic() {
        let backends = [backend(1, 90), backend(2, 10), backend(3, 0)];
        let version = |roll: f64| backends[pick(&backends, roll).unwrap()].version;
        assert_eq!(version(0.0), 1);
        assert_eq!(version(0.899), 1);
        assert_eq!(version(0.9), 2);
        assert_eq!(version(0.999), 2);
        assert!(pick(&[backend(3, 0)], 0.5).is_none());
        assert!(pick(&[], 0.5).is_none());
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        let req = hyper::Request::get("/").header("host", "Web.Torii.Localhost:8888").body(()).unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("web.torii.localhost"));
    }
}
