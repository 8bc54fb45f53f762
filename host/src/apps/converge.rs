//! The converge path: record the desired state → the provisioner applies it
//! → store the routes it answers → tell the routers. Each step forward that
//! succeeded has its step back, run in reverse order when a later step
//! fails, so a failed change leaves the previous state recorded and running
//! (tsuru's action pipeline, with the undo written next to each action).
//! Routers come last and do not undo anything: a router that fails is
//! reported and told again at the next change or start, and never fails the
//! provisioner's work.

use super::{Progress, provisioner_of};
use crate::error::{ApiError, ApiResult};
use crate::limits::check_units;
use crate::plugin::provisioner::{AppState, ProvisionError, Provisioner, Route, app_state};
use crate::server::Server;
use crate::store::{AppView, Desired, RouteRecord, units_in_use};

/// A step forward that succeeded, and so has its step back.
enum Done<'a> {
    /// Versions were made again for the provisioner (see
    /// [`crate::deploy::remake`]): what was stored for them is forgotten.
    Stored(Vec<crate::deploy::Stored>),
    /// This state was recorded over `before`: `before` is recorded again.
    Recorded(Box<Desired>),
    /// `by` applied the new state: it applies `before` again, or, when the
    /// app moved to it from another provisioner, lets go of the app.
    Applied { by: &'a Provisioner, moved_in: bool },
    /// The app's old provisioner let go of it (a move): it applies `before` again.
    LeftOld { by: &'a Provisioner },
    /// The routes were stored: `before`'s are stored again.
    Routed,
}

/// Changes `app` by `change` and makes it so; the state recorded after it.
/// `change` edits the desired state in memory (and refuses a change that
/// cannot be, which then changes nothing). The caller holds the app's lock.
pub async fn converge<F>(server: &Server, app: &str, out: &impl Progress, change: F) -> ApiResult<Desired>
where
    F: FnOnce(&mut Desired) -> ApiResult<()>,
{
    let not_found = || ApiError::not_found(format!("App {app} not found."));
    let before = server.store.desired(app).await?.ok_or_else(not_found)?;
    let mut after = plan(server, &before, change)?;
    // What the provisioner is told besides the desired state (env, binds,
    // plan), read once: the caller's lock keeps it as it is.
    let view = server.store.app_view(app).await?.ok_or_else(not_found)?;
    let from = provisioner_of(server, &before.app).await?;
    let to = if after.app.pool == before.app.pool { from } else { provisioner_of(server, &after.app).await? };
    let mut done = Vec::new();
    match forward(server, &view, &before, &mut after, from, to, out, &mut done).await {
        Ok(()) => {
            if let Err(e) = server.routing.sync(app).await {
                tracing::warn!(app, error = %e, "converge: the routers were not told");
                out.line(format!(" ---> the routers were not told of the change ({e}); they are told again at the next change or start\n")).await;
            }
            Ok(after)
        }
        Err(e) => {
            backward(server, &view, &before, done, out).await;
            Err(e)
        }
    }
}

/// `change` made to a copy of `before` and checked against the app's bounds:
/// what [`converge`] would record. Handlers call it before they answer, so
/// bad input gets a plain 4xx and changes nothing.
pub fn plan<F>(server: &Server, before: &Desired, change: F) -> ApiResult<Desired>
where
    F: FnOnce(&mut Desired) -> ApiResult<()>,
{
    let mut after = before.clone();
    change(&mut after)?;
    let app = &before.app.name;
    check_units(app, before.app.quota_limit, server.config.apps.max_units, units_in_use(&before.versions), units_in_use(&after.versions))?;
    Ok(after)
}

/// Applies `app`'s recorded state again (after its provisioner moved or
/// replaced units on its own: node moves, rebalancing, healing, a killed
/// unit), so the routes follow.
pub async fn refresh(server: &Server, app: &str, out: &impl Progress) -> ApiResult<()> {
    converge(server, app, out, |_| Ok(())).await.map(|_| ())
}

#[allow(clippy::too_many_arguments)]
async fn forward<'a>(
    server: &Server,
    view: &AppView,
    before: &Desired,
    after: &mut Desired,
    from: &'a Provisioner,
    to: &'a Provisioner,
    out: &impl Progress,
    done: &mut Vec<Done<'a>>,
) -> ApiResult<()> {
    let app = after.app.name.clone();
    let was_live: Vec<i64> = before.versions.iter().filter(|v| live(v)).map(|v| v.version).collect();
    let moved = !std::ptr::eq(from, to);
    // What goes live on `to` (all of it after a move; else what was not
    // live before: a rollback, a version made routable) must be of a kind
    // `to` runs: a version made for another kind of provisioner is made
    // again from its upload. What runs already is left as it runs.
    let (mut remade, mut stored) = (Vec::new(), Vec::new());
    let mut refused = None;
    for v in after.versions.iter_mut().filter(|v| live(v) && (moved || !was_live.contains(&v.version))) {
        match crate::deploy::remake(server, to, &after.app, v, out).await {
            Ok(Some(bytes)) => {
                remade.push(v.version);
                stored.push(bytes);
            }
            Ok(None) => {}
            Err(e) => {
                refused = Some(unmovable(e));
                break;
            }
        }
    }
    done.push(Done::Stored(stored));
    if let Some(e) = refused {
        return Err(e);
    }
    // `to` must be able to run what goes live and is new to it (an image on
    // its nodes, a component it can load) before anything is recorded.
    let new_to_it: Vec<i64> = if moved { after.versions.iter().filter(|v| live(v)).map(|v| v.version).collect() } else { remade };
    if !new_to_it.is_empty() {
        let state = state_of(server, view, after).await?;
        for v in state.versions.iter().filter(|v| new_to_it.contains(&i64::from(v.version))) {
            out.line(format!(" ---> provisioner {:?} prepares version {} of the app\n", to.name(), v.version)).await;
            for line in to.prepare(state.clone(), v.clone()).await.map_err(|e| failed(to, e))? {
                out.line(line).await;
            }
        }
    }
    server.store.record_desired(before, after).await?;
    done.push(Done::Recorded(Box::new(after.clone())));

    let applied = to.apply(state_of(server, view, after).await?).await.map_err(|e| failed(to, e))?;
    done.push(Done::Applied { by: to, moved_in: moved });
    for line in applied.lines {
        out.line(line).await;
    }
    if moved {
        out.line(format!(" ---> provisioner {:?} lets go of the app (it moved to {:?})\n", from.name(), to.name())).await;
        from.destroy(&app).await.map_err(|e| failed(from, e))?;
        done.push(Done::LeftOld { by: from });
    }

    // The cluster not answering is the backend's failure (503), not the request's.
    let nodes = cluster_nodes(server, to, &after.app.pool, &applied.routes)
        .await
        .map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, format!("provisioner {:?}: the cluster's nodes: {e}", to.name())))?;
    let routes = routes_of(after, applied.routes, &nodes).map_err(|e| ApiError::bad_request(format!("provisioner {:?}: {e}", to.name())))?;
    server.store.set_routes(&app, &routes).await?;
    done.push(Done::Routed);
    after.routes = routes;
    Ok(())
}

