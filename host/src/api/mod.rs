//! The HTTP API: tsuru 1.13's wire format. **Only this module knows HTTP.**
//!
//! Every route is registered through [`Routes::add`] with tsuru's version: it
//! answers on `/<version><path>` and on the bare `<path>`, and on no other
//! version (API-NOTES §1.1). Unmatched paths and wrong methods get Go's
//! `404 page not found`. Identity is resolved once per request by
//! [`identify`]; handlers take [`Caller`] (401 without a valid token) or
//! [`MaybeCaller`] and check permissions through `Identity::require`.

mod apps;
mod auth;
mod autoscale;
mod brokers;
mod cnames;
mod deploy;
mod deploys;
mod dockerlogs;
mod env;
mod event_blocks;
mod healing;
mod iaas;
mod events;
mod lifecycle;
mod log_ingest;
mod logs;
pub mod names;
mod nodecontainers;
mod node_autoscale;
mod nodes;
mod misc;
pub mod plans;
mod provision;
mod platforms;
mod pools;
pub mod params;
mod roles;
mod routers;
mod certificates;
mod clusters;
mod volumes;
mod service_instances;
mod services;
mod shell;
pub mod stream;
mod teams;
pub mod tokens;
mod units;
pub mod users;
mod plugins;
mod webhooks;
mod ws;

use axum::Router;
use axum::extract::{DefaultBodyLimit, FromRequestParts, Request, State};
use axum::http::request::Parts;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::middleware::{self, Next};
use axum::response::{IntoResponse, Response};
use axum::routing::{MethodFilter, on};
use serde::Serialize;
use std::sync::Arc;

use crate::auth::{Identity, parse_authorization};
use crate::error::{ApiError, plain_text};
use crate::server::Server;

pub type AppState = State<Arc<Server>>;

/// The route table, registered the way tsuru's router does.
struct Routes {
    router: Router<Arc<Server>>,
}

impl Routes {
    fn add<H, T>(mut self, version: &str, method: Method, path: &str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, Arc<Server>> + Clone,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method).expect("standard method");
        let versioned = if path == "/" { format!("/{version}/") } else { format!("/{version}{path}") };
        self.router = self.router.route(&versioned, on(filter, handler.clone())).route(path, on(filter, handler));
        self
    }

    /// A torii-specific route: one exact path, no tsuru version prefixes.
    fn torii<H, T>(mut self, method: Method, path: &str, handler: H) -> Self
    where
        H: axum::handler::Handler<T, Arc<Server>> + Clone,
        T: 'static,
    {
        let filter = MethodFilter::try_from(method).expect("standard method");
        self.router = self.router.route(path, on(filter, handler));
        self
    }
}

pub fn router(server: Arc<Server>) -> Router {
    let routes = Routes { router: Router::new() };
    let routes = misc::routes(routes);
    let routes = auth::routes(routes);
    let routes = users::routes(routes);
    let routes = teams::routes(routes);
    let routes = roles::routes(routes);
    let routes = tokens::routes(routes);
    let routes = events::routes(routes);
    let routes = event_blocks::routes(routes);
    let routes = plans::routes(routes);
    let routes = pools::routes(routes);
    let routes = apps::routes(routes);
    let routes = env::routes(routes);
    let routes = logs::routes(routes);
    let routes = log_ingest::routes(routes);
    let routes = deploys::routes(routes);
    let routes = deploy::routes(routes);
    let routes = lifecycle::routes(routes);
    let routes = shell::routes(routes);
    let routes = units::routes(routes);
    let routes = autoscale::routes(routes);
    let routes = webhooks::routes(routes);
    let routes = plugins::routes(routes);
    let routes = platforms::routes(routes);
    let routes = cnames::routes(routes);
    let routes = routers::routes(routes);
    let routes = certificates::routes(routes);
    let routes = nodes::routes(routes);
    let routes = iaas::routes(routes);
    let routes = clusters::routes(routes);
    let routes = volumes::routes(routes);
    let routes = node_autoscale::routes(routes);
    let routes = nodecontainers::routes(routes);
    let routes = healing::routes(routes);
    let routes = dockerlogs::routes(routes);
    let routes = services::routes(routes);
    let routes = service_instances::routes(routes);
    let routes = brokers::routes(routes);
    let limit = server.config.api.max_body_bytes;
    let api = routes
        .router
        .route_layer(middleware::from_fn_with_state(server.clone(), measure))
        .fallback(not_found)
        .method_not_allowed_fallback(not_found)
        .layer(middleware::from_fn_with_state(server.clone(), identify))
        .layer(DefaultBodyLimit::max(limit))
        .layer(middleware::from_fn_with_state(server.clone(), refuse_oversized))
        .with_state(server);
    // Outside the whole router, so it also sees what axum's method routing adds.
    Router::new().fallback_service(api).layer(middleware::from_fn(tsuru_headers))
}

async fn not_found() -> Response {
    plain_text(StatusCode::NOT_FOUND, "404 page not found")
}

