//! Services: the host side of the `service-broker` plugins (API-NOTES §2.15).
//!
//! The host owns services, brokers, instances and binds (in the store),
//! their permissions, events and locks; a broker plugin turns each call into
//! its provider's requests. Two sources of services:
//! - services registered with `POST /services`, spoken to with tsuru's
//!   service API by the `[services] api_plugin` entry (built-in
//!   `service-tsuru`), one provider per service;
//! - the services of the brokers of `/1.7/brokers`, shown as
//!   `<broker>::<service>`, spoken to with the Open Service Broker API by
//!   the `[services] broker_plugin` entry (built-in `service-osb`).
//!
//! **Invariants:** a provider is never called while a database transaction
//! is open; an instance or bind is recorded only after its provider said
//! yes, and a provider's later failure (an async operation, an app restart)
//! takes back what was recorded (see [`bind`] and [`operations`]).

pub mod bind;
pub mod operations;

use crate::error::{ApiError, ApiResult};
use crate::plugin::service_broker::{Auth, BrokerFailure, BrokerPlugin, FailureKind, Instance, Provider, Requester};
use crate::server::Server;
use crate::store::{BrokerRecord, InstanceRecord, ServiceRecord};

/// What separates a broker's name from its service's (`b1::postgresql`).
pub const BROKER_SEPARATOR: &str = "::";

/// A service as users name it, with where its provider is.
pub enum Source {
    /// Registered with `POST /services`.
    Api(ServiceRecord),
    /// Offered by a broker: the broker and the service's name there.
    Broker { broker: BrokerRecord, service: String },
}

impl Source {
    /// The service's name at its provider.
    pub fn provider_service(&self) -> &str {
        match self {
            Source::Api(s) => &s.name,
            Source::Broker { service, .. } => service,
        }
    }
}

/// A service of either source, resolved by the name users give.
pub struct Resolved {
    pub name: String,
    pub source: Source,
}

impl Resolved {
    /// Teams that own the service (none for a broker's).
    pub fn owner_teams(&self) -> &[String] {
        match &self.source {
            Source::Api(s) => &s.owner_teams,
            Source::Broker { .. } => &[],
        }
    }

    /// The service when it is restricted to some teams (a broker's never is).
    pub fn restricted(&self) -> Option<&ServiceRecord> {
        match &self.source {
            Source::Api(s) if s.restricted => Some(s),
            _ => None,
        }
    }

    pub fn multi_cluster(&self) -> bool {
        matches!(&self.source, Source::Api(s) if s.multi_cluster)
    }

    pub fn disable_bind_unit(&self) -> bool {
        matches!(&self.source, Source::Api(s) if s.disable_bind_unit)
    }
}

/// The service users call `name`; 404 `Service not found` when there is none.
pub async fn resolve(server: &Server, name: &str) -> ApiResult<Resolved> {
    let not_found = || ApiError::not_found("Service not found");
    let source = match name.split_once(BROKER_SEPARATOR) {
        None => Source::Api(server.store.service(name).await?.ok_or_else(not_found)?),
        Some((broker, service)) => {
            let broker = server.store.broker(broker).await?.ok_or_else(not_found)?;
            Source::Broker { broker, service: service.to_string() }
        }
    };
    Ok(Resolved { name: name.to_string(), source })
}

/// The plugin serving `source`, and the provider it is told of.
pub fn provider<'a>(server: &'a Server, resolved: &Resolved) -> ApiResult<(&'a BrokerPlugin, Provider)> {
    let (entry, provider) = match &resolved.source {
        Source::Api(s) => {
            // A multi-cluster service's endpoint per cluster arrives with
            // provisioner clusters; until then its production one (or the first).
            let endpoint = s.endpoints.get("production").or_else(|| s.endpoints.values().next()).cloned().unwrap_or_default();
            let provider = Provider {
                name: s.name.clone(),
                endpoint,
                auth: Auth::Basic((s.username.clone(), s.password.clone())),
                settings: "{}".into(),
            };
            (&server.config.services.api_plugin, provider)
        }
        Source::Broker { broker, .. } => (&server.config.services.broker_plugin, broker_provider(broker)),
    };
    let plugin = server.brokers.get(entry).ok_or_else(|| ApiError::internal(format!("no service-broker plugin named {entry:?}")))?;
    Ok((plugin, provider))
}