/// Takes the steps of `done` back, last first; a step back that fails is
/// reported and the others still run.
async fn backward(server: &Server, view: &AppView, before: &Desired, done: Vec<Done<'_>>, out: &impl Progress) {
    let app = before.app.name.as_str();
    let mut all_back = true;
    for step in done.into_iter().rev() {
        let result: Result<(), String> = match step {
            // Undone last: kept when a step back failed, since the new state
            // (which refers to them) may still be recorded.
            Done::Stored(stored) => {
                if all_back {
                    for bytes in stored {
                        bytes.forget(server).await;
                    }
                }
                Ok(())
            }
            Done::Routed => server.store.set_routes(app, &before.routes).await.map_err(|e| e.to_string()),
            Done::LeftOld { by } | Done::Applied { by, moved_in: false } => match state_of(server, view, before).await {
                Ok(state) => by.apply(state).await.map(|_| ()).map_err(|e| format!("provisioner {:?}: {e}", by.name())),
                Err(e) => Err(e.message),
            },
            Done::Applied { by, moved_in: true } => by.destroy(app).await.map_err(|e| format!("provisioner {:?}: {e}", by.name())),
            Done::Recorded(recorded) => server.store.record_desired(&recorded, before).await.map_err(|e| e.to_string()),
        };
        if let Err(e) = result {
            all_back = false;
            tracing::warn!(app, error = %e, "converge: a step back failed");
            out.line(format!(" ---> the app could not be fully put back as it was: {e}\n")).await;
        }
    }
}

