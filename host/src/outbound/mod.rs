//! Outbound HTTP of plugins and WASM apps: `wasi:http/outgoing-handler`,
//! served by the host for a plugin entry granted `http`, to the destinations
//! its `[plugin.outbound] allow` list names, and for an app version to the
//! `allowed_outbound_hosts` of its `torii.toml`, within its pool's
//! `[[pool_policy]] outbound` (a request passes both lists).
//!
//! Every request the guest sends (a redirect it follows is a new request) is
//! checked here before any byte leaves:
//! - an allow entry matches its scheme, host and port ([`allow`]);
//! - the host resolves the name itself; a loopback, private, link-local or
//!   otherwise non-public address (the egress rule, [`crate::egress::is_public`])
//!   passes only when the matching entry names the host literally, not
//!   through a wildcard;
//! - the connection goes to the address that was checked, with TLS (rustls,
//!   the platform's roots plus the entry's `ca_files`) for `https`;
//! - the entry's limits hold: connect time, total time (response body
//!   included), request and response body bytes.
//!
//! A refusal fails the guest's request with a message naming the plugin, the
//! URL and the rule, and is logged.

pub mod allow;
mod body;

pub use allow::{AllowEntry, AllowList};

use crate::config::OutboundConfig;
use body::Bounded;
use http_body_util::BodyExt;
use reqwest::Url;
use rustls::pki_types::{CertificateDer, ServerName, pem::PemObject};
use std::future::Future;
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, LazyLock};
use std::time::Duration;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::time::Instant;
use wasmtime_wasi_http::{Error, WasiBody};

/// The limits of one entry's outbound HTTP.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct OutboundLimits {
    /// To resolve the name and open the connection (TLS included).
    pub connect: Duration,
    /// From the request to the last byte of the response.
    pub total: Duration,
    pub request_bytes: u64,
    pub response_bytes: u64,
}

/// Why a request was not sent: each names who asked, the URL and the rule.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refused {
    #[error("{who}: {url} is not a valid http or https URL")]
    BadUrl { who: String, url: String },
    #[error("{who}: {url} is not allowed: no entry of its allow-list ({allow}) matches it")]
    NotListed { who: String, url: String, allow: String },
    #[error("{who}: {url} is not allowed: the plugin is not granted capability \"http\"")]
    NotGranted { who: String, url: String },
    /// The address stays out of the text (the guest is no scanner of the
    /// host's network); the log has it.
    #[error(
        "{who}: {url} is not allowed: {host} resolves to a loopback, private or reserved address, \
         which only an allow entry naming {host} itself lets through (it matched {entry:?})"
    )]
    Private { who: String, url: String, host: String, ip: IpAddr, entry: String },
    #[error("{who}: {url} is not allowed: the outbound policy of {owner} ({policy}) does not let it through")]
    OutsidePolicy { who: String, url: String, owner: String, policy: String },
    #[error("{who}: {url} could not be resolved")]
    Unresolved { who: String, url: String },
}

/// One entry's (or one app version's) outbound HTTP: who it is, what it
/// may reach, its limits.
pub struct Outbound {
    who: String,
    allow: AllowList,
    /// The operator's bound on `allow` (an app's pool policy): whose it is,
    /// and what it lets through. A request passes both.
    bound: Option<(String, AllowList)>,
    limits: OutboundLimits,
    tls: Arc<rustls::ClientConfig>,
}

/// The roots of the platform's trust store, read once.
static PLATFORM_ROOTS: LazyLock<Vec<CertificateDer<'static>>> = LazyLock::new(|| {
    let found = rustls_native_certs::load_native_certs();
    if !found.errors.is_empty() {
        tracing::warn!(errors = ?found.errors, "some of the platform's CA certificates could not be read");
    }
    found.certs
});

impl Outbound {
    /// `who` (as in `plugin "caddy"`) reaching what `config` allows.
    pub fn new(who: String, config: &OutboundConfig) -> Result<Outbound, String> {
        let allow = AllowList::parse(&config.allow)?;
        let tls = tls_config(&config.ca_files)?;
        Ok(Outbound { who, allow, bound: None, limits: config.limits(), tls })
    }

