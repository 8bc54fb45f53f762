//! Container output into the app log: one task per followed container reads
//! the engine's log stream (stdout and stderr; from its start when it started
//! in the last [`FRESH_SECS`], else from now) and writes what
//! arrived every [`FLUSH_EVERY`], one INSERT per batch, under the unit's name.
//! A task ends with its container (or its engine connection); following a
//! container twice is one follow. Swarm tasks are followed the same way,
//! through their cluster's manager.

use crate::store::Store;
use bollard::Docker;
use bollard::query_parameters::LogsOptionsBuilder;
use futures_util::StreamExt;
use std::collections::HashSet;
use std::sync::{Arc, Mutex};
use std::time::Duration;
use tokio::sync::Notify;

const FLUSH_EVERY: Duration = Duration::from_millis(200);

#[derive(Clone)]
pub struct Followers {
    inner: Arc<Inner>,
}

struct Inner {
    store: Store,
    /// Log lines kept per app.
    keep: i64,
    /// Woken after each write, so log followers of the API see it at once.
    written: Arc<Notify>,
    /// `address id` of the containers followed now.
    following: Mutex<HashSet<String>>,
}

impl Followers {
    pub fn new(store: Store, keep: i64, written: Arc<Notify>) -> Followers {
        Followers { inner: Arc::new(Inner { store, keep, written, following: Mutex::new(HashSet::new()) }) }
    }

    /// Whether container `id` of the engine at `address` is followed now.
    pub fn is_following(&self, address: &str, id: &str) -> bool {
        self.inner.following.lock().unwrap().contains(&key(address, id))
    }

    /// Starts following `id` unless it is followed already.
    pub fn follow(&self, client: Docker, address: &str, id: &str, app: &str, unit: &str) {
        let (id, unit) = (id.to_string(), unit.to_string());
        self.spawn(key(address, &id), app, move |inner, app| async move {
            let since = since(&client, &id).await;
            let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).since(since).build();
            copy(&inner, client.logs(&id, Some(options)), &app, &unit).await;
        });
    }

    /// Starts following Swarm task `task` of the cluster at `address`
    /// (through its manager) unless it is followed already; its lines go
    /// under the task's id.
    pub fn follow_task(&self, client: Docker, address: &str, task: &str, created_ms: u64, app: &str) {
        let task = task.to_string();
        self.spawn(key(address, &task), app, move |inner, app| async move {
            let since = since_start(Some(i64::try_from(created_ms / 1000).unwrap_or(0)));
            let options = LogsOptionsBuilder::new().follow(true).stdout(true).stderr(true).since(since).build();
            copy(&inner, client.task_logs(&task, Some(options)), &app, &task).await;
        });
    }

    /// Runs `follow` for `key` unless it runs already; `key` is free again when it ends.
    fn spawn<F, Fut>(&self, key: String, app: &str, follow: F)
    where
        F: FnOnce(Arc<Inner>, String) -> Fut,
        Fut: Future<Output = ()> + Send + 'static,
    {
        if !self.inner.following.lock().unwrap().insert(key.clone()) {
            return;
        }
        let inner = self.inner.clone();
        let running = follow(inner.clone(), app.to_string());
        tokio::spawn(async move {
            running.await;
            inner.following.lock().unwrap().remove(&key);
        });
    }
}

/// A container that started this recently is followed from its start, so
/// a new unit's first lines are kept; older ones from now (a torii restart
/// re-follows them without repeating their history).
const FRESH_SECS: i64 = 120;

fn key(address: &str, id: &str) -> String {
    format!("{address} {id}")
}

/// Where a container's output is followed from: its start when it started
/// in the last [`FRESH_SECS`], else now.
async fn since(client: &Docker, id: &str) -> i32 {
    let started = client
        .inspect_container(id, None::<bollard::query_parameters::InspectContainerOptions>)
        .await
        .ok()
        .and_then(|c| c.state?.started_at)
        .and_then(|t| chrono::DateTime::parse_from_rfc3339(&t).ok())
        .map(|t| t.timestamp());
    since_start(started)
}

/// Where output that began at `started` (Unix seconds) is followed from:
/// from then when it was in the last [`FRESH_SECS`], else from now.
fn since_start(started: Option<i64>) -> i32 {
    let now = chrono::Utc::now().timestamp();
    let since = match started {
        Some(t) if now - t <= FRESH_SECS => t,
        _ => now,
    };
    i32::try_from(since).unwrap_or(0)
}

/// Copies a log stream into `app`'s log under `unit`, in batches.
async fn copy(
    inner: &Inner,
    stream: impl futures_util::Stream<Item = Result<bollard::container::LogOutput, bollard::errors::Error>>,
    app: &str,
    unit: &str,
) {
    let mut stream = std::pin::pin!(stream);
    let mut pending = String::new();
    let mut batch: Vec<(i64, String, String, String)> = Vec::new();
    let mut tick = tokio::time::interval(FLUSH_EVERY);
    loop {
        tokio::select! {
            item = stream.next() => match item {
                Some(Ok(output)) => {
                    pending.push_str(&String::from_utf8_lossy(&output.into_bytes()));
                    while let Some(end) = pending.find('\n') {
                        let line: String = pending.drain(..=end).collect();
                        batch.push((crate::store::now_millis(), line.trim_end().to_string(), "app".into(), unit.to_string()));
                    }
                }
                Some(Err(e)) => {
                    tracing::debug!(app, unit, error = %e, "container log stream ended");
                    break;
                }
                None => break,
            },
            _ = tick.tick() => flush(inner, app, &mut batch).await,
        }
    }
    if !pending.trim().is_empty() {
        batch.push((crate::store::now_millis(), pending.trim_end().to_string(), "app".into(), unit.to_string()));
    }
    flush(inner, app, &mut batch).await;
}

async fn flush(inner: &Inner, app: &str, batch: &mut Vec<(i64, String, String, String)>) {
    if batch.is_empty() {
        return;
    }
    let entries = std::mem::take(batch);
    if let Err(e) = inner.store.append_logs(app, &entries, inner.keep).await {
        tracing::warn!(app, error = %e, "cannot write container output to the app log");
    }
    inner.written.notify_waiters();
}
