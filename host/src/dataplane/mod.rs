//! The embedded router's data plane: app traffic on `[router] listen`.
//!
//! A request is routed by its Host: `<app>.<router domain>`, or a cname of an
//! app. The app's routable versions share the traffic by weight; a WASM
//! version runs in the app runtime with a fresh instance per request. The
//! route comes from the app view cache, so a deploy, an env change or a new
//! cname takes effect on the next request, in every torii process.

pub mod logs;
mod tls;
pub mod units;

use crate::runtime::{ResponseBody, plain_text as plain};
use crate::runtime::catalog::invocation;
use crate::server::Server;
use crate::store::{AppView, RouteRecord};
use bytes::Bytes;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use std::sync::Arc;
use std::time::Duration;
use tokio::net::TcpListener;

/// What every connection of the data plane shares.
#[derive(Clone)]
struct Plane {
    server: Arc<Server>,
    logs: logs::LogBatcher,
}

/// Accepts app traffic on `listener` (HTTP) and `tls_listener` (HTTPS, the
/// certificate chosen by SNI) until the returned task is aborted.
pub fn serve(server: Arc<Server>, listener: TcpListener, tls_listener: Option<TcpListener>) -> tokio::task::JoinHandle<()> {
    let logs = logs::LogBatcher::start(Arc::downgrade(&server));
    let plane = Plane { server, logs };
    tokio::spawn(async move {
        let certs = Arc::new(tls::Certificates::default());
        let plain = accept_loop(listener, plane.clone(), None);
        match tls_listener {
            Some(l) => {
                tokio::join!(plain, accept_loop(l, plane, Some(certs)));
            }
            None => plain.await,
        }
    })
}

async fn accept_loop(listener: TcpListener, plane: Plane, tls: Option<Arc<tls::Certificates>>) {
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
        let plane = plane.clone();
        let tls = tls.clone();
        tokio::spawn(async move {
            match tls {
                None => serve_connection(plane, stream).await,
                Some(certs) => {
                    if let Some(stream) = tls::handshake(&plane.server, &certs, stream).await {
                        serve_connection(plane, stream).await;
                    }
                }
            }
        });
    }
}

async fn serve_connection<S>(plane: Plane, stream: S)
where
    S: tokio::io::AsyncRead + tokio::io::AsyncWrite + Unpin + Send + 'static,
{
    let service = service_fn(move |req| {
        let plane = plane.clone();
        async move { Ok::<_, std::convert::Infallible>(route(&plane.server, &plane.logs, req).await) }
    });
    let _ = hyper::server::conn::http1::Builder::new().serve_connection(TokioIo::new(stream), service).await;
}

/// Which app a host name is for, and through which of its routers: a
/// router's `<app>.<domain>` (the app must be linked to that router), or a
/// cname of the app (served by its main router).
pub(crate) async fn resolve(server: &Server, host: &str) -> Result<Option<(Arc<AppView>, String)>, String> {
    let by_domain = |domain: &str| host.strip_suffix(domain).and_then(|h| h.strip_suffix('.')).filter(|a| !a.contains('.')).map(str::to_string);
    let mut found = by_domain(&server.config.router.domain).map(|app| (app, crate::routers::EMBEDDED.to_string()));
    if found.is_none() {
        let dynamic = server.store.dynamic_routers().await.map_err(|e| format!("torii could not read the routers: {e}"))?;
        found = dynamic.iter().find_map(|r| by_domain(crate::routers::domain_of(r)?).map(|app| (app, r.name.clone())));
    }
    let (app, router) = match found {
        Some((app, router)) => (app, Some(router)),
        None => match server.store.cname_app(host).await {
            Ok(Some(app)) => (app, None),
            Ok(None) => return Ok(None),
            Err(e) => return Err(format!("torii could not look up {host}: {e}")),
        },
    };
    let view = match server.store.app_view(&app).await {
        Ok(Some(view)) => view,
        Ok(None) => return Ok(None),
        Err(e) => return Err(format!("torii could not look up app {app}: {e}")),
    };
    let router = match router {
        Some(r) if crate::routers::linked(&view, &r).is_some() => r,
        Some(_) => return Ok(None),
        None => match view.routers.first() {
            Some(main) => main.router.clone(),
            None => return Ok(None),
        },
    };
    Ok(Some((view, router)))
}

