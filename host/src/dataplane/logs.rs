//! App output on its way to the app log, batched: a busy app printing a line
//! per request must not cost a database transaction per request. Lines are
//! collected for up to [`FLUSH_EVERY`] (or [`MAX_BATCH`] lines) and written
//! with one `append_logs` per app, then log followers are woken.

use crate::server::Server;
use std::collections::BTreeMap;
use std::sync::{Arc, Weak};
use std::time::Duration;
use tokio::sync::mpsc;

/// One app log entry: app, date, message, unit.
pub type Line = (String, i64, String, String);

const FLUSH_EVERY: Duration = Duration::from_millis(200);
const MAX_BATCH: usize = 2000;
/// Lines waiting to be written; past it new lines are dropped (and counted).
const QUEUE: usize = 100_000;

#[derive(Clone)]
pub struct LogBatcher {
    tx: mpsc::Sender<Line>,
}

impl LogBatcher {
    /// Starts the writer; it ends when the server is gone.
    pub fn start(server: Weak<Server>) -> LogBatcher {
        let (tx, rx) = mpsc::channel(QUEUE);
        tokio::spawn(write(server, rx));
        LogBatcher { tx }
    }

    /// Queues a line; a full queue drops it rather than slow the request.
    pub fn push(&self, line: Line) {
        if self.tx.try_send(line).is_err() {
            tracing::warn!("app log queue full: dropping app output");
        }
    }
}

async fn write(server: Weak<Server>, mut rx: mpsc::Receiver<Line>) {
    let mut batch: Vec<Line> = Vec::new();
    loop {
        let first = match rx.recv().await {
            Some(line) => line,
            None => return,
        };
        batch.push(first);
        let deadline = tokio::time::Instant::now() + FLUSH_EVERY;
        while batch.len() < MAX_BATCH {
            match tokio::time::timeout_at(deadline, rx.recv()).await {
                Ok(Some(line)) => batch.push(line),
                Ok(None) | Err(_) => break,
            }
        }
        let Some(server) = server.upgrade() else { return };
        flush(&server, std::mem::take(&mut batch)).await;
    }
}

async fn flush(server: &Arc<Server>, batch: Vec<Line>) {
    let mut by_app: BTreeMap<String, Vec<(i64, String, String, String)>> = BTreeMap::new();
    for (app, date, message, unit) in batch {
        by_app.entry(app).or_default().push((date, message, "app".to_string(), unit));
    }
    let keep = i64::from(server.config.logs.max_lines_per_app);
    for (app, entries) in by_app {
        if let Err(e) = server.store.append_logs(&app, &entries, keep).await {
            tracing::warn!(app = %app, error = %e, "cannot write the app's output to its log");
        }
    }
    server.log_written.notify_waiters();
}
