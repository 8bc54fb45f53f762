//! Structured logging into the host log, tagged with the plugin name.

use crate::capabilities::bindings::torii::plugin::log::{Level, write};

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
