//! HTTP backends: a version whose provisioner runs it outside the app
//! runtime (containers publishing on 127.0.0.1) is proxied to one of its
//! addresses, chosen at random, over pooled keep-alive connections.

use crate::runtime::{ResponseBody, plain_text as plain};
use crate::store::ProxyBackend;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::client::legacy::Client as Pool;
use hyper_util::client::legacy::connect::HttpConnector;
use hyper_util::rt::TokioExecutor;
use std::net::SocketAddr;
use std::time::Duration;

/// How long connecting to a backend may take before the request fails.
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

pub type Client = Pool<HttpConnector, Incoming>;

pub fn client() -> Client {
    let mut connector = HttpConnector::new();
    connector.set_nodelay(true);
    connector.set_connect_timeout(Some(CONNECT_TIMEOUT));
    Pool::builder(TokioExecutor::new()).pool_idle_timeout(Duration::from_secs(30)).build(connector)
}

/// Where the request came from, for the backend's `X-Forwarded-*` headers.
#[derive(Clone, Copy)]
pub struct Origin {
    pub peer: SocketAddr,
    pub https: bool,
}

/// Sends `req` to one of `backend`'s addresses and streams its answer back;
/// a backend that cannot be reached is a 502 naming it.
pub async fn forward(client: &Client, app: &str, backend: &ProxyBackend, origin: Origin, req: hyper::Request<Incoming>) -> hyper::Response<ResponseBody> {
    let address = &backend.addresses[rand::random::<usize>() % backend.addresses.len()];
    let (mut parts, body) = req.into_parts();
    let path = parts.uri.path_and_query().map_or("/", |p| p.as_str());
    parts.uri = match format!("http://{address}{path}").parse() {
        Ok(uri) => uri,
        Err(e) => return plain(400, &format!("the request path cannot be forwarded: {e}")),
    };
    parts.version = hyper::Version::HTTP_11;
    let host = parts.headers.get(hyper::header::HOST).cloned();
    strip_hop_by_hop(&mut parts.headers);
    append_forwarded_for(&mut parts.headers, origin.peer);
    if let Some(host) = host {
        parts.headers.insert(HeaderName::from_static("x-forwarded-host"), host);
    }
    parts.headers.insert(HeaderName::from_static("x-forwarded-proto"), HeaderValue::from_static(if origin.https { "https" } else { "http" }));
    match client.request(hyper::Request::from_parts(parts, body)).await {
        Ok(response) => {
            let (mut parts, body) = response.into_parts();
            strip_hop_by_hop(&mut parts.headers);
            hyper::Response::from_parts(parts, body.map_err(wasmtime_wasi_http::Error::Hyper).boxed_unsync())
        }
        Err(e) => plain(502, &format!("app {app} version {}: its backend {address} did not answer: {}", backend.version, cause(&e))),
    }
}

/// The innermost cause of a client error (hyper-util's own message is vague).
fn cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut last = e;
    while let Some(next) = last.source() {
        last = next;
    }
    last.to_string()
}

/// Removes the headers that describe one connection, not the message
/// (RFC 9110 §7.6.1), including those the `Connection` header names.
fn strip_hop_by_hop(headers: &mut HeaderMap) {
    let named: Vec<HeaderName> = headers
        .get_all(hyper::header::CONNECTION)
        .iter()
        .filter_map(|v| v.to_str().ok())
        .flat_map(|v| v.split(','))
        .filter_map(|n| HeaderName::from_bytes(n.trim().as_bytes()).ok())
        .collect();
    for name in named {
        headers.remove(name);
    }
    for name in ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"] {
        headers.remove(name);
    }
}

fn append_forwarded_for(headers: &mut HeaderMap, peer: SocketAddr) {
    let name = HeaderName::from_static("x-forwarded-for");
    let ip = peer.ip().to_string();
    let value = match headers.get(&name).and_then(|v| v.to_str().ok()) {
        Some(earlier) => format!("{earlier}, {ip}"),
        None => ip,
    };
    if let Ok(v) = HeaderValue::from_str(&value) {
        headers.insert(name, v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn connection_headers_are_not_forwarded() {
        let mut h = HeaderMap::new();
        h.insert("connection", HeaderValue::from_static("keep-alive, x-private"));
        h.insert("x-private", HeaderValue::from_static("1"));
        h.insert("keep-alive", HeaderValue::from_static("timeout=5"));
        h.insert("x-kept", HeaderValue::from_static("1"));
        strip_hop_by_hop(&mut h);
        assert_eq!(h.keys().map(|k| k.as_str()).collect::<Vec<_>>(), ["x-kept"]);
    }

    #[test]
    fn forwarded_for_is_appended() {
        let mut h = HeaderMap::new();
        append_forwarded_for(&mut h, "127.0.0.1:5000".parse().unwrap());
        append_forwarded_for(&mut h, "127.0.0.2:5000".parse().unwrap());
        assert_eq!(h["x-forwarded-for"], "127.0.0.1, 127.0.0.2");
    }
}
