//! Events: every state-changing operation is recorded with its kind, target,
//! owner, times, log and outcome, and (by default) holds a lock on its target
//! while it runs, so a second operation on the same target is refused.
//!
//! Locks live in the database so they work across torii processes sharing
//! PostgreSQL. The process refreshes the heartbeat of the locks it holds every
//! third of the expiry; a lock whose heartbeat is older than the expiry (its
//! process was killed) is taken over by the next operation, which also ends
//! the dead event with an error. No target stays locked forever.

pub mod blocks;
pub mod claims;
mod json;
pub mod visibility;

pub use json::{EventJson, TypeName, custom_data, event_json, parse_allowed};

use serde::Serialize;
use std::collections::HashSet;
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use crate::rbac::Context;
use crate::store::{EventRecord, LockOutcome, Store, StoreError, now_millis};

/// What an event is about, e.g. `team(backend)`.
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    #[serde(rename = "Type")]
    pub kind: String,
    #[serde(rename = "Value")]
    pub value: String,
}

impl Target {
    pub fn new(kind: &str, value: impl Into<String>) -> Target {
        Target { kind: kind.into(), value: value.into() }
    }
}

/// Who started an event.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Owner {
    User(String),
    Token(String),
    App(String),
    Internal,
}

impl Owner {
    fn parts(&self) -> (&'static str, &str) {
        match self {
            Owner::User(n) => ("user", n),
            Owner::Token(n) => ("token", n),
            Owner::App(n) => ("app", n),
            Owner::Internal => ("internal", ""),
        }
    }
}

/// The permission needed to see (or cancel) an event.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Allowed {
    pub scheme: String,
    pub contexts: Vec<Context>,
}

impl Allowed {
    pub fn new(scheme: &str, contexts: Vec<Context>) -> Allowed {
        Allowed { scheme: scheme.into(), contexts }
    }
}

#[derive(Clone)]
pub struct EventSpec {
    pub target: Target,
    /// A permission name (kind type `permission`) unless `internal`.
    pub kind: String,
    pub internal: bool,
    pub owner: Owner,
    pub source_ip: String,
    pub allowed: Allowed,
    pub allowed_cancel: Option<Allowed>,
    pub cancelable: bool,
    /// Request data, stored as the event's start custom data.
    pub start_custom: serde_json::Value,
    /// Whether the event locks its target while it runs.
    pub lock: bool,
}

