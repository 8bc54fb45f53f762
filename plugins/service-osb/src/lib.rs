//! torii's `osb` service broker: drives brokers that speak the Open Service
//! Broker API (v2.13), as tsuru's broker client does, over
//! outbound HTTP (capability `http`).
//!
//! One provider per broker of `/1.7/brokers`: its URL, basic or bearer
//! auth, and its settings (`context`, merged into every request's context;
//! `cache_expiration_seconds`, how long the catalogue is kept in `kv`).
//! Every request carries `X-Broker-API-Version: 2.13` and, when a user
//! asked, `X-Broker-API-Originating-Identity: tsuru <base64 {"user": …}>`.
//! What is sent, per call:
//! - catalogue: `GET /v2/catalog`;
//! - create: `PUT /v2/service_instances/<uuid>?accepts_incomplete=true`
//!   with `service_id`, `plan_id`, `organization_guid` and `space_guid`
//!   (one random id, kept, as tsuru sends), `parameters` and `context`; `202`
//!   leaves an operation the host polls (`last_operation`);
//! - update: `PATCH` of it with the new `plan_id`, `parameters` and
//!   `previous_values`; remove: `DELETE` with `service_id`, `plan_id`
//!   (`410 Gone` counts as done);
//! - bind: `PUT …/service_bindings/<uuid>` with `bind_resource.app_guid`
//!   (the app's name); the `credentials` become the
//!   app's variables, one per key, named as the broker names them, strings
//!   as they are and other values as JSON (tsuru drops non-strings; torii
//!   keeps them); unbind: `DELETE` of it;
//! - status: the state of the instance's last operation when it has one
//!   (`in progress - <description>`), else `up`;
//! - info: the instance's parameters (no call).
//!
//! What the host keeps for an instance (shown as `broker_data`):
//! `{"UUID", "ServiceID", "PlanID", "OrgID", "SpaceID", "LastOperationKey"}`;
//! for a bind: `{"UUID"}`.

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

/// The catalogue as kept in `kv`: when it was read (Unix seconds).
#[derive(Serialize, Deserialize)]
struct Cached {
    at: u64,
    services: Vec<CatalogService>,
}

fn now_secs() -> u64 {
    std::time::SystemTime::now().duration_since(std::time::UNIX_EPOCH).map(|d| d.as_secs()).unwrap_or(0)
}

/// A random UUID (v4): the platform's randomness through std's hasher keys.
fn uuid() -> String {
    use std::hash::{BuildHasher, Hasher};
    static COUNTER: std::sync::atomic::AtomicU64 = std::sync::atomic::AtomicU64::new(0);
    let mut bytes = [0u8; 16];
    for (i, half) in bytes.chunks_mut(8).enumerate() {
        let mut h = std::collections::hash_map::RandomState::new().build_hasher();
        h.write_u64(COUNTER.fetch_add(1, std::sync::atomic::Ordering::Relaxed));
        h.write_u64(now_secs() ^ i as u64);
        half.copy_from_slice(&h.finish().to_le_bytes());
    }
    bytes[6] = (bytes[6] & 0x0f) | 0x40;
    bytes[8] = (bytes[8] & 0x3f) | 0x80;
    let hex: String = bytes.iter().map(|b| format!("{b:02x}")).collect();
    format!("{}-{}-{}-{}-{}", &hex[0..8], &hex[8..12], &hex[12..16], &hex[16..20], &hex[20..32])
}

/// A request to `path` of the broker, answered.
fn call(provider: &Provider, method: &str, path: &str, body: Option<&Value>, who: Option<&Requester>) -> Outcome<Response> {
    let mut request = provider.request(method, path).header("X-Broker-API-Version", API_VERSION).header("Accept", "application/json");
    if let Some(who) = who.filter(|w| !w.user.is_empty()) {
        let identity = json!({"user": who.user}).to_string();
        request = request.header("X-Broker-API-Originating-Identity", &format!("tsuru {}", broker::base64(identity.as_bytes())));
    }
    if let Some(body) = body {
        request = request.header("Content-Type", "application/json").body(body.to_string());
    }
    http::send(&request).map_err(|e| Error::Unavailable(format!("broker {:?} does not answer: {e}", provider.name)))
}