    /// App `app`'s version reaching what it declared (`allowed_outbound_hosts`)
    /// within its pool's policy; the default limits, the platform's roots.
    pub fn for_app(app: &str, allow: &[String], pool: &str, policy: &[String]) -> Result<Outbound, String> {
        static APP_TLS: LazyLock<Arc<rustls::ClientConfig>> = LazyLock::new(|| tls_config(&[]).expect("the platform's roots make a TLS config"));
        let limits = OutboundConfig::default().limits();
        Ok(Outbound {
            who: format!("app {app:?}"),
            allow: AllowList::parse(allow)?,
            bound: Some((format!("pool {pool:?}"), AllowList::parse(policy)?)),
            limits,
            tls: APP_TLS.clone(),
        })
    }

    pub fn limits(&self) -> OutboundLimits {
        self.limits
    }

    /// The addresses `url` may be reached at under the rule.
    pub async fn check(&self, url: &Url) -> Result<Vec<SocketAddr>, Refused> {
        let shown = shown(url);
        let who = self.who.clone();
        let entry =
            self.allow.matching(url).ok_or_else(|| Refused::NotListed { who: who.clone(), url: shown.clone(), allow: self.allow.describe() })?;
        let bound = match &self.bound {
            None => None,
            Some((owner, policy)) => Some(policy.matching(url).ok_or_else(|| Refused::OutsidePolicy {
                who: who.clone(),
                url: shown.clone(),
                owner: owner.clone(),
                policy: policy.describe(),
            })?),
        };
        let host = url.host_str().unwrap_or_default().to_string();
        let addrs = crate::egress::resolve(url, self.limits.connect).await;
        if addrs.is_empty() {
            return Err(Refused::Unresolved { who, url: shown });
        }
        // The entry that does not name the host itself, if one of them does not.
        let wildcard = [Some(entry), bound].into_iter().flatten().find(|e| !e.names_literally(url));
        if let Some(wildcard) = wildcard
            && let Some(private) = addrs.iter().find(|a| !crate::egress::is_public(a.ip()))
        {
            return Err(Refused::Private { who, url: shown, host, ip: private.ip(), entry: wildcard.text.clone() });
        }
        Ok(addrs)
    }

