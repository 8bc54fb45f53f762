//! The byte-level HTTP/1.1 path: requests for apps served by HTTP backends
//! (containers, Swarm tasks) are passed to a backend and their answers back
//! as bytes, on the connection's own task. A head is read with httparse and
//! rewritten as the hyper path would (hop-by-hop headers out, the
//! `X-Forwarded-*` ones in); the body follows unchanged, its end found from
//! its framing. No message is rebuilt, no header map is made, and no task
//! drives the backend connection: per request, one read and one write on
//! each side, as nginx does.
//!
//! The path takes only what it is sure of (see [`message::parse_request`]).
//! The first request it does not take (a WASM app, an unknown host, a
//! chunked or large body, HTTP/1.0, an upgrade, a malformed head) hands the
//! connection to hyper for good, with what was read of it, and the hyper
//! path (`dataplane::answer`) serves or refuses it.
//!
//! Bounds are the hyper path's: the listener's header read timeout from the
//! connection's start or the end of its previous answer to the next
//! complete head, its idle timeout on every read and write (the `Watched`
//! stream), and the connect timeout and per-thread pool of backend
//! connections (see [`pool`]).

mod chunked;
mod message;
mod pool;
mod rewind;

use super::forward::{Origin, TRIES};
use super::{Chosen, Plane, choose, resolve};
use crate::listener::Admission;
use crate::store::ProxyEntry;
use bytes::{Buf, BytesMut};
use message::{Framing, Parsed, ParsedResponse};
use std::time::Instant;
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};

/// Largest request head read on this path; a longer one goes to hyper.
const MAX_HEAD: usize = 64 * 1024;
/// Largest answer head taken from a backend.
const MAX_RESPONSE_HEAD: usize = 64 * 1024;
/// Room made in a backend connection's buffer before a read.
const READ_ROOM: usize = 16 * 1024;
/// Room made in a client connection's buffer before a read: its 8 KiB
/// hold a usual head whole, and an idle connection keeps no more.
const CLIENT_ROOM: usize = 4 * 1024;
/// Pooled connections found closed a request passes over before it opens one.
const STALE_TRIES: usize = 2;

struct Client<S> {
    io: S,
    buf: BytesMut,
}

/// What the connection does after a request.
enum After {
    /// Reads the next request.
    Next,
    /// Ends.
    Close,
    /// Goes to hyper, with every byte not used yet (this request's too).
    HandOff,
}

/// Serves a connection of the router's listeners.
pub(super) async fn serve<S>(plane: Plane, admission: &Admission, stream: S, origin: Origin)
where
    S: AsyncRead + AsyncWrite + Unpin + Send + 'static,
{
    let mut client = Client { io: stream, buf: BytesMut::with_capacity(8 * 1024) };
    let mut since = Instant::now();
    loop {
        let Some(parsed) = next_head(&mut client, admission, since, origin).await else { return };
        let after = match parsed {
            Parsed::Request(req) => one(&plane, &mut client, req).await,
            Parsed::Partial | Parsed::Other => After::HandOff,
        };
        match after {
            After::Next => since = Instant::now(),
            After::Close => {
                let _ = client.io.shutdown().await;
                return;
            }
            After::HandOff => break,
        }
    }
    let read = client.buf.freeze();
    super::serve_hyper(plane, admission, rewind::Rewind::new(read, client.io), origin).await;
}

/// Reads until a request head is in (or one this path does not take);
/// `None` when the connection ends or its head is late.
async fn next_head<S: AsyncRead + Unpin>(client: &mut Client<S>, admission: &Admission, since: Instant, origin: Origin) -> Option<Parsed> {
    let mut deadline = None;
    let mut looked = 0;
    loop {
        // A head is parsed again only once an empty line may have come.
        if ends_a_head(&client.buf, looked) {
            match message::parse_request(&client.buf, origin) {
                Parsed::Partial => {}
                taken => return Some(taken),
            }
        }
        if client.buf.len() >= MAX_HEAD {
            return Some(Parsed::Other);
        }
        looked = client.buf.len();
        client.buf.reserve(CLIENT_ROOM);
        let late = deadline.get_or_insert_with(|| admission.header_deadline(since));
        tokio::select! {
            biased;
            read = client.io.read_buf(&mut client.buf) => match read {
                Ok(0) | Err(_) => return None,
                Ok(_) => {}
            },
            () = late.as_mut() => return None,
        }
    }
}

