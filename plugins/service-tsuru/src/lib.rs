//! torii's `tsuru` service broker: drives a service provider that speaks
//! tsuru's service API (`reference/service-api.yaml`), as tsuru does, over
//! outbound HTTP (capability `http`).
//!
//! One provider per service: the endpoint, username and password a service
//! was registered with (`POST /services`), sent as HTTP basic auth. Every
//! request is a form (`application/x-www-form-urlencoded`) and asks for
//! JSON. What tsuru sends, per call:
//! - plans: `GET /resources/plans`;
//! - create: `POST /resources` with `name`, `user`, `team`, `eventid`,
//!   `plan`, `description`, a `tag` per tag, `parameters.<k>` per parameter;
//!   update: `PUT /resources/<name>` with the same (a `404` counts as
//!   done: the service has no updates); remove: `DELETE /resources/<name>`
//!   with `user`, `eventid`; calls made for a user carry `X-Tsuru-User`
//!   and `X-Tsuru-Eventid`;
//! - bind app: `POST /resources/<name>/bind-app` with `app-name`,
//!   `app-hosts` (each), `app-host` (the first), `app-internal-hosts`,
//!   `user`, `eventid`; its `201` answer is the app's variables (a JSON
//!   object); unbind: `DELETE` of the same path with the same form;
//! - bind unit: `POST /resources/<name>/bind` with `app-name`, `app-hosts`,
//!   `app-host`, `unit-host`; unbind unit: `DELETE` of it;
//! - status: `GET /resources/<name>/status` (`204` up, `202` pending, `200`
//!   its text, `404` not implemented, `500` down);
//! - info: `GET /resources/<name>` (`404`: nothing to show);
//! - proxy: the endpoint with the `callback` path, with basic auth.
//!
//! Nothing is kept between calls: the service API keeps its own state.

use serde_json::Value;
use torii_plugin_sdk::broker::{self, App, Binding, Broker, Change, Error, Instance, Outcome, Plan, Provider, ProxyTarget, Requester, Service, Unit};
use torii_plugin_sdk::export_broker;
use torii_plugin_sdk::http::{self, Response};

struct TsuruService;

/// A form request to the provider's `path`, answered; `who` adds tsuru's
/// `X-Tsuru-User` and `X-Tsuru-Eventid`.
fn call(provider: &Provider, method: &str, path: &str, form: &[(String, String)], who: Option<&Requester>) -> Outcome<Response> {
    let mut request = provider.request(method, path).header("Accept", "application/json");
    if let Some(who) = who {
        if !who.user.is_empty() {
            request = request.header("X-Tsuru-User", &who.user);
        }
        if !who.event.is_empty() {
            request = request.header("X-Tsuru-Eventid", &who.event);
        }
    }
    if !form.is_empty() {
        request = request.header("Content-Type", "application/x-www-form-urlencoded").body(broker::form(form));
    }
    http::send(&request).map_err(|e| Error::Unavailable(format!("the service {:?} does not answer: {e}", provider.name)))
}

/// The provider's answer as an error, worded as tsuru's: 404 not found, 409 conflict, 412 not
/// ready, other 4xx a refusal, 5xx (and the rest) the provider's failure.
fn refused(what: &str, r: &Response) -> Error {
    let body = r.text();
    let said: String = body.trim().chars().take(1024).collect();
    let message = format!("{what}: invalid response: {said} (code: {})", r.status);
    match r.status {
        404 => Error::NotFound(message),
        409 => Error::Conflict(message),
        412 => Error::NotReady(message),
        400..=499 => Error::Invalid(message),
        _ => Error::Unavailable(message),
    }
}

fn pair(k: &str, v: impl Into<String>) -> (String, String) {
    (k.to_string(), v.into())
}

/// The instance as a create or update form.
fn instance_form(instance: &Instance, who: &Requester) -> Vec<(String, String)> {
    let mut form = vec![pair("name", &instance.name), pair("user", &who.user), pair("team", &instance.team), pair("eventid", &who.event)];
    form.extend((!instance.plan.is_empty()).then(|| pair("plan", &instance.plan)));
    form.extend((!instance.description.is_empty()).then(|| pair("description", &instance.description)));
    form.extend(instance.tags.iter().map(|t| pair("tag", t)));
    form.extend(instance.parameters.iter().map(|(k, v)| (format!("parameters.{k}"), v.clone())));
    form
}