    /// Sends `request` under the rule and the limits: the response, and the
    /// connection's remaining work (its body), bounded by the same deadline.
    pub async fn send(self: Arc<Self>, mut request: http::Request<WasiBody>) -> Result<(http::Response<WasiBody>, IoFuture), Error> {
        let start = Instant::now();
        let deadline = start + self.limits.total;
        let raw = request.uri().to_string();
        let url = Url::parse(&raw).ok().filter(|u| matches!(u.scheme(), "http" | "https") && u.host_str().is_some());
        let Some(url) = url else {
            return Err(self.refuse(Refused::BadUrl { who: self.who.clone(), url: raw }));
        };
        let addrs = self.check(&url).await.map_err(|r| self.refuse(r))?;
        let cap = self.limits.request_bytes;
        if content_length(&request).is_some_and(|n| n > cap) {
            return Err(self.over(&url, Error::HttpRequestBodySize(Some(cap))));
        }
        let connect_by = (start + self.limits.connect).min(deadline);
        let stream = self.connect(&url, &addrs, connect_by).await.map_err(|e| self.failed(&url, e))?;

        // The origin form on the wire; the Host header carries the authority.
        let path = request.uri().path_and_query().map(|p| p.as_str()).unwrap_or("/").to_string();
        *request.uri_mut() = http::Uri::try_from(path).map_err(|_| Error::HttpRequestUriInvalid)?;
        let request = request.map(|b| Bounded::new(b, cap, deadline, |cap| Error::HttpRequestBodySize(Some(cap)), || Error::ConnectionWriteTimeout));

        let handshake = hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream));
        let (mut sender, conn) = match tokio::time::timeout_at(connect_by, handshake).await {
            Err(_) => return Err(self.failed(&url, Error::ConnectionTimeout)),
            Ok(r) => r.map_err(|e| self.failed(&url, e.into()))?,
        };
        let mut conn = Box::pin(conn);
        let mut conn_done = false;
        let send = sender.send_request(request);
        tokio::pin!(send);
        let response = loop {
            tokio::select! {
                biased;
                r = &mut send => break r,
                c = &mut conn, if !conn_done => match c {
                    Ok(()) => conn_done = true,
                    Err(e) => return Err(self.failed(&url, e.into())),
                },
                _ = tokio::time::sleep_until(deadline) => return Err(self.failed(&url, Error::HttpResponseTimeout)),
            }
        };
        let response = response.map_err(|e| self.failed(&url, e.into()))?;
        let cap = self.limits.response_bytes;
        let response = response
            .map(|b| Bounded::new(b, cap, deadline, |cap| Error::HttpResponseBodySize(Some(cap)), || Error::HttpResponseTimeout).boxed_unsync());
        let io: IoFuture = Box::new(async move {
            if conn_done {
                return Ok(());
            }
            match tokio::time::timeout_at(deadline, conn).await {
                Err(_) => Err(Error::HttpResponseTimeout),
                Ok(r) => r.map_err(Error::from),
            }
        });
        Ok((response, io))
    }

    /// Opens a connection (TLS for `https`) to the first of `addrs` that answers.
    async fn connect(&self, url: &Url, addrs: &[SocketAddr], by: Instant) -> Result<Box<dyn Stream>, Error> {
        let mut last = Error::ConnectionRefused;
        let mut tcp = None;
        for addr in addrs {
            match tokio::time::timeout_at(by, tokio::net::TcpStream::connect(addr)).await {
                Ok(Ok(s)) => {
                    tcp = Some(s);
                    break;
                }
                Ok(Err(e)) => last = Error::Connect(e),
                Err(_) => {
                    last = Error::ConnectionTimeout;
                    break;
                }
            }
        }
        let tcp = tcp.ok_or(last)?;
        let _ = tcp.set_nodelay(true);
        if url.scheme() != "https" {
            return Ok(Box::new(tcp));
        }
        let host = url.host_str().unwrap_or_default().trim_start_matches('[').trim_end_matches(']');
        let name = match host.parse::<IpAddr>() {
            Ok(ip) => ServerName::IpAddress(ip.into()),
            Err(_) => ServerName::try_from(host.to_string()).map_err(|_| Error::HttpRequestUriInvalid)?,
        };
        let connector = tokio_rustls::TlsConnector::from(self.tls.clone());
        match tokio::time::timeout_at(by, connector.connect(name, tcp)).await {
            Err(_) => Err(Error::ConnectionTimeout),
            Ok(Err(e)) => Err(Error::Tls(e)),
            Ok(Ok(tls)) => Ok(Box::new(tls)),
        }
    }

    fn refuse(&self, refused: Refused) -> Error {
        match &refused {
            Refused::Private { ip, .. } => tracing::warn!(refused = %refused, %ip, "outbound request refused"),
            _ => tracing::warn!(refused = %refused, "outbound request refused"),
        }
        Error::InternalError(Some(refused.to_string()))
    }

    fn over(&self, url: &Url, e: Error) -> Error {
        tracing::warn!(who = %self.who, url = %shown(url), error = ?e, "outbound request over its limits");
        e
    }

    /// A request that could not complete; TLS failures carry their reason
    /// to the guest (an unknown issuer is the usual one).
    fn failed(&self, url: &Url, e: Error) -> Error {
        tracing::info!(who = %self.who, url = %shown(url), error = ?e, "outbound request failed");
        match e {
            Error::Tls(io) => Error::InternalError(Some(format!("{}: TLS with {} failed: {io}", self.who, shown(url)))),
            other => other,
        }
    }
}

/// rustls with the platform's roots and the PEM certificates of `ca_files`.
fn tls_config(ca_files: &[std::path::PathBuf]) -> Result<Arc<rustls::ClientConfig>, String> {
    let mut roots = rustls::RootCertStore::empty();
    roots.add_parsable_certificates(PLATFORM_ROOTS.iter().cloned());
    for file in ca_files {
        let shown = file.display();
        let certs = CertificateDer::pem_file_iter(file)
            .map_err(|e| format!("ca file {shown}: {e}"))?
            .collect::<Result<Vec<_>, _>>()
            .map_err(|e| format!("ca file {shown}: {e}"))?;
        if certs.is_empty() {
            return Err(format!("ca file {shown} holds no PEM certificate"));
        }
        for cert in certs {
            roots.add(cert).map_err(|e| format!("ca file {shown}: {e}"))?;
        }
    }
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut tls = rustls::ClientConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .map_err(|e| e.to_string())?
        .with_root_certificates(roots)
        .with_no_client_auth();
    tls.alpn_protocols = vec![b"http/1.1".to_vec()];
    Ok(Arc::new(tls))
}

