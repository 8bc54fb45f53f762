//! `GET /logs` (API-NOTES §2.8): a websocket on which a node agent holding
//! the `tsr` token (`torii agent-token`) sends app log entries, one JSON
//! object per message: `{"Date","Message","Source","AppName","Unit"}`.
//!
//! Entries missing a date, app name or message are ignored, as are entries
//! of apps that do not exist; messages longer than the log keeps are cut.
//! Entries are written in batches (per app, at most every
//! [`FLUSH_EVERY`] or [`BATCH`] entries), each app's log bounded as
//! always. When the connection ends the server sends `{"error":""}`, or the
//! error (`wslogs: ...`), and closes.

use super::logs::MAX_MESSAGE;
use super::{AppState, MaybeCaller, Routes};
use crate::auth::{AGENT_APP, Identity, Subject};
use crate::server::Server;
use axum::extract::State;
use super::ws::close;
use axum::extract::ws::{Message, WebSocket, WebSocketUpgrade, close_code};
use axum::http::Method;
use axum::response::Response;
use serde::Deserialize;
use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/logs", open)
}

/// Largest message a client may send (one entry).
const MAX_FRAME: usize = MAX_MESSAGE + 4096;
/// Entries held before a write.
const BATCH: usize = 256;
/// The longest an entry waits to be written.
const FLUSH_EVERY: Duration = Duration::from_millis(200);
/// How many app names one connection remembers as existing or not, and for
/// how long (apps come and go while an agent stays connected).
const KNOWN_APPS: usize = 4096;
const KNOWN_FOR: Duration = Duration::from_secs(30);
/// Pings to the agent, so a quiet one is not taken for gone.
const PING_EVERY: Duration = Duration::from_secs(20);

#[derive(Deserialize)]
struct Entry {
    #[serde(rename = "Date", default)]
    date: String,
    #[serde(rename = "Message", default)]
    message: String,
    #[serde(rename = "Source", default)]
    source: String,
    #[serde(rename = "AppName", default)]
    app: String,
    #[serde(rename = "Unit", default)]
    unit: String,
}

async fn open(ws: WebSocketUpgrade, State(server): AppState, MaybeCaller(caller): MaybeCaller) -> Response {
    ws.max_message_size(MAX_FRAME).max_frame_size(MAX_FRAME).on_upgrade(move |socket| session(server, caller, socket))
}

/// Who may send logs: only the `tsr` token.
fn refusal(caller: Option<&Identity>) -> Option<String> {
    match caller.map(|c| &c.subject) {
        None => Some("wslogs: no token".into()),
        Some(Subject::App { app }) if app == AGENT_APP => None,
        Some(Subject::App { app }) => Some(format!("wslogs: invalid token app name: {app:?}")),
        Some(_) => Some("wslogs: invalid token app name: \"\"".into()),
    }
}

async fn session(server: Arc<Server>, caller: Option<Arc<Identity>>, mut socket: WebSocket) {
    let outcome = match refusal(caller.as_deref()) {
        Some(error) => Err(error),
        None => ingest(&server, &mut socket).await,
    };
    if let Ok(Ended::Closed) = outcome {
        // The client closed first: reading once more sends the close
        // reply (queued when its close arrived); nothing else may follow.
        let _ = tokio::time::timeout(Duration::from_secs(2), socket.recv()).await;
        return;
    }
    let error = outcome.err().unwrap_or_default();
    let _ = socket.send(Message::Text(serde_json::json!({ "error": error }).to_string().into())).await;
    close(socket, close_code::NORMAL, "").await;
}

/// How an agent's stream ended.
enum Ended {
    /// The client sent a close.
    Closed,
    /// The connection went without one.
    Gone,
}

