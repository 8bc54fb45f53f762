//! Message heads on the byte-level path: a client's request read and
//! rewritten for the backend, the backend's answer read and rewritten for
//! the client. Only plain requests are taken (see [`parse_request`]); what
//! is not is left to hyper, which answers it or refuses it.

use super::chunked::Chunked;
use crate::dataplane::forward::{HOP_BY_HOP, Origin};
use std::cell::RefCell;
use std::io::Write;
use std::time::{SystemTime, UNIX_EPOCH};

/// Most header lines a head may have (hyper's bound too).
const MAX_HEADERS: usize = 100;
/// Largest request body taken on this path (read whole before it is sent).
pub const MAX_BODY: u64 = 64 * 1024;

/// How a message's body is delimited.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Framing {
    Empty,
    Length(u64),
    Chunked(Chunked),
    /// Until the backend closes the connection (an answer only).
    UntilClose,
}

/// A request taken on this path.
#[derive(Debug)]
pub struct Request {
    /// Bytes of the head in the buffer, and of the body after it.
    pub head_len: usize,
    pub body_len: usize,
    /// The host name the request is for (lower case, no port).
    pub host: String,
    pub head: bool,
    /// Whether sending it twice does no harm (RFC 9110 §9.2.2).
    pub idempotent: bool,
    /// The client asked to close after the answer.
    pub close: bool,
    /// The head as the backend gets it (the body follows unchanged).
    pub upstream: Vec<u8>,
}

#[derive(Debug)]
pub enum Parsed {
    Request(Request),
    /// The head is not all in yet.
    Partial,
    /// Not for this path (hyper takes the connection from here).
    Other,
}

/// Whether a header describes one connection, not the message.
fn hop_by_hop(name: &[u8]) -> bool {
    HOP_BY_HOP.iter().any(|h| name.eq_ignore_ascii_case(h.as_bytes()))
}

/// Whether `name` is one the `Connection` values list.
fn named_by(connection: &[&[u8]], name: &[u8]) -> bool {
    connection.iter().any(|n| n.eq_ignore_ascii_case(name))
}

/// The comma-separated tokens of `Connection` values.
fn tokens<'a>(values: impl Iterator<Item = &'a [u8]>) -> Vec<&'a [u8]> {
    values.flat_map(|v| v.split(|b| *b == b',')).map(|t| t.trim_ascii()).filter(|t| !t.is_empty()).collect()
}

fn digits(value: &[u8]) -> Option<u64> {
    if value.is_empty() || value.len() > 18 || !value.iter().all(u8::is_ascii_digit) {
        return None;
    }
    std::str::from_utf8(value).ok()?.parse().ok()
}

/// Reads the request at the start of `buf`. Taken are HTTP/1.1 requests in
/// origin form with one `Host`, no `Upgrade` or `Expect`, and no body or a
/// `Content-Length` one up to [`MAX_BODY`]; anything else (chunked or
/// large bodies, HTTP/1.0, ambiguous framing, malformed heads) is `Other`.
pub fn parse_request(buf: &[u8], origin: Origin) -> Parsed {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut req = httparse::Request::new(&mut headers);
    let head_len = match req.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Parsed::Partial,
        Err(_) => return Parsed::Other,
    };
    let (Some(method), Some(path), Some(1)) = (req.method, req.path, req.version) else { return Parsed::Other };
    if method == "CONNECT" || !path.starts_with('/') || !path.bytes().all(|b| b.is_ascii_graphic()) {
        return Parsed::Other;
    }
    let (mut host, mut length, mut close) = (None, None, false);
    let connection = tokens(req.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value));
    for t in &connection {
        if t.eq_ignore_ascii_case(b"close") {
            close = true;
        } else if t.eq_ignore_ascii_case(b"upgrade") {
            return Parsed::Other;
        }
    }
    let mut forwarded_for: Vec<&[u8]> = Vec::new();
    for h in req.headers.iter() {
        let (name, value) = (h.name.as_bytes(), h.value.trim_ascii());
        if name.eq_ignore_ascii_case(b"host") {
            if host.is_some() || !value.iter().all(|b| b.is_ascii_alphanumeric() || b"-.:[]_".contains(b)) {
                return Parsed::Other;
            }
            host = Some(value);
        } else if name.eq_ignore_ascii_case(b"content-length") {
            if length.is_some() {
                return Parsed::Other;
            }
            match digits(value) {
                Some(n) if n <= MAX_BODY => length = Some(n),
                _ => return Parsed::Other,
            }
        } else if name.eq_ignore_ascii_case(b"transfer-encoding") || name.eq_ignore_ascii_case(b"upgrade") || name.eq_ignore_ascii_case(b"expect") {
            return Parsed::Other;
        } else if name.eq_ignore_ascii_case(b"x-forwarded-for") && !value.is_empty() {
            forwarded_for.push(value);
        }
    }
    let Some(host_value) = host else { return Parsed::Other };
    let Some(host) = std::str::from_utf8(host_value).ok().and_then(crate::dataplane::host_name) else { return Parsed::Other };

    let mut up = Vec::with_capacity(head_len + 160);
    up.extend_from_slice(method.as_bytes());
    up.push(b' ');
    up.extend_from_slice(path.as_bytes());
    up.extend_from_slice(b" HTTP/1.1\r\n");
    for h in req.headers.iter() {
        let name = h.name.as_bytes();
        if hop_by_hop(name)
            || named_by(&connection, name)
            || name.eq_ignore_ascii_case(b"content-length")
            || name.eq_ignore_ascii_case(b"x-forwarded-for")
            || name.eq_ignore_ascii_case(b"x-forwarded-host")
            || name.eq_ignore_ascii_case(b"x-forwarded-proto")
        {
            continue;
        }
        header(&mut up, name, h.value.trim_ascii());
    }
    up.extend_from_slice(b"x-forwarded-for: ");
    for earlier in &forwarded_for {
        up.extend_from_slice(earlier);
        up.extend_from_slice(b", ");
    }
    let _ = write!(up, "{}\r\n", origin.peer.ip());
    header(&mut up, b"x-forwarded-host", host_value);
    header(&mut up, b"x-forwarded-proto", if origin.https { b"https" } else { b"http" });
    if let Some(n) = length {
        let _ = write!(up, "content-length: {n}\r\n");
    }
    up.extend_from_slice(b"\r\n");
    Parsed::Request(Request {
        head_len,
        body_len: length.unwrap_or(0) as usize,
        host,
        head: method == "HEAD",
        idempotent: matches!(method, "GET" | "HEAD" | "OPTIONS" | "TRACE" | "PUT" | "DELETE"),
        close,
        upstream: up,
    })
}

