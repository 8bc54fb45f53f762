//! torii's `osb` service broker: drives brokers that speak the Open Service
//! Broker API (v2.13 and later), as tsuru's broker client does, over
//! outbound HTTP (capability `http`).
//!
//! One provider per broker of `/1.7/brokers`: its URL, basic or bearer
//! auth, and its settings: `context`, merged into every request's
//! context, and `cache_expiration_seconds`, how long the catalogue is kept
//! in `kv` (0: read each time). The service and plan of an instance are
//! names in the broker's catalogue; requests carry their ids.
//!
//! Every request carries `X-Broker-API-Version: 2.13` (what tsuru sends), the provider's
//! `Authorization` and `Accept: application/json`; a body is JSON
//! (`Content-Type: application/json`). Calls made for a user carry
//! `X-Broker-API-Originating-Identity: tsuru <base64 {"user":"<user>"}>`;
//! the operation polls, which tsuru made for the instance's team, carry
//! `tsuru <base64 {"team":"<team>"}>`. What is sent, per call:
//! - catalogue: `GET /v2/catalog`;
//! - create: `PUT /v2/service_instances/<uuid>?accepts_incomplete=true`
//!   with `service_id`, `plan_id`, `organization_guid` and `space_guid`
//!   (one random id for both, as tsuru sends), `parameters` and `context`
//!   (`request_id`, `event_id`, `organization_guid`, `space_guid`, then
//!   the broker's `context` over them); `200`/`201` is done, `202` leaves
//!   an operation the host polls;
//! - update: `PATCH /v2/service_instances/<uuid>?accepts_incomplete=true`
//!   with `service_id`, the new `plan_id`, `parameters`, `context`
//!   (`request_id`, `event_id`, the broker's) and `previous_values`
//!   (`plan_id`, `service_id`, `organization_id`, `space_id`);
//! - remove: `DELETE /v2/service_instances/<uuid>?service_id=…&plan_id=…&accepts_incomplete=true`
//!   (`410 Gone` counts as done);
//! - last operation: `GET /v2/service_instances/<uuid>/last_operation?service_id=…&plan_id=…&operation=…`
//!   (`operation` only when the broker named one; `410 Gone` ends a removal);
//! - bind: `PUT /v2/service_instances/<uuid>/service_bindings/<binding uuid>`
//!   with `service_id`, `plan_id`, `bind_resource.app_guid` (the app's
//!   name), `parameters`, `context`; the answer's `credentials` become the
//!   app's variables: one per key, named as the broker names it, strings as
//!   they are and other values as JSON (tsuru drops them: a `port` of 5432
//!   would never reach the app); unbind: `DELETE` of the
//!   binding with `service_id`, `plan_id` (`410 Gone` counts as done);
//! - status: `up` without a request, unless a change the broker went on
//!   with is the last one: then its `last_operation` says `up` (succeeded,
//!   or a failed update or removal, which leaves the instance as it was),
//!   `in progress - <description>`, `failed - <description>` (a creation)
//!   or, at `410 Gone`, `gone - …`;
//! - info: the instance's parameters (no request); proxy: refused.
//!
//! User parameters are JSON: a value that parses as JSON is that value,
//! anything else the string it is. Answers: `409` is a conflict, `422
//! ConcurrencyError` not ready, `404`/`410` not found, other `4xx` a
//! refusal, `5xx` or no answer the broker unavailable; each error
//! names the broker, what failed, the status and the broker's
//! `description` (or `error`, or its body).
//!
//! What the host keeps for an instance (shown as `broker_data`), as tsuru
//! keeps it: `{"UUID", "ServiceID", "PlanID", "OrgID", "SpaceID",
//! "LastOperationKey"}` and, while a change the broker goes on with is the
//! last one, `"LastOperationType"` (`provision`, `update` or
//! `deprovision`); for a bind: `{"UUID"}`.

use serde::{Deserialize, Serialize};
use serde_json::{Map, Value, json};
use torii_plugin_sdk::broker::{
    self, App, Binding, Broker, Change, Error, Instance, OperationState, Outcome, Plan, Provider, ProxyTarget, Requester, Service,
};
use torii_plugin_sdk::http::{self, Response};
use torii_plugin_sdk::{export_broker, kv};

/// The OSB version this broker speaks.
const API_VERSION: &str = "2.13";

struct Osb;

/// A service of a broker's catalogue, with the ids requests need.
#[derive(Debug, Clone, Serialize, Deserialize)]
struct CatalogService {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    metadata: Value,
    #[serde(default)]
    plans: Vec<CatalogPlan>,
}

#[derive(Debug, Clone, Serialize, Deserialize)]
struct CatalogPlan {
    id: String,
    name: String,
    #[serde(default)]
    description: String,
    #[serde(default)]
    schemas: Option<Value>,
}

/// The catalogue as kept in `kv`: when (Unix seconds) and from where it
/// was read.
#[derive(Serialize, Deserialize)]
struct Cached {
    at: u64,
    #[serde(default)]
    endpoint: String,
    services: Vec<CatalogService>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// 16 random bytes: the host's `wasi:random`.
#[cfg(target_arch = "wasm32")]
fn random_bytes() -> [u8; 16] {
    let mut bytes = [0u8; 16];
    bytes.copy_from_slice(&wasip2::random::random::get_random_bytes(16));
    bytes
}

/// 16 bytes unique to this process (native tests): std's random hasher
/// keys over a counter and the time.
#[cfg(not(target_arch = "wasm32"))]
fn random_bytes() -> [u8; 16] {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    let n = COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed);
    let nanos = std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_nanos() as u64).unwrap_or(0);
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(n);
        h.write_u64(nanos ^ i as u64);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes
}

