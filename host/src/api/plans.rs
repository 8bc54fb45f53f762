//! Plans: list, create, remove.

use axum::extract::{Path, State};
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;

use super::events::{record, request_data};
use super::params::{Params, parse_bool};
use super::{AppState, Caller, ClientIp, Routes, empty, json_list, json_untyped};
use crate::error::{ApiError, ApiResult};
use crate::events::Target;
use crate::store::PlanRecord;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/plans", list)
        .add("1.0", Method::POST, "/plans", create)
        .add("1.0", Method::DELETE, "/plans/{name}", remove)
}

const MIN_MEMORY: i64 = 4 << 20;

#[derive(Serialize)]
struct OverrideJson {
    memory: Option<i64>,
    cpumilli: Option<i64>,
}

#[derive(Serialize)]
pub struct PlanJson {
    name: String,
    memory: i64,
    cpushare: i64,
    cpumilli: i64,
    #[serde(skip_serializing_if = "std::ops::Not::not")]
    default: bool,
    #[serde(rename = "override")]
    overrides: OverrideJson,
    /// The app's main router, when the plan is shown as part of an app.
    #[serde(skip_serializing_if = "Option::is_none")]
    router: Option<String>,
}

impl PlanJson {
    /// The plan as an app shows it: with the app's overrides (positive values only).
    pub fn with_overrides(mut self, memory: i64, cpumilli: i64) -> PlanJson {
        let positive = |n: i64| (n > 0).then_some(n);
        self.overrides = OverrideJson { memory: positive(memory), cpumilli: positive(cpumilli) };
        self
    }

    pub fn with_router(mut self, router: Option<&str>) -> PlanJson {
        self.router = router.map(str::to_string);
        self
    }
}

pub fn plan_json(p: &PlanRecord) -> PlanJson {
    PlanJson {
        name: p.name.clone(),
        memory: p.memory,
        cpushare: p.cpushare,
        cpumilli: p.cpumilli,
        default: p.default,
        overrides: OverrideJson { memory: None, cpumilli: None },
        router: None,
    }
}

/// Bytes from `1073741824`, `512M`, `1G`, `256Mi`, `1.5Gi`, `500k`: K/M/G/T
/// and Ki/Mi/Gi/Ti are binary, `k` is 1000 (Kubernetes quantities).
pub fn parse_memory(raw: &str) -> Option<i64> {
    let raw = raw.trim();
    let split = raw.find(|c: char| !(c.is_ascii_digit() || c == '.')).unwrap_or(raw.len());
    let (number, suffix) = raw.split_at(split);
    let number: f64 = number.parse().ok()?;
    let factor: f64 = match suffix {
        "" => 1.0,
        "k" => 1e3,
        "K" | "Ki" => 1024.0,
        "M" | "Mi" => 1024.0 * 1024.0,
        "G" | "Gi" => 1024.0 * 1024.0 * 1024.0,
        "T" | "Ti" => 1024.0 * 1024.0 * 1024.0 * 1024.0,
        _ => return None,
    };
    let bytes = number * factor;
    (bytes.is_finite() && bytes >= 0.0 && bytes < i64::MAX as f64).then_some(bytes.round() as i64)
}

fn integer(params: &Params, key: &str) -> ApiResult<i64> {
    match params.get(key).filter(|s| !s.is_empty()) {
        None => Ok(0),
        Some(raw) => raw.trim().parse().map_err(|_| ApiError::bad_request(format!("invalid value for {key}: {raw:?}"))),
    }
}

/// The plans a fresh installation starts with: CPU from 0.1 to 16 cores, each
/// with 1x, 2x and 5x (or 4x) as many GiB-tenths of memory.
pub fn default_plans() -> Vec<PlanRecord> {
    const MI: i64 = 1 << 20;
    let memory = |label: &str| -> i64 {
        match label {
            "0.1" => 128 * MI,
            "0.2" => 256 * MI,
            "0.5" => 512 * MI,
            n => n.parse::<i64>().expect("whole GiB") * 1024 * MI,
        }
    };
    let ladder: &[(&str, i64, &[&str])] = &[
        ("0.1", 100, &["0.1", "0.2", "0.5"]),
        ("0.2", 200, &["0.2", "0.5", "1"]),
        ("0.5", 500, &["0.5", "1", "2"]),
        ("1", 1000, &["1", "2", "4"]),
        ("2", 2000, &["2", "4", "8"]),
        ("4", 4000, &["4", "8", "16"]),
        ("8", 8000, &["8", "16"]),
        ("16", 16000, &["16"]),
    ];
    let mut out = Vec::new();
    for (cpu, milli, memories) in ladder {
        for m in *memories {
            let name = format!("c{cpu}m{m}");
            out.push(PlanRecord { default: name == "c0.1m0.2", name, memory: memory(m), cpumilli: *milli, cpushare: 0 });
        }
    }
    out
}