/// A broker of `/1.7/brokers` as its plugin is told of it.
pub fn broker_provider(b: &BrokerRecord) -> Provider {
    let auth_config = b.config.get("AuthConfig");
    let basic = auth_config.and_then(|a| a.get("BasicAuthConfig")).filter(|v| !v.is_null());
    let bearer = auth_config.and_then(|a| a.get("BearerConfig")).filter(|v| !v.is_null());
    let text = |v: Option<&serde_json::Value>, k: &str| v.and_then(|v| v.get(k)).and_then(|v| v.as_str()).unwrap_or_default().to_string();
    let auth = match (basic, bearer) {
        (Some(_), _) => Auth::Basic((text(basic, "Username"), text(basic, "Password"))),
        (None, Some(_)) => Auth::Bearer(text(bearer, "Token")),
        (None, None) => Auth::None,
    };
    let settings = serde_json::json!({
        "context": b.config.get("Context").cloned().unwrap_or(serde_json::Value::Null),
        "cache_expiration_seconds": b.config.get("CacheExpirationSeconds").and_then(|v| v.as_i64()).unwrap_or(0),
    });
    Provider { name: b.name.clone(), endpoint: b.url.clone(), auth, settings: settings.to_string() }
}

/// The instance as its broker is told of it.
pub fn instance(resolved: &Resolved, i: &InstanceRecord) -> Instance {
    Instance {
        service: resolved.source.provider_service().to_string(),
        name: i.name.clone(),
        plan: i.plan.clone(),
        team: i.team_owner.clone(),
        description: i.description.clone(),
        tags: i.tags.clone(),
        parameters: i.parameters.iter().map(|(k, v)| (k.clone(), v.as_str().map_or_else(|| v.to_string(), str::to_string))).collect(),
        pool: i.pool.clone(),
        data: if i.data.is_empty() { "{}".into() } else { i.data.clone() },
    }
}

/// Who asks: the caller's email (or token, or app) and the event's id.
pub fn requester(caller: Option<&crate::auth::Identity>, event: &str) -> Requester {
    let user = match caller.map(|c| &c.subject) {
        Some(crate::auth::Subject::User { email }) => email.clone(),
        Some(crate::auth::Subject::TeamToken { token_id, .. }) => token_id.clone(),
        Some(crate::auth::Subject::App { app }) => app.clone(),
        None => String::new(),
    };
    Requester { user, event: event.to_string() }
}

/// A broker's failure as the API answers it.
pub fn failure(e: BrokerFailure) -> ApiError {
    use axum::http::StatusCode;
    let status = match e.kind {
        FailureKind::NotFound => StatusCode::NOT_FOUND,
        FailureKind::Invalid | FailureKind::NotReady => StatusCode::BAD_REQUEST,
        FailureKind::Conflict => StatusCode::CONFLICT,
        FailureKind::Unavailable | FailureKind::Internal => StatusCode::INTERNAL_SERVER_ERROR,
    };
    ApiError::new(status, e.message)
}

/// The services a caller sees in catalogues: every registered service and
/// every service of every broker that answers (a broker that does not is
/// logged and left out, so one broker down does not fail every list).
pub async fn all(server: &Server) -> ApiResult<Vec<(Resolved, Vec<crate::plugin::service_broker::Plan>)>> {
    let mut out = Vec::new();
    for s in server.store.services().await? {
        out.push((Resolved { name: s.name.clone(), source: Source::Api(s) }, Vec::new()));
    }
    for b in server.store.brokers().await? {
        let Some(plugin) = server.brokers.get(&server.config.services.broker_plugin) else { break };
        match plugin.catalog(broker_provider(&b)).await {
            Ok(services) => {
                for s in services {
                    let name = format!("{}{BROKER_SEPARATOR}{}", b.name, s.name);
                    out.push((Resolved { name, source: Source::Broker { broker: b.clone(), service: s.name } }, s.plans));
                }
            }
            Err(e) => tracing::warn!(broker = %b.name, error = %e, "services: the broker's catalogue is left out"),
        }
    }
    out.sort_by(|a, b| a.0.name.cmp(&b.0.name));
    Ok(out)
}

/// The plans of `resolved` as its provider lists them.
pub async fn plans(server: &Server, resolved: &Resolved) -> ApiResult<Vec<crate::plugin::service_broker::Plan>> {
    let (plugin, provider) = provider(server, resolved)?;
    let services = plugin.catalog(provider).await.map_err(failure)?;
    let wanted = resolved.source.provider_service();
    Ok(services.into_iter().find(|s| s.name == wanted).map(|s| s.plans).unwrap_or_default())
}