/// A random UUID (version 4), as tsuru makes instance, bind and
/// organisation ids.
fn uuid() -> String {
    let mut bytes = random_bytes();
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// Who a request is made for: `X-Broker-API-Originating-Identity`'s value
/// (tsuru's platform name and a JSON object, base64).
fn identity(value: &Value) -> String {
    format!("tsuru {}", broker::base64(value.to_string().as_bytes()))
}

/// A request to `path` of the broker, answered; `identity` is the
/// originating identity's JSON when there is someone to name.
fn call(provider: &Provider, method: &str, path: &str, body: Option<&Value>, identity: Option<Value>) -> Outcome<Response> {
    let mut request = provider.request(method, path).header("X-Broker-API-Version", API_VERSION).header("Accept", "application/json");
    if let Some(who) = identity {
        request = request.header("X-Broker-API-Originating-Identity", &self::identity(&who));
    }
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    http::send(&request).map_err(|e| Error::Unavailable(format!("broker {:?} does not answer: {e}", provider.name)))
}

/// The user a change is made for, as tsuru names them to brokers.
fn user(who: &Requester) -> Option<Value> {
    (!who.user.is_empty()).then(|| json!({"user": who.user}))
}

/// The broker's answer as an error naming `what` failed.
fn refused(provider: &Provider, what: &str, r: &Response) -> Error {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let text = |k: &str| body.get(k).and_then(Value::as_str).filter(|d| !d.is_empty()).map(str::to_string);
    // A JSON object without either says nothing more than its status.
    let said = text("description").or_else(|| text("error")).unwrap_or_else(|| match body {
        Value::Object(_) => String::new(),
        _ => r.text().trim().chars().take(512).collect(),
    });
    let message = format!("broker {:?}: {what} failed: {} {said}", provider.name, r.status).trim_end().to_string();
    match r.status {
        404 | 410 => Error::NotFound(message),
        409 => Error::Conflict(message),
        422 if text("error").as_deref() == Some("ConcurrencyError") => Error::NotReady(message),
        400..=499 => Error::Invalid(message),
        _ => Error::Unavailable(message),
    }
}

fn cache_key(provider: &Provider) -> String {
    format!("catalog/{}", provider.name)
}

/// The broker's catalogue: from `kv` while younger than its cache time
/// (and read from the same URL).
fn catalog(provider: &Provider) -> Outcome<Vec<CatalogService>> {
    let keep = provider.setting("cache_expiration_seconds").and_then(|v| v.as_u64()).unwrap_or(0);
    if keep > 0
        && let Ok(Some(cached)) = kv::get_json::<Cached>(&cache_key(provider))
        && cached.endpoint == provider.endpoint
        && now_secs().saturating_sub(cached.at) < keep
    {
        return Ok(cached.services);
    }
    let r = call(provider, "GET", "v2/catalog", None, None)?;
    if r.status != 200 {
        return Err(refused(provider, "reading the catalogue", &r));
    }
    #[derive(Deserialize)]
    struct CatalogJson {
        #[serde(default)]
        services: Vec<CatalogService>,
    }
    let parsed: CatalogJson = serde_json::from_slice(&r.body)
        .map_err(|e| Error::Unavailable(format!("broker {:?} answered a catalogue that is not OSB's: {e}", provider.name)))?;
    if keep > 0 {
        // A catalogue not kept is read again next time: no reason to fail.
        let _ = kv::set_json(&cache_key(provider), &Cached { at: now_secs(), endpoint: provider.endpoint.clone(), services: parsed.services.clone() });
    }
    Ok(parsed.services)
}

/// The ids of service `service` and its plan `plan`.
fn ids(provider: &Provider, service: &str, plan: &str) -> Outcome<(String, String)> {
    let services = catalog(provider)?;
    let s = services
        .iter()
        .find(|s| s.name == service)
        .ok_or_else(|| Error::NotFound(format!("service {service:?} not found in the catalogue of broker {:?}", provider.name)))?;
    let p = s.plans.iter().find(|p| p.name == plan).ok_or_else(|| {
        let known: Vec<&str> = s.plans.iter().map(|p| p.name.as_str()).collect();
        Error::Invalid(format!("plan {plan:?} not found in service {service:?} of broker {:?} (plans: {})", provider.name, known.join(", ")))
    })?;
    Ok((s.id.clone(), p.id.clone()))
}

/// User parameters as JSON: a value that parses as JSON is that value,
/// anything else the string it is.
fn parameters(pairs: &[(String, String)]) -> Value {
    Value::Object(pairs.iter().map(|(k, v)| (k.clone(), serde_json::from_str(v).unwrap_or_else(|_| Value::String(v.clone())))).collect())
}

/// A request's context as tsuru sends it: the request and event ids,
/// `extra`, then the broker's configured context over them.
fn context(provider: &Provider, who: &Requester, extra: &[(&str, &str)]) -> Value {
    let mut ctx = Map::new();
    ctx.insert("request_id".into(), json!(who.event));
    ctx.insert("event_id".into(), json!(who.event));
    for (k, v) in extra {
        ctx.insert((*k).into(), json!(v));
    }
    if let Some(Value::Object(configured)) = provider.setting("context") {
        ctx.extend(configured);
    }
    Value::Object(ctx)
}

/// What is kept of an instance (tsuru's broker data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
struct Kept {
    #[serde(rename = "UUID", default)]
    uuid: String,
    #[serde(rename = "ServiceID", default)]
    service_id: String,
    #[serde(rename = "PlanID", default)]
    plan_id: String,
    #[serde(rename = "OrgID", default)]
    org_id: String,
    #[serde(rename = "SpaceID", default)]
    space_id: String,
    /// The `operation` the broker named in its last `202` ("" when none).
    #[serde(rename = "LastOperationKey", default)]
    last_operation_key: String,
    /// Which change that `202` answered (not tsuru's: the host polls a
    /// removal too, and `410 Gone` ends only a removal).
    #[serde(rename = "LastOperationType", default, skip_serializing_if = "String::is_empty")]
    last_operation_type: String,
}

/// The instance's broker data, or `None` when it has none (not created
/// through this broker).
fn kept_or_none(instance: &Instance) -> Option<Kept> {
    serde_json::from_value::<Kept>(Value::Object(instance.data())).ok().filter(|k| !k.uuid.is_empty())
}

fn kept(instance: &Instance) -> Outcome<Kept> {
    kept_or_none(instance).ok_or_else(|| Error::Internal(format!("instance {:?} has no broker data: it was not created through this broker", instance.name)))
}

/// The change a `200`/`201`/`202` answer to a `kind` change says, keeping
/// `k`: a `202` leaves an operation, named as the broker named it (or
/// after `kind`).
fn change(r: &Response, kind: &str, mut k: Kept) -> Change {
    let operation = if r.status == 202 {
        let named = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v.get("operation").and_then(Value::as_str).map(str::to_string));
        k.last_operation_key = named.clone().unwrap_or_default();
        k.last_operation_type = kind.into();
        Some(named.filter(|o| !o.is_empty()).unwrap_or_else(|| kind.into()))
    } else {
        k.last_operation_key.clear();
        k.last_operation_type.clear();
        None
    };
    Change { data: serde_json::to_string(&k).expect("serialisable"), operation }
}