async fn list(State(server): AppState, Caller(_caller): Caller) -> ApiResult<Response> {
    let plans: Vec<PlanJson> = server.store.plans().await?.iter().map(plan_json).collect();
    Ok(json_list(&plans))
}

async fn create(State(server): AppState, Caller(caller): Caller, ip: ClientIp, params: Params) -> ApiResult<Response> {
    caller.require("plan.create", &[])?;
    let name = params.get("name").unwrap_or_default().trim().to_string();
    if name.is_empty() {
        return Err(ApiError::internal("invalid value for name"));
    }
    if !super::names::printable(&name, super::names::MAX_NAME) {
        return Err(ApiError::bad_request(format!("invalid value for name: at most {} printable characters", super::names::MAX_NAME)));
    }
    let memory = match params.get("memory").filter(|s| !s.is_empty()) {
        None => 0,
        Some(raw) => parse_memory(&raw).ok_or_else(|| ApiError::bad_request(format!("invalid value for memory: {raw:?}")))?,
    };
    if memory > 0 && memory < MIN_MEMORY {
        return Err(ApiError::bad_request("The minimum allowed memory is 4MB"));
    }
    let cpushare = integer(&params, "cpushare")?;
    if cpushare == 1 {
        return Err(ApiError::bad_request("The minimum allowed cpu-shares is 2"));
    }
    let cpumilli = integer(&params, "cpumilli")?;
    if cpushare < 0 || cpumilli < 0 {
        return Err(ApiError::bad_request("cpushare and cpumilli cannot be negative"));
    }
    let default = params.get("default").and_then(|s| parse_bool(&s)).unwrap_or(false);
    let plan = PlanRecord { name, memory, cpumilli, cpushare, default };
    let event = record(&server, Some(&caller), &ip, "plan.create", Target::new("plan", &plan.name), request_data(&params, &[])).await?;
    let result = server.store.create_plan(&plan).await.map(|()| json_untyped(StatusCode::CREATED, &plan_json(&plan)));
    event.done(result.map_err(ApiError::from)).await
}

async fn remove(State(server): AppState, Caller(caller): Caller, ip: ClientIp, Path(name): Path<String>) -> ApiResult<Response> {
    caller.require("plan.delete", &[])?;
    if server.store.plan(&name).await?.is_none() {
        return Err(ApiError::not_found("plan not found"));
    }
    let data = request_data(&Params::default(), &[("planname", &name)]);
    let event = record(&server, Some(&caller), &ip, "plan.delete", Target::new("plan", &name), data).await?;
    let result = server.store.delete_plan(&name).await.map(|()| empty(StatusCode::OK));
    event.done(result.map_err(ApiError::from)).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn memory_quantities() {
        assert_eq!(parse_memory("1073741824"), Some(1 << 30));
        assert_eq!(parse_memory("512M"), Some(512 << 20));
        assert_eq!(parse_memory("256Mi"), Some(256 << 20));
        assert_eq!(parse_memory("1G"), Some(1 << 30));
        assert_eq!(parse_memory("1.5Gi"), Some(3 << 29));
        assert_eq!(parse_memory("500k"), Some(500_000));
        assert_eq!(parse_memory("lots"), None);
        assert_eq!(parse_memory("5X"), None);
    }

    #[test]
    fn twenty_one_default_plans_with_one_default() {
        let plans = default_plans();
        assert_eq!(plans.len(), 21);
        assert_eq!(plans.first().unwrap().name, "c0.1m0.1");
        assert_eq!(plans.last().unwrap().name, "c16m16");
        let defaults: Vec<_> = plans.iter().filter(|p| p.default).collect();
        assert_eq!(defaults.len(), 1);
        assert_eq!((defaults[0].name.as_str(), defaults[0].memory, defaults[0].cpumilli), ("c0.1m0.2", 268435456, 100));
    }
}
