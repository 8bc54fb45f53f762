//! Loaded app versions by artifact digest: the blob store's bytes, checked and
//! compiled once per process (the compiled code is also cached on disk), shared
//! by every app deployed with the same bytes.

use super::{AppCode, AppRuntime, Invocation, LoadError};
use crate::blobs::Blobs;
use crate::store::AppView;
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
    #[error("torii is shutting down")]
    ShuttingDown,
}

impl Catalog {
    pub fn new(runtime: AppRuntime, blobs: Blobs) -> Catalog {
        Catalog { runtime, blobs, loaded: Mutex::new(HashMap::new()) }
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
    pub async fn code(self: &Arc<Self>, digest: &str) -> Result<Arc<AppCode>, CatalogError> {
        if let Some(code) = self.loaded.lock().unwrap().get(digest) {
            return Ok(code.clone());
        }
        // Compiled before (a wake-up, a restart): straight from the compiled
        // cache. Otherwise from the blob. Loading and compiling are blocking
        // work, kept off the async workers (the data plane's are
        // single-threaded).
        let compiled = self.blocking({
            let digest = digest.to_string();
            move |catalog| catalog.runtime.load_compiled(&digest)
        });
        let code = match compiled.await? {
            Some(code) => code,
            None => {
                let bytes = self.blobs.get(digest).await.map_err(|e| CatalogError::Missing(digest.to_string(), e))?;
                self.blocking(move |catalog| catalog.runtime.load(&bytes)).await??
            }
        };
        let code = Arc::new(code);
        self.loaded.lock().unwrap().insert(digest.to_string(), code.clone());
        Ok(code)
    }

    /// Runs `work` on the blocking pool.
    async fn blocking<R: Send + 'static>(self: &Arc<Self>, work: impl FnOnce(&Catalog) -> R + Send + 'static) -> Result<R, CatalogError> {
        let catalog = self.clone();
        match tokio::task::spawn_blocking(move || work(&catalog)).await {
            Ok(result) => Ok(result),
            Err(e) if e.is_panic() => std::panic::resume_unwind(e.into_panic()),
            Err(_) => Err(CatalogError::ShuttingDown),
        }
    }
}

/// What a request to `view`'s app runs with: every env var (aliases resolved,
/// private ones included) and the plan's memory (or the app's override).
pub fn invocation(view: &AppView) -> Invocation {
    let env = view.runtime_env().into_iter().map(|(name, value, _)| (name, value)).collect();
    Invocation { env, memory_bytes: usize::try_from(view.memory()).unwrap_or(0), ..Invocation::default() }
}