fn instance_path(k: &Kept) -> String {
    format!("v2/service_instances/{}", k.uuid)
}

fn ids_query(k: &Kept) -> String {
    broker::form(&[("service_id".into(), k.service_id.clone()), ("plan_id".into(), k.plan_id.clone())])
}

/// What the broker says of the last operation on the instance (a `kind`
/// change); `None` when it answers `410 Gone` (it no longer knows the
/// instance).
fn poll(provider: &Provider, instance: &Instance, k: &Kept, kind: &str) -> Outcome<Option<OperationState>> {
    let mut query = ids_query(k);
    // The host names an operation the broker did not name after the
    // change: only the broker's own goes back to it.
    if !k.last_operation_key.is_empty() {
        query.push('&');
        query.push_str(&broker::form(&[("operation".into(), k.last_operation_key.clone())]));
    }
    // tsuru asked about operations for the instance's team.
    let team = (!instance.team.is_empty()).then(|| json!({"team": instance.team}));
    let r = call(provider, "GET", &format!("{}/last_operation?{query}", instance_path(k)), None, team)?;
    if r.status == 410 {
        return Ok(None);
    }
    if r.status != 200 {
        return Err(refused(provider, &format!("asking about the {kind} of {:?}", instance.name), &r));
    }
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let description = body.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
    match body.get("state").and_then(Value::as_str) {
        Some("succeeded") => Ok(Some(OperationState::Succeeded)),
        Some("failed") if description.is_empty() => Ok(Some(OperationState::Failed(format!("broker {:?} says the {kind} failed", provider.name)))),
        Some("failed") => Ok(Some(OperationState::Failed(description))),
        Some("in progress") => Ok(Some(OperationState::InProgress(description))),
        other => Err(Error::Unavailable(format!("broker {:?} answered an operation state {other:?} about {:?}", provider.name, instance.name))),
    }
}

impl Broker for Osb {
    fn init(_config: Value) -> Result<Self, String> {
        Ok(Osb)
    }

    fn catalog(&self, provider: &Provider) -> Outcome<Vec<Service>> {
        Ok(catalog(provider)?
            .into_iter()
            .map(|s| {
                let meta = |k: &str| s.metadata.get(k).and_then(Value::as_str).unwrap_or_default().to_string();
                let doc = [meta("longDescription"), meta("documentationUrl")].into_iter().find(|d| !d.is_empty()).unwrap_or_default();
                Service {
                    plans: s
                        .plans
                        .iter()
                        .map(|p| Plan { name: p.name.clone(), description: p.description.clone(), schemas: p.schemas.as_ref().map(Value::to_string) })
                        .collect(),
                    name: s.name,
                    description: s.description,
                    doc,
                }
            })
            .collect())
    }