fn header(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.extend_from_slice(name);
    out.extend_from_slice(b": ");
    out.extend_from_slice(value);
    out.extend_from_slice(b"\r\n");
}

/// A backend's answer, its head read.
#[derive(Debug)]
pub struct Response {
    pub head_len: usize,
    pub status: u16,
    pub body: Framing,
    /// The backend keeps the connection open after this answer.
    pub reusable: bool,
    /// The head as the client gets it (the body follows unchanged).
    pub downstream: Vec<u8>,
}

#[derive(Debug)]
pub enum ParsedResponse {
    Response(Response),
    /// An interim (1xx) answer of this many bytes: passed over.
    Interim(usize),
    Partial,
}

/// Reads the answer at the start of `buf` to a request (`head`: a HEAD
/// one); `close`: the client is told the connection ends after it.
pub fn parse_response(buf: &[u8], head: bool, close: bool) -> Result<ParsedResponse, String> {
    let mut headers = [httparse::EMPTY_HEADER; MAX_HEADERS];
    let mut res = httparse::Response::new(&mut headers);
    let head_len = match res.parse(buf) {
        Ok(httparse::Status::Complete(n)) => n,
        Ok(httparse::Status::Partial) => return Ok(ParsedResponse::Partial),
        Err(e) => return Err(format!("its answer is not HTTP/1: {e}")),
    };
    let (Some(version), Some(status)) = (res.version, res.code) else { return Err("its answer has no status".into()) };
    if status == 101 {
        return Err("it switched protocols, which was not asked".into());
    }
    if (100..200).contains(&status) {
        return Ok(ParsedResponse::Interim(head_len));
    }
    let connection = tokens(res.headers.iter().filter(|h| h.name.eq_ignore_ascii_case("connection")).map(|h| h.value));
    let said = |t: &[u8]| connection.iter().any(|c| c.eq_ignore_ascii_case(t));
    let mut reusable = if version == 1 { !said(b"close") } else { said(b"keep-alive") };
    let (mut length, mut chunked, mut encoded) = (None, false, false);
    for h in res.headers.iter() {
        let value = h.value.trim_ascii();
        if h.name.eq_ignore_ascii_case("content-length") {
            match digits(value) {
                Some(n) if length.is_none_or(|l| l == n) => length = Some(n),
                _ => return Err("its answer's Content-Length is not one number".into()),
            }
        } else if h.name.eq_ignore_ascii_case("transfer-encoding") {
            encoded = true;
            chunked = value.rsplit(|b| *b == b',').next().is_some_and(|last| last.trim_ascii().eq_ignore_ascii_case(b"chunked"));
        }
    }
    let body = if head || status == 204 || status == 304 {
        Framing::Empty
    } else if encoded {
        if chunked { Framing::Chunked(Chunked::default()) } else { Framing::UntilClose }
    } else {
        match length {
            Some(0) => Framing::Empty,
            Some(n) => Framing::Length(n),
            None => Framing::UntilClose,
        }
    };
    if body == Framing::UntilClose || (encoded && length.is_some()) {
        reusable = false;
    }

    let mut down = Vec::with_capacity(head_len + 96);
    let reason = res.reason.filter(|r| !r.is_empty()).or_else(|| hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()));
    let _ = write!(down, "HTTP/1.1 {status} {}\r\n", reason.unwrap_or(""));
    let mut dated = false;
    for h in res.headers.iter() {
        let name = h.name.as_bytes();
        if hop_by_hop(name) || named_by(&connection, name) || name.eq_ignore_ascii_case(b"content-length") {
            continue;
        }
        dated |= name.eq_ignore_ascii_case(b"date");
        header(&mut down, name, h.value.trim_ascii());
    }
    match body {
        Framing::Length(n) => {
            let _ = write!(down, "content-length: {n}\r\n");
        }
        Framing::Chunked(_) => down.extend_from_slice(b"transfer-encoding: chunked\r\n"),
        // A HEAD answer and a 304 tell the length the body would have, if
        // the backend told it.
        Framing::Empty => {
            if let Some(n) = length.filter(|_| status != 204) {
                let _ = write!(down, "content-length: {n}\r\n");
            }
        }
        Framing::UntilClose => {}
    }
    if !dated {
        date(&mut down);
    }
    if close || body == Framing::UntilClose {
        down.extend_from_slice(b"connection: close\r\n");
    }
    down.extend_from_slice(b"\r\n");
    Ok(ParsedResponse::Response(Response { head_len, status, body, reusable, downstream: down }))
}

