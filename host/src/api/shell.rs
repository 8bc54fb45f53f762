//! `GET /apps/{app}/shell` (API-NOTES §2.21): a websocket relaying a
//! terminal in one of the app's containers (`apps::shell`).
//!
//! As tsuru's: the upgrade comes first (any origin), then the token (from the
//! upgrade request's `Authorization`) and `app.run.shell` on the app are
//! checked; terminal data flows as text messages both ways; the server pings
//! every `[shell] ping_interval_secs` and drops a client that answered none
//! for `[shell] pong_timeout_secs`; failures are a text message
//! `Error: <message>\n` and a normal close.

use super::apps::app_contexts;
use super::params::parse_bool;
use super::{AppState, MaybeCaller, Routes};
use crate::apps::shell::{self, OpenShell, Request};
use crate::auth::Identity;
use crate::server::Server;
use super::ws::close;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, close_code};
use axum::extract::{Path, Query, State};
use axum::http::Method;
use axum::response::Response;
use futures_util::StreamExt;
use std::sync::Arc;
use std::time::{Duration, Instant};
use tokio::io::AsyncWriteExt;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/apps/{app}/shell", open)
}

/// What tsuru says to a shell without a (valid) token.
const NO_TOKEN: &str = "no token provided or session expired, please login again";

/// Largest message a client may send (typed or pasted text).
const MAX_MESSAGE: usize = 64 * 1024;
/// Messages typed and not yet taken by the shell, at most.
const INPUT_QUEUE: usize = 64;

/// The longest `TERM` taken from the client.
const MAX_TERM: usize = 64;

async fn open(
    ws: WebSocketUpgrade,
    State(server): AppState,
    MaybeCaller(caller): MaybeCaller,
    Path(app): Path<String>,
    Query(query): Query<Vec<(String, String)>>,
) -> Response {
    let get = |key: &str| query.iter().rev().find(|(k, _)| k == key).map(|(_, v)| v.clone()).unwrap_or_default();
    let request = Request {
        unit: get("unit"),
        isolated: parse_bool(&get("isolated")).unwrap_or(false),
        term: terminal_name(&get("term")),
        width: dimension(&get("width")),
        height: dimension(&get("height")),
    };
    ws.max_message_size(MAX_MESSAGE).max_frame_size(MAX_MESSAGE).on_upgrade(move |socket| session(server, caller, app, request, socket))
}

/// `TERM` for the terminal: the client's when it is a plain name.
fn terminal_name(raw: &str) -> String {
    let plain = !raw.is_empty() && raw.len() <= MAX_TERM && raw.bytes().all(|b| b.is_ascii_alphanumeric() || b"-_.+".contains(&b));
    if plain { raw.to_string() } else { "xterm".to_string() }
}

/// A window dimension in characters; 0 (keep the engine's) when absent or absurd.
fn dimension(raw: &str) -> u16 {
    raw.parse::<u16>().ok().filter(|n| (1..=2000).contains(n)).unwrap_or(0)
}

async fn session(server: Arc<Server>, caller: Option<Arc<Identity>>, app: String, request: Request, mut socket: WebSocket) {
    let opened = match authorize(&server, caller.as_deref(), &app).await {
        Ok(record) => shell::open(&server, &record, request).await.map_err(|e| e.message),
        Err(message) => Err(message),
    };
    let shell = match opened {
        Ok(shell) => shell,
        Err(message) => return fail(socket, &message).await,
    };
    tracing::info!(app, user = caller.as_ref().map(|c| c.email.as_str()).unwrap_or(""), unit = shell.target.unit, isolated = shell.target.isolated, "shell opened");
    let outcome = relay(&server, &mut socket, shell).await;
    match outcome {
        Ok(()) => close(socket, close_code::NORMAL, "").await,
        Err(message) => fail(socket, &message).await,
    }
}

/// The app, if the caller may open a shell into it; else the message.
async fn authorize(server: &Server, caller: Option<&Identity>, app: &str) -> Result<crate::store::AppRecord, String> {
    let caller = caller.ok_or_else(|| NO_TOKEN.to_string())?;
    let record = server.store.app(app).await.map_err(|e| e.to_string())?.ok_or_else(|| format!("App {app} not found."))?;
    caller.require("app.run.shell", &app_contexts(&record)).map_err(|e| e.message)?;
    Ok(record)
}

