//! Binding an app to a service instance, and unbinding it: each a pipeline
//! of steps, each with its step back, so a failure leaves neither the
//! provider nor torii half-bound.
//!
//! Bind: the provider binds the app (and answers its variables) → the bind
//! is recorded (the app's env now holds the variables and
//! `TSURU_SERVICES`) → the app restarts through the converge path (unless
//! `noRestart`, or it has no units) → the provider binds each unit. A
//! restart that fails takes the bind back (recorded, then at the
//! provider) and restarts the app as it was.
//!
//! Unbind: the units are unbound → the bind is forgotten and the app
//! restarts without the variables → the provider unbinds the app. A
//! provider that fails puts the bind back (unless `force`).

use crate::apps::{Progress, env, restart};
use crate::error::{ApiError, ApiResult};
use crate::plugin::service_broker::{App, Requester, Unit};
use crate::server::Server;
use crate::store::{AppRecord, BindRecord, InstanceRecord};

use super::{Resolved, failure, instance, provider};

/// The app as a provider is told of it: its address on the main router
/// and its cnames.
pub fn app_of(server: &Server, app: &AppRecord, cnames: &[String]) -> App {
    let mut hosts = vec![format!("{}.{}", app.name, server.config.router.domain)];
    hosts.extend(cnames.iter().cloned());
    App { name: app.name.clone(), hosts, internal_hosts: Vec::new() }
}

/// The app's units as providers see them: id and address.
async fn units(server: &Server, app: &str) -> ApiResult<Vec<Unit>> {
    let Some(view) = server.store.app_view(app).await? else { return Ok(Vec::new()) };
    let provisioner = crate::apps::provisioner_of(server, &view.app).await?;
    let units = provisioner.units(crate::plugin::provisioner::app_state(&view)).await.map_err(|e| ApiError::internal(e.to_string()))?;
    Ok(units
        .into_iter()
        // Providers get the unit's host:port, as tsuru's unit-host.
        .map(|u| {
            let address = u.address.clone().unwrap_or_default();
            let host = address.strip_prefix("http://").or_else(|| address.strip_prefix("https://")).unwrap_or(&address).to_string();
            Unit { host, id: u.id }
        })
        .collect())
}

/// Bounds on what one bind gives an app (a value's is an env value's).
const MAX_BIND_VARS: usize = 100;
pub const MAX_DATA: usize = 64 << 10;

/// Refuses a provider's answer that would not make a valid env (a name
/// that is not one, or that is the platform's) or that is past the bounds.
fn check_binding(b: &crate::plugin::service_broker::Binding) -> ApiResult<()> {
    let bad = |why: String| ApiError::bad_request(format!("the service's answer to the bind was refused: {why}"));
    if b.env.len() > MAX_BIND_VARS {
        return Err(bad(format!("{} variables, more than the {MAX_BIND_VARS} a bind may give", b.env.len())));
    }
    for (name, value) in &b.env {
        if !env::valid_name(name) {
            return Err(bad(format!("{:?} is not a variable name", name.chars().take(64).collect::<String>())));
        }
        // The platform's own, and TSURU_SERVICES, which torii writes.
        if env::RESERVED.contains(&name.as_str()) || name == env::SERVICES {
            return Err(bad(format!("{name} is set by the platform")));
        }
        if value.len() > env::MAX_VALUE {
            return Err(bad(format!("the value of {name} is larger than {} bytes", env::MAX_VALUE)));
        }
    }
    if b.data.len() > MAX_DATA {
        return Err(bad(format!("what the broker keeps for the bind is larger than {MAX_DATA} bytes")));
    }
    Ok(())
}

pub struct BindRequest<'a> {
    pub app: &'a AppRecord,
    pub cnames: &'a [String],
    pub resolved: &'a Resolved,
    pub instance: &'a InstanceRecord,
    pub parameters: Vec<(String, String)>,
    pub no_restart: bool,
    pub who: Requester,
}

