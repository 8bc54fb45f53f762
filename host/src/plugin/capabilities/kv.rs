//! `kv`: a durable key-value namespace per plugin name, in the host database.

use super::bindings::torii::plugin::kv::Host;
use crate::config::Capability;
use crate::plugin::PluginState;

const MAX_KEY: usize = 512;
const MAX_VALUE: usize = 1 << 20;

impl Host for PluginState {
    async fn get(&mut self, key: String) -> wasmtime::Result<Result<Option<Vec<u8>>, String>> {
        self.check(Capability::Kv)?;
        Ok(self.host.store.kv_get(&self.host.name, &key).await.map_err(|e| e.to_string()))
    }

    async fn set(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<(), String>> {
        self.check(Capability::Kv)?;
        if key.len() > MAX_KEY {
            return Ok(Err(format!("key longer than {MAX_KEY} bytes")));
        }
        if value.len() > MAX_VALUE {
            return Ok(Err(format!("value larger than {MAX_VALUE} bytes")));
        }
        Ok(self.host.store.kv_set(&self.host.name, &key, &value).await.map_err(|e| e.to_string()))
    }

    async fn delete(&mut self, key: String) -> wasmtime::Result<Result<(), String>> {
        self.check(Capability::Kv)?;
        Ok(self.host.store.kv_delete(&self.host.name, &key).await.map_err(|e| e.to_string()))
    }

    async fn set_if_absent(&mut self, key: String, value: Vec<u8>) -> wasmtime::Result<Result<bool, String>> {
        self.check(Capability::Kv)?;
        if key.len() > MAX_KEY {
            return Ok(Err(format!("key longer than {MAX_KEY} bytes")));
        }
        if value.len() > MAX_VALUE {
            return Ok(Err(format!("value larger than {MAX_VALUE} bytes")));
        }
        Ok(self.host.store.kv_set_if_absent(&self.host.name, &key, &value).await.map_err(|e| e.to_string()))
    }

    async fn list_keys(&mut self, prefix: String) -> wasmtime::Result<Result<Vec<String>, String>> {
        self.check(Capability::Kv)?;
        Ok(self.host.store.kv_list_keys(&self.host.name, &prefix).await.map_err(|e| e.to_string()))
    }
}