/// The broker's answer as an error naming `what` failed.
fn refused(provider: &Provider, what: &str, r: &Response) -> Error {
    let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
    let said = body
        .get("description")
        .and_then(Value::as_str)
        .filter(|d| !d.is_empty())
        .or_else(|| body.get("error").and_then(Value::as_str))
        .map(str::to_string)
        .unwrap_or_else(|| r.text().trim().chars().take(512).collect());
    let message = format!("broker {:?}: {what} failed: {} {said}", provider.name, r.status);
    match r.status {
        404 | 410 => Error::NotFound(message),
        409 => Error::Conflict(message),
        422 if body.get("error").and_then(Value::as_str) == Some("ConcurrencyError") => Error::NotReady(message),
        400..=499 => Error::Invalid(message),
        _ => Error::Unavailable(message),
    }
}

fn cache_key(provider: &Provider) -> String {
    format!("catalog/{}", provider.name)
}

/// The broker's catalogue: from `kv` while younger than its cache time.
fn catalog(provider: &Provider) -> Outcome<Vec<CatalogService>> {
    let keep = provider.setting("cache_expiration_seconds").and_then(|v| v.as_u64()).unwrap_or(0);
    if keep > 0
        && let Ok(Some(cached)) = kv::get_json::<Cached>(&cache_key(provider))
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
        let _ = kv::set_json(&cache_key(provider), &Cached { at: now_secs(), services: parsed.services.clone() });
    }
    Ok(parsed.services)
}

/// The service and plan ids of `instance` (plan `plan`).
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

/// The request context as tsuru sends it: the broker's configured
/// context, the event's id and the instance's organisation and space.
fn context(provider: &Provider, k: &Kept, who: &Requester) -> Value {
    let mut ctx = match provider.setting("context") {
        Some(Value::Object(map)) => map,
        _ => Map::new(),
    };
    ctx.insert("request_id".into(), json!(who.event));
    ctx.insert("event_id".into(), json!(who.event));
    ctx.insert("organization_guid".into(), json!(k.org_id));
    ctx.insert("space_guid".into(), json!(k.space_id));
    Value::Object(ctx)
}

/// What is kept of an instance (tsuru's broker data).
#[derive(Debug, Clone, Default, Serialize, Deserialize)]
#[serde(rename_all = "PascalCase")]
struct Kept {
    #[serde(rename = "UUID")]
    uuid: String,
    #[serde(rename = "ServiceID")]
    service_id: String,
    #[serde(rename = "PlanID")]
    plan_id: String,
    #[serde(rename = "OrgID")]
    org_id: String,
    #[serde(rename = "SpaceID")]
    space_id: String,
    last_operation_key: String,
}

fn kept(instance: &Instance) -> Outcome<Kept> {
    let kept: Kept = serde_json::from_value(Value::Object(instance.data())).unwrap_or_default();
    if kept.uuid.is_empty() {
        return Err(Error::Internal(format!("instance {:?} has no broker data: it was not created through this broker", instance.name)));
    }
    Ok(kept)
}

/// The change a `200`/`201`/`202` answer says, keeping `k`.
fn change(r: &Response, mut k: Kept) -> Change {
    let operation = if r.status == 202 {
        let op = serde_json::from_slice::<Value>(&r.body).ok().and_then(|v| v.get("operation").and_then(Value::as_str).map(str::to_string));
        Some(op.unwrap_or_default())
    } else {
        None
    };
    k.last_operation_key = operation.clone().unwrap_or_default();
    Change { data: serde_json::to_string(&k).expect("serialisable"), operation }
}

fn instance_path(k: &Kept) -> String {
    format!("v2/service_instances/{}", k.uuid)
}