/// Binds; the names of the variables the app got.
pub async fn bind(server: &Server, req: BindRequest<'_>, out: &impl Progress) -> ApiResult<Vec<String>> {
    let (plugin, provider) = provider(server, req.resolved)?;
    let inst = instance(req.resolved, req.instance);
    let app = app_of(server, req.app, req.cnames);
    let binding = plugin.bind_app(provider.clone(), inst.clone(), app.clone(), req.parameters.clone(), req.who.clone()).await.map_err(failure)?;
    let refused = check_binding(&binding);
    let record = BindRecord {
        service: req.resolved.name.clone(),
        instance: req.instance.name.clone(),
        app: req.app.name.clone(),
        env: binding.env.clone(),
        data: binding.data.clone(),
    };
    let take_back_at_provider = || async {
        if let Err(e) = plugin.unbind_app(provider.clone(), inst.clone(), app.clone(), binding.data.clone(), req.who.clone()).await {
            tracing::warn!(app = %app.name, instance = %inst.name, error = %e, "bind: the provider's bind could not be taken back");
            out.line(format!(" ---> the service's bind could not be taken back: {e}\n")).await;
        }
    };
    if let Err(e) = refused {
        take_back_at_provider().await;
        return Err(e);
    }
    if let Err(e) = server.store.insert_bind(&record).await {
        take_back_at_provider().await;
        return Err(e.into());
    }
    if !binding.env.is_empty() {
        out.line(format!("---- Setting {} new environment variables ----\n", binding.env.len() + 1)).await;
    }
    // A bind that gives no variables changes nothing the app runs with.
    if !req.no_restart
        && !binding.env.is_empty()
        && let Err(e) = restart(server, &req.app.name, out).await
    {
        out.line(" ---> the app did not restart: the bind is taken back\n".into()).await;
        if let Err(e) = server.store.delete_bind(&record.service, &record.instance, &record.app).await {
            tracing::warn!(app = %app.name, error = %e, "bind: the recorded bind could not be taken back");
        }
        if let Err(e) = restart(server, &req.app.name, out).await {
            out.line(format!(" ---> the app could not be restarted as it was: {e}\n")).await;
        }
        take_back_at_provider().await;
        return Err(e);
    }
    if !req.resolved.disable_bind_unit() {
        for unit in units(server, &req.app.name).await.unwrap_or_default() {
            match plugin.bind_unit(provider.clone(), inst.clone(), app.clone(), unit.clone()).await {
                Ok(()) => {
                    let u = crate::store::UnitBind {
                        service: record.service.clone(),
                        instance: record.instance.clone(),
                        app: record.app.clone(),
                        unit: unit.id.clone(),
                        host: unit.host.clone(),
                    };
                    server.store.add_unit_bind(&u).await?;
                }
                // A unit the provider did not take is reported; the app's bind stands.
                Err(e) => out.line(format!(" ---> unit {} was not bound: {e}\n", unit.id)).await,
            }
        }
    }
    Ok(binding.env.into_iter().map(|(k, _)| k).collect())
}

pub struct UnbindRequest<'a> {
    pub app: &'a AppRecord,
    pub cnames: &'a [String],
    pub resolved: &'a Resolved,
    pub instance: &'a InstanceRecord,
    pub no_restart: bool,
    /// Forget the bind even when the provider fails.
    pub force: bool,
    pub who: Requester,
}

/// Unbinds (404 when the app is not bound to the instance).
pub async fn unbind(server: &Server, req: UnbindRequest<'_>, out: &impl Progress) -> ApiResult<()> {
    let (service, name) = (&req.resolved.name, &req.instance.name);
    let bound = server.store.binds_of_instance(service, name).await?;
    let Some(record) = bound.into_iter().find(|b| b.app == req.app.name) else {
        return Err(ApiError::bad_request(format!("instance {name:?} is not bound to the app {:?}", req.app.name)));
    };
    let (plugin, provider) = provider(server, req.resolved)?;
    let inst = instance(req.resolved, req.instance);
    let app = app_of(server, req.app, req.cnames);

    for u in server.store.unit_binds(service, name).await?.into_iter().filter(|u| u.app == req.app.name) {
        let unit = Unit { id: u.unit.clone(), host: u.host.clone() };
        match plugin.unbind_unit(provider.clone(), inst.clone(), app.clone(), unit).await {
            Ok(()) => server.store.remove_unit_bind(service, name, &u.app, &u.unit).await?,
            Err(e) if req.force => {
                out.line(format!(" ---> unit {} was not unbound at the service (forced): {e}\n", u.unit)).await;
                server.store.remove_unit_bind(service, name, &u.app, &u.unit).await?;
            }
            Err(e) => return Err(failure(e)),
        }
    }

    server.store.delete_bind(service, name, &req.app.name).await?;
    if !record.env.is_empty() {
        out.line(format!("---- Unsetting {} environment variables ----\n", record.env.len() + 1)).await;
    }
    if !req.no_restart
        && !record.env.is_empty()
        && let Err(e) = restart(server, &req.app.name, out).await
    {
        out.line(" ---> the app did not restart: the bind is put back\n".into()).await;
        server.store.insert_bind(&record).await?;
        let _ = restart(server, &req.app.name, out).await;
        return Err(e);
    }
    match plugin.unbind_app(provider, inst, app, record.data.clone(), req.who).await {
        Ok(()) => Ok(()),
        Err(e) if req.force => {
            out.line(format!(" ---> the service did not unbind the app (forced, the bind is forgotten): {e}\n")).await;
            Ok(())
        }
        Err(e) => {
            // The provider still holds the bind: so does torii.
            server.store.insert_bind(&record).await?;
            if !req.no_restart && !record.env.is_empty() {
                let _ = restart(server, &req.app.name, out).await;
            }
            Err(failure(e))
        }
    }
}

/// Tells the provider a removed app's bind is gone (the store forgets it
/// with the app).
pub async fn forget_app(server: &Server, app: &AppRecord, b: &BindRecord) -> ApiResult<()> {
    let resolved = super::resolve(server, &b.service).await?;
    let Some(i) = server.store.instance(&b.service, &b.instance).await? else { return Ok(()) };
    let (plugin, provider) = provider(server, &resolved)?;
    let who = Requester { user: String::new(), event: String::new() };
    plugin.unbind_app(provider, instance(&resolved, &i), app_of(server, app, &app.cnames), b.data.clone(), who).await.map_err(failure)
}