impl EventSpec {
    /// An event torii starts on its own (healing, autoscale): owner
    /// `internal`, no client IP, not cancelable, no lock; set `lock` and
    /// `internal` on the result where they apply.
    pub fn by_torii(target: Target, kind: &str, allowed: Allowed, data: serde_json::Value) -> EventSpec {
        EventSpec {
            target,
            kind: kind.to_string(),
            internal: false,
            owner: Owner::Internal,
            source_ip: String::new(),
            allowed,
            allowed_cancel: None,
            cancelable: false,
            start_custom: data,
            lock: false,
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EventError {
    /// Another running event holds the target; the text describes it.
    #[error("event locked: {0}")]
    Locked(String),
    /// An active event block matches the operation.
    #[error("error running {kind:?} on {target_type}({target_value}): {block}")]
    Blocked { kind: String, target_type: String, target_value: String, block: String },
    #[error(transparent)]
    Store(#[from] StoreError),
}

#[derive(Debug, Clone, Serialize, serde::Deserialize)]
pub(crate) struct LogEntry {
    pub date: i64,
    pub message: String,
}

#[derive(Serialize)]
struct AllowedStored<'a> {
    scheme: &'a str,
    contexts: Vec<(&'a str, &'a str)>,
}

fn allowed_json(a: &Allowed) -> String {
    let stored = AllowedStored {
        scheme: &a.scheme,
        contexts: a.contexts.iter().map(|c| (c.kind.as_str(), c.value.as_str())).collect(),
    };
    serde_json::to_string(&stored).expect("serialisable")
}

/// The event recorder of one torii process.
pub struct Events {
    store: Store,
    expire: Duration,
    instance: String,
    held: Arc<Mutex<HashSet<String>>>,
    /// Told the id of every finished event (webhook delivery).
    on_finish: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    /// Targets whose lock background work of this process is about to take.
    pub claims: claims::Claims,
    /// Told each time this process releases a lock (a waiter looks again at
    /// once; a lock another process releases is seen at its next look).
    pub released: tokio::sync::Notify,
}

impl Events {
    /// `instance` is this process's `Instance` object as JSON.
    pub fn new(
        store: Store,
        expire: Duration,
        instance: serde_json::Value,
        on_finish: Option<tokio::sync::mpsc::UnboundedSender<String>>,
    ) -> Arc<Events> {
        let events = Arc::new(Events {
            store: store.clone(),
            expire,
            instance: instance.to_string(),
            held: Arc::new(Mutex::new(HashSet::new())),
            on_finish,
            claims: Default::default(),
            released: Default::default(),
        });
        spawn_heartbeat(store, Arc::downgrade(&events.held), expire / 3);
        events
    }

    pub fn expire(&self) -> Duration {
        self.expire
    }

    /// Whether someone asked to cancel the running event `id` (a cancelable
    /// one): the work calls it between its steps and, when it answers true,
    /// stops there. The cancel is acknowledged (`AckTime`, `Canceled`) as it
    /// is seen. Always false for events that cannot be canceled.
    pub async fn acknowledge_cancel(&self, id: &str) -> Result<bool, StoreError> {
        // Two tries: the info may change under us once (a cancel asked, or
        // acknowledged by another check of the same work).
        for _ in 0..2 {
            let Some(text) = self.store.running_cancel_info(id).await? else {
                return Ok(false);
            };
            let mut info: serde_json::Value = serde_json::from_str(&text).unwrap_or_default();
            if info["Asked"] != true {
                return Ok(false);
            }
            if info["Canceled"] == true {
                return Ok(true);
            }
            info["AckTime"] = serde_json::Value::String(crate::api::time_json(now_millis()));
            info["Canceled"] = serde_json::Value::Bool(true);
            if self.store.swap_cancel_info(id, &text, &info.to_string()).await? {
                return Ok(true);
            }
        }
        Ok(true)
    }

    /// Records the start of an event, taking its target's lock if asked. A
    /// claim on the target (see [`claims`]) is waited for before the lock is
    /// tried.
    pub async fn start(self: &Arc<Self>, spec: EventSpec) -> Result<RunningEvent, EventError> {
        if spec.lock {
            self.claims.settled(&spec.target).await;
        }
        self.begin(spec).await
    }

    /// [`Events::start`] for the holder of `claim`, which covers the
    /// event's target: it is not waited for.
    pub async fn start_claimed(self: &Arc<Self>, spec: EventSpec, claim: &claims::Claim) -> Result<RunningEvent, EventError> {
        debug_assert!(claim.covers(&spec.target));
        self.begin(spec).await
    }

    async fn begin(self: &Arc<Self>, spec: EventSpec) -> Result<RunningEvent, EventError> {
        if let Some(block) = self.store.blocks(Some(true)).await?.iter().find(|b| blocks::matches(b, &spec)) {
            return Err(EventError::Blocked {
                kind: spec.kind.clone(),
                target_type: spec.target.kind.clone(),
                target_value: spec.target.value.clone(),
                block: blocks::describe(block),
            });
        }
        let now = now_millis();
        let (owner_type, owner_name) = spec.owner.parts();
        let record = EventRecord {
            id: bson::oid::ObjectId::new().to_hex(),
            target_type: spec.target.kind.clone(),
            target_value: spec.target.value.clone(),
            kind_type: if spec.internal { "internal".into() } else { "permission".into() },
            kind_name: spec.kind.clone(),
            owner_type: owner_type.into(),
            owner_name: owner_name.into(),
            source_ip: spec.source_ip.clone(),
            start_time: now,
            end_time: 0,
            running: true,
            lock_update_time: now,
            error: String::new(),
            log: "[]".into(),
            start_custom: spec.start_custom.to_string(),
            end_custom: "null".into(),
            other_custom: "null".into(),
            cancelable: spec.cancelable,
            cancel_info: "{}".into(),
            allowed: allowed_json(&spec.allowed),
            allowed_cancel: spec.allowed_cancel.as_ref().map(allowed_json).unwrap_or_else(|| "null".into()),
            instance: self.instance.clone(),
        };
        let expired_before = now - self.expire.as_millis() as i64;
        match self.store.start_event(&record, spec.lock, expired_before).await? {
            LockOutcome::Held(holder) => Err(EventError::Locked(self.describe(&holder, &spec.target).await)),
            LockOutcome::Acquired { took_over } => {
                if let Some(dead) = took_over {
                    tracing::warn!(event = %dead, target = %format!("{}({})", spec.target.kind, spec.target.value),
                        "took over an expired event lock");
                }
                if spec.lock {
                    self.held.lock().unwrap().insert(record.id.clone());
                }
                Ok(RunningEvent {
                    events: self.clone(),
                    id: record.id,
                    locked: spec.lock,
                    log: Mutex::new(Vec::new()),
                    end_data: Mutex::new(serde_json::Value::Null),
                    finished: false,
                })
            }
        }
    }

    /// tsuru's event description: `team(t1) running "team.update" start by user a@b.com at <time>`.
    async fn describe(&self, holder: &str, target: &Target) -> String {
        match self.store.event(holder).await {
            Ok(Some(e)) => format!(
                "{}({}) running {:?} start by {} {} at {}",
                e.target_type,
                e.target_value,
                e.kind_name,
                e.owner_type,
                e.owner_name,
                crate::api::time_json(e.start_time)
            ),
            _ => format!("{}({}) is locked by event {holder}", target.kind, target.value),
        }
    }

    /// Drops a running event without a trace: its lock is released and the
    /// event removed (no webhook, nothing in the list).
    async fn discard(&self, id: &str, locked: bool) {
        let result = self.store.discard_event(id).await;
        if locked {
            self.held.lock().unwrap().remove(id);
            self.released.notify_waiters();
        }
        if let Err(e) = result {
            tracing::error!(event = id, error = %e, "could not discard an event");
        }
    }

    async fn finish(&self, id: &str, locked: bool, error: &str, log: &[LogEntry], end_data: &serde_json::Value) {
        let log = serde_json::to_string(log).expect("serialisable");
        let result = self.store.finish_event(id, now_millis(), error, &log, &end_data.to_string()).await;
        if locked {
            self.held.lock().unwrap().remove(id);
            self.released.notify_waiters();
        }
        match result {
            Err(e) => tracing::error!(event = id, error = %e, "could not record the end of an event"),
            Ok(()) => {
                if let Some(tx) = &self.on_finish {
                    let _ = tx.send(id.to_string());
                }
            }
        }
    }
}

fn spawn_heartbeat(store: Store, held: Weak<Mutex<HashSet<String>>>, every: Duration) {
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(every).await;
            let Some(held) = held.upgrade() else { return };
            let ids: Vec<String> = held.lock().unwrap().iter().cloned().collect();
            drop(held);
            if ids.is_empty() {
                continue;
            }
            if let Err(e) = store.heartbeat(&ids, now_millis()).await {
                tracing::warn!(error = %e, "event lock heartbeat failed");
            }
        }
    });
}

