//! App logs (API-NOTES §2.8): read (with follow) and write.

use axum::body::{Body, Bytes};
use axum::extract::State;
use axum::http::{HeaderValue, Method, StatusCode, header};
use axum::response::Response;
use serde::Serialize;
use std::sync::Arc;
use std::time::Duration;
use tokio::sync::mpsc;

use super::apps::{AppTarget, app_contexts};
use super::params::{Params, parse_bool};
use super::{AppState, Caller, Routes, empty, time_json};
use crate::auth::Subject;
use crate::error::{ApiError, ApiResult};
use crate::server::Server;
use crate::store::{LogQuery, LogRecord, now_millis};

pub(super) fn routes(r: Routes) -> Routes {
    r.add("1.0", Method::GET, "/apps/{app}/log", read)
        .add("1.8", Method::GET, "/apps/{app}/log-instance", read)
        .add("1.0", Method::POST, "/apps/{app}/log", write)
}

/// Longest message kept; longer ones are cut.
pub(super) const MAX_MESSAGE: usize = 64 * 1024;
/// How often a follower looks for entries written by other torii processes.
const FOLLOW_POLL: Duration = Duration::from_millis(500);

#[derive(Serialize)]
struct EntryJson<'a> {
    #[serde(rename = "Date")]
    date: String,
    #[serde(rename = "Message")]
    message: &'a str,
    #[serde(rename = "Source")]
    source: &'a str,
    #[serde(rename = "AppName")]
    app: &'a str,
    #[serde(rename = "Unit")]
    unit: &'a str,
}

fn line(entries: &[LogRecord]) -> Bytes {
    let json: Vec<EntryJson> = entries
        .iter()
        .map(|e| EntryJson { date: time_json(e.date), message: &e.message, source: &e.source, app: &e.app, unit: &e.unit })
        .collect();
    let mut text = super::stream::escape_html(serde_json::to_string(&json).expect("serialisable"));
    text.push('\n');
    Bytes::from(text)
}

async fn read(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    caller.require("app.read.log", &app_contexts(&app))?;
    let lines: i64 = match params.get("lines").filter(|l| !l.is_empty()) {
        None => return Err(ApiError::bad_request("Parameter \"lines\" is mandatory.")),
        Some(raw) => raw.trim().parse().map_err(|_| ApiError::bad_request("Parameter \"lines\" must be an integer."))?,
    };
    let query = LogQuery {
        source: params.get("source").filter(|s| !s.is_empty()),
        invert_source: params.get("invert-source").and_then(|v| parse_bool(&v)).unwrap_or(false),
        units: params.all("unit").into_iter().filter(|u| !u.is_empty()).collect(),
    };
    let follow = params.get("follow").and_then(|v| parse_bool(&v)).unwrap_or(false);
    let first = match lines {
        n if n < 0 => Vec::new(),
        0 => server.store.logs(&app.name, &query, 0, None).await?,
        n => server.store.logs(&app.name, &query, 0, Some(n)).await?,
    };
    let (tx, rx) = mpsc::channel::<Result<Bytes, std::io::Error>>(64);
    let mut last_id = first.last().map(|e| e.id).unwrap_or(0);
    if lines < 0 && follow {
        // Nothing old was asked for: follow from now.
        last_id = server.store.logs(&app.name, &LogQuery::default(), 0, Some(1)).await?.last().map(|e| e.id).unwrap_or(0);
    }
    let _ = tx.send(Ok(line(&first))).await;
    if follow {
        tokio::spawn(follow_logs(server.clone(), app.name.clone(), query, last_id, tx));
    }
    let mut response = Response::new(Body::from_stream(super::stream::receiver_stream(rx)));
    response.headers_mut().insert(header::CONTENT_TYPE, HeaderValue::from_static("application/x-json-stream"));
    Ok(response)
}

/// Sends each new entry as a one-element array until the client goes away.
async fn follow_logs(server: Arc<Server>, app: String, query: LogQuery, mut after: i64, tx: mpsc::Sender<Result<Bytes, std::io::Error>>) {
    loop {
        let wake = server.log_written.notified();
        match server.store.logs(&app, &query, after, None).await {
            Ok(entries) => {
                for e in entries {
                    after = e.id;
                    if tx.send(Ok(line(std::slice::from_ref(&e)))).await.is_err() {
                        return;
                    }
                }
            }
            Err(e) => {
                tracing::warn!(app, error = %e, "log follow failed");
                return;
            }
        }
        if tx.is_closed() {
            return;
        }
        tokio::select! {
            _ = wake => {}
            _ = tokio::time::sleep(FOLLOW_POLL) => {}
            _ = tx.closed() => return,
        }
    }
}

async fn write(State(server): AppState, Caller(caller): Caller, AppTarget(app): AppTarget, params: Params) -> ApiResult<Response> {
    let internal = matches!(&caller.subject, Subject::App { app } if app == crate::auth::AGENT_APP);
    if !internal {
        caller.require("app.update.log", &app_contexts(&app))?;
    }
    let source = params.get("source").filter(|s| !s.is_empty()).unwrap_or_else(|| "app".into());
    let unit = params.get("unit").unwrap_or_default();
    let now = now_millis();
    let entries: Vec<(i64, String, String, String)> = params
        .all("message")
        .into_iter()
        .map(|mut m| {
            if m.len() > MAX_MESSAGE {
                let mut cut = MAX_MESSAGE;
                while !m.is_char_boundary(cut) {
                    cut -= 1;
                }
                m.truncate(cut);
            }
            (now, m, source.clone(), unit.clone())
        })
        .collect();
    if !entries.is_empty() {
        server.store.append_logs(&app.name, &entries, i64::from(server.config.logs.max_lines_per_app)).await?;
        server.log_written.notify_waiters();
    }
    Ok(empty(StatusCode::OK))
}
