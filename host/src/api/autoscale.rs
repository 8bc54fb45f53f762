//! `/1.9/apps/{app}/units/autoscale` (API-NOTES §2.5, §2.19): an app's
//! autoscale specs, one per process; `apps::autoscale` acts on them.

use super::apps::{AppTarget, app_contexts, app_event};
use super::events::request_data;
use super::params::Params;
use super::{AppState, Caller, ClientIp, Routes, empty, json};
use crate::apps::autoscale::parse_average_cpu;
use crate::apps::{Quiet, change, converge, provisioner_of};
use crate::error::{ApiError, ApiResult};
use crate::plugin::provisioner::{ProvisionError, Refusal, app_state};
use crate::server::Server;
use crate::store::{AppRecord, AutoscaleRecord, Desired, ProcessStatus};
use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::{IntoResponse, Response};
use serde::Serialize;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.9", Method::GET, "/apps/{app}/units/autoscale", info)
        .add("1.9", Method::POST, "/apps/{app}/units/autoscale", set)
        .add("1.9", Method::DELETE, "/apps/{app}/units/autoscale", remove)
}

#[derive(Serialize)]
pub(super) struct SpecJson {
    process: String,
    #[serde(rename = "minUnits")]
    min_units: i64,
    #[serde(rename = "maxUnits")]
    max_units: i64,
    #[serde(rename = "averageCPU")]
    average_cpu: String,
    version: i64,
}

pub(super) fn spec_json(r: &AutoscaleRecord) -> SpecJson {
    SpecJson { process: r.process.clone(), min_units: r.min_units, max_units: r.max_units, average_cpu: r.average_cpu.clone(), version: r.version }
}

/// `GET`: the specs, or `null` when the app has none (as tsuru answers).
async fn info(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget) -> ApiResult<Response> {
    caller.require("app.read", &app_contexts(&app))?;
    let specs: Vec<SpecJson> = server.store.autoscales(&app.name).await?.iter().map(spec_json).collect();
    if specs.is_empty() {
        let mut r = (StatusCode::OK, "null\n").into_response();
        r.headers_mut().insert(axum::http::header::CONTENT_TYPE, axum::http::HeaderValue::from_static("application/json"));
        return Ok(r);
    }
    Ok(json(StatusCode::OK, &specs))
}

fn invalid(why: impl std::fmt::Display) -> ApiError {
    ApiError::bad_request(format!("unable to validate autoscale spec: {why}"))
}

/// A whole number field; absent: 0.
fn count(params: &Params, name: &str) -> ApiResult<i64> {
    match params.field(name).filter(|v| !v.is_empty()) {
        None => Ok(0),
        Some(raw) => raw.trim().parse::<u32>().map(i64::from).map_err(|_| invalid(format!("{name} must be a whole number, not {raw:?}"))),
    }
}

/// The version and process a spec is about, checked against what the app runs.
fn target(d: &Desired, version: i64, process: &str) -> ApiResult<(i64, String)> {
    if version > 0 && d.version(version).is_none() {
        return Err(invalid(format!("invalid version {version} for app {:?}", d.app.name)));
    }
    let serving = if version > 0 { d.version(version) } else { d.routable().max_by_key(|v| v.version) };
    // Only processes the app runs: its specs are as many as its processes.
    let v = serving.ok_or_else(|| invalid(format!("app {:?} has no deployed version: deploy it first", d.app.name)))?;
    Ok((version, change::target_process(v, process)?))
}

/// Whether the app's units are measured by CPU (its provisioner reports
/// their usage) rather than by requests in flight.
async fn by_cpu(server: &Server, app: &AppRecord) -> ApiResult<bool> {
    let view = super::apps::view_of(server, &app.name).await?;
    match provisioner_of(server, app).await?.usage(app_state(&view)).await {
        Ok(_) => Ok(true),
        Err(ProvisionError::Refused(Refusal::Unsupported(_))) => Ok(false),
        Err(e) => Err(ApiError::from(e)),
    }
}