    fn create_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        let (service_id, plan_id) = ids(provider, &instance.service, &instance.plan)?;
        // One id for organisation and space, as tsuru sends.
        let org = uuid();
        let k = Kept { uuid: uuid(), service_id, plan_id, space_id: org.clone(), org_id: org, ..Kept::default() };
        let body = json!({
            "service_id": k.service_id,
            "plan_id": k.plan_id,
            "organization_guid": k.org_id,
            "space_guid": k.space_id,
            "parameters": parameters(&instance.parameters),
            "context": context(provider, who, &[("organization_guid", &k.org_id), ("space_guid", &k.space_id)]),
        });
        let r = call(provider, "PUT", &format!("{}?accepts_incomplete=true", instance_path(&k)), Some(&body), user(who))?;
        match r.status {
            200..=202 => Ok(change(&r, "provision", k)),
            _ => Err(refused(provider, &format!("provision of {:?}", instance.name), &r)),
        }
    }

    fn update_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        let mut k = kept(instance)?;
        let (_, plan_id) = ids(provider, &instance.service, &instance.plan)?;
        let body = json!({
            "service_id": k.service_id,
            "plan_id": plan_id,
            "parameters": parameters(&instance.parameters),
            "context": context(provider, who, &[]),
            "previous_values": {"plan_id": k.plan_id, "service_id": k.service_id, "organization_id": k.org_id, "space_id": k.space_id},
        });
        let r = call(provider, "PATCH", &format!("{}?accepts_incomplete=true", instance_path(&k)), Some(&body), user(who))?;
        match r.status {
            200..=202 => {
                k.plan_id = plan_id;
                Ok(change(&r, "update", k))
            }
            _ => Err(refused(provider, &format!("update of {:?}", instance.name), &r)),
        }
    }

    fn remove_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        // Nothing at the broker to remove, as tsuru takes it.
        let Some(k) = kept_or_none(instance) else { return Ok(instance.unchanged()) };
        let path = format!("{}?{}&accepts_incomplete=true", instance_path(&k), ids_query(&k));
        let r = call(provider, "DELETE", &path, None, user(who))?;
        match r.status {
            200..=202 => Ok(change(&r, "deprovision", k)),
            // Gone already: what was asked is so.
            410 => Ok(change(&Response { status: 200, headers: vec![], body: vec![] }, "deprovision", k)),
            _ => Err(refused(provider, &format!("deprovision of {:?}", instance.name), &r)),
        }
    }

    fn last_operation(&self, provider: &Provider, instance: &Instance, operation: &str) -> Outcome<OperationState> {
        let k = kept(instance)?;
        let kind = if k.last_operation_type.is_empty() { operation } else { k.last_operation_type.as_str() };
        Ok(match poll(provider, instance, &k, kind)? {
            Some(state) => state,
            // The instance is gone: a removal succeeded; anything else failed.
            None if kind == "deprovision" => OperationState::Succeeded,
            None => OperationState::Failed(format!("broker {:?} no longer knows the instance {:?}", provider.name, instance.name)),
        })
    }

    fn bind_app(&self, provider: &Provider, instance: &Instance, app: &App, parameters: &[(String, String)], who: &Requester) -> Outcome<Binding> {
        let k = kept(instance)?;
        let binding = uuid();
        let body = json!({
            "service_id": k.service_id,
            "plan_id": k.plan_id,
            "bind_resource": {"app_guid": app.name},
            "parameters": self::parameters(parameters),
            "context": context(provider, who, &[]),
        });
        let r = call(provider, "PUT", &format!("{}/service_bindings/{binding}", instance_path(&k)), Some(&body), user(who))?;
        if !matches!(r.status, 200 | 201) {
            return Err(refused(provider, &format!("bind of {:?} to the app {:?}", instance.name, app.name), &r));
        }
        let answer: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Ok(Binding { env: credentials_env(&answer), data: json!({"UUID": binding}).to_string() })
    }

    fn unbind_app(&self, provider: &Provider, instance: &Instance, app: &App, binding: &str, who: &Requester) -> Outcome<()> {
        let k = kept(instance)?;
        let binding: Value = serde_json::from_str(binding).unwrap_or(Value::Null);
        let Some(id) = binding.get("UUID").and_then(Value::as_str).filter(|id| !id.is_empty()) else {
            return Err(Error::Internal(format!("the bind of {:?} to the app {:?} has no binding id", instance.name, app.name)));
        };
        let r = call(provider, "DELETE", &format!("{}/service_bindings/{id}?{}", instance_path(&k), ids_query(&k)), None, user(who))?;
        match r.status {
            200..=202 | 410 => Ok(()),
            _ => Err(refused(provider, &format!("unbind of {:?} from the app {:?}", instance.name, app.name), &r)),
        }
    }

    /// `up`, unless the last change the broker went on with says
    /// otherwise: still in progress, a creation that failed, or the
    /// instance gone. A failed update or removal leaves the instance as it
    /// was (the host tells of the failure).
    fn status(&self, provider: &Provider, instance: &Instance) -> Outcome<String> {
        let k = kept(instance)?;
        if k.last_operation_key.is_empty() && k.last_operation_type.is_empty() {
            return Ok("up".into());
        }
        let kind = k.last_operation_type.as_str();
        Ok(match poll(provider, instance, &k, kind)? {
            Some(OperationState::InProgress(d)) if d.is_empty() => "in progress".into(),
            Some(OperationState::InProgress(d)) => format!("in progress - {d}"),
            Some(OperationState::Failed(d)) if kind == "provision" => format!("failed - {d}"),
            Some(OperationState::Succeeded | OperationState::Failed(_)) => "up".into(),
            None => format!("gone - broker {:?} no longer knows the instance", provider.name),
        })
    }

    /// The instance's parameters, as tsuru shows a brokered instance's info.
    fn info(&self, _provider: &Provider, instance: &Instance) -> Outcome<Vec<(String, String)>> {
        Ok(instance.parameters.clone())
    }

    fn proxy(&self, provider: &Provider, _instance: Option<&Instance>, _path: &str) -> Outcome<ProxyTarget> {
        Err(Error::Invalid(format!("broker {:?}: service proxy is not available for broker services", provider.name)))
    }
}