/// The headers tsuru sends on every response (API-NOTES §1.7).
async fn tsuru_headers(req: Request, next: Next) -> Response {
    let mut response = next.run(req).await;
    let not_found = response.status() == StatusCode::NOT_FOUND;
    let h = response.headers_mut();
    // Go answers a wrong method with a plain 404; axum's method router adds `Allow`.
    if not_found {
        h.remove(header::ALLOW);
    }
    h.insert("supported-tsuru", HeaderValue::from_static("1.0.1"));
    h.insert("supported-crane", HeaderValue::from_static("1.0.0"));
    h.insert("supported-tsuru-admin", HeaderValue::from_static("1.0.0"));
    response
}

/// Refuses a body whose announced length is past `api.max_body_bytes` before
/// reading any of it. Bodies without a length are cut while read.
async fn refuse_oversized(State(server): AppState, req: Request, next: Next) -> Response {
    let announced = req
        .headers()
        .get(header::CONTENT_LENGTH)
        .and_then(|v| v.to_str().ok())
        .and_then(|v| v.parse::<u64>().ok());
    if announced.is_some_and(|n| n > server.config.api.max_body_bytes as u64) {
        return ApiError::new(StatusCode::PAYLOAD_TOO_LARGE, "request body too large").into_response();
    }
    next.run(req).await
}

/// The caller, resolved from `Authorization` (or `None`), stored in the request.
#[derive(Clone)]
pub(crate) struct Resolved(pub(crate) Option<Arc<Identity>>);

/// The client's IP address (recorded in events).
#[derive(Clone, Debug, Default)]
pub struct ClientIp(pub String);

impl<S: Send + Sync> FromRequestParts<S> for ClientIp {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(parts.extensions.get::<ClientIp>().cloned().unwrap_or_default())
    }
}

/// Counts every request that matched a route, by its template, status and
/// latency to the response's headers (`GET /1.2/metrics`).
async fn measure(State(server): AppState, req: Request, next: Next) -> Response {
    let started = std::time::Instant::now();
    let method = req.method().clone();
    let route = req.extensions().get::<axum::extract::MatchedPath>().map(|p| p.as_str().to_string()).unwrap_or_default();
    let response = next.run(req).await;
    server.metrics.api_request(method.as_str(), &route, response.status().as_u16(), started.elapsed());
    response
}

async fn identify(State(server): AppState, mut req: Request, next: Next) -> Response {
    let token = req
        .headers()
        .get(header::AUTHORIZATION)
        .and_then(|v| v.to_str().ok())
        .and_then(parse_authorization)
        .map(str::to_owned);
    let identity = match token {
        None => None,
        Some(token) => match server.auth.resolve(&token).await {
            Ok(identity) => identity,
            // An expired team token fails the request whatever the route.
            Err(e) => return e.into_response(),
        },
    };
    let ip = req
        .extensions()
        .get::<axum::extract::ConnectInfo<std::net::SocketAddr>>()
        .map(|c| c.0.ip().to_string())
        .unwrap_or_default();
    req.extensions_mut().insert(ClientIp(ip));
    req.extensions_mut().insert(Resolved(identity));
    next.run(req).await
}

/// An authenticated caller; 401 otherwise.
pub struct Caller(pub Arc<Identity>);

impl<S: Send + Sync> FromRequestParts<S> for Caller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        match parts.extensions.get::<Resolved>() {
            Some(Resolved(Some(identity))) => Ok(Caller(identity.clone())),
            _ => Err(ApiError::unauthorized()),
        }
    }
}

/// The caller if any.
pub struct MaybeCaller(pub Option<Arc<Identity>>);

impl<S: Send + Sync> FromRequestParts<S> for MaybeCaller {
    type Rejection = ApiError;
    async fn from_request_parts(parts: &mut Parts, _: &S) -> Result<Self, ApiError> {
        Ok(MaybeCaller(parts.extensions.get::<Resolved>().and_then(|r| r.0.clone())))
    }
}

fn encode<T: Serialize>(value: &T) -> String {
    let mut text = stream::escape_html(serde_json::to_string(value).expect("serialisable"));
    text.push('\n');
    text
}

/// A JSON body as tsuru's encoder writes it: `application/json`, trailing newline.
pub fn json<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = (status, encode(value)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/json"));
    response
}

/// JSON written by a handler that sets no Content-Type (Go sniffs it as text).
pub fn json_untyped<T: Serialize>(status: StatusCode, value: &T) -> Response {
    let mut response = (status, encode(value)).into_response();
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("text/plain; charset=utf-8"));
    response
}

/// A list: 204 with no body when empty (API-NOTES §0 item 6).
pub fn json_list<T: Serialize>(items: &[T]) -> Response {
    if items.is_empty() { StatusCode::NO_CONTENT.into_response() } else { json(StatusCode::OK, &items) }
}

pub fn empty(status: StatusCode) -> Response {
    status.into_response()
}

/// Times as tsuru shows values read back from MongoDB: UTC, milliseconds, `Z`;
/// zero as `0001-01-01T00:00:00Z`.
pub fn time_json(millis: i64) -> String {
    if millis <= 0 {
        return "0001-01-01T00:00:00Z".into();
    }
    match chrono::DateTime::from_timestamp_millis(millis) {
        Some(t) => t.to_rfc3339_opts(chrono::SecondsFormat::AutoSi, true),
        None => "0001-01-01T00:00:00Z".into(),
    }
}