/// Whether `buf` holds an empty line (LF, CR LF) ending past byte `from`.
fn ends_a_head(buf: &[u8], from: usize) -> bool {
    let start = from.saturating_sub(3);
    buf[start..].windows(2).enumerate().any(|(i, w)| w == b"\n\n" || (w == b"\r\n" && i + start > 0 && buf[i + start - 1] == b'\n'))
}

/// Serves one request of an app with HTTP backends; hands the connection
/// over at once for any other.
async fn one<S: AsyncRead + AsyncWrite + Unpin>(plane: &Plane, client: &mut Client<S>, req: message::Request) -> After {
    let server = &plane.server;
    let started = Instant::now();
    let found = match resolve(server, &req.host).await {
        Ok(Some(found)) if by_http(&found.1) => found,
        _ => return After::HandOff,
    };
    // The body (small: see MAX_BODY) is read whole before anything is sent.
    while client.buf.len() < req.head_len + req.body_len {
        client.buf.reserve(CLIENT_ROOM);
        if !matches!(client.io.read_buf(&mut client.buf).await, Ok(n) if n > 0) {
            return After::Close;
        }
    }
    let traffic = server.metrics.app(&found.0.app.name);
    let Chosen { view, entry, index } = match choose(server, &req.host, found).await {
        Ok(chosen) if !chosen.entry.backends[chosen.index].addresses.is_empty() => chosen,
        Ok(_) => return After::HandOff,
        Err((status, why)) => {
            client.buf.advance(req.head_len + req.body_len);
            traffic.answered(status, started.elapsed());
            return answer_plain(client, status, &why, req.close).await;
        }
    };
    let backend = &entry.backends[index];
    let mut outgoing = req.upstream;
    outgoing.extend_from_slice(&client.buf[req.head_len..req.head_len + req.body_len]);
    client.buf.advance(req.head_len + req.body_len);

    let count = backend.addresses.len();
    let first = rand::random::<usize>() % count;
    let (mut tried, mut stale) = (0, 0);
    let (address, mut conn, answer) = loop {
        let address = &backend.addresses[(first + tried) % count];
        let pooled = if stale < STALE_TRIES { pool::take(address) } else { None };
        let (mut conn, pooled) = match pooled {
            Some(conn) => (conn, true),
            None => match pool::connect(address).await {
                Ok(conn) => (conn, false),
                Err(e) => {
                    tried += 1;
                    if tried < count.min(TRIES) {
                        tracing::debug!(app = %view.app.name, address, error = %e, "backend unreached, trying the next one");
                        continue;
                    }
                    return failed(client, &traffic, started, &view.app.name, backend.version, address, &e, req.close).await;
                }
            },
        };
        match exchange(&mut conn, &outgoing, req.head, req.close).await {
            Ok(answer) => break (address, conn, answer),
            // A kept connection the backend closed as the request went:
            // sent again (on another) when that cannot do harm.
            Err(Exchange::Unanswered(_)) if pooled && req.idempotent => stale += 1,
            Err(Exchange::Unanswered(e) | Exchange::Bad(e)) => {
                return failed(client, &traffic, started, &view.app.name, backend.version, address, &e, req.close).await;
            }
        }
    };
    traffic.answered(answer.status, started.elapsed());
    let until_close = answer.body == Framing::UntilClose;
    match relay(&mut conn.stream, &mut conn.buf, &mut client.io, answer.downstream, answer.body).await {
        Ok(()) => {
            if answer.reusable {
                pool::put(address, conn);
            }
            if req.close || until_close { After::Close } else { After::Next }
        }
        // The answer is cut: only closing the connection can say so.
        Err(e) => {
            tracing::debug!(app = %view.app.name, address, error = %e, "an answer from a backend was cut");
            After::Close
        }
    }
}

/// Whether every backend of the entry is an HTTP one (proxied, not run).
fn by_http(entry: &ProxyEntry) -> bool {
    !entry.backends.is_empty() && entry.backends.iter().all(|b| !b.addresses.is_empty())
}

/// Why a backend gave no answer.
enum Exchange {
    /// Not a byte came back: the connection was closed or reset.
    Unanswered(String),
    Bad(String),
}