/// A running event. Finish it with [`RunningEvent::done`]; dropped unfinished
/// (a panic, a client gone mid-request) it ends with an error on its own.
pub struct RunningEvent {
    events: Arc<Events>,
    id: String,
    locked: bool,
    log: Mutex<Vec<LogEntry>>,
    /// The event's end custom data (JSON), e.g. the image a deploy made.
    end_data: Mutex<serde_json::Value>,
    finished: bool,
}

impl RunningEvent {
    /// Sets the end custom data recorded when the event finishes.
    pub fn set_end_data(&self, data: serde_json::Value) {
        *self.end_data.lock().unwrap() = data;
    }

    pub fn id(&self) -> &str {
        &self.id
    }

    /// Adds a line to the event's log.
    pub fn log(&self, message: impl Into<String>) {
        self.log.lock().unwrap().push(LogEntry { date: now_millis(), message: message.into() });
    }

    /// Ends the event with the outcome of its work, and passes the outcome on.
    pub async fn done<T, E: std::fmt::Display>(mut self, result: Result<T, E>) -> Result<T, E> {
        let error = match &result {
            Ok(_) => String::new(),
            Err(e) => e.to_string(),
        };
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        let end_data = std::mem::take(&mut *self.end_data.lock().unwrap());
        self.finished = true;
        self.events.finish(&self.id, self.locked, &error, &log, &end_data).await;
        result
    }
}

impl RunningEvent {
    /// Ends an event whose work turned out to be nothing worth recording
    /// (a healing round that repaired nothing): it leaves no trace.
    pub async fn discard(mut self) {
        self.finished = true;
        self.events.discard(&self.id, self.locked).await;
    }
}

impl Drop for RunningEvent {
    fn drop(&mut self) {
        if self.finished {
            return;
        }
        let events = self.events.clone();
        let (id, locked) = (self.id.clone(), self.locked);
        let log = std::mem::take(&mut *self.log.lock().unwrap());
        if let Ok(handle) = tokio::runtime::Handle::try_current() {
            handle.spawn(async move {
                events.finish(&id, locked, "event aborted before it finished", &log, &serde_json::Value::Null).await
            });
        }
    }
}
