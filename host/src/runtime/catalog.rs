//! Loaded app versions by artifact digest: the blob store's bytes, checked and
//! compiled once per process (the compiled code is also cached on disk), shared
//! by every app deployed with the same bytes.

use super::{AppCode, AppRuntime, Invocation, LoadError};
use crate::blobs::Blobs;
use crate::store::{AppView, EnvVar};
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

pub struct Catalog {
    pub runtime: AppRuntime,
    pub blobs: Blobs,
    loaded: Mutex<HashMap<String, Arc<AppCode>>>,
}

#[derive(Debug, thiserror::Error)]
pub enum CatalogError {
    #[error("the artifact {0} is missing from the blob store: {1}")]
    Missing(String, std::io::Error),
    #[error(transparent)]
    Load(#[from] LoadError),
}

impl Catalog {
    pub fn new(runtime: AppRuntime, blobs: Blobs) -> Catalog {
        Catalog { runtime, blobs, loaded: Mutex::new(HashMap::new()) }
    }

    /// Checks and compiles `bytes` as an app version and keeps the result.
    pub fn load(&self, digest: &str, bytes: &[u8]) -> Result<Arc<AppCode>, LoadError> {
        if let Some(code) = self.loaded.lock().unwrap().get(digest) {
            return Ok(code.clone());
        }
        let code = Arc::new(self.runtime.load(bytes)?);
        self.loaded.lock().unwrap().insert(digest.to_string(), code.clone());
        Ok(code)
    }

    /// True when the version with `digest` is loaded in memory.
    pub fn is_loaded(&self, digest: &str) -> bool {
        self.loaded.lock().unwrap().contains_key(digest)
    }

    /// Forgets the loaded version with `digest` (the next use reads the
    /// compiled code from disk again).
    pub fn unload(&self, digest: &str) {
        self.loaded.lock().unwrap().remove(digest);
    }

    /// The loaded version with `digest`, read from the blob store if needed.
    pub async fn code(&self, digest: &str) -> Result<Arc<AppCode>, CatalogError> {
        if let Some(code) = self.loaded.lock().unwrap().get(digest) {
            return Ok(code.clone());
        }
        // Compiled before (a wake-up, a restart): straight from the compiled cache.
        if let Some(code) = tokio::task::block_in_place(|| self.runtime.load_compiled(digest)) {
            let code = Arc::new(code);
            self.loaded.lock().unwrap().insert(digest.to_string(), code.clone());
            return Ok(code);
        }
        let bytes = self.blobs.get(digest).await.map_err(|e| CatalogError::Missing(digest.to_string(), e))?;
        let (digest, runtime_bytes) = (digest.to_string(), bytes);
        // Compiling is CPU work: keep it off the async workers.
        let code = tokio::task::block_in_place(|| self.runtime.load(&runtime_bytes))?;
        let code = Arc::new(code);
        self.loaded.lock().unwrap().insert(digest, code.clone());
        Ok(code)
    }
}

/// What a request to `view`'s app runs with: every env var (aliases resolved,
/// private ones included) and the plan's memory (or the app's override).
pub fn invocation(view: &AppView) -> Invocation {
    let value = |v: &EnvVar| -> String {
        if v.alias.is_empty() {
            return v.value.clone();
        }
        view.env.iter().find(|o| o.name == v.alias).map(|o| o.value.clone()).unwrap_or_default()
    };
    let env = view.env.iter().map(|v| (v.name.clone(), value(v))).collect();
    let memory = match view.app.override_memory {
        m if m > 0 => m,
        _ => view.plan.as_ref().map(|p| p.memory).unwrap_or(0),
    };
    Invocation { env, memory_bytes: usize::try_from(memory).unwrap_or(0), output: None }
}