/// `POST`: sets a process's spec; its units move into the new bounds at once.
async fn set(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.unit.autoscale.add", &app_contexts(&app))?;
    let min_units = count(&params, "minUnits")?;
    let max_units = count(&params, "maxUnits")?;
    let version = count(&params, "version")?;
    let average_cpu = params.field("averageCPU").unwrap_or_default();
    let desired = server.store.desired(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    let (version, process) = target(&desired, version, &params.field("process").unwrap_or_default())?;
    let cpu = by_cpu(&server, &app).await?;
    if min_units == 0 && cpu {
        return Err(invalid("minimum units must be greater than 0"));
    }
    if max_units <= min_units {
        return Err(invalid("maximum units must be greater than minimum units"));
    }
    if app.quota_limit > 0 && max_units > app.quota_limit {
        return Err(invalid(format!("maximum units cannot be greater than the app's quota limit ({})", app.quota_limit)));
    }
    let most = i64::from(server.config.apps.max_units);
    if max_units > most {
        return Err(invalid(format!("maximum units cannot be greater than {most}")));
    }
    let percent = parse_average_cpu(&average_cpu).map_err(invalid)?;
    let plan_cpu = super::apps::view_of(&server, &app.name).await?.plan.as_ref().map_or(0, |p| p.cpumilli);
    if cpu && plan_cpu > 0 && !(20..=95).contains(&percent) {
        return Err(invalid(format!("the plan limits CPU to {plan_cpu}m: average CPU must be between 20% and 95% of it")));
    }
    if !cpu && percent > 100 {
        return Err(invalid("the app's units run one request each: average CPU is the share of units kept busy, at most 100%"));
    }
    let spec = AutoscaleRecord { app: app.name.clone(), process, min_units, max_units, average_cpu, version };
    let data = request_data(&params, &[("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.update.unit.autoscale.add", &app, data).await?;
    let result = async {
        server.store.set_autoscale(&spec).await?;
        clamp(&server, &spec).await
    }
    .await;
    event.done(result.map(|()| empty(StatusCode::OK))).await
}

/// Brings a started process's units within its spec's bounds.
async fn clamp(server: &Server, spec: &AutoscaleRecord) -> ApiResult<()> {
    let Some(desired) = server.store.desired(&spec.app).await? else { return Ok(()) };
    let version = if spec.version > 0 { Some(spec.version) } else { desired.routable().map(|v| v.version).max() };
    let Some(version) = version else { return Ok(()) };
    let Some(p) = desired.version(version).and_then(|v| v.processes.iter().find(|p| p.name == spec.process)) else { return Ok(()) };
    if p.status != ProcessStatus::Started {
        return Ok(());
    }
    let units = p.units;
    let to = units.clamp(spec.min_units.max(1), spec.max_units);
    if to != units {
        let process = spec.process.clone();
        converge(server, &spec.app, &Quiet, |d| change::scale(d, version, &process, to - units).map(|_| ())).await?;
    }
    Ok(())
}

/// `DELETE ?process=`: the process keeps the units it has.
async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.unit.autoscale.remove", &app_contexts(&app))?;
    let desired = server.store.desired(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    let wanted = params.get("process").unwrap_or_default();
    let specs = server.store.autoscales(&app.name).await?;
    let process = if wanted.is_empty() { target(&desired, 0, "").map(|(_, p)| p).unwrap_or_default() } else { wanted };
    if !specs.iter().any(|s| s.process == process) {
        return Err(ApiError::not_found(format!("app {} has no autoscale for process {process:?}", app.name)));
    }
    let data = request_data(&params, &[("app", &app.name)]);
    let event = app_event(&server, &caller, &ip, "app.update.unit.autoscale.remove", &app, data).await?;
    let result = server.store.remove_autoscale(&app.name, &process).await.map(|_| empty(StatusCode::OK)).map_err(ApiError::from);
    event.done(result).await
}
