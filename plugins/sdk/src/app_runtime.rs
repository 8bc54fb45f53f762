//! The host's WASM app runtime (capability `app-runtime`), for provisioners
//! of wasi:http apps.

use crate::capabilities::bindings::torii::plugin::app_runtime as host;

pub use host::{Prepared, UnitInfo};

/// Checks and compiles a stored artifact (content hash) once.
pub fn prepare(artifact: &str) -> Result<Prepared, String> {
    host::prepare(artifact)
}

/// Drops the app's loaded code (sleep); compiled code stays on disk.
pub fn unload(app: &str) {
    host::unload(app)
}

/// What the runtime knows of the app's units (only units it has seen).
pub fn units_seen(app: &str) -> Vec<UnitInfo> {
    host::units_seen(app)
}

pub fn kill_unit(app: &str, unit: &str) {
    host::kill_unit(app, unit)
}

pub fn set_unit_status(app: &str, unit: &str, status: &str) {
    host::set_unit_status(app, unit, status)
}