/// Relays the terminal until it ends (`Ok`), the client goes, or a bound
/// is reached (`Err` with what to tell the client). The shell is closed
/// whatever happened.
async fn relay(server: &Server, socket: &mut WebSocket, mut shell: OpenShell) -> Result<(), String> {
    let cfg = &server.config.shell;
    let mut pings = tokio::time::interval(Duration::from_secs(cfg.ping_interval_secs.max(1)));
    pings.tick().await;
    let pong_timeout = Duration::from_secs(cfg.pong_timeout_secs.max(1));
    let deadline = tokio::time::sleep(Duration::from_secs(cfg.max_secs.max(1)));
    tokio::pin!(deadline);
    let mut last_pong = Instant::now();
    let mut text = Utf8Carry::default();
    // What the client types goes through a bounded queue to a writer of its
    // own: a shell that does not read its input never blocks this loop.
    let (input, mut typed) = tokio::sync::mpsc::channel::<Vec<u8>>(INPUT_QUEUE);
    let mut stdin = std::mem::replace(&mut shell.terminal.input, Box::pin(tokio::io::sink()));
    let writer = tokio::spawn(async move {
        while let Some(bytes) = typed.recv().await {
            if stdin.write_all(&bytes).await.is_err() || stdin.flush().await.is_err() {
                return;
            }
        }
    });
    // A client that does not read what the shell prints is dropped too.
    let send_limit = pong_timeout;
    let outcome = loop {
        tokio::select! {
            message = socket.recv() => {
                let bytes = match message {
                    Some(Ok(Message::Text(t))) => t.as_bytes().to_vec(),
                    Some(Ok(Message::Binary(b))) => b.to_vec(),
                    Some(Ok(Message::Pong(_))) => {
                        last_pong = Instant::now();
                        continue;
                    }
                    Some(Ok(Message::Ping(_))) => continue,
                    Some(Ok(Message::Close(_))) | Some(Err(_)) | None => break Ok(()),
                };
                match input.try_send(bytes) {
                    Ok(()) => {}
                    Err(tokio::sync::mpsc::error::TrySendError::Full(_)) => break Err("the shell is not reading its input".into()),
                    Err(tokio::sync::mpsc::error::TrySendError::Closed(_)) => break Ok(()),
                }
            }
            chunk = shell.terminal.output.next() => match chunk {
                Some(Ok(out)) => {
                    let piece = text.push(&out.into_bytes());
                    if !piece.is_empty() && !send(socket, Message::Text(piece.into()), send_limit).await { break Ok(()) }
                }
                Some(Err(e)) => break Err(format!("the terminal failed: {e}")),
                None => break Ok(()),
            },
            _ = pings.tick() => {
                if last_pong.elapsed() > pong_timeout {
                    tracing::info!(unit = shell.target.unit, "shell: no pong, closing");
                    break Ok(());
                }
                if !send(socket, Message::Ping(Default::default()), send_limit).await { break Ok(()) }
            }
            _ = &mut deadline => break Err(format!("the shell reached its time limit of {} s", cfg.max_secs)),
        }
    };
    writer.abort();
    let rest = text.finish();
    if !rest.is_empty() {
        send(socket, Message::Text(rest.into()), send_limit).await;
    }
    shell::close(shell).await;
    outcome
}

/// Sends `message` unless the client has not taken it within `limit`.
async fn send(socket: &mut WebSocket, message: Message, limit: Duration) -> bool {
    matches!(tokio::time::timeout(limit, socket.send(message)).await, Ok(Ok(())))
}

/// Tells the client what failed (`Error: ...`), then closes normally.
async fn fail(mut socket: WebSocket, message: &str) {
    let _ = socket.send(Message::Text(format!("Error: {message}\n").into())).await;
    close(socket, close_code::NORMAL, "").await;
}

/// Terminal output as text: a UTF-8 sequence split across chunks is held
/// until its end arrives; bytes that are no UTF-8 at all become U+FFFD.
#[derive(Default)]
struct Utf8Carry {
    held: Vec<u8>,
}

impl Utf8Carry {
    fn push(&mut self, bytes: &[u8]) -> String {
        self.held.extend_from_slice(bytes);
        let cut = complete_prefix(&self.held);
        let rest = self.held.split_off(cut);
        let text = String::from_utf8_lossy(&self.held).into_owned();
        self.held = rest;
        text
    }

    fn finish(&mut self) -> String {
        String::from_utf8_lossy(&std::mem::take(&mut self.held)).into_owned()
    }
}

/// The length of `bytes` without a UTF-8 sequence cut short at its end.
fn complete_prefix(bytes: &[u8]) -> usize {
    // A sequence is at most 4 bytes: look back for its lead byte.
    for back in 1..=bytes.len().min(3) {
        let b = bytes[bytes.len() - back];
        if b & 0xC0 == 0x80 {
            continue;
        }
        let needs = match b {
            0xC0..=0xDF => 2,
            0xE0..=0xEF => 3,
            0xF0..=0xF7 => 4,
            _ => 1,
        };
        return if needs > back { bytes.len() - back } else { bytes.len() };
    }
    bytes.len()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn split_utf8_waits_for_its_end() {
        let mut carry = Utf8Carry::default();
        let snow = "é☃😀".as_bytes();
        let mut out = String::new();
        for b in snow {
            out.push_str(&carry.push(&[*b]));
        }
        assert_eq!(out, "é☃😀");
        assert_eq!(carry.push(b"\xffa"), "\u{fffd}a");
        assert_eq!(carry.push(b"\xe2\x98"), "");
        assert_eq!(carry.finish(), "\u{fffd}");
    }

    #[test]
    fn client_terminal_settings_are_bounded() {
        assert_eq!(terminal_name("xterm-256color"), "xterm-256color");
        assert_eq!(terminal_name("x\nterm"), "xterm");
        assert_eq!(terminal_name(&"x".repeat(65)), "xterm");
        assert_eq!(dimension("80"), 80);
        assert_eq!(dimension("0"), 0);
        assert_eq!(dimension("99999"), 0);
        assert_eq!(dimension("-3"), 0);
    }
}
