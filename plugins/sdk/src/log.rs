//! Structured logging into the host log, tagged with the plugin name.

#[cfg(target_arch = "wasm32")]
use crate::capabilities::bindings::torii::plugin::log::{Level, write};

#[cfg(not(target_arch = "wasm32"))]
enum Level {
    Debug,
    Info,
    Warn,
    Error,
}

/// Natively, lines go to the test double ([`crate::testing::log_lines`]).
#[cfg(not(target_arch = "wasm32"))]
fn write(level: Level, message: &str) {
    let level = match level {
        Level::Debug => "debug",
        Level::Info => "info",
        Level::Warn => "warn",
        Level::Error => "error",
    };
    crate::testing::log(level, message);
}

pub fn debug(message: &str) {
    write(Level::Debug, message);
}

pub fn info(message: &str) {
    write(Level::Info, message);
}

pub fn warn(message: &str) {
    write(Level::Warn, message);
}

pub fn error(message: &str) {
    write(Level::Error, message);
}