async fn route(server: &Server, logs: &logs::LogBatcher, req: hyper::Request<Incoming>) -> hyper::Response<ResponseBody> {
    let Some(host) = request_host(&req) else {
        return plain(400, "the request names no host");
    };
    let (view, router) = match resolve(server, &host).await {
        Ok(Some(found)) => found,
        Ok(None) => return plain(404, &format!("no app answers at {host}")),
        Err(e) => return plain(500, &e),
    };
    let app = view.app.name.clone();
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
    let canary = crate::routers::linked(&view, &router).and_then(crate::routers::canary);
    let Some(route) = pick(&view.routes, canary, rand::random::<f64>()) else {
        return plain(503, &format!("app {app} has no deployed version yet: deploy one with `tsuru app deploy`"));
    };
    let Some(version) = view.versions.iter().find(|v| v.version == route.version) else {
        return plain(503, &format!("app {app} serves version {} which no longer exists: rebuild its routes", route.version));
    };
    if route.units <= 0 {
        return plain(503, &format!("app {app} has no units: add some with `tsuru unit add 1 -a {app}`"));
    }
    let queue = Duration::from_millis(server.config.apps.queue_timeout_ms);
    let unit = match server.units.slots(&app, route.version, route.units).take(queue).await {
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
    let name = format!("{app}-{}-v{}-{}", route.process, route.version, unit.number);
    let control = server.units.control(&app, &name);
    // Registered before the request runs, so a kill during it is seen.
    let killed = control.killed();
    let mut invocation = invocation(&view);
    invocation.output = Some(log_sink(logs.clone(), &app, name.clone()));
    tokio::select! {
        response = server.apps.runtime.handle(&code, invocation, req) => response,
        _ = killed => plain(503, &format!("unit {name} was killed while serving this request")),
    }
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

/// The route a request goes to, `roll` in [0, 1) choosing among them by
/// weight. With a `canary` percentage and several routes, the newest version
/// gets that share and the others split the rest by weight.
fn pick(routes: &[RouteRecord], canary: Option<u32>, roll: f64) -> Option<&RouteRecord> {
    let live: Vec<&RouteRecord> = routes.iter().filter(|r| r.weight > 0).collect();
    let newest = live.iter().map(|r| r.version).max()?;
    let mut shares: Vec<(&RouteRecord, f64)> = match canary {
        Some(percent) if live.len() > 1 => {
            let others: i64 = live.iter().filter(|r| r.version != newest).map(|r| r.weight).sum();
            live.iter()
                .map(|r| {
                    let share = if r.version == newest {
                        f64::from(percent) / 100.0
                    } else {
                        (1.0 - f64::from(percent) / 100.0) * r.weight as f64 / others as f64
                    };
                    (*r, share)
                })
                .collect()
        }
        _ => {
            let total: i64 = live.iter().map(|r| r.weight).sum();
            live.iter().map(|r| (*r, r.weight as f64 / total as f64)).collect()
        }
    };
    shares.retain(|(_, share)| *share > 0.0);
    let mut point = roll;
    for (r, share) in &shares {
        point -= share;
        if point < 0.0 {
            return Some(r);
        }
    }
    shares.last().map(|(r, _)| *r)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn route(n: i64, weight: i64) -> RouteRecord {
        RouteRecord { version: n, process: "web".into(), units: 1, weight }
    }

    #[test]
    fn weights_split_the_traffic() {
        let routes = [route(1, 90), route(2, 10), route(3, 0)];
        assert_eq!(pick(&routes, None, 0.0).unwrap().version, 1);
        assert_eq!(pick(&routes, None, 0.899).unwrap().version, 1);
        assert_eq!(pick(&routes, None, 0.9).unwrap().version, 2);
        assert_eq!(pick(&routes, None, 0.999).unwrap().version, 2);
        assert!(pick(&[route(3, 0)], None, 0.5).is_none());
        assert!(pick(&[], None, 0.5).is_none());
    }

    #[test]
    fn a_canary_gives_the_newest_version_its_share() {
        let routes = [route(1, 1), route(2, 1), route(3, 1)];
        assert_eq!(pick(&routes, Some(10), 0.0).unwrap().version, 1);
        assert_eq!(pick(&routes, Some(10), 0.449).unwrap().version, 1);
        assert_eq!(pick(&routes, Some(10), 0.451).unwrap().version, 2);
        assert_eq!(pick(&routes, Some(10), 0.899).unwrap().version, 2);
        assert_eq!(pick(&routes, Some(10), 0.901).unwrap().version, 3);
        assert_eq!(pick(&routes, Some(0), 0.999).unwrap().version, 2, "canary 0 sends nothing to the newest");
        assert_eq!(pick(&routes, Some(100), 0.0).unwrap().version, 3);
        assert_eq!(pick(&[route(4, 1)], Some(0), 0.5).unwrap().version, 4, "a lone version takes everything");
    }

    #[test]
    fn hosts_lose_their_port_and_case() {
        let req = hyper::Request::get("/").header("host", "Web.Torii.Localhost:8888").body(()).unwrap();
        assert_eq!(request_host(&req).as_deref(), Some("web.torii.localhost"));
    }
}
