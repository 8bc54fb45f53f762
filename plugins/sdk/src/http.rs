//! Outbound HTTP for plugins: a small blocking client over
//! `wasi:http/outgoing-handler`.
//!
//! The host sends the request only when the plugin's entry is granted `http`
//! and an entry of its `[plugin.outbound] allow` list matches the URL;
//! otherwise the call fails with the host's reason (naming the plugin, the
//! URL and the rule). Bodies and time are bounded by the entry's limits.
//! [`fetch`] follows redirects, each hop a new request the host checks again.
//!
//! ```ignore
//! let r = torii_plugin_sdk::http::get("https://api.example.com/v1/things")?;
//! if r.status == 200 { /* r.body */ }
//! ```

use std::fmt;
#[cfg(target_arch = "wasm32")]
use wasip2::http::outgoing_handler;
#[cfg(target_arch = "wasm32")]
use wasip2::http::types::{ErrorCode, Fields, IncomingBody, Method, OutgoingBody, OutgoingRequest, Scheme};
#[cfg(target_arch = "wasm32")]
use wasip2::io::streams::StreamError;

/// Redirects [`fetch`] follows.
pub const MAX_REDIRECTS: usize = 5;

/// A request: method (`GET`, `POST`, …), absolute `http(s)` URL, headers, body.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub method: String,
    pub url: String,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Request {
    pub fn new(method: &str, url: &str) -> Request {
        Request { method: method.to_ascii_uppercase(), url: url.to_string(), headers: Vec::new(), body: Vec::new() }
    }

    pub fn header(mut self, name: &str, value: &str) -> Request {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }

    pub fn body(mut self, body: impl Into<Vec<u8>>) -> Request {
        self.body = body.into();
        self
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Vec<u8>,
}

impl Response {
    /// The first value of header `name` (case-insensitive).
    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers.iter().find(|(k, _)| k.eq_ignore_ascii_case(name)).map(|(_, v)| v.as_str())
    }

    /// The body as text (invalid UTF-8 replaced).
    pub fn text(&self) -> String {
        String::from_utf8_lossy(&self.body).into_owned()
    }
}

/// Why a request failed: the host's refusal, or what went wrong on the way.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct HttpError(pub String);

impl fmt::Display for HttpError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.0)
    }
}

impl std::error::Error for HttpError {}

/// `GET url`, following redirects.
pub fn get(url: &str) -> Result<Response, HttpError> {
    fetch(Request::new("GET", url))
}

/// Sends `request`, following up to [`MAX_REDIRECTS`] redirects (a 301, 302
/// or 303 turns into a `GET` without a body, as browsers do).
pub fn fetch(mut request: Request) -> Result<Response, HttpError> {
    for _ in 0..=MAX_REDIRECTS {
        let response = send(&request)?;
        let location = match response.status {
            301 | 302 | 303 | 307 | 308 => response.header("location").map(str::to_string),
            _ => None,
        };
        let Some(location) = location else { return Ok(response) };
        let next = resolve(&request.url, &location).ok_or_else(|| HttpError(format!("{} redirected to {location:?}, which is not a URL", request.url)))?;
        if matches!(response.status, 301..=303) && request.method != "HEAD" {
            request.method = "GET".into();
            request.body.clear();
        }
        request.url = next;
    }
    Err(HttpError(format!("{} redirected more than {MAX_REDIRECTS} times", request.url)))
}

/// Sends `request` once: a redirect is the answer. Natively, the test
/// double answers ([`crate::testing::on_http`]).
pub fn send(request: &Request) -> Result<Response, HttpError> {
    #[cfg(not(target_arch = "wasm32"))]
    return crate::testing::send(request);
    #[cfg(target_arch = "wasm32")]
    send_wasi(request)
}

#[cfg(target_arch = "wasm32")]
fn send_wasi(request: &Request) -> Result<Response, HttpError> {
    let what = format!("{} {}", request.method, request.url);
    let fail = |why: String| HttpError(format!("{what}: {why}"));
    let target = Target::parse(&request.url).ok_or_else(|| fail("not an absolute http or https URL".into()))?;

    let mut fields: Vec<(String, Vec<u8>)> = request.headers.iter().map(|(k, v)| (k.to_ascii_lowercase(), v.as_bytes().to_vec())).collect();
    if !request.body.is_empty() && !fields.iter().any(|(k, _)| k == "content-length") {
        fields.push(("content-length".into(), request.body.len().to_string().into_bytes()));
    }
    let headers = Fields::from_list(&fields).map_err(|e| fail(format!("the headers were refused ({e:?})")))?;
    let outgoing = OutgoingRequest::new(headers);
    let method = match request.method.as_str() {
        "GET" => Method::Get,
        "HEAD" => Method::Head,
        "POST" => Method::Post,
        "PUT" => Method::Put,
        "DELETE" => Method::Delete,
        "PATCH" => Method::Patch,
        "OPTIONS" => Method::Options,
        other => Method::Other(other.to_string()),
    };
    let set = |ok: Result<(), ()>, part: &str| ok.map_err(|()| fail(format!("invalid {part}")));
    set(outgoing.set_method(&method), "method")?;
    set(outgoing.set_scheme(Some(&if target.https { Scheme::Https } else { Scheme::Http })), "scheme")?;
    set(outgoing.set_authority(Some(&target.authority)), "host")?;
    set(outgoing.set_path_with_query(Some(&target.path)), "path")?;
    let body = outgoing.body().map_err(|()| fail("the request body is not writable".into()))?;

    let future = outgoing_handler::handle(outgoing, None).map_err(|e| fail(describe(&e)))?;
    {
        let out = body.write().map_err(|()| fail("the request body is not writable".into()))?;
        for chunk in request.body.chunks(4096) {
            if let Err(e) = out.blocking_write_and_flush(chunk) {
                // The host stopped taking the body: its reason is the response's.
                let _ = e;
                break;
            }
        }
    }
    let _ = OutgoingBody::finish(body, None);

    future.subscribe().block();
    let response = match future.get() {
        Some(Ok(Ok(r))) => r,
        Some(Ok(Err(code))) => return Err(fail(describe(&code))),
        Some(Err(())) | None => return Err(fail("the response was already taken".into())),
    };
    let status = response.status();
    let headers = response.headers().entries().into_iter().map(|(k, v)| (k, String::from_utf8_lossy(&v).into_owned())).collect();
    let incoming = response.consume().map_err(|()| fail("the response body is not readable".into()))?;
    let mut bytes = Vec::new();
    {
        let stream = incoming.stream().map_err(|()| fail("the response body is not readable".into()))?;
        loop {
            match stream.blocking_read(64 * 1024) {
                Ok(chunk) => bytes.extend_from_slice(&chunk),
                Err(StreamError::Closed) => break,
                Err(StreamError::LastOperationFailed(e)) => {
                    let why = wasip2::http::types::http_error_code(&e).map(|c| describe(&c)).unwrap_or_else(|| e.to_debug_string());
                    return Err(fail(format!("reading the response body: {why}")));
                }
            }
        }
    }
    let _ = IncomingBody::finish(incoming);
    Ok(Response { status, headers, body: bytes })
}

