//! HTTP backends: a version whose provisioner runs it outside the app
//! runtime (containers publishing on 127.0.0.1, Swarm tasks on their nodes)
//! is proxied to one of its addresses, chosen at random, over keep-alive
//! connections; an address that takes no connection passes the request on
//! to the next.
//!
//! Each data-plane thread keeps its own idle connections per backend
//! address (an [`IdlePool`], as the byte-level path does): a connection goes
//! back as soon as its answer's head is in, and is ready again once that
//! answer's body is read.

use super::idle::{IdlePool, Kept};
use crate::runtime::{ResponseBody, plain_text as plain};
use crate::store::ProxyBackend;
use http_body_util::BodyExt;
use hyper::body::Incoming;
use hyper::client::conn::http1::SendRequest;
use hyper::header::{HeaderMap, HeaderName, HeaderValue};
use hyper_util::rt::TokioIo;
use std::cell::RefCell;
use std::net::SocketAddr;
use std::time::Duration;

/// How long connecting to a backend may take before the request fails.
pub(super) const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

thread_local! {
    static POOL: RefCell<IdlePool<SendRequest<Incoming>>> = RefCell::default();
}

/// What a kept connection can do: one whose last answer's body is still
/// being read is not ready yet.
fn state(sender: &SendRequest<Incoming>) -> Kept {
    if sender.is_closed() {
        Kept::Gone
    } else if sender.is_ready() {
        Kept::Ready
    } else {
        Kept::Busy
    }
}

/// A new connection to `address`, its driver running on this thread's runtime.
async fn connect(address: &str) -> Result<SendRequest<Incoming>, String> {
    let stream = match tokio::time::timeout(CONNECT_TIMEOUT, tokio::net::TcpStream::connect(address)).await {
        Ok(Ok(stream)) => stream,
        Ok(Err(e)) => return Err(e.to_string()),
        Err(_) => return Err(format!("no connection within {} s", CONNECT_TIMEOUT.as_secs())),
    };
    let _ = stream.set_nodelay(true);
    let (sender, connection) = hyper::client::conn::http1::handshake(TokioIo::new(stream)).await.map_err(|e| cause(&e))?;
    tokio::spawn(async move {
        let _ = connection.await;
    });
    Ok(sender)
}

/// Why a request did not get an answer from a backend.
enum Failed {
    /// No connection could be made: the request was not sent, and is here.
    Unreached(String, hyper::Request<Incoming>),
    /// The request was sent (or partly): it cannot be sent again.
    Sent(String),
}

/// Sends `req` to `address` on a pooled connection, or a new one; a pooled
/// connection the backend closed before taking the request is replaced once.
async fn send(address: &str, req: hyper::Request<Incoming>) -> Result<hyper::Response<Incoming>, Failed> {
    let mut req = req;
    let pooled = POOL.with_borrow_mut(|pool| pool.take(address, state));
    if let Some(mut sender) = pooled {
        match sender.try_send_request(req).await {
            Ok(response) => {
                POOL.with_borrow_mut(|pool| pool.put(address, sender));
                return Ok(response);
            }
            Err(mut e) => match e.take_message() {
                Some(unsent) => req = unsent,
                None => return Err(Failed::Sent(cause(e.error()))),
            },
        }
    }
    let mut sender = match connect(address).await {
        Ok(sender) => sender,
        Err(e) => return Err(Failed::Unreached(e, req)),
    };
    let response = sender.send_request(req).await.map_err(|e| Failed::Sent(cause(&e)))?;
    POOL.with_borrow_mut(|pool| pool.put(address, sender));
    Ok(response)
}

/// Where the request came from, for the backend's `X-Forwarded-*` headers.
#[derive(Clone, Copy)]
pub struct Origin {
    pub peer: SocketAddr,
    pub https: bool,
}

/// Sends `req` to one of `backend`'s addresses and streams its answer back;
/// an address that takes no connection (a unit that just went) is left for
/// the next one, at most [`TRIES`] in all, as the request was not sent; a
/// backend that cannot be reached is a 502 naming it.
pub async fn forward(app: &str, backend: &ProxyBackend, origin: Origin, req: hyper::Request<Incoming>) -> hyper::Response<ResponseBody> {
    let count = backend.addresses.len();
    let first = rand::random::<usize>() % count;
    let (mut parts, body) = req.into_parts();
    // A request in absolute form may carry its host in the target alone.
    if !parts.headers.contains_key(hyper::header::HOST)
        && let Some(host) = parts.uri.authority().and_then(|a| HeaderValue::from_str(a.as_str()).ok())
    {
        parts.headers.insert(hyper::header::HOST, host);
    }
    // Origin form on the connection to the backend: the path and query only.
    let mut uri = hyper::http::uri::Parts::default();
    uri.path_and_query = Some(parts.uri.path_and_query().cloned().unwrap_or_else(|| hyper::http::uri::PathAndQuery::from_static("/")));
    parts.uri = match hyper::Uri::from_parts(uri) {
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
    let mut req = hyper::Request::from_parts(parts, body);
    let mut tried = 0;
    loop {
        let address = &backend.addresses[(first + tried) % count];
        tried += 1;
        let failure = match send(address, req).await {
            Ok(response) => {
                let (mut parts, body) = response.into_parts();
                strip_hop_by_hop(&mut parts.headers);
                return hyper::Response::from_parts(parts, body.map_err(wasmtime_wasi_http::Error::Hyper).boxed_unsync());
            }
            Err(Failed::Unreached(e, unsent)) if tried < count.min(TRIES) => {
                tracing::debug!(app, address, error = %e, "backend unreached, trying the next one");
                req = unsent;
                continue;
            }
            Err(Failed::Unreached(e, _) | Failed::Sent(e)) => e,
        };
        return plain(502, &format!("app {app} version {}: its backend {address} did not answer: {failure}", backend.version));
    }
}

/// Addresses a request is offered to at most.
pub(super) const TRIES: usize = 3;

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
    for name in HOP_BY_HOP {
        headers.remove(name);
    }
}

/// Headers that describe one connection, not the message (RFC 9110 §7.6.1),
/// besides those the `Connection` header names.
pub(super) const HOP_BY_HOP: [&str; 7] = ["connection", "keep-alive", "proxy-connection", "te", "trailer", "transfer-encoding", "upgrade"];

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