/// Reads entries until the client goes; writes them in batches.
async fn ingest(server: &Server, socket: &mut WebSocket) -> Result<Ended, String> {
    let mut batch = Batch::default();
    let mut flush = tokio::time::interval(FLUSH_EVERY);
    let mut pings = tokio::time::interval(PING_EVERY);
    pings.tick().await;
    let outcome = loop {
        tokio::select! {
            message = socket.recv() => match message {
                Some(Ok(Message::Text(text))) => {
                    // Not an entry: skipped, as tsuru's decoder loop skips it.
                    let Ok(entry) = serde_json::from_str::<Entry>(&text) else { continue };
                    if let Some((app, record)) = record(entry) {
                        batch.add(app, record);
                        if batch.len >= BATCH {
                            batch.write(server).await?;
                        }
                    }
                }
                Some(Ok(Message::Close(_))) => break Ok(Ended::Closed),
                None => break Ok(Ended::Gone),
                Some(Ok(_)) => {}
                Some(Err(e)) => break Err(format!("wslogs: {e}")),
            },
            _ = flush.tick() => batch.write(server).await?,
            _ = pings.tick() => {
                if socket.send(Message::Ping(Default::default())).await.is_err() {
                    break Ok(Ended::Gone);
                }
            }
        }
    };
    batch.write(server).await?;
    outcome
}

/// One stored entry: date (ms), message, source, unit.
type Record = (i64, String, String, String);

/// An entry as stored, or `None` when it lacks a date, app or message.
fn record(e: Entry) -> Option<(String, Record)> {
    if e.app.is_empty() || e.message.is_empty() {
        return None;
    }
    let date = chrono::DateTime::parse_from_rfc3339(&e.date).ok()?.timestamp_millis();
    let mut message = e.message;
    if message.len() > MAX_MESSAGE {
        let mut cut = MAX_MESSAGE;
        while !message.is_char_boundary(cut) {
            cut -= 1;
        }
        message.truncate(cut);
    }
    Some((e.app, (date, message, e.source, e.unit)))
}

/// Entries waiting to be written, per app; which apps exist.
#[derive(Default)]
struct Batch {
    apps: HashMap<String, Vec<Record>>,
    len: usize,
    known: HashMap<String, (bool, std::time::Instant)>,
}

impl Batch {
    fn add(&mut self, app: String, record: Record) {
        self.apps.entry(app).or_default().push(record);
        self.len += 1;
    }

    async fn write(&mut self, server: &Server) -> Result<(), String> {
        if self.len == 0 {
            return Ok(());
        }
        let keep = i64::from(server.config.logs.max_lines_per_app);
        for (app, records) in std::mem::take(&mut self.apps) {
            if !self.exists(server, &app).await? {
                continue;
            }
            server.store.append_logs(&app, &records, keep).await.map_err(|e| format!("wslogs: {e}"))?;
        }
        self.len = 0;
        server.log_written.notify_waiters();
        Ok(())
    }

    async fn exists(&mut self, server: &Server, app: &str) -> Result<bool, String> {
        if let Some((known, at)) = self.known.get(app)
            && at.elapsed() < KNOWN_FOR
        {
            return Ok(*known);
        }
        let exists = server.store.app(app).await.map_err(|e| format!("wslogs: {e}"))?.is_some();
        if self.known.len() >= KNOWN_APPS {
            self.known.clear();
        }
        self.known.insert(app.to_string(), (exists, std::time::Instant::now()));
        Ok(exists)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn entry(date: &str, message: &str, app: &str) -> Entry {
        Entry { date: date.into(), message: message.into(), source: "web".into(), app: app.into(), unit: "u1".into() }
    }

    #[test]
    fn entries_without_date_app_or_message_are_ignored() {
        assert!(record(entry("", "hi", "a")).is_none());
        assert!(record(entry("not a date", "hi", "a")).is_none());
        assert!(record(entry("2026-12-04T10:00:00Z", "", "a")).is_none());
        assert!(record(entry("2026-12-04T10:00:00Z", "hi", "")).is_none());
        let (app, r) = record(entry("2026-12-04T10:00:00.5Z", "hi", "a")).unwrap();
        assert_eq!((app.as_str(), r.0, r.1.as_str(), r.2.as_str(), r.3.as_str()), ("a", 1_796_378_400_500, "hi", "web", "u1"));
        let long = "é".repeat(MAX_MESSAGE);
        assert_eq!(record(entry("2026-12-04T10:00:00Z", &long, "a")).unwrap().1.1.len(), MAX_MESSAGE);
    }
}
