//! App environment variables (API-NOTES §2.6).

use axum::extract::State;
use axum::http::{Method, StatusCode};
use axum::response::Response;
use serde::Serialize;
use serde_json::{Value, json};
use crate::apps::env::{MAX_NAME, MAX_VALUE, MAX_VARS, RESERVED, valid_name};

use super::apps::{AppTarget, app_contexts, app_event};
use super::params::{Params, parse_bool};
use super::stream::{KEEPALIVE, json_stream};
use super::{AppState, Caller, ClientIp, Routes, json};
use crate::auth::Subject;
use crate::error::{ApiError, ApiResult};
use crate::store::EnvVar;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/apps/{app}/env", get)
        .add("1.0", Method::POST, "/apps/{app}/env", set)
        .add("1.0", Method::DELETE, "/apps/{app}/env", unset)
}




#[derive(Serialize)]
pub(super) struct EnvJson {
    name: String,
    value: String,
    alias: String,
    public: bool,
    #[serde(rename = "managedBy", skip_serializing_if = "String::is_empty")]
    managed_by: String,
}

async fn get(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    // An app's own token may read its env (API-NOTES §1.2.4).
    if !matches!(&caller.subject, Subject::App { .. }) {
        caller.require("app.read.env", &app_contexts(&app))?;
    }
    // The app's view (cached) holds its variables and its binds'.
    let view = server.store.app_view(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    let to_json = |v: &EnvVar| env_json(&view, v);
    let wanted: Vec<String> = params.all("env");
    if !wanted.is_empty() {
        let found: Vec<EnvJson> = view.env.iter().filter(|v| wanted.contains(&v.name)).map(to_json).collect();
        return Ok(if found.is_empty() { json(StatusCode::OK, &Value::Null) } else { json(StatusCode::OK, &found) });
    }
    Ok(json(StatusCode::OK, &env_list(&view)))
}

fn env_json(view: &crate::store::AppView, v: &EnvVar) -> EnvJson {
    EnvJson { name: v.name.clone(), value: view.env_value(v), alias: v.alias.clone(), public: v.public, managed_by: v.managed_by.clone() }
}

/// Every variable of the app, its binds' (private) and `TSURU_SERVICES`
/// included, as `GET /apps/{app}/env` lists them.
pub(super) fn env_list(view: &crate::store::AppView) -> Vec<EnvJson> {
    let mut all: Vec<EnvJson> = view.env.iter().map(|v| env_json(view, v)).collect();
    // The variables of the app's binds, and TSURU_SERVICES: private.
    all.extend(view.service_env().iter().map(|(name, value)| EnvJson {
        name: name.clone(),
        value: value.clone(),
        alias: String::new(),
        public: false,
        managed_by: String::new(),
    }));
    all
}

/// `envs` from a JSON body (`[{"name","value","alias","private"}]`) or form
/// keys `Envs.N.Name|Value|Alias|Private` (any case).
fn requested(params: &Params, all_private: bool, managed_by: &str) -> Vec<EnvVar> {
    let mut rows: std::collections::BTreeMap<usize, (String, String, String, bool)> = Default::default();
    if let Some(Value::Array(items)) = params.json_field("envs") {
        for (i, item) in items.iter().enumerate() {
            let get = |k: &str| {
                item.as_object()
                    .and_then(|o| o.iter().find(|(key, _)| key.eq_ignore_ascii_case(k)))
                    .map(|(_, v)| match v {
                        Value::String(s) => s.clone(),
                        Value::Bool(b) => b.to_string(),
                        Value::Number(n) => n.to_string(),
                        _ => String::new(),
                    })
                    .unwrap_or_default()
            };
            rows.insert(i, (get("name"), get("value"), get("alias"), parse_bool(&get("private")).unwrap_or(false)));
        }
    } else {
        for (k, v) in params.pairs() {
            let parts: Vec<&str> = k.split('.').collect();
            if let [outer, idx, field] = parts.as_slice()
                && outer.eq_ignore_ascii_case("envs")
                && let Ok(i) = idx.parse::<usize>()
            {
                let row = rows.entry(i).or_default();
                match field.to_ascii_lowercase().as_str() {
                    "name" => row.0 = v,
                    "value" => row.1 = v,
                    "alias" => row.2 = v,
                    "private" => row.3 = parse_bool(&v).unwrap_or(false),
                    _ => {}
                }
            }
        }
    }
    rows.into_values()
        .map(|(name, value, alias, private)| EnvVar {
            name,
            value,
            alias,
            public: !(private || all_private),
            managed_by: managed_by.to_string(),
        })
        .collect()
}

fn flag(params: &Params, key: &str) -> bool {
    params.field(key).and_then(|v| parse_bool(&v)).unwrap_or(false)
}

async fn set(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.env.set", &app_contexts(&app))?;
    let managed_by = params.field("managedBy").unwrap_or_default();
    let no_restart = flag(&params, "noRestart");
    let prune = flag(&params, "pruneUnused");
    let vars = requested(&params, flag(&params, "private"), &managed_by);
    if vars.is_empty() && managed_by.is_empty() {
        return Err(ApiError::bad_request("You must provide the list of environment variables"));
    }
    if prune && managed_by.is_empty() {
        return Err(ApiError::bad_request("Prune unused requires a managed-by value"));
    }
    if vars.iter().any(|v| RESERVED.contains(&v.name.as_str())) {
        return Err(ApiError::bad_request(format!(
            "Can't change the following environment variables (write protected): [{}]",
            RESERVED.join(" ")
        )));
    }
    if let Some(bad) = vars.iter().find(|v| !valid_name(&v.name)) {
        return Err(ApiError::bad_request(format!("Invalid environment variable name: '{}'", bad.name.chars().take(MAX_NAME).collect::<String>())));
    }
    if let Some(big) = vars.iter().find(|v| v.value.len() > MAX_VALUE) {
        return Err(ApiError::bad_request(format!("the value of {} is larger than the {MAX_VALUE} bytes a variable may hold", big.name)));
    }
    let existing = server.store.app_env(&app.name).await?;
    let total = existing.iter().filter(|e| !vars.iter().any(|v| v.name == e.name)).count() + vars.len();
    if total > MAX_VARS {
        return Err(ApiError::bad_request(format!("an app may have at most {MAX_VARS} environment variables; this would make {total}")));
    }
    // The event keeps the request with private values masked.
    let masked: Vec<Value> = vars
        .iter()
        .map(|v| json!({"name": v.name, "value": if v.public { v.value.as_str() } else { "*****" }, "alias": v.alias, "private": !v.public}))
        .collect();
    let data = json!([{"name": ":app", "value": app.name}, {"name": "Envs", "value": masked}, {"name": "ManagedBy", "value": managed_by}]);
    let event = app_event(&server, &caller, &ip, "app.update.env.set", &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---- Setting {} new environment variables ----\n", vars.len())).await;
        let result = server.store.set_app_env(&app.name, &vars, prune.then_some(managed_by.as_str())).await.map_err(ApiError::from);
        if let Ok(pruned) = &result {
            for name in pruned {
                w.message(&format!("---- Pruning {name} from environment variables ----\n")).await;
            }
        }
        let result = match result {
            Ok(_) if !no_restart => crate::apps::restart(&server, &app.name, &w).await,
            other => other.map(|_| ()),
        };
        event.done(result).await.map_err(|e| e.message)
    }))
}

async fn unset(State(server): AppState, Caller(caller): Caller, ip: ClientIp, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.update.env.unset", &app_contexts(&app))?;
    let names: Vec<String> = params.all("env").into_iter().filter(|n| !n.is_empty()).collect();
    let no_restart = params.get("noRestart").and_then(|v| parse_bool(&v)).unwrap_or(false);
    if names.is_empty() {
        return Err(ApiError::bad_request("You must provide the list of environment variables."));
    }
    let data = json!([{"name": ":app", "value": app.name}, {"name": "env", "value": names}]);
    let event = app_event(&server, &caller, &ip, "app.update.env.unset", &app, data).await?;
    Ok(json_stream(StatusCode::OK, KEEPALIVE, move |w| async move {
        w.message(&format!("---- Unsetting {} environment variables ----\n", names.len())).await;
        let result = server.store.unset_app_env(&app.name, &names).await.map_err(ApiError::from);
        let result = match result {
            Ok(_) if !no_restart => crate::apps::restart(&server, &app.name, &w).await,
            other => other.map(|_| ()),
        };
        event.done(result).await.map_err(|e| e.message)
    }))
}