/// A bind's `credentials` as variables: one per key, named as the broker
/// names it; strings as they are, other values (numbers, booleans, objects,
/// arrays) as JSON.
fn credentials_env(answer: &Value) -> Vec<(String, String)> {
    let Some(Value::Object(credentials)) = answer.get("credentials") else { return Vec::new() };
    credentials.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
}

export_broker!(Osb);

#[cfg(test)]
mod tests {
    //! The broker's logic natively, against the SDK's test doubles.

    use super::*;
    use torii_plugin_sdk::broker::Auth;
    use torii_plugin_sdk::testing;

    fn provider(cache: u64) -> Provider {
        Provider {
            name: "pgb".into(),
            endpoint: "http://127.0.0.1:9000/".into(),
            auth: Auth::Basic(("u".into(), "p".into())),
            settings: json!({"context": {"zone": "a"}, "cache_expiration_seconds": cache}).to_string(),
        }
    }

    fn instance(data: &str) -> Instance {
        Instance {
            service: "postgresql".into(),
            name: "db1".into(),
            plan: "async".into(),
            team: "t1".into(),
            description: String::new(),
            tags: vec![],
            parameters: vec![("size".into(), "10".into()), ("name".into(), "x".into())],
            pool: String::new(),
            data: data.into(),
        }
    }

    fn who() -> Requester {
        Requester { user: "ana@example.com".into(), event: "ev1".into() }
    }

    fn app() -> App {
        App { name: "web".into(), hosts: vec![], internal_hosts: vec![] }
    }

    /// Broker data of an instance created with the async plan.
    fn data(key: &str, kind: &str) -> String {
        json!({"UUID": "i-1", "ServiceID": "svc", "PlanID": "p-async", "OrgID": "o", "SpaceID": "o", "LastOperationKey": key, "LastOperationType": kind}).to_string()
    }

    fn reply(status: u16, body: Value) -> Result<Response, http::HttpError> {
        Ok(Response { status, headers: vec![], body: body.to_string().into_bytes() })
    }

