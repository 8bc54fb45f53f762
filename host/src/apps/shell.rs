//! Interactive shells into an app (`tsuru app shell`): the app's provisioner
//! says where one runs (a unit's container, or an isolated one it makes), the
//! host opens a terminal there and the API relays it (`api::shell`).
//!
//! Bounds: at most `[shell] max_per_app` shells per app at once (an isolated
//! shell is a container of the app's plan), each closed after `[shell]
//! max_secs`; the terminal opens only on a node of the app's own pool.

use crate::docker::terminal::{Terminal, TerminalSpec};
use crate::error::{ApiError, ApiResult};
use crate::plugin::provisioner::{AppState, Provisioner, ShellTarget};
use crate::server::Server;
use crate::store::AppRecord;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

/// The shells open per app.
#[derive(Clone, Default)]
pub struct Shells(Arc<Mutex<HashMap<String, usize>>>);

/// One open shell's place among its app's; released when dropped.
pub struct Slot {
    shells: Shells,
    app: String,
}

impl Shells {
    /// A place for one more shell into `app`, unless it has `max` open.
    fn take(&self, app: &str, max: usize) -> Option<Slot> {
        let mut open = self.0.lock().unwrap();
        let n = open.entry(app.to_string()).or_default();
        if *n >= max {
            return None;
        }
        *n += 1;
        Some(Slot { shells: self.clone(), app: app.to_string() })
    }

    /// Shells open into `app` now.
    pub fn open(&self, app: &str) -> usize {
        self.0.lock().unwrap().get(app).copied().unwrap_or(0)
    }
}

impl Drop for Slot {
    fn drop(&mut self) {
        let mut open = self.shells.0.lock().unwrap();
        if let Some(n) = open.get_mut(&self.app) {
            *n -= 1;
            if *n == 0 {
                open.remove(&self.app);
            }
        }
    }
}

/// What a shell is asked for.
pub struct Request {
    /// A unit id or name; empty: the provisioner picks one.
    pub unit: String,
    pub isolated: bool,
    pub term: String,
    pub width: u16,
    pub height: u16,
}

/// An open shell: its terminal, and what closing it needs.
pub struct OpenShell {
    pub terminal: Terminal,
    pub target: ShellTarget,
    provisioner: Provisioner,
    desired: AppState,
    _slot: Slot,
}

/// Opens a shell into `app` as `request` asks.
pub async fn open(server: &Server, app: &AppRecord, request: Request) -> ApiResult<OpenShell> {
    let max = server.config.shell.max_per_app;
    let slot = server.shells.take(&app.name, max).ok_or_else(|| {
        ApiError::new(
            axum::http::StatusCode::TOO_MANY_REQUESTS,
            format!("app {} has {max} shells open already; close one first", app.name),
        )
    })?;
    let provisioner = super::provisioner_of(server, app).await?.clone();
    let view = server.store.app_view(&app.name).await?.ok_or_else(|| ApiError::not_found(format!("App {} not found.", app.name)))?;
    let desired = crate::plugin::provisioner::app_state(&view);
    let target = provisioner.open_shell(desired.clone(), &request.unit, request.isolated).await?;
    match open_terminal(server, app, &provisioner, &target, request).await {
        Ok(terminal) => Ok(OpenShell { terminal, target, provisioner, desired, _slot: slot }),
        Err(e) => {
            end(&provisioner, desired, target).await;
            Err(e)
        }
    }
}

/// The terminal of `target`, on a node of the app's own pool only.
async fn open_terminal(server: &Server, app: &AppRecord, provisioner: &Provisioner, target: &ShellTarget, request: Request) -> ApiResult<Terminal> {
    let nodes = server.store.pool_nodes(&app.pool).await?;
    if !nodes.iter().any(|n| n.address == target.node) {
        return Err(ApiError::internal(format!(
            "provisioner {} placed the shell on {:?}, which is not a node of pool {}",
            provisioner.name(),
            target.node,
            app.pool
        )));
    }
    // Only a running container the provisioner itself made.
    let own = server.docker.inspect(&target.node, &target.container).await.map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))?;
    let own = own.filter(|c| c.labels.get(crate::docker::OWNER_LABEL).map(String::as_str) == Some(provisioner.name()));
    match own {
        Some(c) if c.state == "running" => {}
        Some(c) => return Err(ApiError::bad_request(format!("the shell's container {} is {}, not running", c.name, c.state))),
        None => return Err(ApiError::internal(format!("provisioner {} placed the shell in a container it did not make", provisioner.name()))),
    }
    let spec = TerminalSpec { cmd: target.command.clone(), term: request.term, width: request.width, height: request.height };
    server.docker.open_terminal(&target.node, &target.container, spec).await.map_err(|e| ApiError::new(axum::http::StatusCode::SERVICE_UNAVAILABLE, e.to_string()))
}

/// Ends a shell: the provisioner removes what it made for it.
pub async fn close(shell: OpenShell) {
    let OpenShell { provisioner, desired, target, .. } = shell;
    end(&provisioner, desired, target).await;
}

async fn end(provisioner: &Provisioner, desired: AppState, target: ShellTarget) {
    if let Err(e) = provisioner.close_shell(desired, target).await {
        tracing::warn!(error = %e, "shell: closing failed");
    }
}