/// A version the provisioner must be able to run: a routable one (the
/// others keep their unit counts for a rollback, but nothing runs them).
fn live(v: &crate::store::VersionRecord) -> bool {
    v.routable
}

/// A version that cannot be made for the provisioner: the store's and the
/// blob store's failures are the server's, the rest the request's.
fn unmovable(e: crate::deploy::DeployError) -> ApiError {
    use crate::deploy::DeployError;
    match e {
        DeployError::Store(e) => e.into(),
        DeployError::Blob(e) => ApiError::internal(format!("cannot store the component: {e}")),
        e => ApiError::bad_request(e.to_string()),
    }
}

/// A provisioner's failure, its status kept and the provisioner named.
fn failed(p: &Provisioner, e: ProvisionError) -> ApiError {
    ApiError::new(e.status(), format!("provisioner {:?}: {e}", p.name()))
}

/// What the provisioner is told: `d` with the app's env (from `view`) and `d`'s plan.
async fn state_of(server: &Server, view: &AppView, d: &Desired) -> ApiResult<AppState> {
    let mut view = view.clone();
    if view.app.plan != d.app.plan {
        view.plan = server.store.plan(&d.app.plan).await?;
    }
    view.app = d.app.clone();
    view.versions = d.versions.clone();
    Ok(app_state(&view))
}

/// Where routes of `p`'s apps in `pool` may send traffic besides loopback:
/// the nodes of `p`'s Swarm cluster serving the pool, looked up only when a
/// route names an address off loopback.
async fn cluster_nodes(server: &Server, p: &Provisioner, pool: &str, routes: &[Route]) -> Result<Vec<std::net::IpAddr>, String> {
    if !server.config.uses_clusters(p.name()) || !routes.iter().any(|r| crate::plugin::capabilities::off_loopback(&r.addresses)) {
        return Ok(Vec::new());
    }
    crate::plugin::capabilities::swarm::node_ips(&server.docker, &server.store, p.name(), pool).await
}

/// The routes a provisioner answered, checked: versions and processes the
/// app has, HTTP backends only on loopback or on `nodes`.
fn routes_of(d: &Desired, routes: Vec<Route>, nodes: &[std::net::IpAddr]) -> Result<Vec<RouteRecord>, String> {
    let mut records = Vec::with_capacity(routes.len());
    for r in routes {
        let Some(v) = d.version(i64::from(r.version)) else {
            return Err(format!("app {:?} has no version {}", d.app.name, r.version));
        };
        if !v.has_process(&r.process) {
            return Err(format!("version {} of app {:?} has no process {:?}", r.version, d.app.name, r.process));
        }
        crate::plugin::capabilities::check_backends(&r.addresses, nodes)?;
        records.push(RouteRecord {
            version: v.version,
            process: r.process,
            units: i64::from(r.units),
            weight: i64::from(r.weight),
            addresses: r.addresses,
        });
    }
    Ok(records)
}