    const CATALOG: &str = r#"{"services":[{"id":"svc","name":"postgresql","description":"pg","metadata":{"longDescription":"long"},
        "plans":[{"id":"p-sync","name":"sync","description":"now"},{"id":"p-async","name":"async","description":"later","schemas":{"service_instance":{}}}]}]}"#;

    /// A broker answering the catalogue, and `status`/`body` to the rest.
    fn broker(status: u16, body: Value) {
        testing::reset();
        testing::on_http(move |req| {
            if req.url.ends_with("/v2/catalog") {
                return reply(200, serde_json::from_str(CATALOG).unwrap());
            }
            reply(status, body.clone())
        });
    }

    fn header<'a>(req: &'a http::Request, name: &str) -> Option<&'a str> {
        req.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The requests but the catalogue's.
    fn sent() -> Vec<http::Request> {
        testing::requests().into_iter().filter(|r| !r.url.ends_with("/v2/catalog")).collect()
    }

    fn body(req: &http::Request) -> Value {
        serde_json::from_slice(&req.body).unwrap()
    }

    #[test]
    fn the_catalogue_is_read_once_while_it_is_fresh() {
        broker(200, json!({}));
        let services = Osb.catalog(&provider(60)).unwrap();
        assert_eq!((services[0].name.as_str(), services[0].description.as_str(), services[0].doc.as_str()), ("postgresql", "pg", "long"));
        assert_eq!((services[0].plans[0].name.as_str(), services[0].plans[0].description.as_str()), ("sync", "now"));
        assert_eq!(services[0].plans[0].schemas, None);
        assert_eq!(services[0].plans[1].schemas.as_deref(), Some(r#"{"service_instance":{}}"#));
        Osb.catalog(&provider(60)).unwrap();
        assert_eq!(testing::requests().len(), 1);
        let req = &testing::requests()[0];
        assert_eq!((req.method.as_str(), req.url.as_str()), ("GET", "http://127.0.0.1:9000/v2/catalog"));
        assert_eq!(header(req, "X-Broker-API-Version"), Some("2.13"));
        assert_eq!(header(req, "X-Broker-API-Originating-Identity"), None);
        // The broker moved: read again.
        Osb.catalog(&Provider { endpoint: "http://127.0.0.1:9001".into(), ..provider(60) }).unwrap();
        assert_eq!(testing::requests().len(), 2);
        // Not cached: read each time.
        broker(200, json!({}));
        Osb.catalog(&provider(0)).unwrap();
        Osb.catalog(&provider(0)).unwrap();
        assert_eq!(testing::requests().len(), 2);
        assert!(testing::kv().is_empty());
    }

    #[test]
    fn a_catalogue_the_broker_refuses_or_garbles_is_an_error() {
        testing::reset();
        testing::on_http(|_| reply(401, json!({"description": "bad login"})));
        let e = Osb.catalog(&provider(0)).unwrap_err();
        assert!(matches!(&e, Error::Invalid(m) if m == "broker \"pgb\": reading the catalogue failed: 401 bad login"), "{e:?}");
        testing::on_http(|_| Ok(Response { status: 200, headers: vec![], body: b"<html>".to_vec() }));
        assert!(matches!(Osb.catalog(&provider(0)).unwrap_err(), Error::Unavailable(_)));
        testing::on_http(|_| Err(http::HttpError("connection refused".into())));
        assert!(matches!(Osb.catalog(&provider(0)).unwrap_err(), Error::Unavailable(m) if m.contains("connection refused")));
    }

    #[test]
    fn a_sync_provision_says_what_it_sends_and_is_done() {
        broker(201, json!({}));
        let bearer = Provider { auth: Auth::Bearer("tok".into()), ..provider(0) };
        let change = Osb.create_instance(&bearer, &Instance { plan: "sync".into(), ..instance("{}") }, &who()).unwrap();
        assert_eq!(change.operation, None);
        let kept: Value = serde_json::from_str(&change.data).unwrap();
        let uuid = kept["UUID"].as_str().unwrap();
        assert_eq!((uuid.len(), &uuid[14..15]), (36, "4"));
        assert_eq!((kept["ServiceID"].as_str(), kept["PlanID"].as_str(), kept["LastOperationKey"].as_str()), (Some("svc"), Some("p-sync"), Some("")));
        assert_eq!(kept["OrgID"], kept["SpaceID"]);
        assert_eq!(kept.get("LastOperationType"), None);

        let reqs = sent();
        assert_eq!(reqs.len(), 1);
        let req = &reqs[0];
        assert_eq!(req.method, "PUT");
        assert_eq!(req.url, format!("http://127.0.0.1:9000/v2/service_instances/{uuid}?accepts_incomplete=true"));
        assert_eq!(header(req, "X-Broker-API-Version"), Some("2.13"));
        assert_eq!(header(req, "Authorization"), Some("Bearer tok"));
        assert_eq!(header(req, "Content-Type"), Some("application/json"));
        let identity = format!("tsuru {}", broker::base64(br#"{"user":"ana@example.com"}"#));
        assert_eq!(header(req, "X-Broker-API-Originating-Identity"), Some(identity.as_str()));
        let org = kept["OrgID"].as_str().unwrap();
        assert_eq!(
            body(req),
            json!({
                "service_id": "svc", "plan_id": "p-sync", "organization_guid": org, "space_guid": org,
                "parameters": {"size": 10, "name": "x"},
                "context": {"request_id": "ev1", "event_id": "ev1", "organization_guid": org, "space_guid": org, "zone": "a"},
            })
        );

        // Nobody asked: no identity; the broker's context goes over tsuru's keys.
        broker(200, json!({}));
        let p = Provider { settings: json!({"context": {"event_id": "mine"}}).to_string(), ..provider(0) };
        Osb.create_instance(&p, &Instance { plan: "sync".into(), ..instance("{}") }, &Requester { user: String::new(), event: "ev2".into() }).unwrap();
        let req = &sent()[0];
        assert_eq!(header(req, "X-Broker-API-Originating-Identity"), None);
        assert_eq!(header(req, "Authorization"), Some("Basic dTpw"));
        assert_eq!(body(req)["context"]["event_id"], "mine");
        assert_eq!(body(req)["context"]["request_id"], "ev2");
    }

    #[test]
    fn an_async_provision_leaves_an_operation() {
        broker(202, json!({"operation": "op-7"}));
        let change = Osb.create_instance(&provider(0), &instance("{}"), &who()).unwrap();
        assert_eq!(change.operation.as_deref(), Some("op-7"));
        let kept: Value = serde_json::from_str(&change.data).unwrap();
        assert_eq!((kept["PlanID"].as_str(), kept["LastOperationKey"].as_str(), kept["LastOperationType"].as_str()), (Some("p-async"), Some("op-7"), Some("provision")));

        // No operation named: the host still polls, and none goes back.
        broker(202, json!({}));
        let change = Osb.create_instance(&provider(0), &instance("{}"), &who()).unwrap();
        assert_eq!(change.operation.as_deref(), Some("provision"));
        let kept: Value = serde_json::from_str(&change.data).unwrap();
        assert_eq!((kept["LastOperationKey"].as_str(), kept["LastOperationType"].as_str()), (Some(""), Some("provision")));
        broker(200, json!({"state": "in progress"}));
        Osb.last_operation(&provider(0), &instance(&change.data), "provision").unwrap();
        assert_eq!(sent()[0].url, format!("http://127.0.0.1:9000/v2/service_instances/{}/last_operation?service_id=svc&plan_id=p-async", kept["UUID"].as_str().unwrap()));
    }

    #[test]
    fn answers_map_to_the_errors_the_host_shows() {
        for (status, body, check) in [
            (409, json!({}), (|e: &Error| matches!(e, Error::Conflict(m) if m == "broker \"pgb\": provision of \"db1\" failed: 409")) as fn(&Error) -> bool),
            (422, json!({"error": "AsyncRequired", "description": "needs async"}), |e| matches!(e, Error::Invalid(m) if m.ends_with("failed: 422 needs async"))),
            (422, json!({"error": "ConcurrencyError"}), |e| matches!(e, Error::NotReady(m) if m.ends_with("422 ConcurrencyError"))),
            (400, json!({"error": "InvalidParameters", "description": "no size"}), |e| matches!(e, Error::Invalid(m) if m.ends_with("400 no size"))),
            (500, json!({"description": "boom"}), |e| matches!(e, Error::Unavailable(m) if m == "broker \"pgb\": provision of \"db1\" failed: 500 boom")),
            (503, json!("down"), |e| matches!(e, Error::Unavailable(m) if m.ends_with("503 \"down\""))),
        ] {
            broker(status, body);
            let e = Osb.create_instance(&provider(0), &instance("{}"), &who()).unwrap_err();
            assert!(check(&e), "{status}: {e:?}");
        }
        broker(200, json!({}));
        let e = Osb.create_instance(&provider(0), &Instance { plan: "gold".into(), ..instance("{}") }, &who()).unwrap_err();
        assert!(matches!(&e, Error::Invalid(m) if m == "plan \"gold\" not found in service \"postgresql\" of broker \"pgb\" (plans: sync, async)"), "{e:?}");
        let e = Osb.create_instance(&provider(0), &Instance { service: "redis".into(), ..instance("{}") }, &who()).unwrap_err();
        assert!(matches!(&e, Error::NotFound(_)), "{e:?}");
        assert!(sent().is_empty(), "nothing is provisioned without ids");

        for (status, check) in [
            (404, (|e: &Error| matches!(e, Error::NotFound(m) if m.starts_with("broker \"pgb\": bind of \"db1\" to the app \"web\" failed: 404"))) as fn(&Error) -> bool),
            (409, |e| matches!(e, Error::Conflict(_))),
            (422, |e| matches!(e, Error::Invalid(_))),
            (502, |e| matches!(e, Error::Unavailable(_))),
        ] {
            broker(status, json!({}));
            let e = Osb.bind_app(&provider(0), &instance(&data("", "")), &app(), &[], &who()).unwrap_err();
            assert!(check(&e), "{status}: {e:?}");
        }
    }

    #[test]
    fn operation_states() {
        for (body, want) in [
            (json!({"state": "in progress", "description": "copying"}), OperationState::InProgress("copying".into())),
            (json!({"state": "succeeded"}), OperationState::Succeeded),
            (json!({"state": "failed", "description": "disk full"}), OperationState::Failed("disk full".into())),
        ] {
            broker(200, body);
            assert_eq!(format!("{:?}", Osb.last_operation(&provider(0), &instance(&data("op 1", "provision")), "op 1").unwrap()), format!("{want:?}"));
            let req = sent().pop().unwrap();
            assert_eq!(req.url, "http://127.0.0.1:9000/v2/service_instances/i-1/last_operation?service_id=svc&plan_id=p-async&operation=op+1");
            let identity = format!("tsuru {}", broker::base64(br#"{"team":"t1"}"#));
            assert_eq!(header(&req, "X-Broker-API-Originating-Identity"), Some(identity.as_str()));
        }
        // Gone: a removal is done, a creation failed.
        broker(410, json!({}));
        let gone = |kind: &str, host_says: &str| Osb.last_operation(&provider(0), &instance(&data("", kind)), host_says).unwrap();
        assert!(matches!(gone("deprovision", "deprovision"), OperationState::Succeeded));
        assert!(matches!(gone("", "deprovision"), OperationState::Succeeded));
        assert!(matches!(gone("provision", "provision"), OperationState::Failed(m) if m == "broker \"pgb\" no longer knows the instance \"db1\""));
        broker(200, json!({"state": "weird"}));
        assert!(matches!(Osb.last_operation(&provider(0), &instance(&data("", "update")), "update"), Err(Error::Unavailable(_))));
        broker(500, json!({}));
        assert!(matches!(Osb.last_operation(&provider(0), &instance(&data("", "update")), "update"), Err(Error::Unavailable(_))));
    }

    #[test]
    fn status_asks_only_about_an_operation_left_running() {
        broker(200, json!({"state": "succeeded"}));
        assert_eq!(Osb.status(&provider(0), &instance(&data("", ""))).unwrap(), "up");
        assert!(sent().is_empty());
        assert_eq!(Osb.status(&provider(0), &instance(&data("provision", "provision"))).unwrap(), "up");
        assert_eq!(sent().len(), 1);
        broker(200, json!({"state": "failed", "description": "disk full"}));
        assert_eq!(Osb.status(&provider(0), &instance(&data("", "provision"))).unwrap(), "failed - disk full");
        // A failed update left the instance as it was.
        assert_eq!(Osb.status(&provider(0), &instance(&data("", "update"))).unwrap(), "up");
        broker(200, json!({"state": "in progress", "description": "50%"}));
        assert_eq!(Osb.status(&provider(0), &instance(&data("x", "update"))).unwrap(), "in progress - 50%");
        broker(410, json!({}));
        assert_eq!(Osb.status(&provider(0), &instance(&data("x", "update"))).unwrap(), "gone - broker \"pgb\" no longer knows the instance");
    }

    #[test]
    fn update_and_removal() {
        broker(200, json!({}));
        let change = Osb.update_instance(&provider(0), &Instance { plan: "sync".into(), ..instance(&data("provision", "provision")) }, &who()).unwrap();
        assert_eq!(change.operation, None);
        let kept: Value = serde_json::from_str(&change.data).unwrap();
        assert_eq!((kept["PlanID"].as_str(), kept["LastOperationKey"].as_str()), (Some("p-sync"), Some("")));
        let req = &sent()[0];
        assert_eq!((req.method.as_str(), req.url.as_str()), ("PATCH", "http://127.0.0.1:9000/v2/service_instances/i-1?accepts_incomplete=true"));
        assert_eq!(
            body(req),
            json!({
                "service_id": "svc", "plan_id": "p-sync", "parameters": {"size": 10, "name": "x"},
                "context": {"request_id": "ev1", "event_id": "ev1", "zone": "a"},
                "previous_values": {"plan_id": "p-async", "service_id": "svc", "organization_id": "o", "space_id": "o"},
            })
        );
        broker(202, json!({"operation": "upd"}));
        let change = Osb.update_instance(&provider(0), &instance(&data("", "")), &who()).unwrap();
        assert_eq!(change.operation.as_deref(), Some("upd"));

        broker(202, json!({}));
        let change = Osb.remove_instance(&provider(0), &instance(&data("", "")), &who()).unwrap();
        assert_eq!(change.operation.as_deref(), Some("deprovision"));
        let req = &sent()[0];
        assert_eq!(
            (req.method.as_str(), req.url.as_str(), req.body.is_empty()),
            ("DELETE", "http://127.0.0.1:9000/v2/service_instances/i-1?service_id=svc&plan_id=p-async&accepts_incomplete=true", true)
        );
        broker(410, json!({}));
        assert_eq!(Osb.remove_instance(&provider(0), &instance(&data("", "")), &who()).unwrap().operation, None);
        broker(422, json!({"error": "ConcurrencyError", "description": "still provisioning"}));
        assert!(matches!(Osb.remove_instance(&provider(0), &instance(&data("", "")), &who()), Err(Error::NotReady(_))));
        // Never at the broker: nothing to tell it.
        broker(500, json!({}));
        assert_eq!(Osb.remove_instance(&provider(0), &instance("{}"), &who()).unwrap().operation, None);
        assert!(sent().is_empty());
        assert!(matches!(Osb.update_instance(&provider(0), &instance("{}"), &who()), Err(Error::Internal(_))));
    }

    #[test]
    fn binds_turn_credentials_into_variables_and_unbind_names_the_binding() {
        broker(201, json!({"credentials": {"uri": "postgres://x", "port": 5432, "tls": true, "hosts": ["a"], "username": "u"}}));
        let bound = Osb.bind_app(&provider(0), &instance(&data("", "")), &app(), &[("role".into(), "ro".into())], &who()).unwrap();
        // Named as the broker names them; what is not a string as JSON.
        let want: Vec<(String, String)> = [("hosts", r#"["a"]"#), ("port", "5432"), ("tls", "true"), ("uri", "postgres://x"), ("username", "u")]
            .iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect();
        assert_eq!(bound.env, want);
        let id = serde_json::from_str::<Value>(&bound.data).unwrap()["UUID"].as_str().unwrap().to_string();
        assert_eq!(id.len(), 36);
        let put = &sent()[0];
        assert_eq!((put.method.as_str(), put.url.clone()), ("PUT", format!("http://127.0.0.1:9000/v2/service_instances/i-1/service_bindings/{id}")));
        assert_eq!(
            body(put),
            json!({
                "service_id": "svc", "plan_id": "p-async", "bind_resource": {"app_guid": "web"},
                "parameters": {"role": "ro"}, "context": {"request_id": "ev1", "event_id": "ev1", "zone": "a"},
            })
        );
        // No credentials: no variables.
        broker(200, json!({}));
        assert!(Osb.bind_app(&provider(0), &instance(&data("", "")), &app(), &[], &who()).unwrap().env.is_empty());

        for status in [200, 410] {
            broker(status, json!({}));
            Osb.unbind_app(&provider(0), &instance(&data("", "")), &app(), &bound.data, &who()).unwrap();
            let delete = &sent()[0];
            assert_eq!(delete.method, "DELETE");
            assert_eq!(delete.url, format!("http://127.0.0.1:9000/v2/service_instances/i-1/service_bindings/{id}?service_id=svc&plan_id=p-async"));
        }
        broker(500, json!({}));
        assert!(matches!(Osb.unbind_app(&provider(0), &instance(&data("", "")), &app(), &bound.data, &who()), Err(Error::Unavailable(_))));
        assert!(matches!(Osb.unbind_app(&provider(0), &instance(&data("", "")), &app(), "{}", &who()), Err(Error::Internal(_))));
    }

    #[test]
    fn uuids_are_version_4_and_differ() {
        let (a, b) = (uuid(), uuid());
        assert_ne!(a, b);
        let parts: Vec<usize> = a.split('-').map(str::len).collect();
        assert_eq!(parts, vec![8, 4, 4, 4, 12]);
        assert_eq!(&a[14..15], "4");
        assert!(matches!(&a[19..20], "8" | "9" | "a" | "b"), "{a}");
    }

    #[test]
    fn info_is_the_parameters_and_there_is_no_proxy() {
        assert_eq!(Osb.info(&provider(0), &instance("{}")).unwrap(), vec![("size".to_string(), "10".to_string()), ("name".to_string(), "x".to_string())]);
        assert!(matches!(Osb.proxy(&provider(0), None, "/x"), Err(Error::Invalid(_))));
    }
}