/// The connection work left once the response head arrived.
pub type IoFuture = Box<dyn Future<Output = Result<(), Error>> + Send>;

trait Stream: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Stream for T {}

/// `url` as messages show it: no credentials, no query.
fn shown(url: &Url) -> String {
    let host = url.host_str().unwrap_or_default();
    match url.port() {
        Some(p) => format!("{}://{host}:{p}{}", url.scheme(), url.path()),
        None => format!("{}://{host}{}", url.scheme(), url.path()),
    }
}

fn content_length<B>(request: &http::Request<B>) -> Option<u64> {
    request.headers().get(http::header::CONTENT_LENGTH)?.to_str().ok()?.parse().ok()
}

/// Who sends a guest's requests, for messages.
#[derive(Clone)]
pub enum Guest {
    Plugin(Arc<str>),
    App(Arc<str>),
}

impl std::fmt::Display for Guest {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Guest::Plugin(name) => write!(f, "plugin {name:?}"),
            Guest::App(name) => write!(f, "app {name:?}"),
        }
    }
}

/// The `wasi:http` hooks of one guest instance (a plugin's, or an app
/// request's): its [`Outbound`], or a refusal saying what is missing.
pub struct GuestHttp {
    pub guest: Guest,
    pub outbound: Option<Arc<Outbound>>,
}

impl wasmtime_wasi_http::WasiHttpHooks for GuestHttp {
    fn send_request(
        &mut self,
        request: http::Request<WasiBody>,
        _options: Option<wasmtime_wasi_http::RequestOptions>,
        _fut: Box<dyn Future<Output = Result<(), Error>> + Send>,
    ) -> Box<dyn Future<Output = Result<(http::Response<WasiBody>, IoFuture), Error>> + Send> {
        if let Some(outbound) = &self.outbound {
            return Box::new(outbound.clone().send(request));
        }
        let (who, url) = (self.guest.to_string(), request.uri().to_string());
        let refused = match self.guest {
            Guest::Plugin(_) => Refused::NotGranted { who, url },
            Guest::App(_) => Refused::NotListed { who, url, allow: "nothing: its torii.toml declares no allowed_outbound_hosts".into() },
        };
        tracing::warn!(refused = %refused, "outbound request refused");
        Box::new(async move { Err(Error::InternalError(Some(refused.to_string()))) })
    }
}

/// The [`Outbound`] of each app version that declares outbound hosts,
/// built once (keyed by everything it is made of).
#[derive(Default)]
pub struct AppOutbound {
    built: std::sync::Mutex<std::collections::HashMap<String, Arc<Outbound>>>,
}

/// Versions kept at once; past it the cache starts over.
const APP_OUTBOUND_CACHE: usize = 4096;

impl AppOutbound {
    /// What version `version` of `app` (in `pool`, whose policy is `policy`)
    /// may reach; `None` when it declares nothing.
    /// `bound` are the origins of the app's service binds (see
    /// `AppView::bound_origins`): they join what the version declares, and
    /// the pool's policy bounds both.
    pub fn of(&self, app: &str, pool: &str, version: &crate::store::VersionRecord, bound: &[String], policy: &[String]) -> Option<Arc<Outbound>> {
        if version.outbound.is_empty() && (bound.is_empty() || policy.is_empty()) {
            return None;
        }
        let allow: Vec<String> = version.outbound.iter().chain(bound).cloned().collect();
        let key = format!("{app}\0{}\0{pool}\0{}\0{}", version.version, allow.join("\0"), policy.join("\0"));
        if let Some(found) = self.built.lock().unwrap().get(&key) {
            return Some(found.clone());
        }
        let built = match Outbound::for_app(app, &allow, pool, policy) {
            Ok(o) => Arc::new(o),
            Err(e) => {
                // Checked at deploy: only a policy edited since can get here.
                tracing::warn!(app, version = version.version, error = %e, "the outbound hosts of an app version cannot be used");
                return None;
            }
        };
        let mut cache = self.built.lock().unwrap();
        if cache.len() >= APP_OUTBOUND_CACHE {
            cache.clear();
        }
        cache.insert(key, built.clone());
        Some(built)
    }
}