/// The app's part of a bind form.
fn app_form(app: &App) -> Vec<(String, String)> {
    let mut form = vec![pair("app-name", &app.name)];
    form.extend(app.hosts.first().map(|h| pair("app-host", h)));
    form.extend(app.hosts.iter().map(|h| pair("app-hosts", h)));
    form.extend(app.internal_hosts.iter().map(|h| pair("app-internal-hosts", h)));
    form
}

fn resource(instance: &Instance) -> String {
    format!("resources/{}", segment(&instance.name))
}

/// A path segment, escaped as a URL path needs.
fn segment(s: &str) -> String {
    s.bytes()
        .map(|b| if b.is_ascii_alphanumeric() || b"-._~".contains(&b) { (b as char).to_string() } else { format!("%{b:02X}") })
        .collect()
}

impl Broker for TsuruService {
    fn init(_config: Value) -> Result<Self, String> {
        Ok(TsuruService)
    }

    fn catalog(&self, provider: &Provider) -> Outcome<Vec<Service>> {
        let r = call(provider, "GET", "resources/plans", &[], None)?;
        if r.status != 200 {
            return Err(refused("Failed to get plans", &r));
        }
        #[derive(serde::Deserialize)]
        struct PlanJson {
            #[serde(default)]
            name: String,
            #[serde(default)]
            description: String,
        }
        let plans: Vec<PlanJson> = serde_json::from_slice(&r.body)
            .map_err(|e| Error::Unavailable(format!("the service {:?} answered plans that are not a JSON list of plans: {e}", provider.name)))?;
        Ok(vec![Service {
            name: provider.name.clone(),
            description: String::new(),
            plans: plans.into_iter().map(|p| Plan { name: p.name, description: p.description, schemas: None }).collect(),
            doc: String::new(),
        }])
    }