fn ids_query(k: &Kept) -> String {
    broker::form(&[("service_id".into(), k.service_id.clone()), ("plan_id".into(), k.plan_id.clone())])
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
        let k = Kept { uuid: uuid(), service_id, plan_id, space_id: org.clone(), org_id: org, last_operation_key: String::new() };
        let body = json!({
            "service_id": k.service_id,
            "plan_id": k.plan_id,
            "organization_guid": k.org_id,
            "space_guid": k.space_id,
            "parameters": parameters(&instance.parameters),
            "context": context(provider, &k, who),
        });
        let r = call(provider, "PUT", &format!("{}?accepts_incomplete=true", instance_path(&k)), Some(&body), Some(who))?;
        match r.status {
            200..=202 => Ok(change(&r, k)),
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
            "context": context(provider, &k, who),
            "previous_values": {"service_id": k.service_id, "plan_id": k.plan_id, "organization_id": k.org_id, "space_id": k.space_id},
        });
        let r = call(provider, "PATCH", &format!("{}?accepts_incomplete=true", instance_path(&k)), Some(&body), Some(who))?;
        match r.status {
            200..=202 => {
                k.plan_id = plan_id;
                Ok(change(&r, k))
            }
            _ => Err(refused(provider, &format!("update of {:?}", instance.name), &r)),
        }
    }

    fn remove_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        let k = kept(instance)?;
        let path = format!("{}?{}&accepts_incomplete=true", instance_path(&k), ids_query(&k));
        let r = call(provider, "DELETE", &path, None, Some(who))?;
        match r.status {
            200..=202 => Ok(change(&r, k)),
            // Gone already: what was asked is so.
            410 => Ok(change(&Response { status: 200, headers: vec![], body: vec![] }, k)),
            _ => Err(refused(provider, &format!("deprovision of {:?}", instance.name), &r)),
        }
    }

    fn last_operation(&self, provider: &Provider, instance: &Instance, operation: &str) -> Outcome<OperationState> {
        let k = kept(instance)?;
        let mut query = ids_query(&k);
        if !operation.is_empty() {
            query.push('&');
            query.push_str(&broker::form(&[("operation".into(), operation.into())]));
        }
        let r = call(provider, "GET", &format!("{}/last_operation?{query}", instance_path(&k)), None, None)?;
        if r.status == 410 {
            // The instance is gone: a removal succeeded; anything else failed.
            return Ok(if operation.contains("deprovision") || k.last_operation_key.contains("deprovision") {
                OperationState::Succeeded
            } else {
                OperationState::Failed(format!("broker {:?} no longer knows the instance", provider.name))
            });
        }
        if r.status != 200 {
            return Err(refused(provider, &format!("asking about the operation on {:?}", instance.name), &r));
        }
        let body: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        let description = body.get("description").and_then(Value::as_str).unwrap_or_default().to_string();
        match body.get("state").and_then(Value::as_str) {
            Some("succeeded") => Ok(OperationState::Succeeded),
            Some("failed") => Ok(OperationState::Failed(if description.is_empty() { "the broker says the operation failed".into() } else { description })),
            Some("in progress") => Ok(OperationState::InProgress(description)),
            other => Err(Error::Unavailable(format!("broker {:?} answered an operation state {other:?}", provider.name))),
        }
    }

    fn bind_app(&self, provider: &Provider, instance: &Instance, app: &App, parameters: &[(String, String)], who: &Requester) -> Outcome<Binding> {
        let k = kept(instance)?;
        let binding = uuid();
        let body = json!({
            "service_id": k.service_id,
            "plan_id": k.plan_id,
            "bind_resource": {"app_guid": app.name},
            "parameters": self::parameters(parameters),
            "context": context(provider, &k, who),
        });
        let r = call(provider, "PUT", &format!("{}/service_bindings/{binding}", instance_path(&k)), Some(&body), Some(who))?;
        if !matches!(r.status, 200 | 201) {
            return Err(refused(provider, &format!("bind of {:?} to the app {:?}", instance.name, app.name), &r));
        }
        let answer: Value = serde_json::from_slice(&r.body).unwrap_or(Value::Null);
        Ok(Binding { env: credentials_env(&answer), data: json!({"UUID": binding}).to_string() })
    }

    fn unbind_app(&self, provider: &Provider, instance: &Instance, app: &App, binding: &str, who: &Requester) -> Outcome<()> {
        let k = kept(instance)?;
        let binding: Value = serde_json::from_str(binding).unwrap_or(Value::Null);
        let Some(id) = binding.get("UUID").and_then(Value::as_str) else {
            return Err(Error::Internal(format!("the bind of {:?} to {:?} has no binding id", app.name, instance.name)));
        };
        let r = call(provider, "DELETE", &format!("{}/service_bindings/{id}?{}", instance_path(&k), ids_query(&k)), None, Some(who))?;
        match r.status {
            200..=202 | 410 => Ok(()),
            _ => Err(refused(provider, &format!("unbind of {:?} from the app {:?}", instance.name, app.name), &r)),
        }
    }

    fn status(&self, provider: &Provider, instance: &Instance) -> Outcome<String> {
        let k = kept(instance)?;
        if k.last_operation_key.is_empty() {
            return Ok("up".into());
        }
        Ok(match self.last_operation(provider, instance, &k.last_operation_key)? {
            OperationState::Succeeded => "up".into(),
            OperationState::InProgress(d) if d.is_empty() => "in progress".into(),
            OperationState::InProgress(d) => format!("in progress - {d}"),
            OperationState::Failed(d) => format!("failed - {d}"),
        })
    }

    /// The instance's parameters, as tsuru shows a brokered instance's info.
    fn info(&self, _provider: &Provider, instance: &Instance) -> Outcome<Vec<(String, String)>> {
        Ok(instance.parameters.clone())
    }

    fn proxy(&self, provider: &Provider, _instance: Option<&Instance>, _path: &str) -> Outcome<ProxyTarget> {
        Err(Error::Invalid(format!("service broker {:?}: the Open Service Broker API has no proxy", provider.name)))
    }
}

