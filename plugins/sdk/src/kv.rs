//! The plugin's own durable key-value namespace in the host database.

#[cfg(target_arch = "wasm32")]
use crate::capabilities::bindings::torii::plugin::kv as host;

#[cfg(not(target_arch = "wasm32"))]
mod host {
    pub(super) use crate::testing::{kv_delete as delete, kv_get as get, kv_list as list_keys, kv_set as set, kv_set_if_absent as set_if_absent};
}

pub fn get(key: &str) -> Result<Option<Vec<u8>>, String> {
    host::get(key)
}

pub fn set(key: &str, value: &[u8]) -> Result<(), String> {
    host::set(key, value)
}

pub fn delete(key: &str) -> Result<(), String> {
    host::delete(key)
}

/// Sets `key` only if it is absent, atomically over every instance and
/// replica (a claim); whether it was set.
pub fn set_if_absent(key: &str, value: &[u8]) -> Result<bool, String> {
    host::set_if_absent(key, value)
}

pub fn list_keys(prefix: &str) -> Result<Vec<String>, String> {
    host::list_keys(prefix)
}

/// Reads a JSON value; `None` when the key is absent.
pub fn get_json<T: serde::de::DeserializeOwned>(key: &str) -> Result<Option<T>, String> {
    match get(key)? {
        None => Ok(None),
        Some(bytes) => serde_json::from_slice(&bytes)
            .map(Some)
            .map_err(|e| format!("corrupt value at {key:?}: {e}")),
    }
}

pub fn set_json<T: serde::Serialize>(key: &str, value: &T) -> Result<(), String> {
    let bytes = serde_json::to_vec(value).map_err(|e| e.to_string())?;
    set(key, &bytes)
}