    fn create_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        let r = call(provider, "POST", "resources", &instance_form(instance, who), Some(who))?;
        match r.status {
            200..=299 => Ok(instance.unchanged()),
            409 => Err(Error::Conflict("instance already exists in the service API".into())),
            _ => Err(refused(&format!("Failed to create the instance {}", instance.name), &r)),
        }
    }

    fn update_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        let r = call(provider, "PUT", &resource(instance), &instance_form(instance, who), Some(who))?;
        match r.status {
            // A service API without updates answers 404: tsuru takes it as done.
            200..=299 | 404 => Ok(instance.unchanged()),
            _ => Err(refused(&format!("Failed to update the instance {}", instance.name), &r)),
        }
    }

    fn remove_instance(&self, provider: &Provider, instance: &Instance, who: &Requester) -> Outcome<Change> {
        let form = [pair("user", &who.user), pair("eventid", &who.event)];
        let r = call(provider, "DELETE", &resource(instance), &form, Some(who))?;
        match r.status {
            200..=299 => Ok(instance.unchanged()),
            404 => Err(Error::NotFound("instance does not exist in the service API".into())),
            _ => Err(refused(&format!("Failed to destroy the instance {}", instance.name), &r)),
        }
    }

    fn bind_app(&self, provider: &Provider, instance: &Instance, app: &App, _parameters: &[(String, String)], who: &Requester) -> Outcome<Binding> {
        let mut form = app_form(app);
        form.push(pair("user", &who.user));
        form.push(pair("eventid", &who.event));
        let r = call(provider, "POST", &format!("{}/bind-app", resource(instance)), &form, Some(who))?;
        match r.status {
            200..=299 => {}
            404 => return Err(Error::NotFound("instance does not exist in the service API".into())),
            412 => return Err(Error::NotReady("instance is not ready yet".into())),
            _ => return Err(refused(&format!("Failed to bind the instance \"{}/{}\" to the app \"{}\"", provider.name, instance.name, app.name), &r)),
        }
        let env = if r.body.iter().all(u8::is_ascii_whitespace) {
            Vec::new()
        } else {
            let vars: serde_json::Map<String, Value> = serde_json::from_slice(&r.body).map_err(|e| {
                Error::Unavailable(format!("the service {:?} answered variables that are not a JSON object: {e}", provider.name))
            })?;
            vars.into_iter().map(|(k, v)| (k, v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect()
        };
        Ok(Binding { env, data: "{}".into() })
    }

    fn unbind_app(&self, provider: &Provider, instance: &Instance, app: &App, _binding: &str, who: &Requester) -> Outcome<()> {
        let mut form = app_form(app);
        form.push(pair("user", &who.user));
        form.push(pair("eventid", &who.event));
        let r = call(provider, "DELETE", &format!("{}/bind-app", resource(instance)), &form, Some(who))?;
        match r.status {
            // Unknown to the service: nothing is bound there, as tsuru takes it.
            200..=299 | 404 => Ok(()),
            _ => Err(refused(&format!("Failed to unbind (\"/resources/{}/bind-app\")", instance.name), &r)),
        }
    }

    fn bind_unit(&self, provider: &Provider, instance: &Instance, app: &App, unit: &Unit) -> Outcome<()> {
        let mut form = app_form(app);
        form.push(pair("unit-host", &unit.host));
        let r = call(provider, "POST", &format!("{}/bind", resource(instance)), &form, None)?;
        match r.status {
            200..=299 => Ok(()),
            404 => Err(Error::NotFound("instance does not exist in the service API".into())),
            412 => Err(Error::NotReady("instance is not ready yet".into())),
            _ => Err(refused(&format!("Failed to bind the unit {:?} to the instance {:?}", unit.id, instance.name), &r)),
        }
    }

    fn unbind_unit(&self, provider: &Provider, instance: &Instance, app: &App, unit: &Unit) -> Outcome<()> {
        let mut form = app_form(app);
        form.push(pair("unit-host", &unit.host));
        let r = call(provider, "DELETE", &format!("{}/bind", resource(instance)), &form, None)?;
        match r.status {
            200..=299 | 404 => Ok(()),
            _ => Err(refused(&format!("Failed to unbind the unit {:?} from the instance {:?}", unit.id, instance.name), &r)),
        }
    }

    fn status(&self, provider: &Provider, instance: &Instance) -> Outcome<String> {
        let r = call(provider, "GET", &format!("{}/status", resource(instance)), &[], None)?;
        match r.status {
            204 => Ok("up".into()),
            202 => Ok("pending".into()),
            200 => {
                let said: String = r.text().trim().chars().take(1024).collect();
                Ok(if said.is_empty() { "up".into() } else { said })
            }
            404 => Ok("not implemented for this service".into()),
            500 => Ok("down".into()),
            _ => Err(refused(&format!("Failed to get status of instance {}", instance.name), &r)),
        }
    }

    fn info(&self, provider: &Provider, instance: &Instance) -> Outcome<Vec<(String, String)>> {
        let r = call(provider, "GET", &resource(instance), &[], None)?;
        match r.status {
            404 => Ok(Vec::new()),
            200..=299 => {
                let items: Vec<serde_json::Map<String, Value>> = serde_json::from_slice(&r.body)
                    .map_err(|e| Error::Unavailable(format!("the service {:?} answered info that is not a JSON list: {e}", provider.name)))?;
                Ok(items
                    .into_iter()
                    .filter_map(|item| {
                        let text = |k: &str| item.get(k).and_then(Value::as_str).map(str::to_string);
                        Some((text("label")?, text("value").unwrap_or_default()))
                    })
                    .collect())
            }
            _ => Err(refused("Failed to get the instance info", &r)),
        }
    }

    fn proxy(&self, provider: &Provider, _instance: Option<&Instance>, path: &str) -> Outcome<ProxyTarget> {
        let headers = provider.authorization().map(|a| ("Authorization".to_string(), a)).into_iter().collect();
        Ok(ProxyTarget { url: provider.url(path), headers })
    }
}

export_broker!(TsuruService);