/// An error code in words; the host's refusals carry their own.
#[cfg(target_arch = "wasm32")]
fn describe(code: &ErrorCode) -> String {
    match code {
        ErrorCode::InternalError(Some(m)) => m.clone(),
        ErrorCode::HttpRequestBodySize(Some(n)) => format!("the request body is over the {n} bytes allowed"),
        ErrorCode::HttpResponseBodySize(Some(n)) => format!("the response body is over the {n} bytes allowed"),
        ErrorCode::ConnectionTimeout => "the connection timed out".into(),
        ErrorCode::ConnectionRefused => "the connection was refused".into(),
        ErrorCode::HttpResponseTimeout | ErrorCode::ConnectionReadTimeout => "the response did not come in time".into(),
        ErrorCode::HttpRequestDenied => "the host denied the request".into(),
        other => format!("{other:?}"),
    }
}

/// The parts of an absolute URL the request needs.
#[derive(Debug, PartialEq, Eq)]
struct Target {
    https: bool,
    authority: String,
    /// Path and query, without the fragment.
    path: String,
}

impl Target {
    fn parse(url: &str) -> Option<Target> {
        let (scheme, rest) = url.split_once("://")?;
        let https = match scheme.to_ascii_lowercase().as_str() {
            "http" => false,
            "https" => true,
            _ => return None,
        };
        let rest = rest.split('#').next().unwrap_or_default();
        let end = rest.find(['/', '?']).unwrap_or(rest.len());
        let (authority, path) = rest.split_at(end);
        if authority.is_empty() || authority.contains('@') {
            return None;
        }
        let path = if path.is_empty() { "/".to_string() } else if path.starts_with('?') { format!("/{path}") } else { path.to_string() };
        Some(Target { https, authority: authority.to_string(), path })
    }
}

/// `location` (absolute, scheme-relative, absolute-path or relative) against `base`.
fn resolve(base: &str, location: &str) -> Option<String> {
    if Target::parse(location).is_some() {
        return Some(location.to_string());
    }
    let (scheme, _) = base.split_once("://")?;
    let target = Target::parse(base)?;
    if let Some(rest) = location.strip_prefix("//") {
        return Some(format!("{scheme}://{rest}"));
    }
    if location.starts_with('/') {
        return Some(format!("{scheme}://{}{location}", target.authority));
    }
    let path = target.path.split('?').next().unwrap_or("/");
    let dir = &path[..path.rfind('/').map_or(0, |i| i + 1)];
    Some(format!("{scheme}://{}{dir}{location}", target.authority))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls_split_into_what_the_request_needs() {
        assert_eq!(Target::parse("https://api.example.com"), Some(Target { https: true, authority: "api.example.com".into(), path: "/".into() }));
        assert_eq!(
            Target::parse("http://127.0.0.1:2019/config/apps?x=1#frag"),
            Some(Target { https: false, authority: "127.0.0.1:2019".into(), path: "/config/apps?x=1".into() })
        );
        assert_eq!(Target::parse("http://h?q=1").map(|t| t.path), Some("/?q=1".into()));
        for bad in ["ftp://x/", "/relative", "http://", "https://user@host/"] {
            assert_eq!(Target::parse(bad), None, "{bad}");
        }
    }

    #[test]
    fn redirects_resolve_against_the_url_that_answered() {
        let base = "http://127.0.0.1:8000/a/b?q=1";
        assert_eq!(resolve(base, "https://other.test/x").as_deref(), Some("https://other.test/x"));
        assert_eq!(resolve(base, "//other.test/y").as_deref(), Some("http://other.test/y"));
        assert_eq!(resolve(base, "/root").as_deref(), Some("http://127.0.0.1:8000/root"));
        assert_eq!(resolve(base, "c").as_deref(), Some("http://127.0.0.1:8000/a/c"));
    }
}