/// A bind's `credentials` as variables: one per key, named as the broker
/// names it; strings as they are, other values as JSON.
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

    #[test]
    fn the_catalogue_is_read_once_while_it_is_fresh() {
        broker(200, json!({}));
        let services = Osb.catalog(&provider(60)).unwrap();
        assert_eq!(services[0].name, "postgresql");
        assert_eq!(services[0].doc, "long");
        assert_eq!(services[0].plans[1].schemas.as_deref(), Some(r#"{"service_instance":{}}"#));
        Osb.catalog(&provider(60)).unwrap();
        assert_eq!(testing::requests().len(), 1);
        // Not cached: read each time.
        Osb.catalog(&provider(0)).unwrap();
        Osb.catalog(&provider(0)).unwrap();
        assert_eq!(testing::requests().len(), 3);
    }

    #[test]
    fn an_async_provision_says_what_it_sends_and_leaves_an_operation() {
        broker(202, json!({"operation": "provision"}));
        let change = Osb.create_instance(&provider(0), &instance("{}"), &who()).unwrap();
        assert_eq!(change.operation.as_deref(), Some("provision"));
        let kept: Value = serde_json::from_str(&change.data).unwrap();
        assert_eq!((kept["ServiceID"].clone(), kept["PlanID"].clone(), kept["LastOperationKey"].clone()), (json!("svc"), json!("p-async"), json!("provision")));
        let req = testing::requests().into_iter().find(|r| r.method == "PUT").unwrap();
        assert_eq!(req.url, format!("http://127.0.0.1:9000/v2/service_instances/{}?accepts_incomplete=true", kept["UUID"].as_str().unwrap()));
        assert_eq!(header(&req, "X-Broker-API-Version"), Some("2.13"));
        assert_eq!(header(&req, "Authorization"), Some("Basic dTpw"));
        let identity = format!("tsuru {}", broker::base64(br#"{"user":"ana@example.com"}"#));
        assert_eq!(header(&req, "X-Broker-API-Originating-Identity"), Some(identity.as_str()));
        let body: Value = serde_json::from_slice(&req.body).unwrap();
        assert_eq!(body["parameters"], json!({"size": 10, "name": "x"}));
        assert_eq!(body["context"]["zone"], "a");
        assert_eq!(body["context"]["event_id"], "ev1");
        assert_eq!(body["organization_guid"].as_str().unwrap().len(), 36);
        assert_eq!(body["organization_guid"], body["space_guid"]);
        assert_eq!(body["context"]["space_guid"], body["space_guid"]);
    }

    #[test]
    fn answers_map_to_the_errors_the_host_shows() {
        for (status, body, check) in [
            (409, json!({}), (|e: &Error| matches!(e, Error::Conflict(_))) as fn(&Error) -> bool),
            (422, json!({"error": "AsyncRequired", "description": "needs async"}), |e| matches!(e, Error::Invalid(m) if m.contains("needs async"))),
            (422, json!({"error": "ConcurrencyError"}), |e| matches!(e, Error::NotReady(_))),
            (500, json!({"description": "boom"}), |e| matches!(e, Error::Unavailable(m) if m.contains("500 boom"))),
        ] {
            broker(status, body);
            let e = Osb.create_instance(&provider(0), &instance("{}"), &who()).unwrap_err();
            assert!(check(&e), "{status}: {e:?}");
        }
        broker(200, json!({}));
        let e = Osb.create_instance(&provider(0), &Instance { plan: "gold".into(), ..instance("{}") }, &who()).unwrap_err();
        assert!(matches!(&e, Error::Invalid(m) if m.contains("plans: sync, async")), "{e:?}");
    }

    #[test]
    fn operation_states_and_binds() {
        let data = json!({"UUID": "i-1", "ServiceID": "svc", "PlanID": "p-async", "OrgID": "o", "SpaceID": "s", "LastOperationKey": "provision"}).to_string();
        for (body, want) in [
            (json!({"state": "in progress", "description": "copying"}), OperationState::InProgress("copying".into())),
            (json!({"state": "succeeded"}), OperationState::Succeeded),
            (json!({"state": "failed", "description": "disk full"}), OperationState::Failed("disk full".into())),
        ] {
            broker(200, body);
            assert_eq!(format!("{:?}", Osb.last_operation(&provider(0), &instance(&data), "provision").unwrap()), format!("{want:?}"));
        }
        let req = testing::requests().pop().unwrap();
        assert_eq!(req.url, "http://127.0.0.1:9000/v2/service_instances/i-1/last_operation?service_id=svc&plan_id=p-async&operation=provision");

        broker(201, json!({"credentials": {"uri": "postgres://x", "port": 5432, "tls": true}}));
        let app = App { name: "web".into(), hosts: vec![], internal_hosts: vec![] };
        let bound = Osb.bind_app(&provider(0), &instance(&data), &app, &[], &who()).unwrap();
        assert_eq!(bound.env, vec![("port".into(), "5432".into()), ("tls".into(), "true".into()), ("uri".into(), "postgres://x".into())]);
        let put = testing::requests().into_iter().find(|r| r.method == "PUT").unwrap();
        let body: Value = serde_json::from_slice(&put.body).unwrap();
        assert_eq!(body["bind_resource"], json!({"app_guid": "web"}));

        broker(200, json!({}));
        Osb.unbind_app(&provider(0), &instance(&data), &app, &bound.data, &who()).unwrap();
        let id = serde_json::from_str::<Value>(&bound.data).unwrap()["UUID"].as_str().unwrap().to_string();
        let delete = testing::requests().into_iter().find(|r| r.method == "DELETE").unwrap();
        assert_eq!(delete.url, format!("http://127.0.0.1:9000/v2/service_instances/i-1/service_bindings/{id}?service_id=svc&plan_id=p-async"));
    }
}
