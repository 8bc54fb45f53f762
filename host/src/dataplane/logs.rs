//! App output on its way to the app log, batched: a busy app printing a line
//! per request must not cost a database transaction, nor even a task wake-up,
//! per request. Lines are appended to a shared buffer; a writer task takes the
//! whole buffer every [`FLUSH_EVERY`] (sooner once [`MAX_BATCH`] lines wait)
//! and writes it with one `append_logs` per app, then wakes log followers.
//! When the data plane stops, [`LogBatcher::drain`] writes what still waits,
//! before the database closes.

use crate::server::Server;
use std::collections::BTreeMap;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;
use tokio::sync::Notify;

/// One app log entry: app, date, message, unit.
pub type Line = (Arc<str>, i64, String, Arc<str>);

const FLUSH_EVERY: Duration = Duration::from_millis(200);
const MAX_BATCH: usize = 2000;
/// Lines waiting to be written; past it new lines are dropped (and counted).
const QUEUE: usize = 100_000;

#[derive(Clone)]
pub struct LogBatcher {
    shared: Arc<Shared>,
}

struct Shared {
    lines: Mutex<Vec<Line>>,
    /// Wakes the writer early when a full batch waits.
    full: Notify,
    /// Held while a batch is taken and written: a drain waits for the
    /// writer's batch to be in the database before it takes the rest.
    writing: tokio::sync::Mutex<()>,
}

impl LogBatcher {
    /// Starts the writer; it ends when the server is gone.
    pub fn start(server: Weak<Server>) -> LogBatcher {
        let shared = Arc::new(Shared { lines: Mutex::new(Vec::new()), full: Notify::new(), writing: tokio::sync::Mutex::new(()) });
        tokio::spawn(write(server, shared.clone()));
        LogBatcher { shared }
    }

    /// Queues a line; a full queue drops it rather than slow the request.
    pub fn push(&self, line: Line) {
        let mut lines = self.shared.lines.lock().unwrap();
        if lines.len() >= QUEUE {
            drop(lines);
            tracing::warn!("app log queue full: dropping app output");
            return;
        }
        lines.push(line);
        if lines.len() == MAX_BATCH {
            self.shared.full.notify_one();
        }
    }

    /// Writes every line still waiting (after the batch being written, if
    /// any): the data plane's last step before the database closes.
    pub async fn drain(&self, server: &Arc<Server>) {
        let _writing = self.shared.writing.lock().await;
        let batch = std::mem::take(&mut *self.shared.lines.lock().unwrap());
        if !batch.is_empty() {
            flush(server, batch).await;
        }
    }
}

async fn write(server: Weak<Server>, shared: Arc<Shared>) {
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
    loop {
        tokio::select! {
            _ = tick.tick() => {}
            _ = shared.full.notified() => {}
        }
        let _writing = shared.writing.lock().await;
        let batch = std::mem::take(&mut *shared.lines.lock().unwrap());
        let Some(server) = server.upgrade() else { return };
        if !batch.is_empty() {
            flush(&server, batch).await;
        }
    }
}
async fn flush(server: &Arc<Server>, batch: Vec<Line>) {
    let mut by_app: BTreeMap<&str, Vec<(i64, &str, &str, &str)>> = BTreeMap::new();
    for (app, date, message, unit) in &batch {
        by_app.entry(app).or_default().push((*date, message, "app", unit));
    }
    let keep = i64::from(server.config.logs.max_lines_per_app);
    for (app, entries) in by_app {
        if let Err(e) = server.store.append_logs(app, &entries, keep).await {
            tracing::warn!(app = %app, error = %e, "cannot write the app's output to its log");
        }
    }
    server.log_written.notify_waiters();
}
