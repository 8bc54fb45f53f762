//! The rules of an app's environment, one place for the variables users
//! set (`api::env`) and those a service bind gives (`services::bind`).

use std::sync::LazyLock;

/// tsuru's write-protected names: the platform sets them.
pub const RESERVED: [&str; 4] = ["TSURU_APPNAME", "TSURU_APP_TOKEN", "TSURU_SERVICE", "TSURU_APPDIR"];
/// The variable torii writes from an app's binds.
pub const SERVICES: &str = "TSURU_SERVICES";

/// Bounds on an app's env: a name, a value, and how many variables.
pub const MAX_NAME: usize = 255;
pub const MAX_VALUE: usize = 64 << 10;
pub const MAX_VARS: usize = 1000;

static NAME: LazyLock<regex::Regex> = LazyLock::new(|| regex::Regex::new(r"^[a-zA-Z][-_a-zA-Z0-9]*$").unwrap());

/// Whether `name` is a variable name tsuru accepts, within the bound.
pub fn valid_name(name: &str) -> bool {
    name.len() <= MAX_NAME && NAME.is_match(name)
}