/// A plain-text answer of the router's own (the hyper path's `plain_text`).
pub fn plain(status: u16, text: &str, close: bool) -> Vec<u8> {
    let reason = hyper::StatusCode::from_u16(status).ok().and_then(|s| s.canonical_reason()).unwrap_or("");
    let mut out = Vec::with_capacity(text.len() + 160);
    let _ = write!(out, "HTTP/1.1 {status} {reason}\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: {}\r\n", text.len() + 1);
    date(&mut out);
    if close {
        out.extend_from_slice(b"connection: close\r\n");
    }
    let _ = write!(out, "\r\n{text}\n");
    out
}

thread_local! {
    /// This second's `Date` value, made once a second per thread.
    static DATE: RefCell<(u64, String)> = const { RefCell::new((0, String::new())) };
}

/// A `Date` header for now (RFC 9110 §6.6.1: a proxy adds one to an answer
/// that has none).
fn date(out: &mut Vec<u8>) {
    let now = SystemTime::now();
    let second = now.duration_since(UNIX_EPOCH).map_or(0, |d| d.as_secs());
    DATE.with_borrow_mut(|(at, value)| {
        if *at != second || value.is_empty() {
            *at = second;
            *value = httpdate::fmt_http_date(now);
        }
        header(out, b"date", value.as_bytes());
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn origin() -> Origin {
        Origin { peer: "127.0.0.9:4000".parse().unwrap(), https: false }
    }

    fn request(raw: &str) -> Parsed {
        parse_request(raw.as_bytes(), origin())
    }

    #[test]
    fn a_plain_request_is_rewritten_for_the_backend() {
        let raw = "POST /a?b=1 HTTP/1.1\r\nHost: Web.Apps.Test:8080\r\nConnection: keep-alive, x-private\r\nx-private: 1\r\nKeep-Alive: 5\r\n\
                   X-Forwarded-For: 10.0.0.1\r\nx-forwarded-for: 10.0.0.2\r\nX-Forwarded-Proto: https\r\nx-custom:  kept \r\nContent-Length: 4\r\n\r\npingGET";
        let Parsed::Request(r) = request(raw) else { panic!("not taken") };
        assert_eq!((r.head_len, r.body_len, r.host.as_str(), r.head, r.idempotent, r.close), (raw.len() - 7, 4, "web.apps.test", false, false, false));
        assert_eq!(
            String::from_utf8(r.upstream).unwrap(),
            "POST /a?b=1 HTTP/1.1\r\nHost: Web.Apps.Test:8080\r\nx-custom: kept\r\nx-forwarded-for: 10.0.0.1, 10.0.0.2, 127.0.0.9\r\n\
             x-forwarded-host: Web.Apps.Test:8080\r\nx-forwarded-proto: http\r\ncontent-length: 4\r\n\r\n"
        );
        let Parsed::Request(r) = request("HEAD / HTTP/1.1\r\nhost: a.b\r\nconnection: close\r\n\r\n") else { panic!("not taken") };
        assert!(r.head && r.idempotent && r.close && r.body_len == 0);
    }

    #[test]
    fn what_hyper_should_judge_is_left_to_it() {
        assert!(matches!(request("GET / HTTP/1.1\r\nhost: a"), Parsed::Partial));
        for raw in [
            "GET / HTTP/1.0\r\nhost: a\r\n\r\n",
            "GET http://a/ HTTP/1.1\r\nhost: a\r\n\r\n",
            "CONNECT a:443 HTTP/1.1\r\nhost: a\r\n\r\n",
            "GET / HTTP/1.1\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nhost: b\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a b\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ntransfer-encoding: chunked\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 1\r\ncontent-length: 1\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: +1\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\ncontent-length: 65537\r\n\r\n",
            "POST / HTTP/1.1\r\nhost: a\r\nexpect: 100-continue\r\ncontent-length: 1\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nconnection: upgrade\r\nupgrade: websocket\r\n\r\n",
            "GET /\x7f HTTP/1.1\r\nhost: a\r\n\r\n",
            "GET / HTTP/1.1\r\nhost: a\r\nbad header: 1\r\n\r\n",
        ] {
            assert!(matches!(request(raw), Parsed::Other), "{raw:?} was taken");
        }
    }

    fn response(raw: &str, head: bool, close: bool) -> Response {
        match parse_response(raw.as_bytes(), head, close).unwrap() {
            ParsedResponse::Response(r) => r,
            other => panic!("{other:?}"),
        }
    }

    #[test]
    fn answers_are_framed_for_the_client() {
        let r = response("HTTP/1.1 200 OK\r\nContent-Length: 6\r\nDate: then\r\nConnection: x-private\r\nx-private: 1\r\nx-backend: b\r\n\r\nhello\n", false, false);
        assert_eq!((r.status, r.body, r.reusable), (200, Framing::Length(6), true));
        assert_eq!(String::from_utf8(r.downstream).unwrap(), "HTTP/1.1 200 OK\r\nDate: then\r\nx-backend: b\r\ncontent-length: 6\r\n\r\n");
        let r = response("HTTP/1.1 201 \r\nTransfer-Encoding: gzip, chunked\r\ndate: d\r\n\r\n", false, true);
        assert_eq!((r.body, r.reusable), (Framing::Chunked(Chunked::default()), true));
        assert_eq!(String::from_utf8(r.downstream).unwrap(), "HTTP/1.1 201 Created\r\ndate: d\r\ntransfer-encoding: chunked\r\nconnection: close\r\n\r\n");
        // Until the backend closes: the client's connection closes too.
        let r = response("HTTP/1.0 200 OK\r\ndate: d\r\n\r\n", false, false);
        assert_eq!((r.body, r.reusable), (Framing::UntilClose, false));
        assert!(String::from_utf8(r.downstream).unwrap().ends_with("connection: close\r\n\r\n"));
        // A HEAD answer keeps its length and has no body; a date is added.
        let r = response("HTTP/1.1 200 OK\r\ncontent-length: 42\r\n\r\n", true, false);
        assert_eq!(r.body, Framing::Empty);
        let text = String::from_utf8(r.downstream).unwrap();
        assert!(text.starts_with("HTTP/1.1 200 OK\r\ncontent-length: 42\r\ndate: ") && text.ends_with(" GMT\r\n\r\n"), "{text}");
        let r = response("HTTP/1.1 304 Not Modified\r\ndate: d\r\netag: \"x\"\r\n\r\n", false, false);
        assert_eq!((r.body, String::from_utf8(r.downstream).unwrap().as_str()), (Framing::Empty, "HTTP/1.1 304 Not Modified\r\ndate: d\r\netag: \"x\"\r\n\r\n"));
        assert!(matches!(parse_response(b"HTTP/1.1 100 Continue\r\n\r\nHTTP/1.1 200", false, false), Ok(ParsedResponse::Interim(25))));
        assert!(parse_response(b"HTTP/1.1 200 OK\r\ncontent-length: 1\r\ncontent-length: 2\r\n\r\n", false, false).is_err());
        assert!(parse_response(b"HTTP/1.1 101 Switching\r\n\r\n", false, false).is_err());
    }

    #[test]
    fn the_routers_own_answers_are_plain_text() {
        let text = String::from_utf8(plain(502, "app a: down", true)).unwrap();
        assert!(text.starts_with("HTTP/1.1 502 Bad Gateway\r\ncontent-type: text/plain; charset=utf-8\r\ncontent-length: 12\r\ndate: "), "{text}");
        assert!(text.ends_with("\r\nconnection: close\r\n\r\napp a: down\n"), "{text}");
    }
}