/// Sends a request and reads its answer's head (passing over interim ones).
async fn exchange(conn: &mut pool::Backend, outgoing: &[u8], head: bool, close: bool) -> Result<message::Response, Exchange> {
    conn.stream.write_all(outgoing).await.map_err(|e| Exchange::Unanswered(e.to_string()))?;
    let mut answered = false;
    loop {
        if !conn.buf.is_empty() {
            match message::parse_response(&conn.buf, head, close).map_err(Exchange::Bad)? {
                ParsedResponse::Response(r) => {
                    conn.buf.advance(r.head_len);
                    return Ok(r);
                }
                ParsedResponse::Interim(n) => {
                    conn.buf.advance(n);
                    continue;
                }
                ParsedResponse::Partial if conn.buf.len() >= MAX_RESPONSE_HEAD => return Err(Exchange::Bad("its answer's head is too large".into())),
                ParsedResponse::Partial => {}
            }
        }
        conn.buf.reserve(READ_ROOM);
        match conn.stream.read_buf(&mut conn.buf).await {
            Ok(0) if !answered => return Err(Exchange::Unanswered("it closed the connection".into())),
            Ok(0) => return Err(Exchange::Bad("it closed the connection amid its answer".into())),
            Ok(_) => answered = true,
            Err(e) if !answered => return Err(Exchange::Unanswered(e.to_string())),
            Err(e) => return Err(Exchange::Bad(e.to_string())),
        }
    }
}

/// Passes a body from `from` (its first bytes in `buf`) to `to`, after
/// `head`: written with the first bytes, in one write.
async fn relay<R, W>(from: &mut R, buf: &mut BytesMut, to: &mut W, head: Vec<u8>, mut framing: Framing) -> Result<(), String>
where
    R: AsyncRead + Unpin,
    W: AsyncWrite + Unpin,
{
    let mut head = Some(head);
    loop {
        let (take, done) = match &mut framing {
            Framing::Empty => (0, true),
            Framing::Length(left) => {
                let n = (*left).min(buf.len() as u64);
                *left -= n;
                (n as usize, *left == 0)
            }
            Framing::Chunked(chunks) => chunks.feed(buf).map_err(|e| format!("its chunked answer is malformed: {e}"))?,
            Framing::UntilClose => (buf.len(), false),
        };
        let write = match head.take() {
            Some(mut head) => {
                head.extend_from_slice(&buf[..take]);
                to.write_all(&head).await
            }
            None if take > 0 => to.write_all(&buf[..take]).await,
            None => Ok(()),
        };
        write.map_err(|e| format!("the client went: {e}"))?;
        buf.advance(take);
        if done {
            return to.flush().await.map_err(|e| format!("the client went: {e}"));
        }
        to.flush().await.map_err(|e| format!("the client went: {e}"))?;
        buf.reserve(READ_ROOM);
        match from.read_buf(buf).await {
            Ok(0) if framing == Framing::UntilClose => return Ok(()),
            Ok(0) => return Err("it closed the connection amid its answer".into()),
            Ok(_) => {}
            Err(e) => return Err(e.to_string()),
        }
    }
}

/// Answers with the router's own plain text.
async fn answer_plain<S: AsyncWrite + Unpin>(client: &mut Client<S>, status: u16, text: &str, close: bool) -> After {
    let sent = client.io.write_all(&message::plain(status, text, close)).await;
    match sent.and(client.io.flush().await) {
        Ok(()) if !close => After::Next,
        _ => After::Close,
    }
}

/// A backend that could not be reached or gave no answer: a 502 naming it.
#[allow(clippy::too_many_arguments)]
async fn failed<S: AsyncWrite + Unpin>(
    client: &mut Client<S>,
    traffic: &crate::metrics::AppTraffic,
    started: Instant,
    app: &str,
    version: i64,
    address: &str,
    why: &str,
    close: bool,
) -> After {
    traffic.answered(502, started.elapsed());
    answer_plain(client, 502, &format!("app {app} version {version}: its backend {address} did not answer: {why}"), close).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_head_may_end_only_at_an_empty_line() {
        assert!(!ends_a_head(b"GET / HTTP/1.1\r\nhost: a\r\n", 0));
        assert!(ends_a_head(b"GET / HTTP/1.1\r\nhost: a\r\n\r\n", 0));
        assert!(ends_a_head(b"GET / HTTP/1.1\nhost: a\n\n", 0));
        // Only what came since `from` (and the 3 bytes before) is looked at.
        let head = b"GET / HTTP/1.1\r\nhost: a\r\n\r\n";
        assert!(ends_a_head(head, head.len() - 1));
        assert!(!ends_a_head(b"GET / HTTP/1.1\r\n\r\nhost: a\r\n", 20));
    }
}
